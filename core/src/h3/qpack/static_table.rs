//! The QPACK static table (RFC 9204 Appendix A) and a fast lookup for the encoder.

/// The 99 entries of the QPACK static table, indexed from 0, as `(name, value)`.
pub const STATIC_TABLE: [(&[u8], &[u8]); 99] = [
    (b":authority", b""),
    (b":path", b"/"),
    (b"age", b"0"),
    (b"content-disposition", b""),
    (b"content-length", b"0"),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"referer", b""),
    (b"set-cookie", b""),
    (b":method", b"CONNECT"),
    (b":method", b"DELETE"),
    (b":method", b"GET"),
    (b":method", b"HEAD"),
    (b":method", b"OPTIONS"),
    (b":method", b"POST"),
    (b":method", b"PUT"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"103"),
    (b":status", b"200"),
    (b":status", b"304"),
    (b":status", b"404"),
    (b":status", b"503"),
    (b"accept", b"*/*"),
    (b"accept", b"application/dns-message"),
    (b"accept-encoding", b"gzip, deflate, br"),
    (b"accept-ranges", b"bytes"),
    (b"access-control-allow-headers", b"cache-control"),
    (b"access-control-allow-headers", b"content-type"),
    (b"access-control-allow-origin", b"*"),
    (b"cache-control", b"max-age=0"),
    (b"cache-control", b"max-age=2592000"),
    (b"cache-control", b"max-age=604800"),
    (b"cache-control", b"no-cache"),
    (b"cache-control", b"no-store"),
    (b"cache-control", b"public, max-age=31536000"),
    (b"content-encoding", b"br"),
    (b"content-encoding", b"gzip"),
    (b"content-type", b"application/dns-message"),
    (b"content-type", b"application/javascript"),
    (b"content-type", b"application/json"),
    (b"content-type", b"application/x-www-form-urlencoded"),
    (b"content-type", b"image/gif"),
    (b"content-type", b"image/jpeg"),
    (b"content-type", b"image/png"),
    (b"content-type", b"text/css"),
    (b"content-type", b"text/html; charset=utf-8"),
    (b"content-type", b"text/plain"),
    (b"content-type", b"text/plain;charset=utf-8"),
    (b"range", b"bytes=0-"),
    (b"strict-transport-security", b"max-age=31536000"),
    (
        b"strict-transport-security",
        b"max-age=31536000; includesubdomains",
    ),
    (
        b"strict-transport-security",
        b"max-age=31536000; includesubdomains; preload",
    ),
    (b"vary", b"accept-encoding"),
    (b"vary", b"origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-xss-protection", b"1; mode=block"),
    (b":status", b"100"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"302"),
    (b":status", b"400"),
    (b":status", b"403"),
    (b":status", b"421"),
    (b":status", b"425"),
    (b":status", b"500"),
    (b"accept-language", b""),
    (b"access-control-allow-credentials", b"FALSE"),
    (b"access-control-allow-credentials", b"TRUE"),
    (b"access-control-allow-headers", b"*"),
    (b"access-control-allow-methods", b"get"),
    (b"access-control-allow-methods", b"get, post, options"),
    (b"access-control-allow-methods", b"options"),
    (b"access-control-expose-headers", b"content-length"),
    (b"access-control-request-headers", b"content-type"),
    (b"access-control-request-method", b"get"),
    (b"access-control-request-method", b"post"),
    (b"alt-svc", b"clear"),
    (b"authorization", b""),
    (
        b"content-security-policy",
        b"script-src 'none'; object-src 'none'; base-uri 'none'",
    ),
    (b"early-data", b"1"),
    (b"expect-ct", b""),
    (b"forwarded", b""),
    (b"if-range", b""),
    (b"origin", b""),
    (b"purpose", b"prefetch"),
    (b"server", b""),
    (b"timing-allow-origin", b"*"),
    (b"upgrade-insecure-requests", b"1"),
    (b"user-agent", b""),
    (b"x-forwarded-for", b""),
    (b"x-frame-options", b"deny"),
    (b"x-frame-options", b"sameorigin"),
];

/// The static entry at `index`, if there is one.
pub fn get(index: u64) -> Option<(&'static [u8], &'static [u8])> {
    usize::try_from(index)
        .ok()
        .and_then(|i| STATIC_TABLE.get(i))
        .copied()
}

/// What the static table offers for a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StaticMatch {
    /// Name and value both match this entry.
    Full(u8),
    /// Only the name matches; this is the entry to reference.
    Name(u8),
}

/// Finds the best static entry for `(name, value)`: an exact match if there is one, else an
/// entry with the same name. Names are compared exactly (callers pass lowercase).
pub(crate) fn lookup(name: &[u8], value: &[u8]) -> Option<StaticMatch> {
    let candidates = entries_named(name)?;
    for &index in candidates {
        if STATIC_TABLE[usize::from(index)].1 == value {
            return Some(StaticMatch::Full(index));
        }
    }
    Some(StaticMatch::Name(candidates[0]))
}

/// Every static index whose name is `name`, in table order (never an empty slice).
///
/// Dispatches on the length first so each lookup compares against at most a handful of names;
/// a test checks this agrees with [`STATIC_TABLE`].
fn entries_named(name: &[u8]) -> Option<&'static [u8]> {
    let found: &'static [u8] = match name.len() {
        3 => match name {
            b"age" => &[2],
            _ => return None,
        },
        4 => match name {
            b"date" => &[6],
            b"etag" => &[7],
            b"link" => &[11],
            b"vary" => &[59, 60],
            _ => return None,
        },
        5 => match name {
            b":path" => &[1],
            b"range" => &[55],
            _ => return None,
        },
        6 => match name {
            b"cookie" => &[5],
            b"accept" => &[29, 30],
            b"origin" => &[90],
            b"server" => &[92],
            _ => return None,
        },
        7 => match name {
            b":status" => &[24, 25, 26, 27, 28, 63, 64, 65, 66, 67, 68, 69, 70, 71],
            b":method" => &[15, 16, 17, 18, 19, 20, 21],
            b":scheme" => &[22, 23],
            b"referer" => &[13],
            b"alt-svc" => &[83],
            b"purpose" => &[91],
            _ => return None,
        },
        8 => match name {
            b"location" => &[12],
            b"if-range" => &[89],
            _ => return None,
        },
        9 => match name {
            b"expect-ct" => &[87],
            b"forwarded" => &[88],
            _ => return None,
        },
        10 => match name {
            b":authority" => &[0],
            b"set-cookie" => &[14],
            b"user-agent" => &[95],
            b"early-data" => &[86],
            _ => return None,
        },
        12 => match name {
            b"content-type" => &[44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54],
            _ => return None,
        },
        13 => match name {
            b"cache-control" => &[36, 37, 38, 39, 40, 41],
            b"authorization" => &[84],
            b"if-none-match" => &[9],
            b"last-modified" => &[10],
            b"accept-ranges" => &[32],
            _ => return None,
        },
        14 => match name {
            b"content-length" => &[4],
            _ => return None,
        },
        15 => match name {
            b"accept-encoding" => &[31],
            b"accept-language" => &[72],
            b"x-forwarded-for" => &[96],
            b"x-frame-options" => &[97, 98],
            _ => return None,
        },
        16 => match name {
            b"content-encoding" => &[42, 43],
            b"x-xss-protection" => &[62],
            _ => return None,
        },
        17 => match name {
            b"if-modified-since" => &[8],
            _ => return None,
        },
        19 => match name {
            b"content-disposition" => &[3],
            b"timing-allow-origin" => &[93],
            _ => return None,
        },
        22 => match name {
            b"x-content-type-options" => &[61],
            _ => return None,
        },
        23 => match name {
            b"content-security-policy" => &[85],
            _ => return None,
        },
        25 => match name {
            b"strict-transport-security" => &[56, 57, 58],
            b"upgrade-insecure-requests" => &[94],
            _ => return None,
        },
        27 => match name {
            b"access-control-allow-origin" => &[35],
            _ => return None,
        },
        28 => match name {
            b"access-control-allow-headers" => &[33, 34, 75],
            b"access-control-allow-methods" => &[76, 77, 78],
            _ => return None,
        },
        29 => match name {
            b"access-control-expose-headers" => &[79],
            b"access-control-request-method" => &[81, 82],
            _ => return None,
        },
        30 => match name {
            b"access-control-request-headers" => &[80],
            _ => return None,
        },
        32 => match name {
            b"access-control-allow-credentials" => &[73, 74],
            _ => return None,
        },
        _ => return None,
    };
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spot_check_rfc9204_appendix_a() {
        assert_eq!(STATIC_TABLE.len(), 99);
        assert_eq!(get(0), Some((&b":authority"[..], &b""[..])));
        assert_eq!(get(1), Some((&b":path"[..], &b"/"[..])));
        assert_eq!(get(17), Some((&b":method"[..], &b"GET"[..])));
        assert_eq!(get(25), Some((&b":status"[..], &b"200"[..])));
        assert_eq!(get(31).unwrap().1, b"gzip, deflate, br");
        assert_eq!(
            get(62),
            Some((&b"x-xss-protection"[..], &b"1; mode=block"[..]))
        );
        assert_eq!(get(71), Some((&b":status"[..], &b"500"[..])));
        assert_eq!(
            get(85).unwrap().1,
            b"script-src 'none'; object-src 'none'; base-uri 'none'"
        );
        assert_eq!(get(98), Some((&b"x-frame-options"[..], &b"sameorigin"[..])));
        assert_eq!(get(99), None);
        assert_eq!(get(u64::MAX), None);
    }

    #[test]
    fn entries_named_agrees_with_the_table() {
        for (i, (name, _)) in STATIC_TABLE.iter().enumerate() {
            let expected: Vec<u8> = STATIC_TABLE
                .iter()
                .enumerate()
                .filter(|(_, (n, _))| n == name)
                .map(|(j, _)| j as u8)
                .collect();
            assert_eq!(
                entries_named(name),
                Some(&expected[..]),
                "entry {i} ({})",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn lookup_finds_every_entry() {
        for (i, (name, value)) in STATIC_TABLE.iter().enumerate() {
            assert_eq!(lookup(name, value), Some(StaticMatch::Full(i as u8)));
            let first = STATIC_TABLE.iter().position(|(n, _)| n == name).unwrap();
            assert_eq!(
                lookup(name, b"\x00not-in-the-table"),
                Some(StaticMatch::Name(first as u8))
            );
        }
    }

    #[test]
    fn lookup_misses() {
        assert_eq!(lookup(b"x-custom", b""), None);
        assert_eq!(lookup(b"", b""), None);
        // Case matters: callers lowercase names.
        assert_eq!(lookup(b"Content-Type", b"text/css"), None);
        assert_eq!(lookup(b"accept-charset", b""), None);
    }
}
