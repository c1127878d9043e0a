//! Counters the core keeps; runtimes aggregate them across shards and export them.

/// Per-core counters. Plain integers: each core is owned by one thread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Client connections accepted.
    pub connections_accepted: u64,
    /// Client connections refused (limit reached or draining).
    pub connections_refused: u64,
    /// Client connections currently open.
    pub connections_open: u64,
    /// Requests whose headers arrived.
    pub requests: u64,
    /// Requests rejected as malformed (never forwarded).
    pub requests_malformed: u64,
    /// Responses sent to clients, by status class: index 1 = 1xx … 5 = 5xx.
    pub responses_by_class: [u64; 6],
    /// Requests answered 502 because a backend failed.
    pub upstream_failures: u64,
    /// Requests answered 504 because a backend was too slow.
    pub upstream_timeouts: u64,
    /// Requests answered 503 because no backend was available.
    pub no_backend: u64,
    /// Connection-level HTTP/3 errors we closed client connections with.
    pub client_protocol_errors: u64,
    /// Exchanges in flight.
    pub exchanges_open: u64,
    /// Upstream TCP connections opened.
    pub tcp_connects: u64,
    /// Upstream QUIC connections opened.
    pub quic_connects: u64,
    /// Attempts retried on another backend.
    pub retries: u64,
    /// Requests refused because a backend's circuit breaker was full.
    pub circuit_breaker_overflow: u64,
    /// Backends ejected by outlier detection.
    pub ejections: u64,
    /// Active health probes completed.
    pub health_probes: u64,
    /// Probes that failed.
    pub health_probe_failures: u64,
    /// Backends that changed between healthy and unhealthy.
    pub health_transitions: u64,
}

impl Metrics {
    /// Counts a response status sent to a client.
    pub(crate) fn count_status(&mut self, status: u16) {
        let class = usize::from(status / 100).min(5);
        self.responses_by_class[class] += 1;
    }

    /// Adds `other` into `self` (for aggregating shards).
    pub fn add(&mut self, other: &Metrics) {
        self.connections_accepted += other.connections_accepted;
        self.connections_refused += other.connections_refused;
        self.connections_open += other.connections_open;
        self.requests += other.requests;
        self.requests_malformed += other.requests_malformed;
        for (a, b) in self
            .responses_by_class
            .iter_mut()
            .zip(other.responses_by_class)
        {
            *a += b;
        }
        self.upstream_failures += other.upstream_failures;
        self.upstream_timeouts += other.upstream_timeouts;
        self.no_backend += other.no_backend;
        self.client_protocol_errors += other.client_protocol_errors;
        self.exchanges_open += other.exchanges_open;
        self.tcp_connects += other.tcp_connects;
        self.quic_connects += other.quic_connects;
        self.retries += other.retries;
        self.circuit_breaker_overflow += other.circuit_breaker_overflow;
        self.ejections += other.ejections;
        self.health_probes += other.health_probes;
        self.health_probe_failures += other.health_probe_failures;
        self.health_transitions += other.health_transitions;
    }
}
