//! One request in flight: its state on the client side and on the backend side, and the
//! response path that both kinds of backend share.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use quinn_proto::{StreamId, WriteError};
use smallvec::SmallVec;

use super::arena::Arena;
use super::health::Failure;
use super::{Core, ExId, TimerKey};
use crate::TcpId;
use crate::fields::FieldSection;
use crate::h3::frame::{self, FrameReader};
use crate::h3::message::RequestHead;
use crate::h3::{Code, qpack};
use crate::http1::RequestBodyFraming;

/// Where the request stands on the client side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReqState {
    /// Waiting for the HEADERS frame.
    Head,
    /// Reading DATA.
    Body,
    /// Trailers arrived; only the end of the stream may follow.
    Trailers,
    /// The client finished the stream and the body was complete.
    Complete,
    /// We stopped reading (the response ended early, or the request was rejected).
    Abandoned,
}

/// Where the response stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RespState {
    /// No final response head sent to the client yet.
    AwaitHead,
    /// Head sent, body flowing.
    Body,
    /// Everything queued for the client (possibly not yet flushed).
    Complete,
}

/// The backend side of an exchange.
pub(super) enum Leg {
    /// Not yet routed.
    Unassigned,
    /// Queued at a backend for a connection or a stream.
    Waiting,
    /// A request stream on an HTTP/3 backend connection.
    H3 {
        conn: usize,
        stream: StreamId,
        reader: Box<FrameReader>,
        input: Bytes,
    },
    /// An HTTP/1.1 connection being opened for this request; nothing is sent yet.
    Connecting { tcp: TcpId },
    /// An HTTP/1.1 connection carrying this request.
    H1 { tcp: TcpId },
    /// Finished with or given up on; nothing more goes to the backend.
    Released,
}

impl Leg {
    pub(super) fn is_attached(&self) -> bool {
        matches!(self, Leg::H3 { .. } | Leg::H1 { .. })
    }
}

pub(super) struct Exchange {
    pub(super) client: usize,
    pub(super) stream: StreamId,
    pub(super) peer: SocketAddr,
    pub(super) started: Instant,

    // Client → backend.
    pub(super) reader: FrameReader,
    /// Bytes read from the client stream, not yet parsed into frames.
    pub(super) input: Bytes,
    pub(super) req: ReqState,
    pub(super) head: Option<Box<RequestHead>>,
    pub(super) body_seen: u64,
    /// Body pieces read from the client, not yet framed for the backend.
    pub(super) body: VecDeque<Bytes>,
    /// Framed bytes the backend has not accepted yet.
    pub(super) to_backend: SmallVec<[Bytes; 3]>,
    pub(super) trailers: Option<FieldSection>,
    /// The end of the request (trailers, last chunk) has been queued in `to_backend`.
    pub(super) end_queued: bool,
    /// The whole request has been handed to the backend.
    pub(super) request_sent: bool,
    pub(super) h1_framing: RequestBodyFraming,
    /// The request can be sent again on another connection (nothing of its body was consumed).
    pub(super) replayable: bool,
    /// Some of the body went to a backend: the request can no longer be retried.
    pub(super) body_forwarded: bool,

    // Backend.
    pub(super) backend: Option<usize>,
    pub(super) leg: Leg,
    pub(super) deadline: Option<Instant>,
    /// Attempts before the current one.
    pub(super) attempts: u32,
    /// Backends already tried.
    pub(super) tried: SmallVec<[usize; 2]>,
    /// Counted in the pool's retries in flight.
    pub(super) retrying: bool,
    /// When the current attempt was sent (for latency).
    pub(super) attempt_started: Instant,
    /// A health probe of this backend, not a client's request.
    pub(super) probe: Option<usize>,
    /// Routing is held back until then, waiting for the end of a bodiless request.
    pub(super) end_wait_until: Option<Instant>,
    /// The route the current attempt took, if a rule matched.
    pub(super) route: Option<super::pool::RouteRef>,

    // Backend → client.
    pub(super) resp: RespState,
    pub(super) status: u16,
    pub(super) resp_declared: Option<u64>,
    pub(super) resp_seen: u64,
    /// Framed bytes for the client not yet accepted by its stream.
    pub(super) to_client: SmallVec<[Bytes; 4]>,
    /// Finish the client stream once `to_client` is flushed.
    pub(super) finish_client: bool,
    /// The client stream was finished or reset: nothing more goes to the client.
    pub(super) client_done: bool,
}

impl Exchange {
    pub(super) fn new(
        client: usize,
        stream: StreamId,
        peer: SocketAddr,
        now: Instant,
        max_header: u64,
    ) -> Self {
        Exchange {
            client,
            stream,
            peer,
            started: now,
            reader: FrameReader::new(max_header),
            input: Bytes::new(),
            req: ReqState::Head,
            head: None,
            body_seen: 0,
            body: VecDeque::new(),
            to_backend: SmallVec::new(),
            trailers: None,
            end_queued: false,
            request_sent: false,
            h1_framing: RequestBodyFraming::None,
            replayable: false,
            body_forwarded: false,
            backend: None,
            leg: Leg::Unassigned,
            deadline: None,
            attempts: 0,
            tried: SmallVec::new(),
            retrying: false,
            attempt_started: now,
            probe: None,
            end_wait_until: None,
            route: None,
            resp: RespState::AwaitHead,
            status: 0,
            resp_declared: None,
            resp_seen: 0,
            to_client: SmallVec::new(),
            finish_client: false,
            client_done: false,
        }
    }

    /// A GET-like request (no content-length, no body so far) whose stream has not ended:
    /// worth waiting a moment for its end before routing it.
    pub(super) fn awaits_end_of_bodiless_request(&self) -> bool {
        self.req == ReqState::Body
            && self.body_seen == 0
            && self
                .head
                .as_ref()
                .is_some_and(|h| h.content_length.is_none() && !h.method.expects_body())
    }

    /// Body bytes read from the client and not yet framed for a backend.
    pub(super) fn body_held(&self) -> usize {
        self.body.iter().map(Bytes::len).sum()
    }

    pub(super) fn is_head_request(&self) -> bool {
        self.head
            .as_ref()
            .is_some_and(|h| h.method == crate::h3::message::Method::Head)
    }
}

/// A HEADERS frame carrying `fields`, encoded with QPACK.
pub(super) fn headers_frame<'a>(
    fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    scratch: &mut Vec<u8>,
    arena: &mut Arena,
) -> Bytes {
    scratch.clear();
    qpack::encode_field_section(fields, scratch);
    arena.frame(frame::ty::HEADERS, scratch)
}

/// Three ASCII digits for a status code.
pub(super) fn status_digits(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

impl Core {
    /// Queues a response head for the client; `interim` heads (1xx) may precede the final one.
    pub(super) fn send_response_head<'a>(
        &mut self,
        ex: ExId,
        status: u16,
        fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    ) {
        let digits = status_digits(status);
        let status_field = std::iter::once((&b":status"[..], &digits[..]));
        // The route's response edits apply to the final head.
        let route = self.exchanges.get(ex).and_then(|e| e.route.clone());
        let edits = route
            .as_ref()
            .map(|(config, r)| &config.routes[*r].response_headers)
            .filter(|edits| !edits.is_empty() && !(100..200).contains(&status));
        // Shorten the fields' lifetime to that of `digits`.
        let fields = fields
            .map(|(n, v)| -> (&[u8], &[u8]) { (n, v) })
            .filter(|(n, _)| !edits.is_some_and(|e| e.drops(n)));
        let added = edits
            .into_iter()
            .flat_map(|e| e.set.iter())
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        let frame = headers_frame(
            status_field.chain(fields).chain(added),
            &mut self.scratch,
            &mut self.arena,
        );
        let Some(e) = self.exchanges.get_mut(ex) else {
            return;
        };
        e.to_client.push(frame);
        if !(100..200).contains(&status) {
            e.resp = RespState::Body;
            e.status = status;
            if e.probe.is_none() {
                self.metrics.count_status(status);
            }
            // The backend answered: only the whole-request deadline remains.
            let deadline = e.started + self.config.timeouts.request;
            e.deadline = Some(deadline);
            self.timers.set(TimerKey::Exchange(ex), Some(deadline));
        }
    }

    /// Queues response body bytes for the client as a DATA frame.
    pub(super) fn send_response_data(&mut self, ex: ExId, data: Bytes) {
        if data.is_empty() {
            return;
        }
        if let Some(e) = self.exchanges.get_mut(ex) {
            e.resp_seen += data.len() as u64;
            e.to_client
                .push(self.arena.frame_header(frame::ty::DATA, data.len()));
            e.to_client.push(data);
        }
    }

    /// Queues trailers for the client.
    pub(super) fn send_response_trailers(&mut self, ex: ExId, trailers: &FieldSection) {
        let frame = headers_frame(trailers.iter(), &mut self.scratch, &mut self.arena);
        if let Some(e) = self.exchanges.get_mut(ex) {
            e.to_client.push(frame);
        }
    }

    /// Marks the response complete: the client stream is finished once everything is flushed.
    pub(super) fn end_response(&mut self, ex: ExId) {
        if let Some(e) = self.exchanges.get_mut(ex) {
            e.resp = RespState::Complete;
            e.finish_client = true;
        }
    }

    /// Writes what is queued for the client. Returns true if everything was accepted.
    pub(super) fn flush_to_client(&mut self, ex: ExId) -> bool {
        let Some(e) = self.exchanges.get_mut(ex) else {
            return false;
        };
        if e.client_done {
            return true;
        }
        if e.probe.is_some() {
            // Nobody reads a probe's response; it only has to end.
            e.to_client.clear();
            if e.finish_client {
                e.client_done = true;
                self.maybe_complete(ex);
            }
            return true;
        }
        let Some(conn) = self.clients.get_mut(e.client).and_then(Option::as_mut) else {
            return false;
        };
        let mut stopped = None;
        // Write until everything is taken or quinn-proto says Blocked: only a Blocked write
        // registers the stream for a Writable event (a partial write does not).
        while !e.to_client.is_empty() {
            let mut stream = conn.quic.send_stream(e.stream);
            match stream.write_chunks(&mut e.to_client) {
                Ok(written) => {
                    e.to_client.drain(..written.chunks);
                }
                Err(WriteError::Blocked) => break,
                Err(WriteError::Stopped(code)) => {
                    stopped = Some(code.into_inner());
                    break;
                }
                Err(WriteError::ClosedStream) => {
                    stopped = Some(Code::REQUEST_CANCELLED.0);
                    break;
                }
            }
        }
        let client = e.client;
        let flushed = e.to_client.is_empty();
        if flushed && e.finish_client && stopped.is_none() {
            let _ = conn.quic.send_stream(e.stream).finish();
            e.client_done = true;
        }
        self.mark_client_dirty(client);
        if let Some(code) = stopped {
            // The client does not want the response (STOP_SENDING); quinn-proto has reset
            // the stream for us.
            tracing::debug!(code, "client stopped reading the response");
            self.abort_exchange(ex, None, Code::REQUEST_CANCELLED);
            return false;
        }
        if flushed {
            self.maybe_complete(ex);
        }
        flushed
    }

    /// Answers the client with a short text response generated by Spooky. If a response has
    /// already started, the client stream is reset instead. The backend side is released.
    pub(super) fn respond_error(&mut self, ex: ExId, status: u16, message: &str) {
        let Some(e) = self.exchanges.get(ex) else {
            return;
        };
        if e.resp != RespState::AwaitHead || e.client_done || e.probe.is_some() {
            self.abort_exchange(ex, Some(Code::INTERNAL_ERROR), Code::REQUEST_CANCELLED);
            return;
        }
        self.release_backend(ex, Code::REQUEST_CANCELLED);
        let body = Bytes::from(format!("{message}\n"));
        let len = body.len().to_string();
        self.send_response_head(
            ex,
            status,
            [
                (&b"content-type"[..], &b"text/plain; charset=utf-8"[..]),
                (&b"content-length"[..], len.as_bytes()),
                (&b"server"[..], &b"spooky"[..]),
            ]
            .into_iter(),
        );
        // A response to HEAD has no content, whatever its content-length says.
        if !self
            .exchanges
            .get(ex)
            .is_some_and(Exchange::is_head_request)
        {
            self.send_response_data(ex, body);
        }
        self.end_response(ex);
        self.stop_reading_request(ex, Code::NO_ERROR);
        self.flush_to_client(ex);
    }

    /// Stops reading the request from the client (STOP_SENDING with `code`) unless it is
    /// already complete.
    pub(super) fn stop_reading_request(&mut self, ex: ExId, code: Code) {
        let Some(e) = self.exchanges.get_mut(ex) else {
            return;
        };
        if matches!(e.req, ReqState::Complete | ReqState::Abandoned) {
            return;
        }
        e.req = ReqState::Abandoned;
        e.body.clear();
        e.input = Bytes::new();
        let client = e.client;
        if let Some(conn) = self.clients.get_mut(client).and_then(Option::as_mut) {
            let _ = conn.quic.recv_stream(e.stream).stop(code.varint());
        }
        self.mark_client_dirty(client);
    }

    /// Ends an exchange abnormally: resets the client stream with `client_code` (if given and
    /// the stream is still open) and cancels the backend side with `backend_code`.
    pub(super) fn abort_exchange(
        &mut self,
        ex: ExId,
        client_code: Option<Code>,
        backend_code: Code,
    ) {
        self.release_backend(ex, backend_code);
        let Some(e) = self.exchanges.get_mut(ex) else {
            return;
        };
        let client = e.client;
        if let Some(conn) = self.clients.get_mut(client).and_then(Option::as_mut) {
            if !e.client_done {
                let code = client_code.unwrap_or(Code::REQUEST_CANCELLED);
                let _ = conn.quic.send_stream(e.stream).reset(code.varint());
            }
            if !matches!(e.req, ReqState::Complete | ReqState::Abandoned) {
                let _ = conn
                    .quic
                    .recv_stream(e.stream)
                    .stop(Code::REQUEST_CANCELLED.varint());
            }
        }
        e.client_done = true;
        e.req = ReqState::Abandoned;
        e.to_client.clear();
        self.mark_client_dirty(client);
        self.remove_exchange(ex);
    }

    /// Removes the exchange once both directions are done.
    pub(super) fn maybe_complete(&mut self, ex: ExId) {
        let Some(e) = self.exchanges.get(ex) else {
            return;
        };
        if !e.client_done {
            return;
        }
        if !matches!(e.req, ReqState::Complete | ReqState::Abandoned) {
            // The response is complete but the client is still sending: it may stop now
            // (RFC 9114 §4.1).
            self.stop_reading_request(ex, Code::NO_ERROR);
        }
        self.release_backend(ex, Code::REQUEST_CANCELLED);
        self.remove_exchange(ex);
    }

    /// Frees the exchange and every reference to it.
    fn remove_exchange(&mut self, ex: ExId) {
        if !self.exchanges.contains(ex) {
            return;
        }
        let e = self.exchanges.remove(ex);
        self.timers.set(TimerKey::Exchange(ex), None);
        if let Some(conn) = self.clients.get_mut(e.client).and_then(Option::as_mut) {
            conn.streams.remove(&e.stream);
        }
        if let Some(b) = e.backend {
            self.add_in_flight(b, -1);
            if matches!(e.leg, Leg::Waiting) {
                self.backends[b].waiting.retain(|&w| w != ex);
            }
        }
        if e.retrying {
            self.retries_in_flight = self.retries_in_flight.saturating_sub(1);
        }
        if e.probe.is_some() {
            self.probe_removed(&e, ex);
            return;
        }
        tracing::debug!(
            target: "spooky::access",
            client = %e.peer,
            method = e.head.as_ref().map(|h| String::from_utf8_lossy(h.method_bytes()).into_owned()).unwrap_or_default(),
            path = e.head.as_ref().and_then(|h| h.path()).map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default(),
            status = e.status,
            backend = e.backend.map(|b| &*self.backends[b].id).unwrap_or("-"),
            bytes = e.resp_seen,
            micros = self.now.saturating_duration_since(e.started).as_micros() as u64,
            "request"
        );
        self.client_exchange_removed(e.client);
    }

    /// Detaches the backend side: cancels what is still running there and returns
    /// connections to their pools where that is safe.
    pub(super) fn release_backend(&mut self, ex: ExId, code: Code) {
        let Some(e) = self.exchanges.get_mut(ex) else {
            return;
        };
        match std::mem::replace(&mut e.leg, Leg::Released) {
            Leg::H3 { conn, stream, .. } => self.release_h3_stream(ex, conn, stream, code),
            Leg::H1 { tcp } => self.release_tcp(ex, tcp),
            Leg::Connecting { tcp } => self.forget_connecting_tcp(tcp),
            Leg::Waiting => {
                if let Some(b) = e.backend {
                    self.backends[b].waiting.retain(|&w| w != ex);
                }
            }
            Leg::Unassigned | Leg::Released => {}
        }
    }

    /// Moves the response forward: reads from the backend while the client takes what was read.
    pub(super) fn pump_response(&mut self, ex: ExId) {
        loop {
            if !self.flush_to_client(ex) {
                return;
            }
            let Some(e) = self.exchanges.get(ex) else {
                return;
            };
            if e.resp == RespState::Complete {
                return;
            }
            let progressed = match e.leg {
                Leg::H3 { .. } => self.pump_h3_response(ex),
                Leg::H1 { tcp } => self.pump_h1_response(ex, tcp),
                _ => false,
            };
            if !progressed {
                // Whatever was produced still needs flushing.
                self.flush_to_client(ex);
                return;
            }
        }
    }

    pub(super) fn on_exchange_timeout(&mut self, ex: ExId) {
        let Some(e) = self.exchanges.get(ex) else {
            return;
        };
        if super::client::ready_to_dispatch(e) {
            // The wait for the end of a bodiless request is over: route it as it is.
            self.dispatch(ex);
            self.pump_request(ex);
            return;
        }
        if e.resp == RespState::AwaitHead {
            let overall = self.now >= e.started + self.config.timeouts.request;
            let failure = match e.leg {
                _ if overall => None,
                Leg::H1 { .. } | Leg::H3 { .. } => Some(Failure::Timeout),
                Leg::Waiting | Leg::Connecting { .. } => Some(Failure::ConnectTimeout),
                Leg::Unassigned | Leg::Released => None,
            };
            match failure {
                Some(failure) => {
                    self.attempt_failed(ex, failure);
                }
                None => {
                    self.metrics.upstream_timeouts += 1;
                    self.respond_error(ex, 504, "upstream timed out");
                }
            }
        } else {
            // The whole-request deadline passed mid-response.
            self.abort_exchange(ex, Some(Code::INTERNAL_ERROR), Code::REQUEST_CANCELLED);
        }
    }
}
