//! Incremental parsing of HTTP/1.1 responses (RFC 9112 §4, §6 and §7).

use bytes::{Buf, Bytes};
use smallvec::SmallVec;

use super::block::{BlockParse, FieldBlock};
use super::chunked::{ChunkedDecoder, ChunkedEvent};
use crate::fields::FieldSection;

/// Limits protecting the parser from oversized heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParserLimits {
    /// Maximum size in bytes of a response head (status line and header section, empty line
    /// included), and of a trailer section.
    pub max_head_size: usize,
    /// Maximum number of field lines in a header or trailer section.
    pub max_headers: usize,
}

impl Default for ParserLimits {
    /// 64 KiB and 128 fields.
    fn default() -> Self {
        Self {
            max_head_size: 64 * 1024,
            max_headers: 128,
        }
    }
}

/// A response status line and header section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code, 100 to 599.
    pub status: u16,
    /// Header fields ready for HTTP/3: names lowercased, and connection-specific fields removed
    /// (`connection`, `keep-alive`, `proxy-connection`, `transfer-encoding`, `upgrade`, `te`,
    /// plus every field named in a `Connection` header's value).
    ///
    /// `content-length` is kept, as a single field, when it frames the body; it is also kept
    /// when valid in responses to HEAD and in 304 responses (where it describes the selected
    /// representation), and removed everywhere else.
    pub fields: FieldSection,
    /// Body length if known from `content-length` (`None` for chunked, close-delimited and
    /// bodiless responses).
    pub content_length: Option<u64>,
    /// True if the response has no body at all (responses to HEAD, 1xx, 204, 304).
    pub no_body: bool,
}

/// What [`ResponseParser`] found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseEvent {
    /// A status line and header fields. Status 100..=199 (101 excepted, which is an error) are
    /// interim: more heads follow, and the parser resets itself for the final head.
    Head(ResponseHead),
    /// Body bytes (already de-chunked), never empty.
    Body(Bytes),
    /// Trailer fields of a chunked body (filtered like head fields, and never empty).
    Trailers(FieldSection),
    /// The response is complete.
    End {
        /// Whether the connection may carry another request.
        keep_alive: bool,
    },
}

/// Why a response could not be parsed. After an error the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The status line is malformed.
    #[error("malformed status line")]
    InvalidStatusLine,
    /// The response is neither HTTP/1.0 nor HTTP/1.1.
    #[error("unsupported HTTP version (only HTTP/1.0 and HTTP/1.1 are accepted)")]
    UnsupportedVersion,
    /// The status code is outside 100..=599.
    #[error("invalid status code {0}")]
    InvalidStatus(u16),
    /// The backend switched protocols, which Spooky never asks for.
    #[error("unexpected 101 Switching Protocols response")]
    SwitchingProtocols,
    /// A 2xx response to CONNECT would turn the connection into a tunnel.
    #[error("successful response to CONNECT (tunnels are not supported)")]
    ConnectNotSupported,
    /// A header line is continued on the next line (obs-fold, RFC 9112 §5.2).
    #[error("obsolete line folding in a field section")]
    ObsFold,
    /// A field name is empty or contains a character outside `token`.
    #[error("invalid field name")]
    InvalidHeaderName,
    /// A field value contains a forbidden character (such as CR, LF or NUL).
    #[error("invalid field value")]
    InvalidHeaderValue,
    /// A line ending in the head is malformed.
    #[error("invalid line ending in the response head")]
    InvalidLineEnding,
    /// The response head exceeds `max_head_size`.
    #[error("response head exceeds the size limit")]
    HeadTooLarge,
    /// The trailer section exceeds `max_head_size`.
    #[error("trailer section exceeds the size limit")]
    TrailersTooLarge,
    /// The head or trailer section has more than `max_headers` fields.
    #[error("too many fields in a header or trailer section")]
    TooManyHeaders,
    /// A `Content-Length` value is not a non-negative decimal number.
    #[error("invalid content-length")]
    InvalidContentLength,
    /// `Content-Length` values disagree.
    #[error("conflicting content-length values")]
    ConflictingContentLength,
    /// The `Transfer-Encoding` header is empty or applies chunked more than once.
    #[error("invalid transfer-encoding")]
    InvalidTransferEncoding,
    /// A chunk-size line does not start with a hexadecimal size.
    #[error("invalid chunk size")]
    InvalidChunkSize,
    /// A chunk size has more than 16 hexadecimal digits.
    #[error("chunk size too large")]
    ChunkSizeTooLarge,
    /// A chunk extension contains a control character.
    #[error("invalid chunk extension")]
    InvalidChunkExtension,
    /// The chunk extensions of one line are too long.
    #[error("chunk extension too long")]
    ChunkExtensionTooLong,
    /// A chunk-size line does not end in CRLF.
    #[error("chunk-size line not ended by CRLF")]
    InvalidChunkLineEnding,
    /// Chunk data is not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    MissingChunkDataCrlf,
    /// The connection closed before any byte of the response arrived.
    #[error("connection closed before the response started")]
    ClosedBeforeResponse,
    /// The connection closed in the middle of a response head.
    #[error("connection closed in the middle of the response head")]
    IncompleteHead,
    /// The connection closed before the end of the body.
    #[error("connection closed before the end of the response body")]
    IncompleteBody,
}

/// How the body of the response being parsed is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    None,
    Length(u64),
    Chunked,
    Close,
}

#[derive(Debug)]
enum State {
    /// Waiting for a (final or interim) head.
    Head,
    /// Inside a content-length body; `End` is due when it reaches 0.
    Length(u64),
    /// Inside a chunked body.
    Chunked(ChunkedDecoder),
    /// Inside a body delimited by the end of the connection.
    Close,
    /// `End` was returned.
    Done,
    /// An error was returned; it is returned again on every call.
    Failed(ParseError),
}

/// Incremental parser of one response on a connection.
///
/// Feed it with [`parse`](Self::parse) until it returns `Ok(None)` (more input needed), an
/// error, or [`ResponseEvent::End`]; when the connection reaches end of file, call
/// [`on_eof`](Self::on_eof) after parsing every byte received.
#[derive(Debug)]
pub struct ResponseParser {
    limits: ParserLimits,
    head_request: bool,
    connect_request: bool,
    state: State,
    head: FieldBlock,
    /// Whether any byte of a response was received.
    started: bool,
    keep_alive: bool,
    /// Lowercased field names listed in the final head's `Connection` header.
    connection_names: Vec<Vec<u8>>,
}

impl ResponseParser {
    /// A parser for the response to a request with method `request_method`, which decides the
    /// body rules: responses to HEAD have no body, and a 2xx response to CONNECT is an error.
    pub fn new(request_method: &[u8], limits: ParserLimits) -> Self {
        Self {
            limits,
            head_request: request_method == b"HEAD",
            connect_request: request_method == b"CONNECT",
            state: State::Head,
            head: FieldBlock::new(),
            started: false,
            keep_alive: false,
            connection_names: Vec::new(),
        }
    }

    /// Consumes bytes from `input` and returns the next event, or `Ok(None)` when more input
    /// is needed.
    ///
    /// Consumed bytes are removed from the front of `input`; bytes not yet consumed stay there
    /// (a partial head is buffered internally, up to `limits.max_head_size`). Body bytes are
    /// zero-copy slices of `input`. Bytes after the end of the response are never consumed.
    /// After `End`, returns `Ok(None)`; after an error, returns the same error again.
    pub fn parse(&mut self, input: &mut Bytes) -> Result<Option<ResponseEvent>, ParseError> {
        let result = self.parse_inner(input);
        if let Err(e) = &result {
            self.state = State::Failed(e.clone());
        }
        result
    }

    /// The peer closed the connection (call after parsing all received bytes): returns
    /// `Ok(Some(End))` if the body was delimited by the close (or was already complete), an
    /// error if the response was incomplete, and `Ok(None)` if `End` was already returned.
    pub fn on_eof(&mut self) -> Result<Option<ResponseEvent>, ParseError> {
        let result = match &self.state {
            State::Failed(e) => Err(e.clone()),
            State::Done => Ok(None),
            State::Head if !self.started => Err(ParseError::ClosedBeforeResponse),
            State::Head => {
                // Report what is wrong with the partial head, if anything, rather than its
                // incompleteness (as when it arrives whole).
                let request = self.request_kind();
                match parse_head(self.head.buffered(), self.limits.max_headers, request) {
                    Err(e) => Err(e),
                    Ok(_) => Err(ParseError::IncompleteHead),
                }
            }
            State::Chunked(decoder) if decoder.is_done() => Ok(Some(self.finish(false))),
            State::Length(0) | State::Close => Ok(Some(self.finish(false))),
            State::Length(_) | State::Chunked(_) => Err(ParseError::IncompleteBody),
        };
        if let Err(e) = &result {
            self.state = State::Failed(e.clone());
        }
        result
    }

    /// True once `End` was returned.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn request_kind(&self) -> RequestKind {
        RequestKind {
            head: self.head_request,
            connect: self.connect_request,
        }
    }

    fn finish(&mut self, keep_alive: bool) -> ResponseEvent {
        self.state = State::Done;
        ResponseEvent::End { keep_alive }
    }

    fn parse_inner(&mut self, input: &mut Bytes) -> Result<Option<ResponseEvent>, ParseError> {
        match &mut self.state {
            State::Failed(e) => Err(e.clone()),
            State::Done => Ok(None),
            State::Head => {
                if !input.is_empty() {
                    self.started = true;
                }
                if self.head.buffered().is_empty() && !skip_empty_lines(input) {
                    return Ok(None);
                }
                let limits = self.limits;
                let request = self.request_kind();
                let parsed = self.head.feed(
                    input,
                    limits.max_head_size,
                    ParseError::HeadTooLarge,
                    |buf| parse_head(buf, limits.max_headers, request),
                )?;
                let Some(parsed) = parsed else {
                    return Ok(None);
                };
                if !parsed.interim {
                    self.keep_alive = parsed.keep_alive;
                    self.connection_names = parsed.connection_names;
                    self.state = match parsed.body {
                        BodyKind::None => State::Length(0),
                        BodyKind::Length(n) => State::Length(n),
                        BodyKind::Chunked => State::Chunked(ChunkedDecoder::new()),
                        BodyKind::Close => State::Close,
                    };
                }
                Ok(Some(ResponseEvent::Head(parsed.head)))
            }
            State::Length(0) => Ok(Some(self.finish(self.keep_alive))),
            State::Length(remaining) => {
                if input.is_empty() {
                    return Ok(None);
                }
                let n = (*remaining).min(input.len() as u64);
                *remaining -= n;
                Ok(Some(ResponseEvent::Body(input.split_to(n as usize))))
            }
            State::Close => {
                if input.is_empty() {
                    return Ok(None);
                }
                Ok(Some(ResponseEvent::Body(input.split_to(input.len()))))
            }
            State::Chunked(decoder) => match decoder.decode(input, &self.limits)? {
                None => Ok(None),
                Some(ChunkedEvent::Data(data)) => Ok(Some(ResponseEvent::Body(data))),
                Some(ChunkedEvent::Trailers(raw)) => {
                    let mut trailers = FieldSection::new();
                    for (name, value) in raw.iter() {
                        if !is_connection_specific(name)
                            && name != b"content-length"
                            && !self.connection_names.iter().any(|n| n == name)
                        {
                            trailers.push(name, value);
                        }
                    }
                    if trailers.is_empty() {
                        Ok(Some(self.finish(self.keep_alive)))
                    } else {
                        Ok(Some(ResponseEvent::Trailers(trailers)))
                    }
                }
                Some(ChunkedEvent::End) => Ok(Some(self.finish(self.keep_alive))),
            },
        }
    }
}

/// Consumes empty lines (CRLF or LF) at the start of `input`, as RFC 9112 §2.2 suggests
/// tolerating before a start line. Returns false if `input` ends with a CR that may start one
/// more (it is left in `input`, unconsumed, until more bytes arrive).
fn skip_empty_lines(input: &mut Bytes) -> bool {
    let skip = {
        let mut at = 0;
        loop {
            match input[at..] {
                [b'\n', ..] => at += 1,
                [b'\r', b'\n', ..] => at += 2,
                [b'\r'] => break None,
                _ => break Some(at),
            }
        }
    };
    match skip {
        Some(n) => {
            input.advance(n);
            true
        }
        None => {
            input.advance(input.len() - 1);
            false
        }
    }
}

/// What the request method implies for the response.
#[derive(Debug, Clone, Copy)]
struct RequestKind {
    head: bool,
    connect: bool,
}

/// A head, interpreted.
#[derive(Debug)]
struct ParsedHead {
    head: ResponseHead,
    interim: bool,
    body: BodyKind,
    keep_alive: bool,
    connection_names: Vec<Vec<u8>>,
}

/// Parses a response head with `httparse` and interprets it.
fn parse_head(buf: &[u8], max_headers: usize, request: RequestKind) -> BlockParse<ParsedHead> {
    let mut on_stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut on_heap = Vec::new();
    let headers = header_slots(buf, max_headers, &mut on_stack, &mut on_heap);
    let mut response = httparse::Response::new(headers);
    match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let (Some(version), Some(status)) = (response.version, response.code) else {
                return Err(ParseError::InvalidStatusLine);
            };
            let parsed = interpret_head(version, status, response.headers, request)?;
            Ok(Some((len, parsed)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(map_httparse_error(e, buf, false)),
    }
}

/// Size of the `httparse` header array for a block of `buf`: `max_headers`, but no more than
/// the block can hold (a field line takes at least 3 bytes), so that a generous limit does not
/// cost a large allocation per parse.
pub(crate) fn header_capacity(buf: &[u8], max_headers: usize) -> usize {
    max_headers.min(buf.len() / 3 + 1)
}

/// Header slots kept on the stack; heads with more fields use the heap.
pub(crate) const STACK_HEADERS: usize = 48;

/// The `httparse` header array for `buf`: stack slots when they suffice, else heap slots.
pub(crate) fn header_slots<'a, 'h>(
    buf: &[u8],
    max_headers: usize,
    on_stack: &'a mut [httparse::Header<'h>; STACK_HEADERS],
    on_heap: &'a mut Vec<httparse::Header<'h>>,
) -> &'a mut [httparse::Header<'h>] {
    let capacity = header_capacity(buf, max_headers);
    if capacity <= STACK_HEADERS {
        &mut on_stack[..capacity]
    } else {
        *on_heap = vec![httparse::EMPTY_HEADER; capacity];
        on_heap
    }
}

/// Translates an `httparse` error; `after_line_end` tells whether `buf` follows a line ending
/// (trailer sections), so that leading whitespace is a line continuation.
pub(crate) fn map_httparse_error(
    e: httparse::Error,
    buf: &[u8],
    after_line_end: bool,
) -> ParseError {
    match e {
        httparse::Error::HeaderName if is_obs_fold(buf, after_line_end) => ParseError::ObsFold,
        httparse::Error::HeaderName => ParseError::InvalidHeaderName,
        httparse::Error::HeaderValue => ParseError::InvalidHeaderValue,
        httparse::Error::NewLine => ParseError::InvalidLineEnding,
        httparse::Error::Status | httparse::Error::Token => ParseError::InvalidStatusLine,
        httparse::Error::TooManyHeaders => ParseError::TooManyHeaders,
        httparse::Error::Version => ParseError::UnsupportedVersion,
    }
}

/// True if a line of the field block in `buf` starts with whitespace (an obs-fold).
fn is_obs_fold(buf: &[u8], after_line_end: bool) -> bool {
    if after_line_end && matches!(buf.first(), Some(b' ' | b'\t')) {
        return true;
    }
    let mut at_line_start = false;
    for (i, &b) in buf.iter().enumerate() {
        if at_line_start {
            match b {
                b' ' | b'\t' => return true,
                // An empty line ends the block.
                b'\n' => return false,
                b'\r' if buf.get(i + 1) == Some(&b'\n') => return false,
                _ => {}
            }
        }
        at_line_start = b == b'\n';
    }
    false
}

/// The field name lowercased (names are short: no allocation below 32 bytes).
pub(crate) fn lowercase_name(name: &[u8]) -> SmallVec<[u8; 32]> {
    name.iter().map(u8::to_ascii_lowercase).collect()
}

/// Connection-specific fields (RFC 9110 §7.6.1, RFC 9114 §4.2), lowercase.
const CONNECTION_SPECIFIC: [&[u8]; 6] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"upgrade",
    b"te",
];

fn is_connection_specific(lowercase: &[u8]) -> bool {
    CONNECTION_SPECIFIC.contains(&lowercase)
}

/// Splits a comma-separated list value into its non-empty elements, trimmed of whitespace.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Parses `1*DIGIT` into a `u64`.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Applies RFC 9112 §6.3 (body length), §9.3 (persistence) and RFC 9110 §7.6.1 (field
/// filtering) to a parsed head.
fn interpret_head(
    version: u8,
    status: u16,
    headers: &[httparse::Header<'_>],
    request: RequestKind,
) -> Result<ParsedHead, ParseError> {
    if !(100..=599).contains(&status) {
        return Err(ParseError::InvalidStatus(status));
    }
    if status == 101 {
        return Err(ParseError::SwitchingProtocols);
    }
    if request.connect && (200..300).contains(&status) {
        return Err(ParseError::ConnectNotSupported);
    }
    let interim = status < 200;
    let no_body = interim || request.head || status == 204 || status == 304;

    // Connection options, transfer codings and content length.
    let mut close = false;
    let mut keep_alive_option = false;
    let mut connection_names = Vec::new();
    let mut transfer_encoding = false;
    let mut codings = 0usize;
    let mut chunked_count = 0usize;
    let mut last_chunked = false;
    let mut content_length_present = false;
    let mut content_length: Result<Option<u64>, ParseError> = Ok(None);
    for h in headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") {
            for option in list_elements(h.value) {
                let option = lowercase_name(option);
                match &option[..] {
                    b"close" => close = true,
                    b"keep-alive" => keep_alive_option = true,
                    _ => {}
                }
                if !connection_names
                    .iter()
                    .any(|n: &Vec<u8>| n[..] == option[..])
                {
                    connection_names.push(option.to_vec());
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            for coding in list_elements(h.value) {
                let coding_name = trim_ows(coding.split(|&b| b == b';').next().unwrap_or(b""));
                codings += 1;
                last_chunked = coding_name.eq_ignore_ascii_case(b"chunked");
                chunked_count += usize::from(last_chunked);
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            content_length_present = true;
            for element in h.value.split(|&b| b == b',').map(trim_ows) {
                content_length =
                    content_length.and_then(|known| match (known, parse_decimal(element)) {
                        (_, None) => Err(ParseError::InvalidContentLength),
                        (None, Some(n)) => Ok(Some(n)),
                        (Some(k), Some(n)) if k == n => Ok(Some(k)),
                        (Some(_), Some(_)) => Err(ParseError::ConflictingContentLength),
                    });
            }
        }
    }

    let mut keep_alive = if version == 1 {
        !close
    } else {
        keep_alive_option && !close
    };
    if version == 0 && transfer_encoding {
        // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.
        keep_alive = false;
    }

    // Body length (RFC 9112 §6.3), and which content-length to pass on.
    let (body, kept_length) = if no_body {
        let kept = if interim || status == 204 {
            None
        } else {
            content_length.unwrap_or(None)
        };
        (BodyKind::None, kept)
    } else if transfer_encoding {
        if codings == 0 || chunked_count > 1 {
            return Err(ParseError::InvalidTransferEncoding);
        }
        if last_chunked {
            if content_length_present {
                keep_alive = false;
            }
            (BodyKind::Chunked, None)
        } else {
            keep_alive = false;
            (BodyKind::Close, None)
        }
    } else {
        match content_length? {
            Some(n) => (BodyKind::Length(n), Some(n)),
            None => {
                keep_alive = false;
                (BodyKind::Close, None)
            }
        }
    };

    // Fields for HTTP/3.
    let bytes: usize = headers.iter().map(|h| h.name.len() + h.value.len()).sum();
    let mut fields = FieldSection::with_capacity(bytes, headers.len());
    let mut length_written = false;
    for h in headers {
        let name = lowercase_name(h.name.as_bytes());
        if &name[..] == b"content-length" {
            if let (Some(n), false) = (kept_length, length_written) {
                let mut digits = Vec::with_capacity(20);
                super::request::write_decimal(n, &mut digits);
                fields.push(&name, &digits);
                length_written = true;
            }
            continue;
        }
        if is_connection_specific(&name) || connection_names.iter().any(|n| n[..] == name[..]) {
            continue;
        }
        fields.push(&name, h.value);
    }

    Ok(ParsedHead {
        head: ResponseHead {
            status,
            fields,
            content_length: match body {
                BodyKind::Length(n) => Some(n),
                _ => None,
            },
            no_body,
        },
        interim,
        body,
        keep_alive,
        connection_names: if interim {
            Vec::new()
        } else {
            connection_names
        },
    })
}

#[cfg(test)]
mod tests;
