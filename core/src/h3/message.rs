//! HTTP/3 message rules (RFC 9114 §4.1–4.3): what makes a request or response well formed.
//!
//! A request that breaks any of these rules is malformed: it gets H3_MESSAGE_ERROR (or a 400)
//! and is never forwarded (RFC 9114 §4.1.2).

use crate::fields::FieldSection;

/// Why a request or response is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// A field name with an uppercase letter.
    #[error("field name {0:?} has uppercase characters")]
    UppercaseName(String),
    /// A field name that is empty or has characters outside RFC 9110's token set.
    #[error("field name {0:?} has invalid characters")]
    InvalidName(String),
    /// A field value with NUL, CR, LF or other control characters, or surrounding whitespace.
    #[error("value of field {0:?} has invalid characters")]
    InvalidValue(String),
    /// A pseudo-header field after a regular field.
    #[error("pseudo-header {0:?} after a regular field")]
    PseudoAfterRegular(String),
    /// A pseudo-header that is not defined for this message type.
    #[error("pseudo-header {0:?} is not allowed here")]
    UnknownPseudo(String),
    /// A pseudo-header that appears twice.
    #[error("pseudo-header {0:?} appears more than once")]
    DuplicatePseudo(String),
    /// A required pseudo-header is absent.
    #[error("required pseudo-header {0} is missing")]
    MissingPseudo(&'static str),
    /// A pseudo-header with an invalid value.
    #[error("pseudo-header {0} has an invalid value")]
    InvalidPseudo(&'static str),
    /// A connection-specific field (RFC 9114 §4.2).
    #[error("connection-specific field {0:?} is not allowed in HTTP/3")]
    ConnectionSpecific(String),
    /// `te` with a value other than `trailers`.
    #[error("te may only be \"trailers\"")]
    InvalidTe,
    /// CONNECT carrying `:scheme` or `:path`.
    #[error("CONNECT requests must not carry :scheme or :path")]
    ConnectWithSchemeOrPath,
    /// Neither `:authority` nor `host` on an http(s) request.
    #[error("request has neither :authority nor host")]
    MissingAuthority,
    /// `host` and `:authority` disagree.
    #[error("host does not match :authority")]
    HostMismatch,
    /// An unparsable or self-contradicting `content-length`.
    #[error("invalid content-length")]
    InvalidContentLength,
    /// DATA frames added up to a different length than `content-length` declared.
    #[error("content-length says {declared} bytes but the body had {received}")]
    ContentLengthMismatch {
        /// Declared length.
        declared: u64,
        /// Bytes received (so far, if the body was too long).
        received: u64,
    },
    /// A frame sequence that is not a valid message (for example DATA after trailers).
    #[error("invalid frame sequence: {0}")]
    FrameSequence(&'static str),
}

/// The request methods Spooky distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
    Other,
}

impl Method {
    fn from_bytes(m: &[u8]) -> Method {
        match m {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"CONNECT" => Method::Connect,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }

    /// Idempotent per RFC 9110 §9.2.2: safe to send again after a failure.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Put
                | Method::Delete
                | Method::Options
                | Method::Trace
        )
    }

    /// Methods whose requests normally carry a body, so an empty one gets `content-length: 0`
    /// towards HTTP/1.1 backends.
    pub fn expects_body(self) -> bool {
        matches!(self, Method::Post | Method::Put | Method::Patch)
    }
}

/// A validated request head: the fields as received plus where the pseudo-headers are.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// Every field, pseudo-headers first, exactly as decoded.
    pub fields: FieldSection,
    /// The method, classified.
    pub method: Method,
    /// Declared body length.
    pub content_length: Option<u64>,
    idx_method: usize,
    idx_scheme: Option<usize>,
    idx_authority: Option<usize>,
    idx_path: Option<usize>,
    idx_host: Option<usize>,
    /// Index of the first regular (non-pseudo) field.
    first_regular: usize,
}

impl RequestHead {
    /// `:method` as sent.
    pub fn method_bytes(&self) -> &[u8] {
        self.value(self.idx_method)
    }

    /// `:scheme`, absent for CONNECT.
    pub fn scheme(&self) -> Option<&[u8]> {
        self.idx_scheme.map(|i| self.value(i))
    }

    /// `:authority`, or else `host`.
    pub fn authority(&self) -> Option<&[u8]> {
        self.idx_authority.or(self.idx_host).map(|i| self.value(i))
    }

    /// `:path`, absent for CONNECT.
    pub fn path(&self) -> Option<&[u8]> {
        self.idx_path.map(|i| self.value(i))
    }

    /// Regular fields (no pseudo-headers), in order.
    pub fn regular_fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields.iter().skip(self.first_regular)
    }

    fn value(&self, i: usize) -> &[u8] {
        self.fields.get(i).map(|(_, v)| v).unwrap_or_default()
    }
}

/// A validated response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// Every field as decoded.
    pub fields: FieldSection,
    /// `:status`.
    pub status: u16,
    /// Declared body length.
    pub content_length: Option<u64>,
    first_regular: usize,
}

impl ResponseHead {
    /// Regular fields (no pseudo-headers), in order.
    pub fn regular_fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields.iter().skip(self.first_regular)
    }

    /// True for 1xx responses, which a final response follows.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status)
    }
}

/// Fields HTTP/3 forbids because they describe the connection, not the message (RFC 9114 §4.2).
pub fn is_connection_specific(name: &[u8]) -> bool {
    matches!(
        name,
        b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade"
    )
}

/// RFC 9110 `tchar`, without uppercase letters (HTTP/3 field names are lowercase).
fn is_lower_tchar(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'0'..=b'9' | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+'
        | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// Checks a regular field name: non-empty lowercase token.
pub fn check_name(name: &[u8]) -> Result<(), Malformed> {
    if name.is_empty() {
        return Err(Malformed::InvalidName(String::new()));
    }
    for &b in name {
        if !is_lower_tchar(b) {
            let shown = String::from_utf8_lossy(name).into_owned();
            return Err(if b.is_ascii_uppercase() {
                Malformed::UppercaseName(shown)
            } else {
                Malformed::InvalidName(shown)
            });
        }
    }
    Ok(())
}

/// Checks a field value: no control characters other than HTAB (NUL, CR and LF among them:
/// RFC 9114 §4.2), no DEL, and no leading or trailing whitespace.
pub fn check_value(name: &[u8], value: &[u8]) -> Result<(), Malformed> {
    let bad_char = value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f);
    let padded =
        matches!(value.first(), Some(b' ' | b'\t')) || matches!(value.last(), Some(b' ' | b'\t'));
    if bad_char || padded {
        return Err(Malformed::InvalidValue(
            String::from_utf8_lossy(name).into_owned(),
        ));
    }
    Ok(())
}

/// Parses a `content-length` value, which may repeat one number in a list (`10, 10`).
fn parse_content_length(value: &[u8], current: Option<u64>) -> Result<u64, Malformed> {
    let mut result = current;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(Malformed::InvalidContentLength);
        }
        let n = part
            .iter()
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
        match result {
            Some(prev) if prev != n => return Err(Malformed::InvalidContentLength),
            _ => result = Some(n),
        }
    }
    result.ok_or(Malformed::InvalidContentLength)
}

fn valid_scheme(s: &[u8]) -> bool {
    matches!(s.first(), Some(c) if c.is_ascii_alphabetic())
        && s.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

/// `:authority` (host[:port]) without userinfo (RFC 9114 §4.3.1) and with URI characters only.
fn valid_authority(a: &[u8]) -> bool {
    !a.is_empty()
        && a.iter().all(|&c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b':'
                        | b'['
                        | b']'
                        | b'%'
                )
        })
}

/// `:path`: origin-form (starting with `/`) or `*`, visible ASCII only.
fn valid_path(p: &[u8]) -> bool {
    (p.first() == Some(&b'/') || p == b"*") && p.iter().all(|&c| c > 0x20 && c < 0x7f)
}

fn shown(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// Validates a decoded request header section.
pub fn validate_request(fields: FieldSection) -> Result<RequestHead, Malformed> {
    let mut idx_method = None;
    let mut idx_scheme = None;
    let mut idx_authority = None;
    let mut idx_path = None;
    let mut idx_host = None;
    let mut first_regular = None;
    let mut content_length = None;

    for (i, (name, value)) in fields.iter().enumerate() {
        if let Some(pseudo) = name.strip_prefix(b":") {
            if first_regular.is_some() {
                return Err(Malformed::PseudoAfterRegular(shown(name)));
            }
            let slot = match pseudo {
                b"method" => &mut idx_method,
                b"scheme" => &mut idx_scheme,
                b"authority" => &mut idx_authority,
                b"path" => &mut idx_path,
                _ => return Err(Malformed::UnknownPseudo(shown(name))),
            };
            if slot.is_some() {
                return Err(Malformed::DuplicatePseudo(shown(name)));
            }
            *slot = Some(i);
            check_value(name, value)?;
            continue;
        }
        first_regular.get_or_insert(i);
        check_name(name)?;
        check_value(name, value)?;
        if is_connection_specific(name) {
            return Err(Malformed::ConnectionSpecific(shown(name)));
        }
        match name {
            b"te" if !value.eq_ignore_ascii_case(b"trailers") => return Err(Malformed::InvalidTe),
            b"content-length" => {
                content_length = Some(parse_content_length(value, content_length)?)
            }
            b"host" => {
                if idx_host.is_some() {
                    return Err(Malformed::HostMismatch);
                }
                idx_host = Some(i);
            }
            _ => {}
        }
    }

    let value = |i: usize| fields.get(i).map(|(_, v)| v).unwrap_or_default();
    let idx_method = idx_method.ok_or(Malformed::MissingPseudo(":method"))?;
    let method_bytes = value(idx_method);
    if method_bytes.is_empty()
        || !method_bytes
            .iter()
            .all(|&b| is_lower_tchar(b.to_ascii_lowercase()))
    {
        return Err(Malformed::InvalidPseudo(":method"));
    }
    let method = Method::from_bytes(method_bytes);

    if let Some(i) = idx_authority {
        if !valid_authority(value(i)) {
            return Err(Malformed::InvalidPseudo(":authority"));
        }
    }
    if let Some(h) = idx_host {
        if !valid_authority(value(h)) {
            return Err(Malformed::InvalidValue("host".into()));
        }
        if let Some(a) = idx_authority {
            if value(a) != value(h) {
                return Err(Malformed::HostMismatch);
            }
        }
    }

    if method == Method::Connect {
        // RFC 9114 §4.4: plain CONNECT has only :method and :authority.
        if idx_scheme.is_some() || idx_path.is_some() {
            return Err(Malformed::ConnectWithSchemeOrPath);
        }
        if idx_authority.is_none() {
            return Err(Malformed::MissingPseudo(":authority"));
        }
    } else {
        let scheme = value(idx_scheme.ok_or(Malformed::MissingPseudo(":scheme"))?);
        if !valid_scheme(scheme) {
            return Err(Malformed::InvalidPseudo(":scheme"));
        }
        let path = value(idx_path.ok_or(Malformed::MissingPseudo(":path"))?);
        if !valid_path(path) || (path == b"*" && method != Method::Options) {
            return Err(Malformed::InvalidPseudo(":path"));
        }
        let needs_authority =
            scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https");
        if needs_authority && idx_authority.is_none() && idx_host.is_none() {
            return Err(Malformed::MissingAuthority);
        }
    }

    Ok(RequestHead {
        method,
        content_length,
        idx_method,
        idx_scheme,
        idx_authority,
        idx_path,
        idx_host,
        first_regular: first_regular.unwrap_or(fields.len()),
        fields,
    })
}

/// Validates a decoded response header section (from an HTTP/3 backend).
pub fn validate_response(fields: FieldSection) -> Result<ResponseHead, Malformed> {
    let mut status = None;
    let mut first_regular = None;
    let mut content_length = None;
    for (i, (name, value)) in fields.iter().enumerate() {
        if name.first() == Some(&b':') {
            if first_regular.is_some() {
                return Err(Malformed::PseudoAfterRegular(shown(name)));
            }
            if name != b":status" {
                return Err(Malformed::UnknownPseudo(shown(name)));
            }
            if status.is_some() {
                return Err(Malformed::DuplicatePseudo(shown(name)));
            }
            let code = match value {
                [a @ b'1'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9'] => {
                    u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
                }
                _ => return Err(Malformed::InvalidPseudo(":status")),
            };
            status = Some(code);
            continue;
        }
        first_regular.get_or_insert(i);
        check_name(name)?;
        check_value(name, value)?;
        if is_connection_specific(name) {
            return Err(Malformed::ConnectionSpecific(shown(name)));
        }
        if name == b"content-length" {
            content_length = Some(parse_content_length(value, content_length)?);
        }
    }
    let status = status.ok_or(Malformed::MissingPseudo(":status"))?;
    if status == 101 {
        // No upgrades in HTTP/3.
        return Err(Malformed::InvalidPseudo(":status"));
    }
    Ok(ResponseHead {
        status,
        content_length,
        first_regular: first_regular.unwrap_or(fields.len()),
        fields,
    })
}

/// Validates a trailer section: regular fields only, same character rules.
pub fn validate_trailers(fields: &FieldSection) -> Result<(), Malformed> {
    for (name, value) in fields.iter() {
        if name.first() == Some(&b':') {
            return Err(Malformed::UnknownPseudo(shown(name)));
        }
        check_name(name)?;
        check_value(name, value)?;
        if is_connection_specific(name) {
            return Err(Malformed::ConnectionSpecific(shown(name)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(fields: &[(&str, &str)]) -> FieldSection {
        fields
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect()
    }

    fn req(fields: &[(&str, &str)]) -> Result<RequestHead, Malformed> {
        validate_request(section(fields))
    }

    const BASE: [(&str, &str); 4] = [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "example.com"),
        (":path", "/"),
    ];

    fn with(extra: &[(&str, &str)]) -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<(&str, &str)> = BASE.to_vec();
        for (n, val) in extra {
            // Leak is fine in tests: keeps the helper signature simple.
            v.push((
                Box::leak(n.to_string().into_boxed_str()),
                Box::leak(val.to_string().into_boxed_str()),
            ));
        }
        v
    }

    #[test]
    fn well_formed_request() {
        let head = req(&with(&[("accept", "*/*"), ("content-length", "5")])).unwrap();
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.authority(), Some(&b"example.com"[..]));
        assert_eq!(head.path(), Some(&b"/"[..]));
        assert_eq!(head.content_length, Some(5));
        assert_eq!(head.regular_fields().count(), 2);
    }

    #[test]
    fn host_alone_is_authority() {
        let head = req(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/x"),
            ("host", "h"),
        ])
        .unwrap();
        assert_eq!(head.authority(), Some(&b"h"[..]));
    }

    #[test]
    fn malformed_requests() {
        let cases: Vec<(Vec<(&str, &str)>, Malformed)> = vec![
            (
                with(&[("Accept", "x")]),
                Malformed::UppercaseName("Accept".into()),
            ),
            (
                with(&[("bad name", "x")]),
                Malformed::InvalidName("bad name".into()),
            ),
            (with(&[("x", "a\0b")]), Malformed::InvalidValue("x".into())),
            (with(&[("x", "a\rb")]), Malformed::InvalidValue("x".into())),
            (with(&[("x", "a\nb")]), Malformed::InvalidValue("x".into())),
            (
                with(&[("x", " padded")]),
                Malformed::InvalidValue("x".into()),
            ),
            (
                with(&[("connection", "close")]),
                Malformed::ConnectionSpecific("connection".into()),
            ),
            (
                with(&[("keep-alive", "5")]),
                Malformed::ConnectionSpecific("keep-alive".into()),
            ),
            (
                with(&[("proxy-connection", "x")]),
                Malformed::ConnectionSpecific("proxy-connection".into()),
            ),
            (
                with(&[("transfer-encoding", "chunked")]),
                Malformed::ConnectionSpecific("transfer-encoding".into()),
            ),
            (
                with(&[("upgrade", "h2c")]),
                Malformed::ConnectionSpecific("upgrade".into()),
            ),
            (with(&[("te", "gzip")]), Malformed::InvalidTe),
            (with(&[("host", "other.com")]), Malformed::HostMismatch),
            (
                with(&[("content-length", "abc")]),
                Malformed::InvalidContentLength,
            ),
            (
                with(&[("content-length", "1, 2")]),
                Malformed::InvalidContentLength,
            ),
            (
                with(&[("x", "y"), (":path", "/late")]),
                Malformed::PseudoAfterRegular(":path".into()),
            ),
            (
                with(&[(":method", "POST")]),
                Malformed::DuplicatePseudo(":method".into()),
            ),
            (
                with(&[(":protocol", "websocket")]),
                Malformed::UnknownPseudo(":protocol".into()),
            ),
            (
                with(&[(":status", "200")]),
                Malformed::UnknownPseudo(":status".into()),
            ),
            (
                vec![(":scheme", "https"), (":authority", "a"), (":path", "/")],
                Malformed::MissingPseudo(":method"),
            ),
            (
                vec![(":method", "GET"), (":authority", "a"), (":path", "/")],
                Malformed::MissingPseudo(":scheme"),
            ),
            (
                vec![
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":authority", "a"),
                ],
                Malformed::MissingPseudo(":path"),
            ),
            (
                vec![(":method", "GET"), (":scheme", "https"), (":path", "/")],
                Malformed::MissingAuthority,
            ),
            (
                vec![
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":authority", "a"),
                    (":path", ""),
                ],
                Malformed::InvalidPseudo(":path"),
            ),
            (
                vec![
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":authority", "a"),
                    (":path", "*"),
                ],
                Malformed::InvalidPseudo(":path"),
            ),
            (
                vec![
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":authority", "u@a"),
                    (":path", "/"),
                ],
                Malformed::InvalidPseudo(":authority"),
            ),
            (
                vec![
                    (":method", "CONNECT"),
                    (":authority", "a:443"),
                    (":path", "/"),
                ],
                Malformed::ConnectWithSchemeOrPath,
            ),
            (
                vec![
                    (":method", "CONNECT"),
                    (":scheme", "https"),
                    (":authority", "a:443"),
                ],
                Malformed::ConnectWithSchemeOrPath,
            ),
            (
                vec![(":method", "CONNECT")],
                Malformed::MissingPseudo(":authority"),
            ),
        ];
        for (fields, expected) in cases {
            assert_eq!(req(&fields).unwrap_err(), expected, "{fields:?}");
        }
    }

    #[test]
    fn te_trailers_and_options_star_are_fine() {
        assert!(req(&with(&[("te", "trailers")])).is_ok());
        let head = req(&[
            (":method", "OPTIONS"),
            (":scheme", "https"),
            (":authority", "a"),
            (":path", "*"),
        ])
        .unwrap();
        assert_eq!(head.method, Method::Options);
        let connect = req(&[(":method", "CONNECT"), (":authority", "a:443")]).unwrap();
        assert_eq!(connect.method, Method::Connect);
    }

    #[test]
    fn responses() {
        let ok =
            validate_response(section(&[(":status", "200"), ("content-length", "3")])).unwrap();
        assert_eq!(ok.status, 200);
        assert_eq!(ok.content_length, Some(3));
        assert!(
            validate_response(section(&[(":status", "103")]))
                .unwrap()
                .is_interim()
        );
        for bad in [
            vec![("content-type", "x")],
            vec![(":status", "20")],
            vec![(":status", "200"), (":status", "200")],
            vec![(":status", "101")],
            vec![(":status", "200"), ("connection", "close")],
            vec![(":status", "200"), (":path", "/")],
            vec![("x", "y"), (":status", "200")],
        ] {
            assert!(validate_response(section(&bad)).is_err(), "{bad:?}");
        }
    }
}
