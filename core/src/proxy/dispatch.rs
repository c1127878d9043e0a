//! Choosing a backend for a request and attaching the request to one of its connections.

use super::exchange::{Leg, ReqState, RespState, headers_frame};
use super::pool::NoBackend;
use super::{Core, ExId, TimerKey};
use std::borrow::Cow;

use crate::config::{BackendProtocol, HeaderEdits, Route};
use crate::fields::FieldSection;
use crate::h3::frame;
use crate::h3::message::RequestHead;
use crate::http1::{self, RequestBodyFraming};
use bytes::Bytes;

impl Core {
    /// Routes a request whose head was accepted to a backend.
    pub(super) fn dispatch(&mut self, ex: ExId) {
        let Some(e) = self.exchanges.get(ex) else {
            return;
        };
        if e.req == ReqState::Abandoned || e.client_done || e.resp != RespState::AwaitHead {
            return;
        }
        let b = match self.choose_backend(ex) {
            Ok(b) => b,
            Err(NoBackend::NoneAvailable) => {
                self.metrics.no_backend += 1;
                self.respond_error(ex, 503, "no backend available");
                return;
            }
            Err(NoBackend::Overflow) => {
                self.metrics.circuit_breaker_overflow += 1;
                self.respond_error(ex, 503, "backends at capacity");
                return;
            }
        };
        self.exchanges[ex].backend = Some(b);
        self.add_in_flight(b, 1);
        self.attach_to_backend(ex, b);
    }

    /// Starts an attempt of `ex` at backend `b` (already counted in flight there).
    pub(super) fn attach_to_backend(&mut self, ex: ExId, b: usize) {
        self.exchanges[ex].attempt_started = self.now;
        if self.exchanges[ex].probe.is_none() {
            self.backends[b].requests += 1;
        }
        let wait_deadline = self.now + self.config.timeouts.connect;
        self.set_exchange_deadline(ex, wait_deadline);
        match self.backends[b].protocol {
            BackendProtocol::Http1 => self.dispatch_h1(ex, b),
            BackendProtocol::Http3 => self.dispatch_h3(ex, b),
        }
    }

    /// Sets the exchange's deadline, never beyond its whole-request limit (or a probe's
    /// timeout).
    pub(super) fn set_exchange_deadline(&mut self, ex: ExId, at: std::time::Instant) {
        let Some(e) = self.exchanges.get_mut(ex) else {
            return;
        };
        let limit = match e
            .probe
            .and_then(|b| self.backends[b].config.health_check.as_ref())
        {
            Some(hc) => hc.timeout,
            None => self.config.timeouts.request,
        };
        let at = at.min(e.started + limit);
        e.deadline = Some(at);
        self.timers.set(TimerKey::Exchange(ex), Some(at));
    }

    /// Puts an exchange in its backend's queue, or answers 503 if the queue is full.
    pub(super) fn wait_for_backend(&mut self, ex: ExId, b: usize) {
        let backend = &mut self.backends[b];
        if backend.waiting.len() >= self.config.circuit_breaker.max_pending_requests as usize {
            self.metrics.circuit_breaker_overflow += 1;
            self.respond_error(ex, 503, "backend overloaded");
            return;
        }
        backend.waiting.push_back(ex);
        self.exchanges[ex].leg = Leg::Waiting;
    }

    /// The exchange's backend is attached and the request head is queued: start the
    /// time-to-response-headers clock and send what there is.
    pub(super) fn request_attached(&mut self, ex: ExId) {
        let per_try = self.config.retries.per_try_timeout;
        let deadline = self.now + per_try.unwrap_or(self.config.timeouts.response_headers);
        self.set_exchange_deadline(ex, deadline);
        self.pump_request(ex);
    }

    /// Writes what is queued for the backend. Returns true if the backend can take more.
    pub(super) fn flush_to_backend(&mut self, ex: ExId) -> bool {
        let Some(e) = self.exchanges.get_mut(ex) else {
            return false;
        };
        match &e.leg {
            Leg::H3 { conn, stream, .. } => {
                let (conn, stream) = (*conn, *stream);
                self.flush_to_h3(ex, conn, stream)
            }
            Leg::H1 { tcp } => {
                let tcp = *tcp;
                self.flush_to_tcp(ex, tcp)
            }
            _ => false,
        }
    }

    /// Frames a piece of request body for the attached backend.
    pub(super) fn frame_body_for_backend(&mut self, ex: ExId, body: Bytes) {
        let e = &mut self.exchanges[ex];
        e.body_forwarded = true;
        match &e.leg {
            Leg::H3 { .. } => {
                e.to_backend
                    .push(self.arena.frame_header(frame::ty::DATA, body.len()));
                e.to_backend.push(body);
            }
            Leg::H1 { .. } => {
                if e.h1_framing == RequestBodyFraming::Chunked {
                    let mut header = Vec::with_capacity(10);
                    http1::write_chunk_header(body.len(), &mut header);
                    e.to_backend.push(self.arena.copy(&[&header]));
                    e.to_backend.push(body);
                    e.to_backend
                        .push(Bytes::from_static(http1::CHUNK_TRAILER_CRLF));
                } else {
                    e.to_backend.push(body);
                }
            }
            _ => e.body.push_front(body),
        }
    }

    /// Queues whatever ends the request on the backend side (trailers, the last chunk).
    pub(super) fn queue_request_end(&mut self, ex: ExId) {
        let e = &mut self.exchanges[ex];
        match &e.leg {
            Leg::H3 { .. } => {
                if let Some(trailers) = e.trailers.take() {
                    let frame = headers_frame(trailers.iter(), &mut self.scratch, &mut self.arena);
                    self.exchanges[ex].to_backend.push(frame);
                }
            }
            Leg::H1 { .. } if e.h1_framing == RequestBodyFraming::Chunked => {
                let mut end = Vec::new();
                http1::write_last_chunk(e.trailers.as_ref(), &mut end);
                e.to_backend.push(Bytes::from(end));
            }
            _ => {}
        }
    }

    /// Everything queued was accepted and the request is complete: close the request side.
    pub(super) fn finish_backend_request(&mut self, ex: ExId) {
        let e = &mut self.exchanges[ex];
        if let Leg::H3 { conn, stream, .. } = &e.leg {
            let (conn, stream) = (*conn, *stream);
            if let Some(c) = self.backend_conns.get_mut(conn).and_then(Option::as_mut) {
                let _ = c.quic.send_stream(stream).finish();
            }
            self.mark_backend_dirty(conn);
        }
        self.exchanges[ex].request_sent = true;
    }
}

/// The path to send to the backend: the route's `strip_prefix` removed (an empty rest
/// becomes `/`).
pub(super) fn upstream_path<'a>(path: &'a [u8], route: Option<&Route>) -> Cow<'a, [u8]> {
    let Some(prefix) = route.and_then(|r| r.strip_prefix.as_deref()) else {
        return Cow::Borrowed(path);
    };
    match path.strip_prefix(prefix.trim_end_matches('/').as_bytes()) {
        Some(rest) if rest.first() == Some(&b'/') => Cow::Borrowed(rest),
        Some(rest) => {
            let mut owned = Vec::with_capacity(rest.len() + 1);
            owned.push(b'/');
            owned.extend_from_slice(rest);
            Cow::Owned(owned)
        }
        None => Cow::Borrowed(path),
    }
}

/// Header fields for the backend request: the client's regular fields, with
/// `x-forwarded-for` extended by the client's address and `x-forwarded-proto` set, then the
/// route's edits (remove, then set). `skip` names fields the caller writes itself.
pub(super) fn forwarded_fields(
    head: &RequestHead,
    client_ip: Option<std::net::IpAddr>,
    skip: &[&[u8]],
    join_cookies: bool,
    edits: Option<&HeaderEdits>,
) -> FieldSection {
    let mut out = FieldSection::with_capacity(head.fields.rfc_size(), head.fields.len() + 2);
    let mut forwarded_for: Option<Vec<u8>> = None;
    let mut cookies: Option<Vec<u8>> = None;
    for (name, value) in head.regular_fields() {
        let dropped = edits.is_some_and(|e| e.drops(name));
        if skip.contains(&name) || name == b"x-forwarded-proto" || dropped {
            continue;
        }
        match name {
            b"x-forwarded-for" => {
                let v = forwarded_for.get_or_insert_with(Vec::new);
                if !v.is_empty() {
                    v.extend_from_slice(b", ");
                }
                v.extend_from_slice(value);
            }
            // HTTP/3 may split cookies into several fields; HTTP/1.1 wants one (RFC 9114 §4.2.1).
            b"cookie" if join_cookies => {
                let v = cookies.get_or_insert_with(Vec::new);
                if !v.is_empty() {
                    v.extend_from_slice(b"; ");
                }
                v.extend_from_slice(value);
            }
            _ => out.push(name, value),
        }
    }
    if let Some(c) = cookies {
        out.push(b"cookie", &c);
    }
    // Probes have no client to name. A route that removes or sets a forwarding field takes
    // it over: its edit is what the backend sees, not a second field next to Spooky's.
    if let Some(client_ip) = client_ip {
        if !edits.is_some_and(|e| e.drops(b"x-forwarded-for")) {
            let mut xff = forwarded_for.unwrap_or_default();
            if !xff.is_empty() {
                xff.extend_from_slice(b", ");
            }
            let _ = std::io::Write::write_fmt(&mut xff, format_args!("{client_ip}"));
            out.push(b"x-forwarded-for", &xff);
        }
        if !edits.is_some_and(|e| e.drops(b"x-forwarded-proto")) {
            out.push(b"x-forwarded-proto", b"https");
        }
    }
    if let Some(edits) = edits {
        for (name, value) in &edits.set {
            out.push(name.as_bytes(), value.as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h3::message::validate_request;

    fn head(extra: &[(&str, &str)]) -> RequestHead {
        let base = [
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "example.com"),
            (":path", "/"),
        ];
        let fields: FieldSection = base
            .iter()
            .chain(extra)
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        validate_request(fields).expect("valid request")
    }

    fn values<'a>(fields: &'a FieldSection, name: &str) -> Vec<&'a [u8]> {
        fields
            .iter()
            .filter(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| v)
            .collect()
    }

    const CLIENT: Option<std::net::IpAddr> =
        Some(std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)));

    #[test]
    fn forwarding_fields_extend_the_clients_chain() {
        let head = head(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "http"),
        ]);
        let out = forwarded_fields(&head, CLIENT, &[], false, None);
        assert_eq!(
            values(&out, "x-forwarded-for"),
            [&b"10.0.0.1, 192.0.2.7"[..]]
        );
        assert_eq!(values(&out, "x-forwarded-proto"), [&b"https"[..]]);
    }

    #[test]
    fn route_edits_take_over_the_forwarding_fields() {
        let head = head(&[("x-forwarded-for", "10.0.0.1"), ("x-other", "kept")]);
        let edits = HeaderEdits {
            set: vec![("x-forwarded-proto".into(), "http".into())],
            remove: vec!["x-forwarded-for".into()],
        };
        let out = forwarded_fields(&head, CLIENT, &[], false, Some(&edits));
        assert!(values(&out, "x-forwarded-for").is_empty());
        assert_eq!(values(&out, "x-forwarded-proto"), [&b"http"[..]]);
        assert_eq!(values(&out, "x-other"), [&b"kept"[..]]);

        let set_chain = HeaderEdits {
            set: vec![("x-forwarded-for".into(), "203.0.113.1".into())],
            remove: vec![],
        };
        let out = forwarded_fields(&head, CLIENT, &[], false, Some(&set_chain));
        assert_eq!(values(&out, "x-forwarded-for"), [&b"203.0.113.1"[..]]);
        assert_eq!(values(&out, "x-forwarded-proto"), [&b"https"[..]]);
    }
}
