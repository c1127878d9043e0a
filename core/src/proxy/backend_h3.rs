//! HTTP/3 backends: multiplexed QUIC connections, request streams, and response reading.

use bytes::Bytes;
use hashbrown::HashMap;
use quinn_proto::{Connection, Dir, Event, Side, StreamEvent, StreamId, WriteError};
use smallvec::SmallVec;

use super::client::READ_CHUNK;
use super::dispatch::{forwarded_fields, upstream_path};
use super::exchange::{Leg, RespState, headers_frame};
use super::health::Failure;
use super::{Core, ExId, TimerKey, slot};
use crate::fields::FieldSection;
use crate::h3::frame::{Frame, FrameError, FrameReader};
use crate::h3::message::{self, Method};
use crate::h3::session::{Session, close_with};
use crate::h3::{Code, ConnectionError, qpack};
use crate::quic::{ReadOutcome, read_stream};
use crate::timer::FixedState;

/// QUIC connections per HTTP/3 backend per core; each carries many requests.
const MAX_CONNS_PER_BACKEND: usize = 4;

pub(super) struct BackendConn {
    pub(super) quic: Connection,
    pub(super) session: Session,
    pub(super) backend: usize,
    pub(super) streams: HashMap<StreamId, ExId, FixedState>,
    pub(super) dirty: bool,
    pub(super) connected: bool,
    pub(super) closed: bool,
}

impl BackendConn {
    /// Can take new requests.
    fn usable(&self) -> bool {
        self.connected && !self.closed && self.session.goaway_received().is_none()
    }
}

impl Core {
    pub(super) fn dispatch_h3(&mut self, ex: ExId, b: usize) {
        if self.try_open_h3_stream(ex, b) {
            return;
        }
        let backend = &self.backends[b];
        let connecting = backend.quic_conns.iter().any(|&h| {
            self.backend_conns[h]
                .as_ref()
                .is_some_and(|c| !c.connected && !c.closed)
        });
        let open = backend.quic_conns.len();
        if !connecting && open < MAX_CONNS_PER_BACKEND && !self.connect_h3(b) {
            self.attempt_failed(ex, Failure::Connect);
            return;
        }
        self.wait_for_backend(ex, b);
    }

    /// Opens a request stream on a usable connection of backend `b` for `ex`.
    fn try_open_h3_stream(&mut self, ex: ExId, b: usize) -> bool {
        for i in 0..self.backends[b].quic_conns.len() {
            let h = self.backends[b].quic_conns[i];
            let Some(conn) = self.backend_conns[h].as_mut() else {
                continue;
            };
            if !conn.usable() {
                continue;
            }
            if let Some(stream) = conn.quic.streams().open(Dir::Bi) {
                conn.streams.insert(stream, ex);
                self.attach_h3(ex, h, stream);
                return true;
            }
        }
        false
    }

    fn connect_h3(&mut self, b: usize) -> bool {
        let backend = &self.backends[b];
        let Some(config) = backend.quic_config.clone() else {
            return false;
        };
        match self
            .backend_endpoint
            .connect(self.now, config, backend.address, &backend.server_name)
        {
            Ok((handle, quic)) => {
                self.metrics.quic_connects += 1;
                let grease = self.rng.next_u64();
                *slot(&mut self.backend_conns, handle) = Some(BackendConn {
                    quic,
                    session: Session::new(
                        Side::Client,
                        u64::from(self.config.limits.max_header_size),
                        grease,
                    ),
                    backend: b,
                    streams: HashMap::with_hasher(FixedState),
                    dirty: false,
                    connected: false,
                    closed: false,
                });
                self.backends[b].quic_conns.push(handle.0);
                self.drive_backend(handle.0);
                true
            }
            Err(error) => {
                tracing::warn!(backend = %backend.id, %error, "cannot start a QUIC connection");
                false
            }
        }
    }

    fn attach_h3(&mut self, ex: ExId, conn: usize, stream: StreamId) {
        let e = &self.exchanges[ex];
        let client_ip = e.probe.is_none().then(|| e.peer.ip());
        let max_header = u64::from(self.config.limits.max_header_size);
        let e = &mut self.exchanges[ex];
        let head = e.head.as_ref().expect("dispatched requests have a head");
        let route = e.route.as_ref().map(|(config, r)| &config.routes[*r]);
        let regular = forwarded_fields(
            head,
            client_ip,
            &[],
            false,
            route.map(|r| &r.request_headers),
        );
        let path = upstream_path(head.path().unwrap_or(b"/"), route);
        let pseudo: [(&[u8], &[u8]); 4] = [
            (b":method", head.method_bytes()),
            (b":scheme", head.scheme().unwrap_or(b"https")),
            (b":authority", head.authority().unwrap_or_default()),
            (b":path", &path),
        ];
        let frame = headers_frame(
            pseudo.into_iter().chain(regular.iter()),
            &mut self.scratch,
            &mut self.arena,
        );
        let e = &mut self.exchanges[ex];
        e.to_backend.insert(0, frame);
        e.leg = Leg::H3 {
            conn,
            stream,
            reader: Box::new(FrameReader::new(max_header)),
            input: Bytes::new(),
        };
        self.request_attached(ex);
        self.mark_backend_dirty(conn);
    }

    /// Serves exchanges waiting at backend `b` while its connections have streams to give.
    fn serve_waiting_h3(&mut self, b: usize) {
        while let Some(&ex) = self.backends[b].waiting.front() {
            if !self.exchanges.contains(ex) {
                self.backends[b].waiting.pop_front();
                continue;
            }
            // Take it off the queue first: attaching changes its leg.
            self.backends[b].waiting.pop_front();
            self.exchanges[ex].leg = super::exchange::Leg::Unassigned;
            if !self.try_open_h3_stream(ex, b) {
                self.exchanges[ex].leg = Leg::Waiting;
                self.backends[b].waiting.push_front(ex);
                break;
            }
        }
    }

    /// Processes everything quinn-proto has for a backend connection.
    pub(super) fn drive_backend(&mut self, h: usize) {
        loop {
            let Some(conn) = self.backend_conns.get_mut(h).and_then(Option::as_mut) else {
                return;
            };
            while let Some(event) = conn.quic.poll_endpoint_events() {
                if let Some(event) = self
                    .backend_endpoint
                    .handle_event(quinn_proto::ConnectionHandle(h), event)
                {
                    conn.quic.handle_event(event);
                }
            }
            let Some(event) = conn.quic.poll() else {
                break;
            };
            if let Err(error) = self.on_backend_event(h, event) {
                self.close_backend(h, &error);
            }
        }
        self.mark_backend_dirty(h);
        let drained = self
            .backend_conns
            .get(h)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.quic.is_drained());
        if drained {
            self.backend_conns[h] = None;
            self.timers.set(TimerKey::Backend(h), None);
        }
    }

    fn on_backend_event(&mut self, h: usize, event: Event) -> Result<(), ConnectionError> {
        let Some(conn) = self.backend_conns.get_mut(h).and_then(Option::as_mut) else {
            return Ok(());
        };
        let b = conn.backend;
        match event {
            Event::Connected => {
                conn.connected = true;
                conn.session.open(&mut conn.quic);
                self.serve_waiting_h3(b);
            }
            Event::ConnectionLost { reason } => {
                let backend = &self.backends[b];
                tracing::debug!(backend = %backend.id, %reason, "backend connection lost");
                let never_connected = !conn.connected;
                conn.closed = true;
                self.forget_backend_conn(h, b);
                self.fail_backend_streams(h);
                if never_connected && !self.backend_has_usable_conn(b) {
                    // Nobody waiting here can be served by this backend right now.
                    self.fail_waiting(b);
                } else {
                    self.serve_waiting_h3_or_connect(b);
                }
            }
            Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                conn.session.accept_uni_streams(&mut conn.quic)?;
            }
            Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                return Err(ConnectionError::new(
                    Code::STREAM_CREATION_ERROR,
                    "server-initiated bidirectional stream",
                ));
            }
            Event::Stream(StreamEvent::Readable { id }) => {
                if id.dir() == Dir::Uni {
                    if conn.session.owns(id) {
                        conn.session.on_uni_readable(&mut conn.quic, id)?;
                        if conn.session.goaway_received().is_some() {
                            // No new requests here; serve the queue elsewhere.
                            self.serve_waiting_h3_or_connect(b);
                        }
                    }
                } else if let Some(&ex) = conn.streams.get(&id) {
                    self.pump_response(ex);
                }
            }
            Event::Stream(StreamEvent::Writable { id }) => {
                if conn.session.is_local_control(id) {
                    conn.session.flush(&mut conn.quic);
                } else if let Some(&ex) = conn.streams.get(&id) {
                    self.pump_request(ex);
                }
            }
            Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                if conn.session.is_local_control(id) {
                    return Err(ConnectionError::new(
                        Code::CLOSED_CRITICAL_STREAM,
                        "control stream stopped",
                    ));
                }
                if let Some(&ex) = conn.streams.get(&id) {
                    self.on_h3_request_stopped(ex, error_code.into_inner());
                }
            }
            Event::Stream(StreamEvent::Available { dir: Dir::Bi }) => self.serve_waiting_h3(b),
            Event::Stream(StreamEvent::Available { .. } | StreamEvent::Finished { .. })
            | Event::HandshakeDataReady
            | Event::DatagramReceived
            | Event::DatagramsUnblocked => {}
        }
        Ok(())
    }

    fn serve_waiting_h3_or_connect(&mut self, b: usize) {
        self.serve_waiting_h3(b);
        if self.backends[b].waiting.is_empty() {
            return;
        }
        let connecting = self.backends[b].quic_conns.iter().any(|&h| {
            self.backend_conns[h]
                .as_ref()
                .is_some_and(|c| !c.connected && !c.closed)
        });
        if !connecting
            && self.backends[b].quic_conns.len() < MAX_CONNS_PER_BACKEND
            && !self.connect_h3(b)
        {
            self.fail_waiting(b);
        }
    }

    fn backend_has_usable_conn(&self, b: usize) -> bool {
        self.backends[b]
            .quic_conns
            .iter()
            .any(|&h| self.backend_conns[h].as_ref().is_some_and(|c| !c.closed))
    }

    /// Every exchange waiting at backend `b` failed to get a connection: each is retried
    /// elsewhere or answered.
    fn fail_waiting(&mut self, b: usize) {
        // Take the queue first: a retry may queue here again, for a fresh connection.
        let waiting: Vec<ExId> = self.backends[b].waiting.drain(..).collect();
        for ex in waiting {
            if let Some(e) = self.exchanges.get_mut(ex) {
                e.leg = Leg::Released;
                self.attempt_failed(ex, Failure::Connect);
            }
        }
    }

    fn forget_backend_conn(&mut self, h: usize, b: usize) {
        self.backends[b].quic_conns.retain(|&c| c != h);
    }

    /// Fails every exchange on a backend connection that went away.
    fn fail_backend_streams(&mut self, h: usize) {
        let Some(conn) = self.backend_conns.get_mut(h).and_then(Option::as_mut) else {
            return;
        };
        let exchanges: SmallVec<[ExId; 16]> = conn.streams.values().copied().collect();
        conn.streams.clear();
        for ex in exchanges {
            if let Some(e) = self.exchanges.get_mut(ex) {
                e.leg = Leg::Released;
                if e.resp == RespState::AwaitHead {
                    self.attempt_failed(ex, Failure::Reset);
                } else {
                    self.abort_exchange(ex, Some(Code::INTERNAL_ERROR), Code::REQUEST_CANCELLED);
                }
            }
        }
    }

    fn close_backend(&mut self, h: usize, error: &ConnectionError) {
        let Some(conn) = self.backend_conns.get_mut(h).and_then(Option::as_mut) else {
            return;
        };
        tracing::warn!(backend = %self.backends[conn.backend].id, %error, "closing backend connection");
        close_with(&mut conn.quic, self.now, error);
        conn.closed = true;
        let b = conn.backend;
        self.forget_backend_conn(h, b);
        self.fail_backend_streams(h);
        self.mark_backend_dirty(h);
    }

    pub(super) fn flush_to_h3(&mut self, ex: ExId, conn: usize, stream: StreamId) -> bool {
        let Some(c) = self.backend_conns.get_mut(conn).and_then(Option::as_mut) else {
            return false;
        };
        let e = &mut self.exchanges[ex];
        // Write until everything is taken or Blocked: only a Blocked write registers the
        // stream for a Writable event.
        let mut result = Ok(());
        while !e.to_backend.is_empty() {
            match c.quic.send_stream(stream).write_chunks(&mut e.to_backend) {
                Ok(written) => {
                    e.to_backend.drain(..written.chunks);
                }
                Err(error) => {
                    result = Err(error);
                    break;
                }
            }
        }
        self.mark_backend_dirty(conn);
        match result {
            Ok(()) | Err(WriteError::Blocked) => self.exchanges[ex].to_backend.is_empty(),
            Err(WriteError::Stopped(code)) => {
                self.on_h3_request_stopped(ex, code.into_inner());
                false
            }
            Err(WriteError::ClosedStream) => false,
        }
    }

    /// The backend stopped reading our request. It may still send a complete response, which
    /// must not be discarded (RFC 9114 §4.1): stop sending, keep reading. If the stream then
    /// ends without a response, the client gets a 502 from the response path.
    fn on_h3_request_stopped(&mut self, ex: ExId, code: u64) {
        tracing::debug!(code, "backend stopped reading the request");
        let e = &mut self.exchanges[ex];
        e.to_backend.clear();
        e.body.clear();
        e.request_sent = true;
        self.stop_reading_request(ex, Code::NO_ERROR);
        self.pump_response(ex);
    }

    /// Reads the response from an HTTP/3 backend stream. Returns false when it cannot go on.
    pub(super) fn pump_h3_response(&mut self, ex: ExId) -> bool {
        let Some(e) = self.exchanges.get_mut(ex) else {
            return false;
        };
        let Leg::H3 {
            conn,
            stream,
            reader,
            input,
        } = &mut e.leg
        else {
            return false;
        };
        let (h, id) = (*conn, *stream);
        if input.is_empty() {
            let Some(c) = self.backend_conns.get_mut(h).and_then(Option::as_mut) else {
                return false;
            };
            match read_stream(&mut c.quic, id, READ_CHUNK) {
                ReadOutcome::Data(data) => *input = data,
                ReadOutcome::Blocked | ReadOutcome::Closed => return false,
                ReadOutcome::Finished => {
                    let at_boundary = reader.at_frame_boundary();
                    self.mark_backend_dirty(h);
                    if !at_boundary {
                        self.close_backend(
                            h,
                            &ConnectionError::new(Code::FRAME_ERROR, "stream ended inside a frame"),
                        );
                        return false;
                    }
                    self.on_h3_response_end(ex);
                    return true;
                }
                ReadOutcome::Reset(code) => {
                    tracing::debug!(code = code.into_inner(), "backend reset the response");
                    if self.exchanges[ex].resp == RespState::AwaitHead {
                        self.attempt_failed(ex, Failure::Reset);
                    } else {
                        self.abort_exchange(
                            ex,
                            Some(Code::INTERNAL_ERROR),
                            Code::REQUEST_CANCELLED,
                        );
                    }
                    return false;
                }
            }
            // Reading released flow-control credit.
            if !c.dirty {
                c.dirty = true;
                self.dirty_backends.push_back(h);
            }
        }
        let frame = match reader.read(input) {
            Ok(Some(frame)) => frame,
            Ok(None) => return true,
            Err(FrameError::HeadersTooLarge { .. }) => {
                self.metrics.upstream_failures += 1;
                self.respond_error(ex, 502, "backend response headers too large");
                return false;
            }
            Err(FrameError::Connection(error)) => {
                self.close_backend(h, &error);
                return false;
            }
        };
        match self.on_h3_response_frame(ex, frame) {
            Ok(go_on) => go_on,
            Err(error) => {
                self.close_backend(h, &error);
                false
            }
        }
    }

    fn on_h3_response_frame(&mut self, ex: ExId, frame: Frame) -> Result<bool, ConnectionError> {
        let unexpected = |what| Err(ConnectionError::new(Code::FRAME_UNEXPECTED, what));
        let e = &self.exchanges[ex];
        match (frame, e.resp) {
            (Frame::Headers(block), RespState::AwaitHead) => {
                Ok(self.on_h3_response_head(ex, &block))
            }
            (Frame::Headers(block), RespState::Body) => {
                let mut trailers = FieldSection::new();
                let limit = self.config.limits.max_header_size as usize;
                if qpack::decode_field_section(&block, limit, &mut trailers).is_err()
                    || message::validate_trailers(&trailers).is_err()
                {
                    self.abort_exchange(ex, Some(Code::INTERNAL_ERROR), Code::MESSAGE_ERROR);
                    return Ok(false);
                }
                self.send_response_trailers(ex, &trailers);
                Ok(true)
            }
            (Frame::Data(data), RespState::Body) => {
                let e = &self.exchanges[ex];
                if e.is_head_request() || e.status == 204 || e.status == 304 {
                    // Content on a response that never has any (RFC 9110 §9.3.2, §15.3.5,
                    // §15.4.5); sloppy servers send the GET body for HEAD. HTTP/3 frames it,
                    // so it can be dropped without desynchronising anything, and the client
                    // keeps the response whose head it already has.
                    tracing::debug!(
                        status = e.status,
                        bytes = data.len(),
                        "content on a response that has none; dropped"
                    );
                    return Ok(true);
                }
                let seen = e.resp_seen + data.len() as u64;
                let too_long = e.resp_declared.is_some_and(|d| seen > d);
                if too_long {
                    self.abort_exchange(ex, Some(Code::INTERNAL_ERROR), Code::MESSAGE_ERROR);
                    return Ok(false);
                }
                self.send_response_data(ex, data);
                Ok(true)
            }
            (Frame::Data(_), RespState::AwaitHead) => unexpected("DATA before HEADERS"),
            (Frame::PushPromise, _) => unexpected("PUSH_PROMISE without MAX_PUSH_ID"),
            (Frame::Headers(_) | Frame::Data(_), RespState::Complete) => Ok(false),
            (_, _) => unexpected("control frame on a request stream"),
        }
    }

    fn on_h3_response_head(&mut self, ex: ExId, block: &[u8]) -> bool {
        let mut fields = FieldSection::new();
        let limit = self.config.limits.max_header_size as usize;
        let head = qpack::decode_field_section(block, limit, &mut fields)
            .map_err(|e| e.to_string())
            .and_then(|()| message::validate_response(fields).map_err(|e| e.to_string()));
        let head = match head {
            Ok(head) => head,
            Err(reason) => {
                tracing::debug!(%reason, "malformed response from backend");
                self.metrics.upstream_failures += 1;
                self.respond_error(ex, 502, "malformed response from backend");
                return false;
            }
        };
        let status = head.status;
        if !head.is_interim() && !self.final_response_head(ex, status) {
            return false;
        }
        self.send_response_head(ex, status, head.regular_fields());
        if !head.is_interim() {
            self.exchanges[ex].resp_declared = head.content_length;
        }
        true
    }

    fn on_h3_response_end(&mut self, ex: ExId) {
        let e = &self.exchanges[ex];
        match e.resp {
            RespState::AwaitHead => {
                self.attempt_failed(ex, Failure::Reset);
            }
            RespState::Body => {
                let head_request = e.head.as_ref().is_some_and(|h| h.method == Method::Head);
                let short = !head_request && e.resp_declared.is_some_and(|d| d != e.resp_seen);
                if short {
                    self.abort_exchange(ex, Some(Code::INTERNAL_ERROR), Code::MESSAGE_ERROR);
                } else {
                    self.end_response(ex);
                }
            }
            RespState::Complete => {}
        }
    }

    /// Detaches an exchange from its backend stream, cancelling whatever is unfinished.
    pub(super) fn release_h3_stream(&mut self, ex: ExId, h: usize, stream: StreamId, code: Code) {
        let Some(conn) = self.backend_conns.get_mut(h).and_then(Option::as_mut) else {
            return;
        };
        conn.streams.remove(&stream);
        let (request_sent, response_done) = self
            .exchanges
            .get(ex)
            .map(|e| (e.request_sent, e.resp == RespState::Complete))
            .unwrap_or((false, false));
        if !request_sent {
            let _ = conn.quic.send_stream(stream).reset(code.varint());
        }
        if !response_done {
            let _ = conn.quic.recv_stream(stream).stop(code.varint());
        }
        let b = conn.backend;
        self.mark_backend_dirty(h);
        // A stream slot may have opened up for someone waiting.
        self.serve_waiting_h3(b);
        if self.draining || self.backends[b].retired {
            self.close_idle_backend_conn(h);
        }
    }

    pub(super) fn close_idle_backend_conn(&mut self, h: usize) {
        if let Some(conn) = self.backend_conns.get_mut(h).and_then(Option::as_mut) {
            if conn.streams.is_empty() && !conn.closed {
                conn.quic
                    .close(self.now, Code::NO_ERROR.varint(), Bytes::new());
                conn.closed = true;
                let b = conn.backend;
                self.forget_backend_conn(h, b);
                self.mark_backend_dirty(h);
            }
        }
    }
}
