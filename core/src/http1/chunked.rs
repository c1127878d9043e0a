//! The chunked transfer coding (RFC 9112 §7.1): helpers writing request bodies, and the
//! incremental decoder of response bodies.
//!
//! The decoder is strict about framing: every line of the coding must end in CRLF, a chunk
//! size has at most 16 hexadecimal digits, and chunk extensions are skipped but bounded.

use bytes::{Buf, Bytes};

use super::block::{BlockParse, FieldBlock};
use super::request::{write_field, write_hex};
use super::response::{
    ParseError, ParserLimits, STACK_HEADERS, header_slots, lowercase_name, map_httparse_error,
};
use crate::fields::FieldSection;

/// The CRLF that ends every chunk's data.
pub const CHUNK_TRAILER_CRLF: &[u8] = b"\r\n";

/// Appends the line that starts a chunk of `len` bytes, `{len:x}\r\n`.
///
/// `len` must not be 0, since a zero size announces the last chunk (use [`write_last_chunk`]);
/// empty data should simply not be sent. A zero `len` writes nothing. The chunk's data and then
/// [`CHUNK_TRAILER_CRLF`] follow.
pub fn write_chunk_header(len: usize, out: &mut Vec<u8>) {
    debug_assert!(len > 0, "a chunk of length 0 is the last chunk");
    if len == 0 {
        return;
    }
    write_hex(len as u64, out);
    out.extend_from_slice(b"\r\n");
}

/// Appends the end of a chunked body: the last chunk `0\r\n`, the trailer fields if any (written
/// as `name: value\r\n`, already filtered by the caller) and the final `\r\n`.
pub fn write_last_chunk(trailers: Option<&FieldSection>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    if let Some(trailers) = trailers {
        for (name, value) in trailers.iter() {
            write_field(name, value, out);
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Maximum number of hexadecimal digits of a chunk size (a `u64`).
const MAX_SIZE_DIGITS: u8 = 16;

/// Maximum length of the chunk extensions (and whitespace) on one chunk-size line.
pub(crate) const MAX_CHUNK_EXT_LEN: usize = 4096;

/// What the decoder produced.
#[derive(Debug)]
pub(crate) enum ChunkedEvent {
    /// Chunk data, a slice of the input.
    Data(Bytes),
    /// The trailer section, not empty; names are lowercased but nothing is filtered.
    Trailers(Box<FieldSection>),
    /// The body is complete.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Reading the hexadecimal chunk size.
    Size { size: u64, digits: u8 },
    /// After the size: optional whitespace and extensions, up to the CR.
    Extension {
        size: u64,
        len: usize,
        seen_semicolon: bool,
    },
    /// Expecting the LF that ends the chunk-size line.
    SizeLf { size: u64 },
    /// Inside chunk data.
    Data { remaining: u64 },
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// Reading the trailer section.
    Trailers,
    /// Everything was read; the end is to be reported.
    Done,
}

/// Incremental decoder of a chunked body.
#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    step: Step,
    trailers: FieldBlock,
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub(crate) fn new() -> Self {
        Self {
            step: Step::Size { size: 0, digits: 0 },
            trailers: FieldBlock::new(),
        }
    }

    /// True once the whole body, trailers included, was read.
    pub(crate) fn is_done(&self) -> bool {
        self.step == Step::Done
    }

    /// Consumes framing bytes from `input` and returns the next event, or `Ok(None)` when
    /// `input` was used up first. Bytes after the body stay in `input`.
    pub(crate) fn decode(
        &mut self,
        input: &mut Bytes,
        limits: &ParserLimits,
    ) -> Result<Option<ChunkedEvent>, ParseError> {
        loop {
            match self.step {
                Step::Data { remaining } => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let n = remaining.min(input.len() as u64);
                    let data = input.split_to(n as usize);
                    let remaining = remaining - n;
                    self.step = if remaining == 0 {
                        Step::DataCr
                    } else {
                        Step::Data { remaining }
                    };
                    return Ok(Some(ChunkedEvent::Data(data)));
                }
                Step::Trailers => {
                    let max_headers = limits.max_headers;
                    let parsed = self.trailers.feed(
                        input,
                        limits.max_head_size,
                        ParseError::TrailersTooLarge,
                        |buf| parse_trailers(buf, max_headers),
                    )?;
                    let Some(trailers) = parsed else {
                        return Ok(None);
                    };
                    self.step = Step::Done;
                    if !trailers.is_empty() {
                        return Ok(Some(ChunkedEvent::Trailers(Box::new(trailers))));
                    }
                }
                Step::Done => return Ok(Some(ChunkedEvent::End)),
                _ => {
                    // Framing bytes, one at a time, until data, trailers or the end of input.
                    let mut used = 0;
                    let mut result = Ok(());
                    for &b in input.iter() {
                        used += 1;
                        result = self.framing_byte(b);
                        if result.is_err()
                            || matches!(self.step, Step::Data { .. } | Step::Trailers)
                        {
                            break;
                        }
                    }
                    input.advance(used);
                    result?;
                    if !matches!(self.step, Step::Data { .. } | Step::Trailers) {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Advances the framing state machine by one byte.
    fn framing_byte(&mut self, b: u8) -> Result<(), ParseError> {
        self.step = match self.step {
            Step::Size { size, digits } => match hex_value(b) {
                Some(v) if digits < MAX_SIZE_DIGITS => Step::Size {
                    size: (size << 4) | u64::from(v),
                    digits: digits + 1,
                },
                Some(_) => return Err(ParseError::ChunkSizeTooLarge),
                None if digits == 0 => return Err(ParseError::InvalidChunkSize),
                None => {
                    self.step = Step::Extension {
                        size,
                        len: 0,
                        seen_semicolon: false,
                    };
                    return self.framing_byte(b);
                }
            },
            Step::Extension {
                size,
                len,
                seen_semicolon,
            } => {
                if b == b'\r' {
                    Step::SizeLf { size }
                } else {
                    let seen_semicolon = match b {
                        b';' => true,
                        b' ' | b'\t' => seen_semicolon,
                        // Anything but whitespace before the first ';' is a malformed size.
                        _ if !seen_semicolon => return Err(ParseError::InvalidChunkSize),
                        0x21..=0x7e | 0x80..=0xff => true,
                        _ => return Err(ParseError::InvalidChunkExtension),
                    };
                    let len = len + 1;
                    if len > MAX_CHUNK_EXT_LEN {
                        return Err(ParseError::ChunkExtensionTooLong);
                    }
                    Step::Extension {
                        size,
                        len,
                        seen_semicolon,
                    }
                }
            }
            Step::SizeLf { size } => {
                if b != b'\n' {
                    return Err(ParseError::InvalidChunkLineEnding);
                }
                if size == 0 {
                    Step::Trailers
                } else {
                    Step::Data { remaining: size }
                }
            }
            Step::DataCr if b == b'\r' => Step::DataLf,
            Step::DataLf if b == b'\n' => Step::Size { size: 0, digits: 0 },
            Step::DataCr | Step::DataLf => return Err(ParseError::MissingChunkDataCrlf),
            Step::Data { .. } | Step::Trailers | Step::Done => {
                unreachable!("not a framing step")
            }
        };
        Ok(())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Parses a trailer section (field lines then an empty line) with `httparse`.
fn parse_trailers(buf: &[u8], max_headers: usize) -> BlockParse<FieldSection> {
    let mut on_stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut on_heap = Vec::new();
    let headers = header_slots(buf, max_headers, &mut on_stack, &mut on_heap);
    match httparse::parse_headers(buf, headers) {
        Ok(httparse::Status::Complete((len, headers))) => {
            let mut fields = FieldSection::new();
            for h in headers {
                fields.push(&lowercase_name(h.name.as_bytes()), h.value);
            }
            Ok(Some((len, fields)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(map_httparse_error(e, buf, true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Body and trailers of a decoded body.
    type Decoded = (Vec<u8>, Option<FieldSection>);

    fn decode_all(wire: &[u8]) -> (Result<Decoded, ParseError>, Bytes) {
        let mut input = Bytes::copy_from_slice(wire);
        let mut decoder = ChunkedDecoder::new();
        let limits = ParserLimits::default();
        let mut body = Vec::new();
        let mut trailers = None;
        loop {
            match decoder.decode(&mut input, &limits) {
                Ok(Some(ChunkedEvent::Data(d))) => body.extend_from_slice(&d),
                Ok(Some(ChunkedEvent::Trailers(t))) => trailers = Some(*t),
                Ok(Some(ChunkedEvent::End)) => return (Ok((body, trailers)), input),
                Ok(None) => return (Err(ParseError::IncompleteBody), input),
                Err(e) => return (Err(e), input),
            }
        }
    }

    #[test]
    fn writers() {
        let mut out = Vec::new();
        write_chunk_header(5, &mut out);
        out.extend_from_slice(b"hello");
        out.extend_from_slice(CHUNK_TRAILER_CRLF);
        write_chunk_header(0x1a2b, &mut out);
        assert_eq!(out, b"5\r\nhello\r\n1a2b\r\n");

        let mut out = Vec::new();
        write_last_chunk(None, &mut out);
        assert_eq!(out, b"0\r\n\r\n");

        let mut trailers = FieldSection::new();
        trailers.push(b"grpc-status", b"0");
        trailers.push(b"x-checksum", b"abc");
        let mut out = Vec::new();
        write_last_chunk(Some(&trailers), &mut out);
        assert_eq!(out, b"0\r\ngrpc-status: 0\r\nx-checksum: abc\r\n\r\n");

        let mut out = Vec::new();
        write_last_chunk(Some(&FieldSection::new()), &mut out);
        assert_eq!(out, b"0\r\n\r\n");
    }

    #[test]
    fn writer_round_trip() {
        let mut wire = Vec::new();
        for piece in [&b"a"[..], &[7u8; 300][..], b"\r\n0\r\n"] {
            write_chunk_header(piece.len(), &mut wire);
            wire.extend_from_slice(piece);
            wire.extend_from_slice(CHUNK_TRAILER_CRLF);
        }
        let mut trailers = FieldSection::new();
        trailers.push(b"x-t", b"1");
        write_last_chunk(Some(&trailers), &mut wire);
        let (result, rest) = decode_all(&wire);
        let (body, got) = result.unwrap();
        let mut expected = b"a".to_vec();
        expected.extend_from_slice(&[7u8; 300]);
        expected.extend_from_slice(b"\r\n0\r\n");
        assert_eq!(body, expected);
        assert_eq!(got, Some(trailers));
        assert!(rest.is_empty());
    }

    #[test]
    fn extensions_and_trailers() {
        let wire = b"4;name=value;flag\r\nWiki\r\n5 ; quoted=\"a b;c\"\r\npedia\r\n\
                     E\r\n in\r\n\r\nchunks.\r\n0;last\r\nExpires: never\r\nX-Sum: 12\r\n\r\nNEXT";
        let (result, rest) = decode_all(wire);
        let (body, trailers) = result.unwrap();
        assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.");
        let trailers = trailers.unwrap();
        assert_eq!(trailers.find(b"expires"), Some(&b"never"[..]));
        assert_eq!(trailers.find(b"x-sum"), Some(&b"12"[..]));
        assert_eq!(rest, &b"NEXT"[..]);
    }

    #[test]
    fn no_trailers_leaves_rest() {
        let (result, rest) = decode_all(b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1");
        assert_eq!(result.unwrap(), (b"abc".to_vec(), None));
        assert_eq!(rest, &b"HTTP/1.1"[..]);
    }

    #[test]
    fn size_limits() {
        let (result, _) = decode_all(b"ffffffffffffffff\r\n");
        assert_eq!(result, Err(ParseError::IncompleteBody));
        let (result, _) = decode_all(b"00000000000000001\r\nx\r\n0\r\n\r\n");
        assert_eq!(result, Err(ParseError::ChunkSizeTooLarge));
        let (result, _) = decode_all(b"10000000000000000\r\n");
        assert_eq!(result, Err(ParseError::ChunkSizeTooLarge));
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_CHUNK_EXT_LEN));
        long.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        let (result, _) = decode_all(&long);
        assert_eq!(result, Err(ParseError::ChunkExtensionTooLong));
        // One byte less is fine.
        long.remove(2);
        let (result, _) = decode_all(&long);
        assert_eq!(result.unwrap().0, b"x");
    }

    #[test]
    fn malformed() {
        for (wire, error) in [
            (&b"\r\n"[..], ParseError::InvalidChunkSize),
            (b"x\r\n", ParseError::InvalidChunkSize),
            (b"-1\r\n", ParseError::InvalidChunkSize),
            (b"5x\r\n", ParseError::InvalidChunkSize),
            (b"5 x\r\n", ParseError::InvalidChunkSize),
            (b"5\n", ParseError::InvalidChunkSize),
            (b"5;a\0\r\n", ParseError::InvalidChunkExtension),
            (b"5;a\nb\r\n", ParseError::InvalidChunkExtension),
            (b"5\rx", ParseError::InvalidChunkLineEnding),
            (b"3\r\nabcd\r\n", ParseError::MissingChunkDataCrlf),
            (b"3\r\nabc\n0\r\n\r\n", ParseError::MissingChunkDataCrlf),
            (b"3\r\nabc\rX", ParseError::MissingChunkDataCrlf),
            (b"0\r\nbad header\r\n\r\n", ParseError::InvalidHeaderName),
            (b"0\r\nx: a\r\n folded\r\n\r\n", ParseError::ObsFold),
        ] {
            assert_eq!(
                decode_all(wire).0,
                Err(error),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }
}
