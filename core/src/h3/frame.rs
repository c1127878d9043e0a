//! HTTP/3 frames (RFC 9114 §7): an incremental reader that never copies DATA payloads, and
//! writers for the frames Spooky sends.

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use super::error::{Code, ConnectionError};
use super::varint;

/// Frame type codes.
#[allow(missing_docs)]
pub mod ty {
    pub const DATA: u64 = 0x00;
    pub const HEADERS: u64 = 0x01;
    pub const CANCEL_PUSH: u64 = 0x03;
    pub const SETTINGS: u64 = 0x04;
    pub const PUSH_PROMISE: u64 = 0x05;
    pub const GOAWAY: u64 = 0x07;
    pub const MAX_PUSH_ID: u64 = 0x0d;
}

/// Frame types HTTP/2 used that HTTP/3 reserves: receiving one is H3_FRAME_UNEXPECTED.
fn is_reserved_h2_type(t: u64) -> bool {
    matches!(t, 0x02 | 0x06 | 0x08 | 0x09)
}

/// Largest payload accepted for control frames (SETTINGS and friends).
const MAX_CONTROL_FRAME: u64 = 16 * 1024;

/// One unit of what a stream carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A piece of a DATA frame's payload (never empty); a frame may arrive in several pieces.
    Data(Bytes),
    /// A whole HEADERS payload (an encoded field section).
    Headers(Bytes),
    /// A whole SETTINGS payload.
    Settings(Bytes),
    /// GOAWAY with its stream or push ID.
    GoAway(u64),
    /// MAX_PUSH_ID with its push ID.
    MaxPushId(u64),
    /// CANCEL_PUSH with its push ID.
    CancelPush(u64),
    /// A PUSH_PROMISE (payload skipped: Spooky never allows push).
    PushPromise,
}

impl Frame {
    /// The frame type code.
    pub fn type_code(&self) -> u64 {
        match self {
            Frame::Data(_) => ty::DATA,
            Frame::Headers(_) => ty::HEADERS,
            Frame::Settings(_) => ty::SETTINGS,
            Frame::GoAway(_) => ty::GOAWAY,
            Frame::MaxPushId(_) => ty::MAX_PUSH_ID,
            Frame::CancelPush(_) => ty::CANCEL_PUSH,
            Frame::PushPromise => ty::PUSH_PROMISE,
        }
    }
}

/// Why a stream's frames could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A HEADERS frame larger than the configured limit; the request can still be answered (431).
    #[error("HEADERS frame of {len} bytes exceeds the limit of {limit}")]
    HeadersTooLarge {
        /// Declared payload length.
        len: u64,
        /// Configured limit.
        limit: u64,
    },
    /// A violation that closes the connection.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
}

enum State {
    /// Reading type and length varints (bytes of a split header are kept in `header`).
    Header,
    /// Passing DATA payload through without copying.
    Data { remaining: u64 },
    /// Collecting a payload that is interpreted whole.
    Collect { ty: u64, remaining: u64 },
    /// Discarding an unknown or ignored frame.
    Skip { remaining: u64 },
}

/// Incremental frame reader for one stream.
///
/// Feed it the stream's bytes in whatever pieces they arrive; it yields [`Frame`]s. DATA
/// payloads are returned as slices of the input (zero copy); other frames are collected up to a
/// limit. Unknown frame types are skipped (RFC 9114 §9).
pub struct FrameReader {
    state: State,
    header: SmallVec<[u8; 16]>,
    collected: BytesMut,
    max_headers: u64,
}

impl FrameReader {
    /// A reader that accepts HEADERS payloads up to `max_headers` bytes.
    pub fn new(max_headers: u64) -> Self {
        FrameReader {
            state: State::Header,
            header: SmallVec::new(),
            collected: BytesMut::new(),
            max_headers,
        }
    }

    /// True when the reader is between frames, so a stream may end here (RFC 9114 §7.1: a
    /// stream ending inside a frame is H3_FRAME_ERROR).
    pub fn at_frame_boundary(&self) -> bool {
        matches!(self.state, State::Header) && self.header.is_empty()
    }

    /// Consumes bytes from the front of `input` and returns the next frame, or `Ok(None)` when
    /// `input` is exhausted without completing one.
    pub fn read(&mut self, input: &mut Bytes) -> Result<Option<Frame>, FrameError> {
        loop {
            match self.state {
                State::Header => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let Some((ty, len)) = self.read_header(input) else {
                        continue;
                    };
                    self.begin(ty, len)?;
                    if let Some(frame) = self.complete_empty(ty, len)? {
                        return Ok(Some(frame));
                    }
                }
                State::Data { remaining } => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let n = remaining.min(input.len() as u64);
                    let piece = input.split_to(n as usize);
                    self.state = if n == remaining {
                        State::Header
                    } else {
                        State::Data {
                            remaining: remaining - n,
                        }
                    };
                    return Ok(Some(Frame::Data(piece)));
                }
                State::Skip { remaining } => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let n = remaining.min(input.len() as u64);
                    let _ = input.split_to(n as usize);
                    self.state = if n == remaining {
                        State::Header
                    } else {
                        State::Skip {
                            remaining: remaining - n,
                        }
                    };
                }
                State::Collect { ty, remaining } => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let n = remaining.min(input.len() as u64);
                    let piece = input.split_to(n as usize);
                    if n == remaining && self.collected.is_empty() {
                        // The whole payload arrived in one piece: no copy.
                        self.state = State::Header;
                        return finish_collected(ty, piece).map(Some);
                    }
                    self.collected.extend_from_slice(&piece);
                    if n == remaining {
                        self.state = State::Header;
                        let payload = self.collected.split().freeze();
                        return finish_collected(ty, payload).map(Some);
                    }
                    self.state = State::Collect {
                        ty,
                        remaining: remaining - n,
                    };
                }
            }
        }
    }

    /// Reads the type and length varints, buffering a header split across inputs.
    fn read_header(&mut self, input: &mut Bytes) -> Option<(u64, u64)> {
        if self.header.is_empty() {
            // Fast path: the whole header is in `input`.
            if let Some((ty, a)) = varint::decode(input) {
                if let Some((len, b)) = varint::decode(&input[a..]) {
                    let _ = input.split_to(a + b);
                    return Some((ty, len));
                }
            }
        }
        // Slow path: move bytes into `header` until both varints are complete. A header is
        // at most 16 bytes, so take one byte at a time and re-check.
        while !input.is_empty() {
            self.header.push(input[0]);
            let _ = input.split_to(1);
            if let Some((ty, a)) = varint::decode(&self.header) {
                if let Some((len, b)) = varint::decode(&self.header[a..]) {
                    debug_assert_eq!(a + b, self.header.len());
                    self.header.clear();
                    return Some((ty, len));
                }
            }
        }
        None
    }

    fn begin(&mut self, ty: u64, len: u64) -> Result<(), FrameError> {
        if is_reserved_h2_type(ty) {
            return Err(ConnectionError::new(
                Code::FRAME_UNEXPECTED,
                "frame type reserved from HTTP/2",
            )
            .into());
        }
        self.state = match ty {
            ty::DATA => State::Data { remaining: len },
            ty::HEADERS => {
                if len > self.max_headers {
                    return Err(FrameError::HeadersTooLarge {
                        len,
                        limit: self.max_headers,
                    });
                }
                State::Collect { ty, remaining: len }
            }
            ty::SETTINGS | ty::GOAWAY | ty::MAX_PUSH_ID | ty::CANCEL_PUSH => {
                if len > MAX_CONTROL_FRAME {
                    return Err(ConnectionError::new(
                        Code::EXCESSIVE_LOAD,
                        "control frame too large",
                    )
                    .into());
                }
                State::Collect { ty, remaining: len }
            }
            // PUSH_PROMISE payloads are skipped; `complete_empty` reports the frame so the
            // caller can reject it.
            _ => State::Skip { remaining: len },
        };
        Ok(())
    }

    /// Frames whose payload is empty complete as soon as their header is read.
    fn complete_empty(&mut self, ty: u64, len: u64) -> Result<Option<Frame>, FrameError> {
        if ty == ty::PUSH_PROMISE {
            return Ok(Some(Frame::PushPromise));
        }
        if len != 0 {
            return Ok(None);
        }
        match self.state {
            State::Data { .. } | State::Skip { .. } => {
                // Empty DATA or unknown frame: nothing to report.
                self.state = State::Header;
                Ok(None)
            }
            State::Collect { ty, .. } => {
                self.state = State::Header;
                finish_collected(ty, Bytes::new()).map(Some)
            }
            State::Header => Ok(None),
        }
    }
}

fn finish_collected(ty: u64, payload: Bytes) -> Result<Frame, FrameError> {
    let single_varint = |payload: &Bytes| -> Result<u64, FrameError> {
        match varint::decode(payload) {
            Some((v, n)) if n == payload.len() => Ok(v),
            _ => Err(ConnectionError::new(Code::FRAME_ERROR, "malformed frame payload").into()),
        }
    };
    Ok(match ty {
        ty::HEADERS => Frame::Headers(payload),
        ty::SETTINGS => Frame::Settings(payload),
        ty::GOAWAY => Frame::GoAway(single_varint(&payload)?),
        ty::MAX_PUSH_ID => Frame::MaxPushId(single_varint(&payload)?),
        ty::CANCEL_PUSH => Frame::CancelPush(single_varint(&payload)?),
        _ => unreachable!("only collected frame types reach here"),
    })
}

/// Appends a frame header (type and payload length).
pub fn write_header(frame_type: u64, payload_len: u64, out: &mut Vec<u8>) {
    varint::encode(frame_type, out);
    varint::encode(payload_len, out);
}

/// Appends a whole frame.
pub fn write_frame(frame_type: u64, payload: &[u8], out: &mut Vec<u8>) {
    write_header(frame_type, payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// Writes a frame header (type and payload length) at the start of `out` and returns its
/// length (at most 16 bytes).
pub fn header_bytes(frame_type: u64, payload_len: u64, out: &mut [u8; 16]) -> usize {
    let a = varint::write(frame_type, &mut out[..8]);
    let b = varint::write(payload_len, &mut out[a..a + 8]);
    a + b
}

/// A DATA frame header for a payload of `len` bytes, as a small owned buffer.
pub fn data_header(len: usize) -> Bytes {
    let mut out = Vec::with_capacity(9);
    write_header(ty::DATA, len as u64, &mut out);
    Bytes::from(out)
}

/// Appends a GOAWAY frame carrying `id`.
pub fn write_goaway(id: u64, out: &mut Vec<u8>) {
    write_header(ty::GOAWAY, varint::encoded_len(id) as u64, out);
    varint::encode(id, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(reader: &mut FrameReader, bytes: &[u8], step: usize) -> Vec<Frame> {
        let mut frames = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            let mut input = Bytes::copy_from_slice(piece);
            while let Some(f) = reader.read(&mut input).unwrap() {
                frames.push(f);
            }
            assert!(input.is_empty());
        }
        frames
    }

    /// Joins adjacent DATA pieces so results do not depend on how input was split.
    fn normalize(frames: Vec<Frame>) -> Vec<Frame> {
        let mut out: Vec<Frame> = Vec::new();
        for f in frames {
            if let (Some(Frame::Data(prev)), Frame::Data(next)) = (out.last_mut(), &f) {
                let mut joined = prev.to_vec();
                joined.extend_from_slice(next);
                *prev = Bytes::from(joined);
                continue;
            }
            out.push(f);
        }
        out
    }

    #[test]
    fn frames_parse_identically_at_every_split() {
        let mut wire = Vec::new();
        write_frame(ty::HEADERS, b"\x00\x00\xd1", &mut wire);
        write_frame(0x21, b"grease payload", &mut wire); // reserved grease type: skipped
        write_frame(ty::DATA, &[7u8; 300], &mut wire);
        write_frame(ty::DATA, b"", &mut wire);
        write_frame(ty::DATA, b"tail", &mut wire);
        write_frame(ty::HEADERS, b"\x00\x00", &mut wire);
        write_goaway(12, &mut wire);
        let expected = vec![
            Frame::Headers(Bytes::from_static(b"\x00\x00\xd1")),
            Frame::Data(Bytes::from([&[7u8; 300][..], b"tail"].concat())),
            Frame::Headers(Bytes::from_static(b"\x00\x00")),
            Frame::GoAway(12),
        ];
        for step in 1..wire.len() {
            let mut reader = FrameReader::new(1024);
            let frames = normalize(read_all(&mut reader, &wire, step));
            assert_eq!(frames, expected, "split every {step} bytes");
            assert!(reader.at_frame_boundary());
        }
    }

    #[test]
    fn data_is_not_copied() {
        let mut wire = Vec::new();
        write_frame(ty::DATA, b"hello", &mut wire);
        let input_buf = Bytes::from(wire);
        let mut input = input_buf.clone();
        let mut reader = FrameReader::new(1024);
        let Some(Frame::Data(piece)) = reader.read(&mut input).unwrap() else {
            panic!("expected data");
        };
        assert_eq!(&piece[..], b"hello");
        assert_eq!(piece.as_ptr(), input_buf[2..].as_ptr());
    }

    #[test]
    fn reserved_h2_frame_is_unexpected() {
        for t in [0x02u64, 0x06, 0x08, 0x09] {
            let mut wire = Vec::new();
            write_frame(t, b"", &mut wire);
            let mut reader = FrameReader::new(1024);
            let err = reader.read(&mut Bytes::from(wire)).unwrap_err();
            assert_eq!(
                err,
                FrameError::Connection(ConnectionError::new(
                    Code::FRAME_UNEXPECTED,
                    "frame type reserved from HTTP/2"
                ))
            );
        }
    }

    #[test]
    fn oversized_headers_are_reported_before_buffering() {
        let mut wire = Vec::new();
        write_header(ty::HEADERS, 1_000_000, &mut wire);
        let mut reader = FrameReader::new(65_536);
        let err = reader.read(&mut Bytes::from(wire)).unwrap_err();
        assert_eq!(
            err,
            FrameError::HeadersTooLarge {
                len: 1_000_000,
                limit: 65_536
            }
        );
    }

    #[test]
    fn goaway_with_trailing_bytes_is_frame_error() {
        let mut wire = Vec::new();
        write_frame(ty::GOAWAY, &[0x04, 0x00], &mut wire);
        let mut reader = FrameReader::new(1024);
        let err = reader.read(&mut Bytes::from(wire)).unwrap_err();
        assert!(matches!(err, FrameError::Connection(e) if e.code == Code::FRAME_ERROR));
    }

    #[test]
    fn stream_ending_mid_frame_is_detectable() {
        let mut wire = Vec::new();
        write_frame(ty::DATA, b"abcdef", &mut wire);
        let mut reader = FrameReader::new(1024);
        let mut input = Bytes::copy_from_slice(&wire[..4]);
        while reader.read(&mut input).unwrap().is_some() {}
        assert!(!reader.at_frame_boundary());
    }
}
