//! Counters the core keeps; runtimes aggregate them across shards and export them in the
//! Prometheus text format ([`render_prometheus`]).

use std::fmt::Write as _;

use crate::proxy::BackendStatus;

/// Declares the counters once: the struct, shard aggregation and the exported names and
/// help texts all come from this list.
macro_rules! metrics {
    ($( $(#[doc = $doc:literal])+ $field:ident : $kind:ident => $export:literal, )+) => {
        /// Per-core counters. Plain integers: each core is owned by one thread.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Metrics {
            $( $(#[doc = $doc])+ pub $field: u64, )+
            /// Responses sent to clients, by status class: index 1 = 1xx … 5 = 5xx.
            pub responses_by_class: [u64; 6],
        }

        impl Metrics {
            /// Adds `other` into `self` (for aggregating shards).
            pub fn add(&mut self, other: &Metrics) {
                $( self.$field += other.$field; )+
                for (a, b) in self.responses_by_class.iter_mut().zip(other.responses_by_class) {
                    *a += b;
                }
            }

            /// `(exported name, kind, help, value)` of every plain counter and gauge.
            fn exported(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
                vec![ $( ($export, stringify!($kind), concat!($($doc),+), self.$field), )+ ]
            }
        }
    };
}

metrics! {
    /// Client connections accepted.
    connections_accepted: counter => "spooky_connections_accepted_total",
    /// Client connections refused (limit reached or draining).
    connections_refused: counter => "spooky_connections_refused_total",
    /// Client connections currently open.
    connections_open: gauge => "spooky_connections_open",
    /// Requests whose headers arrived.
    requests: counter => "spooky_requests_total",
    /// Requests rejected as malformed (never forwarded).
    requests_malformed: counter => "spooky_requests_malformed_total",
    /// Requests answered 502 because a backend failed.
    upstream_failures: counter => "spooky_upstream_failures_total",
    /// Requests answered 504 because a backend was too slow.
    upstream_timeouts: counter => "spooky_upstream_timeouts_total",
    /// Requests answered 503 because no backend was available.
    no_backend: counter => "spooky_no_backend_total",
    /// Connection-level HTTP/3 errors client connections were closed with.
    client_protocol_errors: counter => "spooky_client_protocol_errors_total",
    /// Requests in flight.
    exchanges_open: gauge => "spooky_requests_in_flight",
    /// Upstream TCP connections opened.
    tcp_connects: counter => "spooky_upstream_tcp_connects_total",
    /// Upstream QUIC connections opened.
    quic_connects: counter => "spooky_upstream_quic_connects_total",
    /// Attempts retried on another backend.
    retries: counter => "spooky_retries_total",
    /// Requests refused because a backend's circuit breaker was full.
    circuit_breaker_overflow: counter => "spooky_circuit_breaker_overflow_total",
    /// Backends ejected by outlier detection.
    ejections: counter => "spooky_ejections_total",
    /// Active health probes completed.
    health_probes: counter => "spooky_health_probes_total",
    /// Active health probes that failed.
    health_probe_failures: counter => "spooky_health_probe_failures_total",
    /// Backends that changed between healthy and unhealthy.
    health_transitions: counter => "spooky_health_transitions_total",
}

impl Metrics {
    /// Counts a response status sent to a client.
    pub(crate) fn count_status(&mut self, status: u16) {
        let class = usize::from(status / 100).min(5);
        self.responses_by_class[class] += 1;
    }
}

/// The Prometheus text exposition (version 0.0.4) of `metrics` and the backends' state.
pub fn render_prometheus(metrics: &Metrics, backends: &[BackendStatus]) -> String {
    let mut out = String::with_capacity(4096);
    for (name, kind, help, value) in metrics.exported() {
        let help = help.trim();
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP spooky_responses_total Responses sent to clients, by status class.\n\
         # TYPE spooky_responses_total counter"
    );
    for class in 1..=5 {
        let _ = writeln!(
            out,
            "spooky_responses_total{{class=\"{class}xx\"}} {}",
            metrics.responses_by_class[class]
        );
    }
    type Gauge = fn(&BackendStatus) -> String;
    let per_backend: [(&str, &str, &str, Gauge); 6] = [
        (
            "spooky_backend_available",
            "gauge",
            "1 if the backend receives new requests.",
            |b| u8::from(b.available).to_string(),
        ),
        (
            "spooky_backend_healthy",
            "gauge",
            "1 if active health checks pass (always 1 without checks).",
            |b| u8::from(b.healthy).to_string(),
        ),
        (
            "spooky_backend_ejected",
            "gauge",
            "1 while outlier detection has ejected the backend.",
            |b| u8::from(b.ejected).to_string(),
        ),
        (
            "spooky_backend_requests_in_flight",
            "gauge",
            "Requests in flight to the backend.",
            |b| b.in_flight.to_string(),
        ),
        (
            "spooky_backend_latency_seconds",
            "gauge",
            "Peak-EWMA response time of the backend.",
            |b| format!("{}", b.latency_ms / 1e3),
        ),
        (
            "spooky_backend_requests_total",
            "counter",
            "Attempts sent to the backend.",
            |b| b.requests.to_string(),
        ),
    ];
    for (name, kind, help, value) in per_backend {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for b in backends {
            let _ = writeln!(
                out,
                "{name}{{backend=\"{}\"}} {}",
                escape_label(&b.id),
                value(b)
            );
        }
    }
    out
}

/// Escapes a label value (backslash, double quote, newline).
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_add_up_and_render() {
        let mut a = Metrics {
            requests: 3,
            ..Metrics::default()
        };
        a.count_status(200);
        let mut b = Metrics {
            requests: 4,
            retries: 1,
            ..Metrics::default()
        };
        b.count_status(503);
        a.add(&b);
        assert_eq!(a.requests, 7);
        assert_eq!(a.responses_by_class, [0, 0, 1, 0, 0, 1]);
        let backend = BackendStatus {
            id: "api\"1".into(),
            healthy: true,
            ejected: false,
            available: true,
            in_flight: 2,
            latency_ms: 1.5,
            requests: 9,
        };
        let text = render_prometheus(&a, &[backend]);
        assert!(text.contains("# TYPE spooky_requests_total counter\nspooky_requests_total 7\n"));
        assert!(text.contains("spooky_responses_total{class=\"5xx\"} 1\n"));
        assert!(text.contains("spooky_retries_total 1\n"));
        assert!(text.contains("spooky_backend_requests_in_flight{backend=\"api\\\"1\"} 2\n"));
        assert!(text.contains("spooky_backend_latency_seconds{backend=\"api\\\"1\"} 0.0015\n"));
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert_eq!(line.rsplit(' ').count(), 2, "{line}");
        }
    }
}
