//! The admin endpoint's answers, as pure functions: runtimes own the listener and the socket,
//! read a request head, and send back what [`respond`] returns.
//!
//! Routes: `GET /metrics` (Prometheus text format), `GET /backends` (JSON: health, ejection,
//! load and latency of every backend), `GET /health` (`ok` while serving).

use std::fmt::Write as _;

use crate::metrics::{Metrics, render_prometheus};
use crate::proxy::BackendStatus;

/// Largest request head the admin endpoint reads; a longer one is routed on what arrived.
pub const MAX_HEAD: usize = 8192;

/// True once `head` holds a whole request head (or as much as [`MAX_HEAD`] allows): stop
/// reading and route it with [`AdminRoute::of_head`].
pub fn head_complete(head: &[u8]) -> bool {
    head.len() >= MAX_HEAD || head.windows(4).any(|w| w == b"\r\n\r\n")
}

/// What the admin endpoint was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRoute {
    /// `GET /metrics`.
    Metrics,
    /// `GET /backends`.
    Backends,
    /// `GET /health`.
    Health,
    /// Anything else.
    NotFound,
    /// A method other than GET or HEAD.
    MethodNotAllowed,
}

impl AdminRoute {
    /// The route for a request line's method and target.
    pub fn of(method: &str, target: &str) -> AdminRoute {
        if method != "GET" && method != "HEAD" {
            return AdminRoute::MethodNotAllowed;
        }
        match target.split('?').next().unwrap_or(target) {
            "/metrics" => AdminRoute::Metrics,
            "/backends" => AdminRoute::Backends,
            "/health" | "/healthz" => AdminRoute::Health,
            _ => AdminRoute::NotFound,
        }
    }

    /// The route for the request line at the start of `head`.
    pub fn of_head(head: &[u8]) -> AdminRoute {
        let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut words = line.split_whitespace();
        AdminRoute::of(words.next().unwrap_or(""), words.next().unwrap_or(""))
    }

    /// True if answering needs the counters and backend states.
    pub fn needs_state(self) -> bool {
        matches!(self, AdminRoute::Metrics | AdminRoute::Backends)
    }
}

/// A complete HTTP/1.1 response (with `connection: close`) for `route`.
pub fn respond(route: AdminRoute, metrics: &Metrics, backends: &[BackendStatus]) -> Vec<u8> {
    let (status, content_type, body) = match route {
        AdminRoute::Metrics => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render_prometheus(metrics, backends),
        ),
        AdminRoute::Backends => ("200 OK", "application/json", backends_json(backends)),
        AdminRoute::Health => ("200 OK", "text/plain; charset=utf-8", "ok\n".to_owned()),
        AdminRoute::NotFound => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found; try /metrics, /backends or /health\n".to_owned(),
        ),
        AdminRoute::MethodNotAllowed => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".to_owned(),
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         connection: close\r\nserver: spooky\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// The backends as a JSON array.
pub fn backends_json(backends: &[BackendStatus]) -> String {
    let mut out = String::from("[");
    for (i, b) in backends.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"id\":\"{}\",\"available\":{},\"healthy\":{},\"ejected\":{},\"in_flight\":{},\
             \"requests\":{},\"latency_ms\":{:.3}}}",
            json_escape(&b.id),
            b.available,
            b.healthy,
            b.ejected,
            b.in_flight,
            b.requests,
            b.latency_ms
        );
    }
    out.push_str("]\n");
    out
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(AdminRoute::of("GET", "/metrics"), AdminRoute::Metrics);
        assert_eq!(AdminRoute::of("GET", "/backends?x=1"), AdminRoute::Backends);
        assert_eq!(AdminRoute::of("HEAD", "/health"), AdminRoute::Health);
        assert_eq!(AdminRoute::of("GET", "/"), AdminRoute::NotFound);
        assert_eq!(
            AdminRoute::of("POST", "/metrics"),
            AdminRoute::MethodNotAllowed
        );
    }

    #[test]
    fn heads() {
        assert!(!head_complete(b"GET /metrics HTTP/1.1\r\nhost: a\r\n"));
        assert!(head_complete(b"GET /metrics HTTP/1.1\r\nhost: a\r\n\r\n"));
        assert!(head_complete(&[b'x'; MAX_HEAD]));
        assert_eq!(
            AdminRoute::of_head(b"GET /backends HTTP/1.1\r\n\r\n"),
            AdminRoute::Backends
        );
        assert_eq!(AdminRoute::of_head(b""), AdminRoute::MethodNotAllowed);
    }

    #[test]
    fn responses_are_complete_http() {
        let backends = [BackendStatus {
            id: "b1".into(),
            healthy: true,
            ejected: false,
            available: true,
            in_flight: 1,
            latency_ms: 0.25,
            requests: 10,
        }];
        let out = respond(AdminRoute::Backends, &Metrics::default(), &backends);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert_eq!(
            body,
            "[{\"id\":\"b1\",\"available\":true,\"healthy\":true,\"ejected\":false,\"in_flight\":1,\"requests\":10,\"latency_ms\":0.250}]\n"
        );
    }
}
