//! HTTP/1.1 backends: keep-alive TCP connections pooled per backend, one request at a time.

use std::collections::VecDeque;

use bytes::Bytes;

use super::dispatch::{forwarded_fields, upstream_path};
use super::exchange::{Leg, ReqState, RespState};
use super::health::Failure;
use super::{Core, ExId, TimerKey};
use crate::h3::Code;
use crate::http1::{self, ParserLimits, RequestBodyFraming, ResponseEvent, ResponseParser};
use crate::{Output, TcpCommand, TcpEvent, TcpId};

/// Stop reading the client's body while this much is queued in the runtime for the backend.
const SEND_HIGH_WATER: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TcpState {
    Connecting,
    Idle,
    Busy,
}

pub(super) struct TcpConn {
    backend: usize,
    state: TcpState,
    exchange: Option<ExId>,
    parser: Option<ResponseParser>,
    /// Bytes received but not yet parsed (the client was not keeping up).
    input: VecDeque<Bytes>,
    /// Bytes handed to the runtime that have not reached the kernel.
    unsent: usize,
    paused: bool,
    /// The current response ended and allows another request.
    reusable: bool,
    /// Responses completed on this connection.
    served: u32,
    /// The backend closed the connection while `input` still held bytes to parse; the close
    /// is acted on once they are.
    peer_closed: Option<Option<String>>,
}

impl TcpConn {
    pub(super) fn describe(&self) -> String {
        format!(
            "{:?} input={} unsent={} paused={} reusable={} served={} parser={}",
            self.state,
            self.input.len(),
            self.unsent,
            self.paused,
            self.reusable,
            self.served,
            self.parser.is_some()
        )
    }
}

impl Core {
    pub(super) fn dispatch_h1(&mut self, ex: ExId, b: usize) {
        if let Some(tcp) = self.backends[b].tcp_idle.pop() {
            self.attach_h1(ex, tcp);
            return;
        }
        if self.backends[b].tcp_open < self.config.circuit_breaker.max_connections {
            let id = self.open_tcp(b, Some(ex));
            self.exchanges[ex].leg = Leg::Connecting { tcp: id };
            return;
        }
        self.wait_for_backend(ex, b);
    }

    fn open_tcp(&mut self, b: usize, ex: Option<ExId>) -> TcpId {
        let id = self.new_tcp_id();
        let backend = &mut self.backends[b];
        backend.tcp_open += 1;
        self.metrics.tcp_connects += 1;
        self.tcp.insert(
            id,
            TcpConn {
                backend: b,
                state: TcpState::Connecting,
                exchange: ex,
                parser: None,
                input: VecDeque::new(),
                unsent: 0,
                paused: false,
                reusable: false,
                served: 0,
                peer_closed: None,
            },
        );
        self.commands
            .push_back(Output::Tcp(id, TcpCommand::Connect(backend.address)));
        self.timers.set(
            TimerKey::Tcp(id),
            Some(self.now + self.config.timeouts.connect),
        );
        id
    }

    /// Sends the request head of `ex` on an open connection and starts the exchange there.
    fn attach_h1(&mut self, ex: ExId, tcp: TcpId) {
        let e = &mut self.exchanges[ex];
        let head = e.head.as_ref().expect("dispatched requests have a head");
        let whole_body_held = e.req == ReqState::Complete && e.body_held() as u64 == e.body_seen;
        let framing = match head.content_length {
            Some(len) => RequestBodyFraming::ContentLength(len),
            None if whole_body_held && e.body_seen == 0 && !head.method.expects_body() => {
                RequestBodyFraming::None
            }
            // The whole body was read ahead: its length is known.
            None if whole_body_held && e.trailers.is_none() => {
                RequestBodyFraming::ContentLength(e.body_seen)
            }
            None => RequestBodyFraming::Chunked,
        };
        let route = e.route.as_ref().map(|(config, r)| &config.routes[*r]);
        let fields = forwarded_fields(
            head,
            e.probe.is_none().then(|| e.peer.ip()),
            &[b"host", b"content-length", b"te"],
            true,
            route.map(|r| &r.request_headers),
        );
        let path = upstream_path(head.path().unwrap_or(b"/"), route);
        let out = &mut self.scratch;
        out.clear();
        http1::write_request_head(
            out,
            head.method_bytes(),
            &path,
            head.authority().unwrap_or_default(),
            &fields,
            framing,
        );
        let parser = ResponseParser::new(
            head.method_bytes(),
            ParserLimits {
                max_head_size: self.config.limits.max_header_size as usize,
                ..ParserLimits::default()
            },
        );
        e.h1_framing = framing;
        let head_bytes = self.arena.copy(&[&self.scratch]);
        let e = &mut self.exchanges[ex];
        e.to_backend.insert(0, head_bytes);
        e.leg = Leg::H1 { tcp };
        let Some(conn) = self.tcp.get_mut(&tcp) else {
            return;
        };
        conn.state = TcpState::Busy;
        conn.exchange = Some(ex);
        conn.parser = Some(parser);
        conn.reusable = false;
        self.timers.set(TimerKey::Tcp(tcp), None);
        self.request_attached(ex);
    }

    pub(super) fn flush_to_tcp(&mut self, ex: ExId, tcp: TcpId) -> bool {
        let Some(conn) = self.tcp.get_mut(&tcp) else {
            return false;
        };
        let e = &mut self.exchanges[ex];
        for bytes in e.to_backend.drain(..) {
            if bytes.is_empty() {
                continue;
            }
            conn.unsent += bytes.len();
            self.commands
                .push_back(Output::Tcp(tcp, TcpCommand::Send(bytes)));
        }
        conn.unsent < SEND_HIGH_WATER
    }

    pub(super) fn on_tcp_event(&mut self, id: TcpId, event: TcpEvent) {
        let Some(conn) = self.tcp.get_mut(&id) else {
            // A late event for a connection we already closed.
            return;
        };
        match event {
            TcpEvent::Connected => {
                if conn.state != TcpState::Connecting {
                    return;
                }
                self.timers.set(TimerKey::Tcp(id), None);
                match conn.exchange.take() {
                    Some(ex) => self.attach_h1(ex, id),
                    None => self.tcp_ready(id),
                }
            }
            TcpEvent::ConnectFailed(reason) => {
                let b = conn.backend;
                tracing::debug!(backend = %self.backends[b].id, %reason, "TCP connect failed");
                let ex = conn.exchange;
                self.drop_tcp(id);
                if let Some(ex) = ex {
                    self.exchanges[ex].leg = Leg::Released;
                    self.attempt_failed(ex, Failure::Connect);
                }
            }
            TcpEvent::Data(bytes) => {
                if conn.exchange.is_none() || conn.state != TcpState::Busy {
                    // An idle connection must stay silent; whatever this is, it is not ours.
                    self.close_tcp(id);
                    return;
                }
                conn.input.push_back(bytes);
                let ex = conn.exchange.expect("checked");
                self.pump_response(ex);
                if let Some(conn) = self.tcp.get_mut(&id) {
                    if !conn.input.is_empty() && !conn.paused {
                        conn.paused = true;
                        self.commands
                            .push_back(Output::Tcp(id, TcpCommand::PauseRead));
                    }
                }
            }
            TcpEvent::Sent(n) => {
                let was_blocked = conn.unsent >= SEND_HIGH_WATER;
                conn.unsent = conn.unsent.saturating_sub(n);
                if was_blocked && conn.unsent < SEND_HIGH_WATER {
                    if let Some(ex) = conn.exchange {
                        self.pump_request(ex);
                    }
                }
            }
            TcpEvent::Closed(reason) => {
                if conn.exchange.is_some() && !conn.input.is_empty() {
                    // The response's last bytes are still queued behind a slow client.
                    conn.peer_closed = Some(reason);
                    conn.paused = false;
                    return;
                }
                self.on_tcp_closed(id, reason);
            }
        }
    }

    fn on_tcp_closed(&mut self, id: TcpId, reason: Option<String>) {
        let Some(conn) = self.tcp.get_mut(&id) else {
            return;
        };
        let ex = conn.exchange;
        let served = conn.served;
        // A close-delimited body ends here.
        let eof = conn.parser.as_mut().map(ResponseParser::on_eof);
        let b = conn.backend;
        self.drop_tcp(id);
        let Some(ex) = ex else {
            return;
        };
        let Some(e) = self.exchanges.get_mut(ex) else {
            return;
        };
        match eof {
            Some(Ok(Some(ResponseEvent::End { .. }))) if e.resp != RespState::AwaitHead => {
                e.leg = Leg::Released;
                self.end_response(ex);
                self.pump_response(ex);
            }
            _ if e.resp == RespState::AwaitHead => {
                let idempotent = e.head.as_ref().is_some_and(|h| h.method.is_idempotent());
                if served > 0 && e.replayable && idempotent {
                    // The classic keep-alive race: the backend closed an idle connection as
                    // we reused it. The request never reached it; send it on a fresh one.
                    tracing::debug!(backend = %self.backends[b].id, "retrying on a new connection");
                    e.leg = Leg::Unassigned;
                    e.to_backend.clear();
                    e.end_queued = false;
                    e.request_sent = false;
                    let id = self.open_tcp(b, Some(ex));
                    self.exchanges[ex].leg = Leg::Connecting { tcp: id };
                    return;
                }
                e.leg = Leg::Released;
                tracing::debug!(backend = %self.backends[b].id, reason = reason.as_deref().unwrap_or("closed"), "backend closed before responding");
                self.attempt_failed(ex, Failure::Reset);
            }
            _ => {
                e.leg = Leg::Released;
                self.abort_exchange(ex, Some(Code::INTERNAL_ERROR), Code::REQUEST_CANCELLED);
            }
        }
    }

    pub(super) fn on_tcp_timeout(&mut self, id: TcpId) {
        let Some(conn) = self.tcp.get(&id) else {
            return;
        };
        match conn.state {
            TcpState::Connecting => {
                let ex = conn.exchange;
                self.close_tcp(id);
                if let Some(ex) = ex {
                    self.exchanges[ex].leg = Leg::Released;
                    self.attempt_failed(ex, Failure::ConnectTimeout);
                }
            }
            TcpState::Idle => self.close_tcp(id),
            TcpState::Busy => {}
        }
    }

    /// Parses buffered response bytes from the backend. Returns false when it cannot go on.
    pub(super) fn pump_h1_response(&mut self, ex: ExId, tcp: TcpId) -> bool {
        let Some(conn) = self.tcp.get_mut(&tcp) else {
            return false;
        };
        let Some(parser) = conn.parser.as_mut() else {
            return false;
        };
        // With no input left the parser may still have an event: the end of a body whose
        // last bytes came with the previous piece.
        let mut nothing = Bytes::new();
        let front = conn.input.front_mut().unwrap_or(&mut nothing);
        let event = parser.parse(front);
        if conn.input.front().is_some_and(Bytes::is_empty) {
            conn.input.pop_front();
        }
        let event = match event {
            Ok(Some(event)) => event,
            Ok(None) => {
                if !conn.input.is_empty() {
                    return true;
                }
                if let Some(reason) = conn.peer_closed.take() {
                    self.on_tcp_closed(tcp, reason);
                    return false;
                }
                if conn.paused {
                    conn.paused = false;
                    self.commands
                        .push_back(Output::Tcp(tcp, TcpCommand::ResumeRead));
                }
                return false;
            }
            Err(error) => {
                tracing::debug!(%error, backend = %self.backends[conn.backend].id, "bad response from backend");
                self.close_tcp(tcp);
                self.exchanges[ex].leg = Leg::Released;
                if self.exchanges[ex].resp == RespState::AwaitHead {
                    self.attempt_failed(ex, Failure::Reset);
                } else {
                    self.abort_exchange(ex, Some(Code::INTERNAL_ERROR), Code::REQUEST_CANCELLED);
                }
                return false;
            }
        };
        match event {
            ResponseEvent::Head(head) => {
                let interim = (100..200).contains(&head.status);
                if !interim && !self.final_response_head(ex, head.status) {
                    return false;
                }
                self.send_response_head(ex, head.status, head.fields.iter());
                if !interim {
                    self.exchanges[ex].resp_declared = head.content_length;
                }
            }
            ResponseEvent::Body(bytes) => self.send_response_data(ex, bytes),
            ResponseEvent::Trailers(trailers) => self.send_response_trailers(ex, &trailers),
            ResponseEvent::End { keep_alive } => {
                conn.reusable = keep_alive && conn.input.is_empty() && conn.peer_closed.is_none();
                conn.served += 1;
                conn.parser = None;
                if conn.paused {
                    // The next request on this connection must be able to read its response.
                    conn.paused = false;
                    self.commands
                        .push_back(Output::Tcp(tcp, TcpCommand::ResumeRead));
                }
                self.end_response(ex);
            }
        }
        true
    }

    /// Detaches an exchange from its TCP connection: back to the pool if the exchange ended
    /// cleanly, closed otherwise.
    pub(super) fn release_tcp(&mut self, ex: ExId, tcp: TcpId) {
        let Some(conn) = self.tcp.get_mut(&tcp) else {
            return;
        };
        conn.exchange = None;
        let Some(e) = self.exchanges.get_mut(ex) else {
            self.close_tcp(tcp);
            return;
        };
        if e.resp == RespState::Complete
            && !e.request_sent
            && e.h1_framing == RequestBodyFraming::Chunked
            && e.to_backend.is_empty()
        {
            // The response ended before the client finished its request (often only the
            // stream's FIN was still on its way). The body is abandoned either way; ending it
            // with the last chunk keeps the connection usable.
            let mut end = Vec::new();
            http1::write_last_chunk(None, &mut end);
            conn.unsent += end.len();
            self.commands
                .push_back(Output::Tcp(tcp, TcpCommand::Send(Bytes::from(end))));
            e.request_sent = true;
        }
        let clean = e.request_sent && e.resp == RespState::Complete;
        if clean && conn.reusable && conn.parser.is_none() {
            self.tcp_ready(tcp);
        } else {
            tracing::debug!(
                clean,
                reusable = conn.reusable,
                parsing = conn.parser.is_some(),
                "closing backend connection instead of pooling it"
            );
            self.close_tcp(tcp);
        }
    }

    /// The exchange a connection was being opened for went away; the connection will join the
    /// pool when it is up.
    pub(super) fn forget_connecting_tcp(&mut self, tcp: TcpId) {
        if let Some(conn) = self.tcp.get_mut(&tcp) {
            conn.exchange = None;
        }
    }

    /// A connection is free: give it to the next waiting exchange or park it.
    fn tcp_ready(&mut self, tcp: TcpId) {
        let Some(conn) = self.tcp.get_mut(&tcp) else {
            return;
        };
        let b = conn.backend;
        conn.state = TcpState::Idle;
        if (self.draining || self.backends[b].retired) && self.backends[b].waiting.is_empty() {
            self.close_tcp(tcp);
            return;
        }
        while let Some(ex) = self.backends[b].waiting.pop_front() {
            if self.exchanges.contains(ex) {
                self.exchanges[ex].leg = Leg::Unassigned;
                self.attach_h1(ex, tcp);
                return;
            }
        }
        self.backends[b].tcp_idle.push(tcp);
        self.timers.set(
            TimerKey::Tcp(tcp),
            Some(self.now + self.config.timeouts.upstream_idle),
        );
    }

    /// Closes a connection we no longer want.
    pub(super) fn close_tcp(&mut self, tcp: TcpId) {
        if self.tcp.contains_key(&tcp) {
            self.commands.push_back(Output::Tcp(tcp, TcpCommand::Close));
            self.drop_tcp(tcp);
        }
    }

    /// Forgets a connection (the runtime has closed it or is told to).
    fn drop_tcp(&mut self, tcp: TcpId) {
        if let Some(conn) = self.tcp.remove(&tcp) {
            let backend = &mut self.backends[conn.backend];
            backend.tcp_open = backend.tcp_open.saturating_sub(1);
            backend.tcp_idle.retain(|&t| t != tcp);
            self.timers.set(TimerKey::Tcp(tcp), None);
            // A slot opened: someone waiting may connect now.
            let b = conn.backend;
            if let Some(&ex) = self.backends[b].waiting.front() {
                if self.backends[b].tcp_open < self.config.circuit_breaker.max_connections
                    && self.exchanges.contains(ex)
                {
                    self.backends[b].waiting.pop_front();
                    let id = self.open_tcp(b, Some(ex));
                    self.exchanges[ex].leg = Leg::Connecting { tcp: id };
                }
            }
        }
    }
}
