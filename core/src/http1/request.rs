//! Serialization of HTTP/1.1 request heads (RFC 9112 §3 and §5).

use crate::fields::FieldSection;

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBodyFraming {
    /// No body and no framing field at all (e.g. a GET without content).
    None,
    /// A body of exactly this many bytes, announced with `content-length`.
    ContentLength(u64),
    /// A body of unknown length sent with the chunked transfer coding.
    Chunked,
}

/// Appends an HTTP/1.1 request head to `out`.
///
/// Writes `{method} {target} HTTP/1.1\r\nhost: {host}\r\n`, then every field of `fields` in
/// order as `name: value\r\n`, then `content-length: N\r\n` or `transfer-encoding: chunked\r\n`
/// according to `framing` (nothing for [`RequestBodyFraming::None`]), then the empty line.
///
/// Nothing is checked here: the caller has already validated and filtered the fields (no
/// pseudo-header, no connection-specific field, no `host`, no `content-length`) and made sure
/// that `method`, `target` and `host` contain no whitespace or control characters.
pub fn write_request_head(
    out: &mut Vec<u8>,
    method: &[u8],
    target: &[u8],
    host: &[u8],
    fields: &FieldSection,
    framing: RequestBodyFraming,
) {
    let fields_len: usize = fields.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    out.reserve(method.len() + target.len() + host.len() + fields_len + 64);

    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host);
    out.extend_from_slice(b"\r\n");
    for (name, value) in fields.iter() {
        write_field(name, value, out);
    }
    match framing {
        RequestBodyFraming::None => {}
        RequestBodyFraming::ContentLength(len) => {
            out.extend_from_slice(b"content-length: ");
            write_decimal(len, out);
            out.extend_from_slice(b"\r\n");
        }
        RequestBodyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one field line, `name: value\r\n`.
pub(crate) fn write_field(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `value` in decimal.
pub(crate) fn write_decimal(mut value: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends `value` in lowercase hexadecimal, without leading zeros.
pub(crate) fn write_hex(mut value: u64, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = HEX[(value & 0xf) as usize];
        value >>= 4;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> FieldSection {
        let mut f = FieldSection::new();
        f.push(b"user-agent", b"spooky-test");
        f.push(b"accept", b"*/*");
        f.push(b"accept", b"text/html");
        f
    }

    #[test]
    fn head_without_body() {
        let mut out = b"previous".to_vec();
        write_request_head(
            &mut out,
            b"GET",
            b"/index.html?q=1",
            b"example.com",
            &fields(),
            RequestBodyFraming::None,
        );
        assert_eq!(
            out,
            b"previousGET /index.html?q=1 HTTP/1.1\r\n\
              host: example.com\r\n\
              user-agent: spooky-test\r\n\
              accept: */*\r\n\
              accept: text/html\r\n\
              \r\n"
        );
    }

    #[test]
    fn head_with_content_length() {
        let mut out = Vec::new();
        write_request_head(
            &mut out,
            b"POST",
            b"/upload",
            b"backend:8080",
            &fields(),
            RequestBodyFraming::ContentLength(1234),
        );
        assert_eq!(
            out,
            b"POST /upload HTTP/1.1\r\n\
              host: backend:8080\r\n\
              user-agent: spooky-test\r\n\
              accept: */*\r\n\
              accept: text/html\r\n\
              content-length: 1234\r\n\
              \r\n"
        );

        let mut out = Vec::new();
        write_request_head(
            &mut out,
            b"PUT",
            b"/",
            b"h",
            &FieldSection::new(),
            RequestBodyFraming::ContentLength(0),
        );
        assert_eq!(
            out,
            b"PUT / HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[test]
    fn head_chunked() {
        let mut out = Vec::new();
        write_request_head(
            &mut out,
            b"POST",
            b"*",
            b"[::1]:443",
            &FieldSection::new(),
            RequestBodyFraming::Chunked,
        );
        assert_eq!(
            out,
            b"POST * HTTP/1.1\r\nhost: [::1]:443\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn numbers() {
        for (value, dec, hex) in [
            (0u64, "0", "0"),
            (9, "9", "9"),
            (10, "10", "a"),
            (255, "255", "ff"),
            (4096, "4096", "1000"),
            (u64::MAX, "18446744073709551615", "ffffffffffffffff"),
        ] {
            let mut out = Vec::new();
            write_decimal(value, &mut out);
            assert_eq!(out, dec.as_bytes());
            let mut out = Vec::new();
            write_hex(value, &mut out);
            assert_eq!(out, hex.as_bytes());
        }
    }
}
