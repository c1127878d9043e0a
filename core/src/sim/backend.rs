//! Simulated backends. Both answer every request with `200`, an `x-backend` field naming
//! themselves, and a body that is the request body if there was one, or else
//! `"{name} {method} {path}"`. A path starting with `/status/NNN` answers that status.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use hashbrown::HashMap;
use quinn_proto::{
    Connection, ConnectionHandle, DatagramEvent, Dir, Endpoint, Event, ServerConfig, Side,
    StreamEvent, StreamId, WriteError,
};

use crate::TcpId;
use crate::fields::FieldSection;
use crate::h3::frame::{self, Frame, FrameReader};
use crate::h3::qpack;
use crate::h3::session::Session;
use crate::quic::crypto::{CryptoMode, server_crypto};
use crate::quic::{self, ReadOutcome, read_stream};
use crate::rng::Rng;
use crate::timer::FixedState;

use super::{SIM_UNIX_TIME, sim_identity};

/// What a backend makes of one request.
fn answer(name: &str, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let status = path
        .strip_prefix("/status/")
        .and_then(|s| s.get(..3)?.parse().ok())
        .unwrap_or(200);
    let body = if body.is_empty() {
        format!("{name} {method} {path}").into_bytes()
    } else {
        body
    };
    (status, body)
}

struct H3Stream {
    reader: FrameReader,
    method: String,
    path: String,
    body: Vec<u8>,
    to_send: VecDeque<Bytes>,
    responded: bool,
}

struct H3Conn {
    quic: Connection,
    session: Session,
    streams: HashMap<StreamId, H3Stream, FixedState>,
}

/// A simulated HTTP/3 backend.
pub struct H3Backend {
    /// Its name, sent back in `x-backend`.
    pub name: String,
    pub(super) addr: SocketAddr,
    endpoint: Endpoint,
    server_config: Arc<ServerConfig>,
    conns: HashMap<ConnectionHandle, H3Conn, FixedState>,
    /// Requests answered.
    pub requests: u64,
}

impl H3Backend {
    pub(super) fn new(name: String, addr: SocketAddr, seed: [u8; 32]) -> Self {
        let mut rng = Rng::from_seed(seed);
        let crypto = server_crypto(
            &sim_identity(),
            CryptoMode::Deterministic {
                seed: rng.seed(),
                unix_time: SIM_UNIX_TIME,
            },
        )
        .expect("server crypto");
        let mut server_config = ServerConfig::new(crypto, quic::token_key(&mut rng));
        server_config.time_source(Arc::new(quic::FixedSystemTime(SIM_UNIX_TIME)));
        let server_config = Arc::new(server_config);
        let endpoint = Endpoint::new(
            Arc::new(quic::endpoint_config(0, &mut rng)),
            Some(server_config.clone()),
            false,
            None,
        );
        H3Backend {
            name,
            addr,
            endpoint,
            server_config,
            conns: HashMap::with_hasher(FixedState),
            requests: 0,
        }
    }

    pub(super) fn poll_timeout(&mut self) -> Option<Instant> {
        let mut handles: Vec<_> = self.conns.keys().copied().collect();
        handles.sort_by_key(|h| h.0);
        handles
            .into_iter()
            .filter_map(|h| self.conns.get_mut(&h)?.quic.poll_timeout())
            .min()
    }

    pub(super) fn handle_timeout(&mut self, now: Instant) {
        for conn in self.conns.values_mut() {
            if conn.quic.poll_timeout().is_some_and(|t| t <= now) {
                conn.quic.handle_timeout(now);
            }
        }
    }

    pub(super) fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: BytesMut) {
        let mut buf = Vec::new();
        match self.endpoint.handle(now, from, None, None, data, &mut buf) {
            Some(DatagramEvent::ConnectionEvent(h, event)) => {
                if let Some(c) = self.conns.get_mut(&h) {
                    c.quic.handle_event(event);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                let config = self.server_config.clone();
                if let Ok((h, quic)) = self.endpoint.accept(incoming, now, &mut buf, Some(config)) {
                    let session = Session::new(Side::Server, 64 * 1024, 0);
                    self.conns.insert(
                        h,
                        H3Conn {
                            quic,
                            session,
                            streams: HashMap::with_hasher(FixedState),
                        },
                    );
                }
            }
            _ => {}
        }
    }

    pub(super) fn poll_transmits(
        &mut self,
        now: Instant,
        out: &mut Vec<(SocketAddr, SocketAddr, Vec<u8>, Option<usize>)>,
    ) {
        let mut handles: Vec<_> = self.conns.keys().copied().collect();
        handles.sort_by_key(|h| h.0);
        let mut buf = Vec::new();
        for h in handles {
            let conn = self.conns.get_mut(&h).expect("listed");
            while let Some(t) = conn.quic.poll_transmit(now, 4, &mut buf) {
                out.push((
                    self.addr,
                    t.destination,
                    buf[..t.size].to_vec(),
                    t.segment_size,
                ));
                buf.clear();
            }
        }
    }

    pub(super) fn drive(&mut self, _now: Instant) {
        let mut handles: Vec<_> = self.conns.keys().copied().collect();
        handles.sort_by_key(|h| h.0);
        for h in handles {
            let conn = self.conns.get_mut(&h).expect("listed");
            while let Some(event) = conn.quic.poll_endpoint_events() {
                if let Some(event) = self.endpoint.handle_event(h, event) {
                    conn.quic.handle_event(event);
                }
            }
            while let Some(event) = conn.quic.poll() {
                match event {
                    Event::Connected => conn.session.open(&mut conn.quic),
                    Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                        let _ = conn.session.accept_uni_streams(&mut conn.quic);
                    }
                    Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                        while let Some(id) = conn.quic.streams().accept(Dir::Bi) {
                            conn.streams.insert(
                                id,
                                H3Stream {
                                    reader: FrameReader::new(1 << 20),
                                    method: String::new(),
                                    path: String::new(),
                                    body: Vec::new(),
                                    to_send: VecDeque::new(),
                                    responded: false,
                                },
                            );
                            self.requests += read_request(&self.name, conn, id);
                        }
                    }
                    Event::Stream(StreamEvent::Readable { id }) => {
                        if id.dir() == Dir::Uni {
                            let _ = conn.session.on_uni_readable(&mut conn.quic, id);
                        } else {
                            self.requests += read_request(&self.name, conn, id);
                        }
                    }
                    _ => {}
                }
            }
            let mut finished = Vec::new();
            for (&id, s) in conn.streams.iter_mut() {
                if s.to_send.is_empty() {
                    continue;
                }
                let chunks = s.to_send.make_contiguous();
                match conn.quic.send_stream(id).write_chunks(chunks) {
                    Ok(w) => {
                        s.to_send.drain(..w.chunks);
                        if s.to_send.is_empty() {
                            let _ = conn.quic.send_stream(id).finish();
                            finished.push(id);
                        }
                    }
                    Err(WriteError::Blocked) => {}
                    Err(_) => {
                        s.to_send.clear();
                        finished.push(id);
                    }
                }
            }
            for id in finished {
                conn.streams.remove(&id);
            }
        }
    }
}

/// Reads a request stream; answers once it is complete. Returns 1 if it answered.
fn read_request(name: &str, conn: &mut H3Conn, id: StreamId) -> u64 {
    let Some(s) = conn.streams.get_mut(&id) else {
        return 0;
    };
    loop {
        match read_stream(&mut conn.quic, id, usize::MAX) {
            ReadOutcome::Data(mut data) => {
                while let Ok(Some(f)) = s.reader.read(&mut data) {
                    match f {
                        Frame::Headers(block) if s.method.is_empty() => {
                            let mut fields = FieldSection::new();
                            if qpack::decode_field_section(&block, 1 << 20, &mut fields).is_ok() {
                                let get = |n: &[u8]| {
                                    String::from_utf8_lossy(fields.find(n).unwrap_or_default())
                                        .into_owned()
                                };
                                s.method = get(b":method");
                                s.path = get(b":path");
                            }
                        }
                        Frame::Data(d) => s.body.extend_from_slice(&d),
                        _ => {}
                    }
                }
            }
            ReadOutcome::Blocked => return 0,
            ReadOutcome::Finished => break,
            // Closed: everything was read before; the response may still be on its way out.
            ReadOutcome::Closed => return 0,
            ReadOutcome::Reset(_) => {
                conn.streams.remove(&id);
                return 0;
            }
        }
    }
    if s.responded {
        return 0;
    }
    s.responded = true;
    let (status, body) = answer(name, &s.method, &s.path, std::mem::take(&mut s.body));
    let len = body.len().to_string();
    let status = status.to_string();
    let mut block = Vec::new();
    qpack::encode_field_section(
        [
            (&b":status"[..], status.as_bytes()),
            (b"content-length", len.as_bytes()),
            (b"x-backend", name.as_bytes()),
        ],
        &mut block,
    );
    let mut headers = Vec::new();
    frame::write_frame(frame::ty::HEADERS, &block, &mut headers);
    s.to_send.push_back(Bytes::from(headers));
    // The body goes out even for HEAD, as sloppy servers do: Spooky must drop it.
    if !body.is_empty() {
        s.to_send.push_back(frame::data_header(body.len()));
        s.to_send.push_back(Bytes::from(body));
    }
    1
}

struct H1Conn {
    input: Vec<u8>,
    closed: bool,
}

/// A simulated HTTP/1.1 backend (keep-alive, content-length and chunked request bodies).
pub struct H1Backend {
    /// Its name, sent back in `x-backend`.
    pub name: String,
    pub(super) addr: SocketAddr,
    /// False: connections are refused.
    pub up: bool,
    conns: HashMap<TcpId, H1Conn, FixedState>,
    /// Requests answered.
    pub requests: u64,
    /// Requests received whole (the head and the complete body), answered or not.
    pub complete_requests_seen: u64,
    /// Bytes received on all connections.
    pub bytes_received: u64,
    /// Method and path of every request received whole, in order.
    pub seen: Vec<(String, String)>,
    /// Requests received with a chunked body.
    pub chunked_requests: u64,
    /// Answer every request with this status instead.
    pub status: Option<u16>,
    /// Accept connections and requests but never answer.
    pub silent: bool,
    /// Raw bytes to answer the next requests with, one entry per request, instead of a
    /// well-formed response: to see what Spooky makes of broken or ambiguous responses.
    pub scripted: VecDeque<Vec<u8>>,
}

impl H1Backend {
    pub(super) fn new(name: String, addr: SocketAddr) -> Self {
        H1Backend {
            name,
            addr,
            up: true,
            conns: HashMap::with_hasher(FixedState),
            requests: 0,
            complete_requests_seen: 0,
            bytes_received: 0,
            seen: Vec::new(),
            chunked_requests: 0,
            status: None,
            silent: false,
            scripted: VecDeque::new(),
        }
    }

    /// Drops every connection; returns their ids so the peer can be told.
    pub(super) fn close_all(&mut self) -> Vec<TcpId> {
        let mut ids: Vec<TcpId> = self.conns.keys().copied().collect();
        ids.sort();
        self.conns.clear();
        ids
    }

    pub(super) fn accept(&mut self, id: TcpId) {
        self.conns.insert(
            id,
            H1Conn {
                input: Vec::new(),
                closed: false,
            },
        );
    }

    /// Bytes on open connections that do not (yet) make a complete request: after a run has
    /// settled, anything here means the proxy framed a request wrongly.
    pub fn unparsed_input(&self) -> usize {
        self.conns
            .values()
            .filter(|c| !c.closed)
            .map(|c| c.input.len())
            .sum()
    }

    pub(super) fn has_conn(&self, id: TcpId) -> bool {
        self.conns.get(&id).is_some_and(|c| !c.closed)
    }

    /// Bytes (or `None`: a close) arrive; returns what to send back (`None`: close).
    pub(super) fn on_bytes(&mut self, id: TcpId, data: Option<Vec<u8>>) -> Vec<Option<Vec<u8>>> {
        let Some(conn) = self.conns.get_mut(&id) else {
            return Vec::new();
        };
        let Some(data) = data else {
            self.conns.remove(&id);
            return Vec::new();
        };
        self.bytes_received += data.len() as u64;
        conn.input.extend_from_slice(&data);
        let mut replies = Vec::new();
        while let Some(ParsedRequest {
            consumed,
            method,
            path,
            body,
            chunked,
        }) = parse_request(&conn.input)
        {
            self.chunked_requests += u64::from(chunked);
            conn.input.drain(..consumed);
            self.complete_requests_seen += 1;
            self.seen.push((method.clone(), path.clone()));
            if self.silent {
                continue;
            }
            self.requests += 1;
            if let Some(raw) = self.scripted.pop_front() {
                replies.push(Some(raw));
                continue;
            }
            let (status, body) = answer(&self.name, &method, &path, body);
            let status = self.status.unwrap_or(status);
            let mut response = format!(
                "HTTP/1.1 {status} OK\r\ncontent-length: {}\r\nx-backend: {}\r\n\r\n",
                body.len(),
                self.name
            )
            .into_bytes();
            if method != "HEAD" {
                response.extend_from_slice(&body);
            }
            replies.push(Some(response));
        }
        replies
    }
}

/// One complete request taken from a connection's input.
struct ParsedRequest {
    /// Bytes of input it used.
    consumed: usize,
    method: String,
    path: String,
    body: Vec<u8>,
    /// Its body came with chunked coding.
    chunked: bool,
}

/// Parses one complete request from `buf`.
fn parse_request(buf: &[u8]) -> Option<ParsedRequest> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = req.parse(buf).ok()? else {
        return None;
    };
    let method = req.method?.to_owned();
    let path = req.path?.to_owned();
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        let mut at = head_len;
        loop {
            let line_end = find_crlf(&buf[at..])? + at;
            let size_text = std::str::from_utf8(&buf[at..line_end]).ok()?;
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                // Skip trailers up to the empty line.
                loop {
                    let end = find_crlf(&buf[at..])? + at;
                    let empty = end == at;
                    at = end + 2;
                    if empty {
                        return Some(ParsedRequest {
                            consumed: at,
                            method,
                            path,
                            body,
                            chunked: true,
                        });
                    }
                }
            }
            if buf.len() < at + size + 2 {
                return None;
            }
            body.extend_from_slice(&buf[at..at + size]);
            at += size + 2;
        }
    }
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if buf.len() < head_len + len {
        return None;
    }
    Some(ParsedRequest {
        consumed: head_len + len,
        method,
        path,
        body: buf[head_len..head_len + len].to_vec(),
        chunked: false,
    })
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}
