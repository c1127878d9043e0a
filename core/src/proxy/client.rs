//! Client connections: accepting them, their HTTP/3 session, and reading requests.

use std::net::SocketAddr;

use bytes::Bytes;
use hashbrown::HashMap;
use quinn_proto::{Connection, Dir, Event, Incoming, Side, StreamEvent, StreamId};
use smallvec::SmallVec;

use super::exchange::{Exchange, ReqState};
use super::{Core, ExId, TimerKey, slot, transmit};
use crate::SocketKind;
use crate::fields::FieldSection;
use crate::h3::frame::{Frame, FrameError};
use crate::h3::message::{self, Malformed, Method};
use crate::h3::session::{Session, close_with};
use crate::h3::{Code, ConnectionError, qpack};
use crate::quic::{ReadOutcome, read_stream};
use crate::timer::FixedState;

/// Most bytes read from a client stream at once: bounds what one exchange buffers.
pub(super) const READ_CHUNK: usize = 64 * 1024;

/// How long a request whose method carries no body may wait for the client to finish its
/// stream before it is routed anyway (as a chunked request). The FIN usually comes with the
/// HEADERS, but when its packet is lost (a client changing address loses a few) it comes
/// after a retransmission, tens or hundreds of milliseconds later; routing sooner would hand
/// HTTP/1.1 backends a chunked GET, which some answer by resetting the connection mid-
/// response once they close it with the request's last chunk unread.
const WAIT_FOR_END: std::time::Duration = std::time::Duration::from_secs(1);

/// Body bytes read ahead before a backend is chosen. A request that ends within this much is
/// seen whole, and checked whole, before any of it is forwarded: a body that contradicts its
/// content-length then never reaches a backend, and HTTP/1.1 backends get a content-length
/// instead of chunked coding.
const READ_AHEAD: usize = 64 * 1024;

pub(super) struct ClientConn {
    pub(super) quic: Connection,
    pub(super) session: Session,
    pub(super) peer: SocketAddr,
    pub(super) streams: HashMap<StreamId, ExId, FixedState>,
    /// Queued in `dirty_clients`.
    pub(super) dirty: bool,
    /// The first request stream ID not yet accepted, for GOAWAY.
    pub(super) next_request_id: u64,
    /// We closed it (or it was lost): no more work, just wait until quinn-proto drains it.
    pub(super) closed: bool,
}

impl Core {
    pub(super) fn on_incoming(&mut self, incoming: Incoming) {
        let open = self.clients.iter().filter(|c| c.is_some()).count();
        if self.draining || open >= self.config.limits.max_connections as usize {
            self.metrics.connections_refused += 1;
            let mut buf = Vec::new();
            let t = self.client_endpoint.refuse(incoming, &mut buf);
            buf.truncate(t.size);
            self.endpoint_transmits
                .push_back((transmit(SocketKind::Listener, t), buf));
            return;
        }
        let mut buf = Vec::new();
        match self
            .client_endpoint
            .accept(incoming, self.now, &mut buf, None)
        {
            Ok((handle, quic)) => {
                self.metrics.connections_accepted += 1;
                let peer = quic.remote_address();
                let grease = self.rng.next_u64();
                *slot(&mut self.clients, handle) = Some(ClientConn {
                    quic,
                    session: Session::new(
                        Side::Server,
                        u64::from(self.config.limits.max_header_size),
                        grease,
                    ),
                    peer,
                    streams: HashMap::with_hasher(FixedState),
                    dirty: false,
                    next_request_id: 0,
                    closed: false,
                });
                self.drive_client(handle.0);
            }
            Err(e) => {
                tracing::debug!(cause = %e.cause, "rejected an incoming connection");
                if let Some(t) = e.response {
                    buf.truncate(t.size);
                    self.endpoint_transmits
                        .push_back((transmit(SocketKind::Listener, t), buf));
                }
            }
        }
    }

    /// Processes everything quinn-proto has for a client connection.
    pub(super) fn drive_client(&mut self, h: usize) {
        loop {
            let Some(conn) = self.clients.get_mut(h).and_then(Option::as_mut) else {
                return;
            };
            while let Some(event) = conn.quic.poll_endpoint_events() {
                if let Some(event) = self
                    .client_endpoint
                    .handle_event(quinn_proto::ConnectionHandle(h), event)
                {
                    conn.quic.handle_event(event);
                }
            }
            let Some(event) = conn.quic.poll() else {
                break;
            };
            if let Err(error) = self.on_client_event(h, event) {
                self.close_client(h, &error);
            }
        }
        self.mark_client_dirty(h);
        let drained = self
            .clients
            .get(h)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.quic.is_drained());
        if drained {
            self.remove_client(h);
        }
    }

    fn on_client_event(&mut self, h: usize, event: Event) -> Result<(), ConnectionError> {
        match event {
            Event::Connected => {
                let conn = self.client_mut(h)?;
                conn.session.open(&mut conn.quic);
                if self.draining {
                    self.goaway_client(h);
                }
            }
            Event::ConnectionLost { reason } => {
                tracing::debug!(%reason, "client connection lost");
                self.fail_client_exchanges(h);
                if let Some(conn) = self.clients.get_mut(h).and_then(Option::as_mut) {
                    conn.closed = true;
                }
            }
            Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => self.accept_requests(h),
            Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                let conn = self.client_mut(h)?;
                conn.session.accept_uni_streams(&mut conn.quic)?;
            }
            Event::Stream(StreamEvent::Readable { id }) => {
                let conn = self.client_mut(h)?;
                if id.dir() == Dir::Uni {
                    if conn.session.owns(id) {
                        conn.session.on_uni_readable(&mut conn.quic, id)?;
                    }
                } else if let Some(&ex) = conn.streams.get(&id) {
                    self.pump_request(ex);
                }
            }
            Event::Stream(StreamEvent::Writable { id }) => {
                let conn = self.client_mut(h)?;
                if conn.session.is_local_control(id) {
                    conn.session.flush(&mut conn.quic);
                } else if let Some(&ex) = conn.streams.get(&id) {
                    self.pump_response(ex);
                }
            }
            Event::Stream(StreamEvent::Stopped { id, .. }) => {
                let conn = self.client_mut(h)?;
                if conn.session.is_local_control(id) {
                    return Err(ConnectionError::new(
                        Code::CLOSED_CRITICAL_STREAM,
                        "control stream stopped",
                    ));
                }
                if let Some(&ex) = conn.streams.get(&id) {
                    self.abort_exchange(ex, None, Code::REQUEST_CANCELLED);
                }
            }
            // A response was fully acknowledged: a draining connection may be done.
            Event::Stream(StreamEvent::Finished { .. }) => self.client_exchange_removed(h),
            Event::Stream(StreamEvent::Available { .. })
            | Event::HandshakeDataReady
            | Event::DatagramReceived
            | Event::DatagramsUnblocked => {}
        }
        Ok(())
    }

    fn client_mut(&mut self, h: usize) -> Result<&mut ClientConn, ConnectionError> {
        self.clients
            .get_mut(h)
            .and_then(Option::as_mut)
            .ok_or(ConnectionError::new(
                Code::INTERNAL_ERROR,
                "connection gone",
            ))
    }

    fn accept_requests(&mut self, h: usize) {
        loop {
            let Some(conn) = self.clients.get_mut(h).and_then(Option::as_mut) else {
                return;
            };
            let Some(id) = conn.quic.streams().accept(Dir::Bi) else {
                return;
            };
            conn.next_request_id = u64::from(id) + 4;
            let peer = conn.peer;
            if conn
                .session
                .goaway_sent()
                .is_some_and(|limit| u64::from(id) >= limit)
            {
                // Past our GOAWAY: the client may retry it elsewhere (RFC 9114 §5.2).
                let _ = conn
                    .quic
                    .send_stream(id)
                    .reset(Code::REQUEST_REJECTED.varint());
                let _ = conn
                    .quic
                    .recv_stream(id)
                    .stop(Code::REQUEST_REJECTED.varint());
                continue;
            }
            let ex = self.exchanges.insert(Exchange::new(
                h,
                id,
                peer,
                self.now,
                u64::from(self.config.limits.max_header_size),
            ));
            if let Some(conn) = self.clients.get_mut(h).and_then(Option::as_mut) {
                conn.streams.insert(id, ex);
            }
            // Until the request head arrives, the client has the whole-request time.
            let deadline = self.now + self.config.timeouts.request;
            self.exchanges[ex].deadline = Some(deadline);
            self.timers.set(TimerKey::Exchange(ex), Some(deadline));
            self.pump_request(ex);
        }
    }

    /// Moves the request forward: reads from the client while the backend takes what was read.
    ///
    /// Before a backend is chosen, up to [`READ_AHEAD`] bytes of body are read and held; the
    /// backend is chosen once the request is complete, the client has nothing more to give
    /// right now, or the held body reaches that limit. From then on, body pieces are framed
    /// and written as they come, and nothing more is read while the backend is not taking.
    pub(super) fn pump_request(&mut self, ex: ExId) {
        loop {
            let Some(e) = self.exchanges.get_mut(ex) else {
                return;
            };
            if !e.to_backend.is_empty() {
                if !self.flush_to_backend(ex) {
                    return;
                }
                continue;
            }
            let Some(e) = self.exchanges.get_mut(ex) else {
                return;
            };
            if e.leg.is_attached() && !e.body.is_empty() {
                while let Some(piece) = self.exchanges[ex].body.pop_front() {
                    self.frame_body_for_backend(ex, piece);
                }
                continue;
            }
            let ready = ready_to_dispatch(e);
            match e.req {
                ReqState::Abandoned => return,
                ReqState::Complete => {
                    if ready {
                        self.dispatch(ex);
                        continue;
                    }
                    if e.leg.is_attached() && !e.request_sent {
                        if !e.end_queued {
                            e.end_queued = true;
                            self.queue_request_end(ex);
                            continue;
                        }
                        self.finish_backend_request(ex);
                    }
                    return;
                }
                ReqState::Head | ReqState::Body | ReqState::Trailers => {}
            }
            if e.body_held() >= READ_AHEAD {
                if ready {
                    self.dispatch(ex);
                    continue;
                }
                // Wait for the backend to take what is held.
                return;
            }
            if e.input.is_empty() {
                let client = e.client;
                let stream = e.stream;
                let Some(conn) = self.clients.get_mut(client).and_then(Option::as_mut) else {
                    return;
                };
                match read_stream(&mut conn.quic, stream, READ_CHUNK) {
                    ReadOutcome::Data(data) => self.exchanges[ex].input = data,
                    ReadOutcome::Blocked | ReadOutcome::Closed => {
                        // The client has nothing more for now: route what there is.
                        let e = &mut self.exchanges[ex];
                        if !ready_to_dispatch(e) {
                            return;
                        }
                        if e.awaits_end_of_bodiless_request() {
                            // A GET's FIN usually follows its HEADERS within a packet or two;
                            // waiting for it spares the backend a chunked GET (which HTTP/1.1
                            // servers often answer by closing the connection). Other events
                            // on the stream do not cut the wait short; its deadline does.
                            match e.end_wait_until {
                                None => {
                                    let at = self.now + WAIT_FOR_END;
                                    e.end_wait_until = Some(at);
                                    self.set_exchange_deadline(ex, at);
                                    return;
                                }
                                Some(at) if self.now < at => return,
                                Some(_) => {}
                            }
                        }
                        self.dispatch(ex);
                        continue;
                    }
                    ReadOutcome::Finished => {
                        self.on_request_end(ex);
                        continue;
                    }
                    ReadOutcome::Reset(code) => {
                        tracing::debug!(code = code.into_inner(), "client reset its request");
                        self.exchanges[ex].req = ReqState::Abandoned;
                        self.abort_exchange(
                            ex,
                            Some(Code::REQUEST_CANCELLED),
                            Code::REQUEST_CANCELLED,
                        );
                        return;
                    }
                }
                self.mark_client_dirty(client);
            }
            let e = &mut self.exchanges[ex];
            let frame = match e.reader.read(&mut e.input) {
                Ok(Some(frame)) => frame,
                Ok(None) => continue,
                Err(FrameError::HeadersTooLarge { .. }) => {
                    self.metrics.requests_malformed += 1;
                    self.respond_error(ex, 431, "request header fields too large");
                    return;
                }
                Err(FrameError::Connection(error)) => {
                    let client = e.client;
                    self.close_client(client, &error);
                    return;
                }
            };
            if let Err(error) = self.on_request_frame(ex, frame) {
                let client = self.exchanges.get(ex).map(|e| e.client);
                if let Some(client) = client {
                    self.close_client(client, &error);
                }
                return;
            }
        }
    }

    fn on_request_frame(&mut self, ex: ExId, frame: Frame) -> Result<(), ConnectionError> {
        let unexpected = |what| Err(ConnectionError::new(Code::FRAME_UNEXPECTED, what));
        let state = self.exchanges[ex].req;
        match frame {
            Frame::Headers(block) => match state {
                ReqState::Head => self.on_request_head(ex, &block),
                ReqState::Body => self.on_request_trailers(ex, &block),
                _ => unexpected("HEADERS after trailers"),
            },
            Frame::Data(data) => match state {
                ReqState::Body => {
                    self.on_request_data(ex, data);
                    Ok(())
                }
                ReqState::Head => unexpected("DATA before HEADERS"),
                _ => unexpected("DATA after trailers"),
            },
            Frame::Settings(_) | Frame::GoAway(_) | Frame::MaxPushId(_) | Frame::CancelPush(_) => {
                unexpected("control frame on a request stream")
            }
            Frame::PushPromise => unexpected("PUSH_PROMISE from a client"),
        }
    }

    fn on_request_head(&mut self, ex: ExId, block: &[u8]) -> Result<(), ConnectionError> {
        self.metrics.requests += 1;
        // Decoding can expand the block (Huffman, static names): room for twice its size.
        let mut fields = FieldSection::with_capacity(block.len() * 2, 16);
        let limit = self.config.limits.max_header_size as usize;
        match qpack::decode_field_section(block, limit, &mut fields) {
            Ok(()) => {}
            Err(e) if e.is_too_large() => {
                self.metrics.requests_malformed += 1;
                self.respond_error(ex, 431, "request header fields too large");
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(error = %e, "undecodable request header section");
                return Err(ConnectionError::new(
                    Code::QPACK_DECOMPRESSION_FAILED,
                    "invalid field section",
                ));
            }
        }
        let head = match message::validate_request(fields) {
            Ok(head) => head,
            Err(malformed) => {
                self.reject_malformed(ex, &malformed);
                return Ok(());
            }
        };
        let e = &mut self.exchanges[ex];
        e.req = ReqState::Body;
        let method = head.method;
        let declared = head.content_length;
        e.head = Some(Box::new(head));
        if method == Method::Connect {
            self.respond_error(ex, 501, "CONNECT is not supported");
            return Ok(());
        }
        if let (Some(limit), Some(len)) = (self.config.limits.max_request_body, declared) {
            if len > limit {
                self.respond_error(ex, 413, "request body too large");
                return Ok(());
            }
        }
        // The backend is chosen by `pump_request` once some body has been read ahead.
        Ok(())
    }

    fn on_request_trailers(&mut self, ex: ExId, block: &[u8]) -> Result<(), ConnectionError> {
        let mut fields = FieldSection::new();
        let limit = self.config.limits.max_header_size as usize;
        match qpack::decode_field_section(block, limit, &mut fields) {
            Ok(()) => {}
            Err(e) if e.is_too_large() => {
                self.respond_error(ex, 431, "request trailer fields too large");
                return Ok(());
            }
            Err(_) => {
                return Err(ConnectionError::new(
                    Code::QPACK_DECOMPRESSION_FAILED,
                    "invalid field section",
                ));
            }
        }
        if let Err(malformed) = message::validate_trailers(&fields) {
            self.reject_malformed(ex, &malformed);
            return Ok(());
        }
        let e = &mut self.exchanges[ex];
        e.req = ReqState::Trailers;
        e.trailers = Some(fields);
        Ok(())
    }

    fn on_request_data(&mut self, ex: ExId, data: Bytes) {
        let e = &mut self.exchanges[ex];
        e.body_seen += data.len() as u64;
        let declared = e.head.as_ref().and_then(|h| h.content_length);
        if let Some(declared) = declared {
            if e.body_seen > declared {
                let received = e.body_seen;
                self.reject_malformed(ex, &Malformed::ContentLengthMismatch { declared, received });
                return;
            }
        }
        if let Some(limit) = self.config.limits.max_request_body {
            if e.body_seen > limit {
                self.respond_error(ex, 413, "request body too large");
                return;
            }
        }
        e.replayable = false;
        e.body.push_back(data);
    }

    /// The client finished its request stream.
    fn on_request_end(&mut self, ex: ExId) {
        let e = &mut self.exchanges[ex];
        if !e.reader.at_frame_boundary() {
            let client = e.client;
            self.close_client(
                client,
                &ConnectionError::new(Code::FRAME_ERROR, "request stream ended inside a frame"),
            );
            return;
        }
        match e.req {
            ReqState::Head => {
                // No complete request to answer (RFC 9114 §4.1.1).
                self.abort_exchange(ex, Some(Code::REQUEST_INCOMPLETE), Code::REQUEST_CANCELLED);
                return;
            }
            ReqState::Body | ReqState::Trailers => {}
            ReqState::Complete | ReqState::Abandoned => return,
        }
        let declared = e.head.as_ref().and_then(|h| h.content_length);
        if let Some(declared) = declared {
            if declared != e.body_seen {
                let received = e.body_seen;
                self.reject_malformed(ex, &Malformed::ContentLengthMismatch { declared, received });
                return;
            }
        }
        e.req = ReqState::Complete;
        if e.body_seen == 0 && e.trailers.is_none() {
            e.replayable = true;
        }
    }

    /// A malformed request: never forwarded; the client gets a 400 if no response has started,
    /// and the stream is aborted with H3_MESSAGE_ERROR (RFC 9114 §4.1.2).
    fn reject_malformed(&mut self, ex: ExId, why: &Malformed) {
        tracing::debug!(reason = %why, "malformed request");
        self.metrics.requests_malformed += 1;
        let started = self
            .exchanges
            .get(ex)
            .is_some_and(|e| e.resp != super::exchange::RespState::AwaitHead);
        if started {
            self.abort_exchange(ex, Some(Code::MESSAGE_ERROR), Code::REQUEST_CANCELLED);
            return;
        }
        self.release_backend(ex, Code::REQUEST_CANCELLED);
        self.stop_reading_request(ex, Code::MESSAGE_ERROR);
        self.respond_error(ex, 400, &format!("malformed request: {why}"));
    }

    /// Closes a client connection with an HTTP/3 error and fails its exchanges.
    pub(super) fn close_client(&mut self, h: usize, error: &ConnectionError) {
        tracing::debug!(%error, "closing client connection");
        self.metrics.client_protocol_errors += 1;
        self.fail_client_exchanges(h);
        if let Some(conn) = self.clients.get_mut(h).and_then(Option::as_mut) {
            close_with(&mut conn.quic, self.now, error);
            conn.closed = true;
        }
        self.mark_client_dirty(h);
    }

    fn fail_client_exchanges(&mut self, h: usize) {
        let Some(conn) = self.clients.get_mut(h).and_then(Option::as_mut) else {
            return;
        };
        let exchanges: SmallVec<[ExId; 16]> = conn.streams.values().copied().collect();
        for ex in exchanges {
            self.abort_exchange(ex, None, Code::REQUEST_CANCELLED);
        }
    }

    fn remove_client(&mut self, h: usize) {
        self.fail_client_exchanges(h);
        self.clients[h] = None;
        self.timers.set(TimerKey::Client(h), None);
    }

    /// Called after an exchange of client `h` went away: a draining connection with nothing
    /// left in flight can close now.
    pub(super) fn client_exchange_removed(&mut self, h: usize) {
        if !self.draining {
            return;
        }
        let Some(conn) = self.clients.get_mut(h).and_then(Option::as_mut) else {
            return;
        };
        // Closing discards unsent stream data, so wait until every response is acknowledged:
        // the only send stream left is then our control stream.
        let unacknowledged = conn.quic.streams().send_streams();
        if conn.streams.is_empty() && !conn.closed && unacknowledged <= 1 {
            conn.quic.close(
                self.now,
                Code::NO_ERROR.varint(),
                Bytes::from_static(b"shutting down"),
            );
            conn.closed = true;
            self.mark_client_dirty(h);
        }
    }

    /// Begins a graceful drain: GOAWAY to every client, refuse new connections.
    pub(super) fn start_drain(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        for h in 0..self.clients.len() {
            self.goaway_client(h);
            self.client_exchange_removed(h);
        }
    }

    fn goaway_client(&mut self, h: usize) {
        if let Some(conn) = self.clients.get_mut(h).and_then(Option::as_mut) {
            let next = conn.next_request_id;
            conn.session.send_goaway(&mut conn.quic, next);
            self.mark_client_dirty(h);
        }
    }
}

/// The request head is valid and no backend has been chosen yet (nor an answer given).
pub(super) fn ready_to_dispatch(e: &Exchange) -> bool {
    matches!(e.leg, super::exchange::Leg::Unassigned)
        && e.head.is_some()
        && !matches!(e.req, ReqState::Head | ReqState::Abandoned)
        && e.resp == super::exchange::RespState::AwaitHead
        && !e.client_done
        && e.probe.is_none()
}
