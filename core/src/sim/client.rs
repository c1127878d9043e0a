//! A simulated HTTP/3 client: quinn-proto plus the core's HTTP/3 codec, in memory.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, DatagramEvent, Dir, Endpoint, Event, Side,
    StreamEvent, StreamId, WriteError,
};

use crate::fields::FieldSection;
use crate::h3::frame::{self, Frame, FrameReader};
use crate::h3::qpack;
use crate::h3::session::Session;
use crate::quic::crypto::{CryptoMode, UpstreamVerify, client_crypto};
use crate::quic::{self, ReadOutcome, read_stream};
use crate::rng::Rng;

use super::SIM_UNIX_TIME;

/// A request to send: every field as given (pseudo-headers included, in order, unchecked, so
/// tests can send malformed ones), then the body.
#[derive(Debug, Clone)]
pub struct SimRequest {
    /// Header fields, sent exactly as listed.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// Body pieces, each sent as one DATA frame.
    pub body: Vec<Vec<u8>>,
    /// Raw bytes written to the stream before the HEADERS frame (to break framing).
    pub prefix: Vec<u8>,
}

impl SimRequest {
    /// A well-formed request.
    pub fn new(method: &str, path: &str) -> SimRequest {
        SimRequest {
            fields: vec![
                (b":method".to_vec(), method.as_bytes().to_vec()),
                (b":scheme".to_vec(), b"https".to_vec()),
                (b":authority".to_vec(), b"spooky.sim".to_vec()),
                (b":path".to_vec(), path.as_bytes().to_vec()),
            ],
            body: Vec::new(),
            prefix: Vec::new(),
        }
    }

    /// Adds a field.
    pub fn field(mut self, name: &str, value: &str) -> SimRequest {
        self.fields
            .push((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
        self
    }

    /// Adds a body piece (and a matching content-length if `with_length`).
    pub fn body(mut self, data: Vec<u8>) -> SimRequest {
        self.body.push(data);
        self
    }
}

/// What came back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimResponse {
    /// Final status (0 if none arrived).
    pub status: u16,
    /// Final response fields (without `:status`).
    pub fields: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// The stream was reset with this code.
    pub reset: Option<u64>,
    /// The connection was closed with this reason.
    pub connection_error: Option<String>,
    /// The application error code the peer closed the connection with.
    pub connection_error_code: Option<u64>,
    /// The exchange is over.
    pub done: bool,
    /// The client cancelled it (reset its side and stopped reading).
    pub cancelled: bool,
}

impl SimResponse {
    /// The first value of `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct ClientStream {
    id: StreamId,
    request: usize,
    to_send: VecDeque<Bytes>,
    reader: FrameReader,
    /// The stream's end was sent.
    finished: bool,
}

/// A simulated client with one connection.
pub struct SimClient {
    pub(super) addr: SocketAddr,
    endpoint: Endpoint,
    conn: Option<(ConnectionHandle, Connection)>,
    session: Session,
    connected: bool,
    pending: VecDeque<usize>,
    requests: Vec<(SimRequest, SimResponse)>,
    streams: Vec<ClientStream>,
    /// Requests whose stream end (FIN) is not to be sent yet.
    held_ends: Vec<usize>,
}

impl SimClient {
    pub(super) fn new(addr: SocketAddr, server: SocketAddr, now: Instant, seed: [u8; 32]) -> Self {
        let mut rng = Rng::from_seed(seed);
        let mut endpoint = Endpoint::new(
            Arc::new(quic::endpoint_config(0, &mut rng)),
            None,
            false,
            None,
        );
        let crypto = client_crypto(
            &UpstreamVerify::InsecureSkipVerify,
            CryptoMode::Deterministic {
                seed: rng.seed(),
                unix_time: SIM_UNIX_TIME,
            },
        )
        .expect("client crypto");
        let mut config = ClientConfig::new(crypto);
        config.initial_dst_cid_provider(quic::initial_dcid_provider(&mut rng));
        let conn = endpoint
            .connect(now, config, server, "localhost")
            .expect("connect");
        SimClient {
            addr,
            endpoint,
            conn: Some(conn),
            session: Session::new(Side::Client, 64 * 1024, rng.next_u64()),
            connected: false,
            pending: VecDeque::new(),
            requests: Vec::new(),
            streams: Vec::new(),
            held_ends: Vec::new(),
        }
    }

    pub(super) fn request(&mut self, request: SimRequest) -> usize {
        self.requests.push((request, SimResponse::default()));
        let i = self.requests.len() - 1;
        self.pending.push_back(i);
        i
    }

    /// Holds back (or, with `held` false, lets go) the end of request `i`'s stream: its
    /// bytes go out, its FIN does not.
    pub(super) fn hold_end(&mut self, i: usize, held: bool) {
        self.held_ends.retain(|&r| r != i);
        if held {
            self.held_ends.push(i);
        }
    }

    /// Gives up on request `i`: a request not yet sent is dropped; one under way has its
    /// stream reset and its response stopped with H3_REQUEST_CANCELLED.
    pub(super) fn cancel(&mut self, i: usize) {
        const H3_REQUEST_CANCELLED: u32 = 0x10c;
        if let Some(pos) = self.pending.iter().position(|&p| p == i) {
            self.pending.remove(pos);
        } else if let Some(pos) = self.streams.iter().position(|s| s.request == i) {
            let stream = self.streams.remove(pos);
            if let Some((_, conn)) = self.conn.as_mut() {
                let code = quinn_proto::VarInt::from_u32(H3_REQUEST_CANCELLED);
                // Either side may be over already; then there is nothing to cancel.
                let _ = conn.send_stream(stream.id).reset(code);
                let _ = conn.recv_stream(stream.id).stop(code);
            }
        }
        let response = &mut self.requests[i].1;
        if !response.done {
            response.done = true;
            response.cancelled = true;
        }
    }

    /// The response to request `i` so far.
    pub fn response(&self, i: usize) -> &SimResponse {
        &self.requests[i].1
    }

    /// All responses, in request order.
    pub fn responses(&self) -> impl Iterator<Item = &SimResponse> {
        self.requests.iter().map(|(_, r)| r)
    }

    pub(super) fn all_done(&self) -> bool {
        self.requests.iter().all(|(_, r)| r.done)
    }

    pub(super) fn poll_timeout(&mut self) -> Option<Instant> {
        self.conn.as_mut().and_then(|(_, c)| c.poll_timeout())
    }

    pub(super) fn handle_timeout(&mut self, now: Instant) {
        if let Some((_, conn)) = self.conn.as_mut() {
            if conn.poll_timeout().is_some_and(|t| t <= now) {
                conn.handle_timeout(now);
            }
        }
    }

    pub(super) fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: BytesMut) {
        let mut buf = Vec::new();
        if let Some(DatagramEvent::ConnectionEvent(h, event)) =
            self.endpoint.handle(now, from, None, None, data, &mut buf)
        {
            if let Some((handle, conn)) = self.conn.as_mut() {
                if *handle == h {
                    conn.handle_event(event);
                }
            }
        }
    }

    pub(super) fn poll_transmits(
        &mut self,
        now: Instant,
        out: &mut Vec<(SocketAddr, SocketAddr, Vec<u8>, Option<usize>)>,
    ) {
        let Some((_, conn)) = self.conn.as_mut() else {
            return;
        };
        let mut buf = Vec::new();
        while let Some(t) = conn.poll_transmit(now, 4, &mut buf) {
            out.push((
                self.addr,
                t.destination,
                buf[..t.size].to_vec(),
                t.segment_size,
            ));
            buf.clear();
        }
    }

    pub(super) fn drive(&mut self, now: Instant) {
        let Some((handle, conn)) = self.conn.as_mut() else {
            return;
        };
        while let Some(event) = conn.poll_endpoint_events() {
            if let Some(event) = self.endpoint.handle_event(*handle, event) {
                conn.handle_event(event);
            }
        }
        while let Some(event) = conn.poll() {
            match event {
                Event::Connected => {
                    self.connected = true;
                    self.session.open(conn);
                }
                Event::ConnectionLost { reason } => {
                    let code = match &reason {
                        quinn_proto::ConnectionError::ApplicationClosed(close) => {
                            Some(close.error_code.into_inner())
                        }
                        _ => None,
                    };
                    for (_, r) in self.requests.iter_mut().filter(|(_, r)| !r.done) {
                        r.connection_error = Some(reason.to_string());
                        r.connection_error_code = code;
                        r.done = true;
                    }
                }
                Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                    let _ = self.session.accept_uni_streams(conn);
                }
                Event::Stream(StreamEvent::Readable { id }) => {
                    if id.dir() == Dir::Uni {
                        let _ = self.session.on_uni_readable(conn, id);
                    } else {
                        read_response(conn, &mut self.streams, &mut self.requests, id);
                    }
                }
                Event::Stream(StreamEvent::Writable { id })
                    if self.session.is_local_control(id) =>
                {
                    self.session.flush(conn);
                }
                _ => {}
            }
        }
        if self.connected {
            // Start queued requests.
            while let Some(&i) = self.pending.front() {
                let Some(id) = conn.streams().open(Dir::Bi) else {
                    break;
                };
                self.pending.pop_front();
                let request = &self.requests[i].0;
                let mut to_send = VecDeque::new();
                if !request.prefix.is_empty() {
                    to_send.push_back(Bytes::from(request.prefix.clone()));
                }
                let mut block = Vec::new();
                qpack::encode_field_section(
                    request.fields.iter().map(|(n, v)| (&n[..], &v[..])),
                    &mut block,
                );
                let mut headers = Vec::new();
                frame::write_frame(frame::ty::HEADERS, &block, &mut headers);
                to_send.push_back(Bytes::from(headers));
                for piece in &request.body {
                    to_send.push_back(frame::data_header(piece.len()));
                    to_send.push_back(Bytes::from(piece.clone()));
                }
                self.streams.push(ClientStream {
                    id,
                    request: i,
                    to_send,
                    reader: FrameReader::new(1 << 20),
                    finished: false,
                });
            }
            // Write request bytes as flow control allows; end each stream once its bytes
            // are out, unless its end is held back.
            for s in &mut self.streams {
                if !s.to_send.is_empty() {
                    let chunks = s.to_send.make_contiguous();
                    match conn.send_stream(s.id).write_chunks(chunks) {
                        Ok(w) => {
                            s.to_send.drain(..w.chunks);
                        }
                        Err(WriteError::Blocked) => {}
                        Err(_) => s.to_send.clear(),
                    }
                }
                if s.to_send.is_empty() && !s.finished && !self.held_ends.contains(&s.request) {
                    let _ = conn.send_stream(s.id).finish();
                    s.finished = true;
                }
            }
        }
        let _ = now;
    }
}

fn read_response(
    conn: &mut Connection,
    streams: &mut [ClientStream],
    requests: &mut [(SimRequest, SimResponse)],
    id: StreamId,
) {
    let Some(s) = streams.iter_mut().find(|s| s.id == id) else {
        return;
    };
    let response = &mut requests[s.request].1;
    loop {
        match read_stream(conn, id, usize::MAX) {
            ReadOutcome::Data(mut data) => loop {
                match s.reader.read(&mut data) {
                    Ok(Some(Frame::Headers(block))) => {
                        let mut fields = FieldSection::new();
                        if qpack::decode_field_section(&block, 1 << 20, &mut fields).is_err() {
                            response.done = true;
                            return;
                        }
                        let status = fields
                            .find(b":status")
                            .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok());
                        match status {
                            Some(st) if (100..200).contains(&st) => {}
                            Some(st) => {
                                response.status = st;
                                response.fields = fields
                                    .iter()
                                    .filter(|(n, _)| !n.starts_with(b":"))
                                    .map(|(n, v)| {
                                        (
                                            String::from_utf8_lossy(n).into_owned(),
                                            String::from_utf8_lossy(v).into_owned(),
                                        )
                                    })
                                    .collect();
                            }
                            None => {} // trailers
                        }
                    }
                    Ok(Some(Frame::Data(d))) => response.body.extend_from_slice(&d),
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => {
                        response.done = true;
                        return;
                    }
                }
            },
            ReadOutcome::Blocked => return,
            ReadOutcome::Finished | ReadOutcome::Closed => {
                response.done = true;
                return;
            }
            ReadOutcome::Reset(code) => {
                response.reset = Some(code.into_inner());
                response.done = true;
                return;
            }
        }
    }
}
