//! HTTP/1.1 client codec for upstream connections (RFC 9112).
//!
//! Spooky turns HTTP/3 requests into HTTP/1.1 requests sent to backends over keep-alive TCP
//! connections, and turns the backends' HTTP/1.1 responses back into HTTP/3 responses. This
//! module is the pure codec for the HTTP/1.1 side; it never touches a socket:
//!
//! * [`write_request_head`] serializes a request line and header section, with the body framed
//!   as described by [`RequestBodyFraming`]; [`write_chunk_header`], [`CHUNK_TRAILER_CRLF`] and
//!   [`write_last_chunk`] apply the chunked transfer coding to a request body.
//! * [`ResponseParser`] incrementally parses one response: interim (1xx) heads, the final head,
//!   the body (de-chunked when needed, returned as zero-copy slices of the input) and trailers.
//!   It decides the body length by the rules of RFC 9112 §6.3 and whether the connection may
//!   carry another request afterwards.
//!
//! Header fields handed back are ready for HTTP/3: names are lowercased and connection-specific
//! fields (RFC 9110 §7.6.1) are removed.

mod block;
mod chunked;
mod request;
mod response;

pub use chunked::{CHUNK_TRAILER_CRLF, write_chunk_header, write_last_chunk};
pub use request::{RequestBodyFraming, write_request_head};
pub use response::{ParseError, ParserLimits, ResponseEvent, ResponseHead, ResponseParser};
