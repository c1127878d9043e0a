//! The connection-wide half of HTTP/3: control streams, SETTINGS, GOAWAY and the QPACK
//! encoder and decoder streams (RFC 9114 §6.2, §7.2; RFC 9204 §4.2).
//!
//! A [`Session`] sits beside one quinn-proto `Connection` in either role. Request streams are
//! handled by the proxy; everything else that arrives on unidirectional streams is handled
//! here, and any violation comes back as a [`ConnectionError`] to close the connection with.

use bytes::Bytes;
use hashbrown::HashMap;
use quinn_proto::{Connection, Dir, Side, StreamId};
use smallvec::SmallVec;

use super::error::{Code, ConnectionError};
use super::frame::{self, Frame, FrameError, FrameReader};
use super::qpack;
use super::settings::{self, PeerSettings};
use super::varint;
use crate::quic::{ReadOutcome, read_stream};
use crate::timer::FixedState;

/// Unidirectional stream types (RFC 9114 §6.2, RFC 9204 §4.2).
mod stream_type {
    pub(super) const CONTROL: u64 = 0x00;
    pub(super) const PUSH: u64 = 0x01;
    pub(super) const QPACK_ENCODER: u64 = 0x02;
    pub(super) const QPACK_DECODER: u64 = 0x03;
}

enum UniKind {
    /// The type varint has not fully arrived.
    Unknown(SmallVec<[u8; 8]>),
    Control(Box<FrameReader>),
    QpackEncoder,
    QpackDecoder(SmallVec<[u8; 16]>),
}

/// HTTP/3 connection state for one QUIC connection.
pub struct Session {
    side: Side,
    max_field_section_size: u64,
    grease: u64,
    local_control: Option<StreamId>,
    /// Control stream bytes not yet accepted by quinn-proto.
    control_backlog: Vec<u8>,
    peer_control: Option<StreamId>,
    peer_settings: Option<PeerSettings>,
    peer_encoder: Option<StreamId>,
    peer_decoder: Option<StreamId>,
    uni: HashMap<StreamId, UniKind, FixedState>,
    goaway_sent: Option<u64>,
    goaway_received: Option<u64>,
    max_push_id: Option<u64>,
}

impl Session {
    /// A session for our `side` of a connection; `grease` picks the reserved setting we send.
    pub fn new(side: Side, max_field_section_size: u64, grease: u64) -> Self {
        Session {
            side,
            max_field_section_size,
            grease,
            local_control: None,
            control_backlog: Vec::new(),
            peer_control: None,
            peer_settings: None,
            peer_encoder: None,
            peer_decoder: None,
            uni: HashMap::with_hasher(FixedState),
            goaway_sent: None,
            goaway_received: None,
            max_push_id: None,
        }
    }

    /// Opens our control stream and sends SETTINGS. Call once the connection can open streams.
    pub fn open(&mut self, conn: &mut Connection) {
        if self.local_control.is_some() {
            return;
        }
        let Some(id) = conn.streams().open(Dir::Uni) else {
            // Peers must allow at least three unidirectional streams (RFC 9114 §6.2); if this
            // one does not, the handshake is over before we get here.
            return;
        };
        self.local_control = Some(id);
        varint::encode(stream_type::CONTROL, &mut self.control_backlog);
        settings::write_local_settings(
            self.max_field_section_size,
            self.grease,
            &mut self.control_backlog,
        );
        self.flush(conn);
    }

    /// Writes pending control-stream bytes; call on `Writable` for the control stream.
    pub fn flush(&mut self, conn: &mut Connection) {
        let Some(id) = self.local_control else { return };
        if self.control_backlog.is_empty() {
            return;
        }
        if let Ok(n) = conn.send_stream(id).write(&self.control_backlog) {
            self.control_backlog.drain(..n);
        }
    }

    /// True if `id` is our control stream.
    pub fn is_local_control(&self, id: StreamId) -> bool {
        self.local_control == Some(id)
    }

    /// The peer's SETTINGS, once they arrived.
    pub fn peer_settings(&self) -> Option<&PeerSettings> {
        self.peer_settings.as_ref()
    }

    /// The ID from the peer's last GOAWAY.
    pub fn goaway_received(&self) -> Option<u64> {
        self.goaway_received
    }

    /// The ID of the GOAWAY we sent.
    pub fn goaway_sent(&self) -> Option<u64> {
        self.goaway_sent
    }

    /// Sends GOAWAY. As a server, `id` is the first request stream we will not process.
    /// IDs never increase; a second call with a larger ID is ignored.
    pub fn send_goaway(&mut self, conn: &mut Connection, id: u64) {
        if self.goaway_sent.is_some_and(|prev| prev <= id) {
            return;
        }
        self.goaway_sent = Some(id);
        frame::write_goaway(id, &mut self.control_backlog);
        self.flush(conn);
    }

    /// Accepts every unidirectional stream the peer opened and reads what it sent.
    pub fn accept_uni_streams(&mut self, conn: &mut Connection) -> Result<(), ConnectionError> {
        while let Some(id) = conn.streams().accept(Dir::Uni) {
            self.uni.insert(id, UniKind::Unknown(SmallVec::new()));
            self.on_uni_readable(conn, id)?;
        }
        Ok(())
    }

    /// True if `id` is a unidirectional stream this session reads.
    pub fn owns(&self, id: StreamId) -> bool {
        id.dir() == Dir::Uni && self.uni.contains_key(&id)
    }

    /// Reads whatever arrived on a peer unidirectional stream.
    pub fn on_uni_readable(
        &mut self,
        conn: &mut Connection,
        id: StreamId,
    ) -> Result<(), ConnectionError> {
        loop {
            match read_stream(conn, id, 16 * 1024) {
                ReadOutcome::Data(data) => {
                    if !self.process(conn, id, data)? {
                        return Ok(());
                    }
                }
                ReadOutcome::Blocked => return Ok(()),
                ReadOutcome::Finished | ReadOutcome::Reset(_) | ReadOutcome::Closed => {
                    return self.on_uni_closed(id);
                }
            }
        }
    }

    fn on_uni_closed(&mut self, id: StreamId) -> Result<(), ConnectionError> {
        match self.uni.remove(&id) {
            Some(UniKind::Control(_) | UniKind::QpackEncoder | UniKind::QpackDecoder(_)) => Err(
                ConnectionError::new(Code::CLOSED_CRITICAL_STREAM, "critical stream closed"),
            ),
            _ => Ok(()),
        }
    }

    /// Handles bytes from a unidirectional stream; returns false if the stream was abandoned.
    fn process(
        &mut self,
        conn: &mut Connection,
        id: StreamId,
        mut data: Bytes,
    ) -> Result<bool, ConnectionError> {
        let Some(kind) = self.uni.get_mut(&id) else {
            return Ok(false);
        };
        if let UniKind::Unknown(prefix) = kind {
            while !data.is_empty() && varint::decode(prefix).is_none() {
                prefix.push(data[0]);
                let _ = data.split_to(1);
            }
            let Some((ty, _)) = varint::decode(prefix) else {
                return Ok(true);
            };
            match self.classify(ty, id)? {
                Some(new_kind) => {
                    self.uni.insert(id, new_kind);
                }
                None => {
                    // Unknown or reserved type: stop reading (RFC 9114 §6.2).
                    self.uni.remove(&id);
                    let _ = conn
                        .recv_stream(id)
                        .stop(Code::STREAM_CREATION_ERROR.varint());
                    return Ok(false);
                }
            }
        }
        if data.is_empty() {
            return Ok(true);
        }
        match self.uni.get_mut(&id) {
            Some(UniKind::Control(reader)) => {
                let mut frames: SmallVec<[Frame; 4]> = SmallVec::new();
                loop {
                    match reader.read(&mut data) {
                        Ok(Some(f)) => frames.push(f),
                        Ok(None) => break,
                        Err(FrameError::Connection(e)) => return Err(e),
                        Err(FrameError::HeadersTooLarge { .. }) => {
                            return Err(ConnectionError::new(
                                Code::FRAME_UNEXPECTED,
                                "HEADERS on the control stream",
                            ));
                        }
                    }
                }
                for f in frames {
                    self.on_control_frame(f)?;
                }
            }
            Some(UniKind::QpackEncoder) => {
                // Our decoder allows no dynamic table: the only valid instruction is "Set
                // Dynamic Table Capacity" to 0 (0x20); anything else exceeds capacity 0.
                if data.iter().any(|&b| b != 0x20) {
                    return Err(ConnectionError::new(
                        Code::QPACK_ENCODER_STREAM_ERROR,
                        "dynamic table instruction with a capacity of 0",
                    ));
                }
            }
            Some(UniKind::QpackDecoder(pending)) => {
                pending.extend_from_slice(&data);
                check_decoder_instructions(pending)?;
            }
            Some(UniKind::Unknown(_)) | None => {}
        }
        Ok(true)
    }

    fn classify(&mut self, ty: u64, id: StreamId) -> Result<Option<UniKind>, ConnectionError> {
        let duplicate = || {
            ConnectionError::new(
                Code::STREAM_CREATION_ERROR,
                "second critical stream of a type",
            )
        };
        Ok(Some(match ty {
            stream_type::CONTROL => {
                if self.peer_control.replace(id).is_some() {
                    return Err(duplicate());
                }
                UniKind::Control(Box::new(FrameReader::new(0)))
            }
            stream_type::QPACK_ENCODER => {
                if self.peer_encoder.replace(id).is_some() {
                    return Err(duplicate());
                }
                UniKind::QpackEncoder
            }
            stream_type::QPACK_DECODER => {
                if self.peer_decoder.replace(id).is_some() {
                    return Err(duplicate());
                }
                UniKind::QpackDecoder(SmallVec::new())
            }
            stream_type::PUSH => {
                return Err(match self.side {
                    // Only servers push.
                    Side::Server => ConnectionError::new(
                        Code::STREAM_CREATION_ERROR,
                        "client opened a push stream",
                    ),
                    // We never send MAX_PUSH_ID, so no push ID is allowed.
                    Side::Client => {
                        ConnectionError::new(Code::ID_ERROR, "push stream without MAX_PUSH_ID")
                    }
                });
            }
            _ => return Ok(None),
        }))
    }

    fn on_control_frame(&mut self, frame: Frame) -> Result<(), ConnectionError> {
        let unexpected = |what| ConnectionError::new(Code::FRAME_UNEXPECTED, what);
        if self.peer_settings.is_none() {
            let Frame::Settings(payload) = frame else {
                return Err(ConnectionError::new(
                    Code::MISSING_SETTINGS,
                    "first control frame is not SETTINGS",
                ));
            };
            self.peer_settings = Some(PeerSettings::decode(&payload)?);
            return Ok(());
        }
        match frame {
            Frame::Settings(_) => Err(unexpected("second SETTINGS frame")),
            Frame::Data(_) | Frame::Headers(_) | Frame::PushPromise => {
                Err(unexpected("message frame on the control stream"))
            }
            Frame::GoAway(id) => {
                if self.side == Side::Client && !is_client_bidi(id) {
                    return Err(ConnectionError::new(
                        Code::ID_ERROR,
                        "GOAWAY with a non-request stream ID",
                    ));
                }
                if self.goaway_received.is_some_and(|prev| id > prev) {
                    return Err(ConnectionError::new(Code::ID_ERROR, "GOAWAY ID increased"));
                }
                self.goaway_received = Some(id);
                Ok(())
            }
            Frame::MaxPushId(id) => {
                if self.side == Side::Client {
                    return Err(unexpected("MAX_PUSH_ID from a server"));
                }
                if self.max_push_id.is_some_and(|prev| id < prev) {
                    return Err(ConnectionError::new(
                        Code::ID_ERROR,
                        "MAX_PUSH_ID decreased",
                    ));
                }
                self.max_push_id = Some(id);
                Ok(())
            }
            Frame::CancelPush(id) => {
                // We never push; a client may still cancel an ID it allowed, nothing more.
                match self.max_push_id {
                    Some(max) if self.side == Side::Server && id <= max => Ok(()),
                    _ => Err(ConnectionError::new(
                        Code::ID_ERROR,
                        "CANCEL_PUSH for a push ID never allowed",
                    )),
                }
            }
        }
    }
}

fn is_client_bidi(id: u64) -> bool {
    id % 4 == 0
}

/// Validates QPACK decoder-stream instructions (RFC 9204 §4.4) sent to our encoder, which
/// never inserts into the dynamic table: Section Acknowledgment and Insert Count Increment
/// can never be valid; Stream Cancellation is. Complete instructions are removed from
/// `pending`; a partial one stays.
fn check_decoder_instructions(pending: &mut SmallVec<[u8; 16]>) -> Result<(), ConnectionError> {
    let error = |reason| ConnectionError::new(Code::QPACK_DECODER_STREAM_ERROR, reason);
    loop {
        let Some(&first) = pending.first() else {
            return Ok(());
        };
        if first & 0x80 != 0 {
            return Err(error(
                "Section Acknowledgment for a section without dynamic references",
            ));
        }
        if first & 0x40 == 0 {
            return Err(error(
                "Insert Count Increment beyond the entries inserted (none)",
            ));
        }
        // Stream Cancellation: a 6-bit prefixed stream ID.
        match qpack::decode_prefix_int(pending, 6) {
            Ok(Some((_stream, used))) => {
                pending.drain(..used);
            }
            Ok(None) => return Ok(()),
            Err(_) => return Err(error("malformed Stream Cancellation")),
        }
    }
}

/// Closes `conn` with an HTTP/3 connection error.
pub fn close_with(conn: &mut Connection, now: std::time::Instant, error: &ConnectionError) {
    conn.close(
        now,
        error.code.varint(),
        Bytes::from_static(error.reason.as_bytes()),
    );
}
