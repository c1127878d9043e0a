//! Spooky's configuration: typed values, parsed from YAML without touching the file system.
//!
//! [`Config::from_yaml`] turns YAML text into a validated [`Config`]. Every error names the key
//! path (`backends[1].weight`), the offending value and what is allowed, so an operator can fix
//! the file without reading the source. Files the configuration points at (certificates, keys,
//! CA bundles) are read later by [`crate::TlsMaterials::load`] through a reader the caller
//! injects, which keeps this crate free of I/O.

mod duration;
mod yaml;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use duration::{format_duration, parse_duration};

/// The whole configuration of one Spooky instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where clients connect.
    pub listen: ListenConfig,
    /// The backends requests are balanced over (one pool for now).
    pub backends: Vec<BackendConfig>,
    /// How a backend is chosen for each request.
    pub load_balancing: LoadBalancing,
    /// Log verbosity and format.
    pub log: LogConfig,
    /// Timeouts for both sides of the proxy.
    pub timeouts: Timeouts,
    /// Size and concurrency limits.
    pub limits: Limits,
    /// Which runtime runs the core, and with how many shards.
    pub runtime: RuntimeConfig,
    /// Per-backend limits; overflow is answered 503 at once.
    pub circuit_breaker: CircuitBreaker,
    /// Passive health: ejecting backends that fail real requests.
    pub outlier_detection: OutlierDetection,
    /// When and how often a failed request is tried again.
    pub retries: RetryPolicy,
    /// The admin endpoint (metrics, backend states); off when `None`.
    pub admin: Option<AdminConfig>,
    /// Named pools besides the default one formed by `backends`.
    pub pools: Vec<PoolConfig>,
    /// Routing rules, tried in order; a request no rule matches goes to the default pool.
    pub routes: Vec<Route>,
}

/// The name of the pool formed by the top-level `backends`.
pub const DEFAULT_POOL: &str = "default";

/// A named group of backends with its own balancing strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Referenced by routes.
    pub name: String,
    /// Its backends (ids unique across all pools).
    pub backends: Vec<BackendConfig>,
    /// How a backend of this pool is chosen.
    pub load_balancing: LoadBalancing,
}

/// A routing rule: which requests it takes, where they go, and how they change on the way.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Route {
    /// `:authority` (or `host`) without the port, compared case-insensitively; `*.example.com`
    /// matches any subdomain. `None` = any host.
    pub host: Option<String>,
    /// The path starts with this. `None` = any path.
    pub path_prefix: Option<String>,
    /// Request header fields that must be present with exactly these values (lowercase names).
    pub headers: Vec<(String, String)>,
    /// The pool requests go to (`default` = the top-level backends).
    pub pool: String,
    /// Removed from the start of the path before forwarding (`/api` turns `/api/x` into `/x`).
    pub strip_prefix: Option<String>,
    /// Changes to the request's header fields.
    pub request_headers: HeaderEdits,
    /// Changes to the response's header fields.
    pub response_headers: HeaderEdits,
}

/// Header field changes: `remove` first, then `set` (replacing any field of that name).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderEdits {
    /// Fields to set, `(lowercase name, value)`.
    pub set: Vec<(String, String)>,
    /// Field names to remove (lowercase).
    pub remove: Vec<String>,
}

impl HeaderEdits {
    /// True if there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// True if a field called `name` is removed or replaced.
    pub fn drops(&self, name: &[u8]) -> bool {
        self.remove.iter().any(|r| r.as_bytes() == name)
            || self.set.iter().any(|(n, _)| n.as_bytes() == name)
    }
}

/// The admin endpoint: plain HTTP/1.1 on TCP, for operators and scrapers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Address to listen on (keep it private: it has no authentication).
    pub address: SocketAddr,
}

/// The client-facing listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenConfig {
    /// Only `http3` is supported.
    pub protocol: ListenProtocol,
    /// Address to bind.
    pub address: IpAddr,
    /// UDP port to bind.
    pub port: u16,
    /// Certificate and key presented to clients.
    pub tls: ListenTls,
}

impl ListenConfig {
    /// The socket address to bind.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// The protocol clients speak to Spooky.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenProtocol {
    /// HTTP/3 over QUIC.
    Http3,
}

/// Server certificate chain and private key, PEM or DER.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenTls {
    /// Certificate chain file (PEM with one or more certificates, or a single DER certificate).
    pub cert: PathBuf,
    /// Private key file (PEM PKCS#8/PKCS#1/SEC1, or DER PKCS#8).
    pub key: PathBuf,
}

/// One backend server.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Unique name, used in logs and metrics.
    pub id: String,
    /// Where the backend listens.
    pub address: SocketAddr,
    /// Relative share of requests; at least 1.
    pub weight: u32,
    /// Which protocol Spooky speaks to this backend.
    pub protocol: BackendProtocol,
    /// TLS settings for HTTP/3 backends (ignored for HTTP/1.1).
    pub tls: UpstreamTls,
    /// Active health check; parsed and validated, probing arrives with the resilience work.
    pub health_check: Option<HealthCheck>,
}

/// The protocol Spooky speaks to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendProtocol {
    /// HTTP/1.1 over TCP, keep-alive connections pooled per backend.
    Http1,
    /// HTTP/3 over QUIC, one multiplexed connection per backend.
    Http3,
}

impl fmt::Display for BackendProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendProtocol::Http1 => "http1",
            BackendProtocol::Http3 => "http3",
        })
    }
}

/// How Spooky verifies an HTTP/3 backend's certificate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpstreamTls {
    /// CA bundle (PEM or DER) that must have issued the backend's certificate.
    pub ca: Option<PathBuf>,
    /// Accept any certificate. For development only; logged loudly.
    pub insecure_skip_verify: bool,
    /// Name to verify and send as SNI; defaults to the backend address's IP.
    pub server_name: Option<String>,
}

/// Active health check settings for one backend.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// Path requested with GET.
    pub path: String,
    /// Time between probes.
    pub interval: Duration,
    /// How long a probe may take before it counts as failed.
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy backend healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy backend unhealthy.
    pub unhealthy_threshold: u32,
    /// Status codes that count as success: `low..=high`.
    pub expected_status: (u16, u16),
    /// Whether the backend takes traffic before its first probe.
    pub initial: InitialHealth,
}

/// A backend's health before its first probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialHealth {
    /// Takes traffic at once; probes can take it out.
    Healthy,
    /// Takes traffic only after a probe succeeded.
    Unknown,
}

/// Balancing strategy of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadBalancing {
    /// Rotation in backend order, weights honoured (earliest-deadline-first: smooth, exact
    /// over a cycle).
    RoundRobin,
    /// Smooth weighted round-robin; the same schedule as `RoundRobin`, named for the weights.
    WeightBased,
    /// Weighted random from the core's seeded RNG.
    Random,
    /// The backend with the fewest requests in flight relative to its weight.
    LeastRequests,
    /// Two random backends, the one with fewer requests in flight (relative to weight) wins.
    PowerOfTwoChoices,
    /// Maglev consistent hashing of a request key.
    ConsistentHash(HashKey),
    /// Peak-EWMA of response times times load: the backend expected to answer first.
    Latency,
}

impl LoadBalancing {
    /// The name used in configuration files.
    pub fn name(&self) -> &'static str {
        match self {
            LoadBalancing::RoundRobin => "round-robin",
            LoadBalancing::WeightBased => "weight-based",
            LoadBalancing::Random => "random",
            LoadBalancing::LeastRequests => "least-requests",
            LoadBalancing::PowerOfTwoChoices => "p2c",
            LoadBalancing::ConsistentHash(_) => "consistent-hash",
            LoadBalancing::Latency => "latency",
        }
    }
}

/// What consistent hashing hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address (`ip-hash`).
    ClientIp,
    /// The value of a request header (lowercase name).
    Header(String),
    /// The value of a cookie.
    Cookie(String),
    /// The request path (without the query).
    Path,
}

/// Per-backend circuit breaker limits (per shard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// TCP connections to one HTTP/1.1 backend.
    pub max_connections: u32,
    /// Requests waiting for a connection or stream at one backend.
    pub max_pending_requests: u32,
    /// Requests in flight to one backend.
    pub max_requests: u32,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            max_connections: 256,
            max_pending_requests: 1024,
            max_requests: 1024,
        }
    }
}

/// Passive outlier detection: backends that fail real traffic are ejected for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Off: never eject.
    pub enabled: bool,
    /// Consecutive 5xx responses that eject a backend (0 = ignore 5xx).
    pub consecutive_5xx: u32,
    /// Consecutive connect failures, resets or timeouts that eject a backend.
    pub consecutive_failures: u32,
    /// First ejection's length; each further ejection doubles it.
    pub base_ejection_time: Duration,
    /// Longest ejection.
    pub max_ejection_time: Duration,
    /// Most of a pool that may be ejected at once, in percent.
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            enabled: true,
            consecutive_5xx: 5,
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// Retries of failed requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Further attempts after the first (0 = no retries).
    pub max_retries: u32,
    /// Retry when a connection to the backend cannot be made.
    pub on_connect_failure: bool,
    /// Retry when the backend resets or closes before answering, or times out.
    pub on_reset: bool,
    /// Retry when the backend answers with one of these statuses.
    pub on_statuses: Vec<u16>,
    /// Time to response headers for each attempt (defaults to `timeouts.response_headers`).
    pub per_try_timeout: Option<Duration>,
    /// Retries in flight may be at most this share of requests in flight, in percent.
    pub budget_percent: u32,
    /// ... but this many are always allowed.
    pub min_retries_in_flight: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 2,
            on_connect_failure: true,
            on_reset: true,
            on_statuses: Vec::new(),
            per_try_timeout: None,
            budget_percent: 50,
            min_retries_in_flight: 10,
        }
    }
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// One of `trace`, `debug`, `info`, `warn`, `error`.
    pub level: LogLevel,
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation.
    Info,
    /// Problems worth a look.
    Warn,
    /// Failures.
    Error,
}

impl LogLevel {
    /// The name used in configs and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Timeouts; each has a safe default.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    /// Establishing a TCP or QUIC connection to a backend.
    pub connect: Duration,
    /// From sending a request upstream until its response headers arrive; exceeded → 504.
    pub response_headers: Duration,
    /// Whole exchange, from request headers to the end of the response body.
    pub request: Duration,
    /// A pooled idle upstream connection is closed after this long.
    pub upstream_idle: Duration,
    /// QUIC idle timeout towards clients.
    pub client_idle: Duration,
    /// How long a graceful shutdown waits for in-flight requests.
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            response_headers: Duration::from_secs(30),
            request: Duration::from_secs(300),
            upstream_idle: Duration::from_secs(60),
            client_idle: Duration::from_secs(30),
            drain: Duration::from_secs(10),
        }
    }
}

/// Size and concurrency limits; each has a safe default.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Concurrent request streams per client connection.
    pub max_concurrent_streams: u32,
    /// Largest header section accepted (bytes, as counted by RFC 9114 §4.2.2).
    pub max_header_size: u32,
    /// Largest request body forwarded; larger requests get 413. `None` = unlimited.
    pub max_request_body: Option<u64>,
    /// Client connections per shard; more are refused.
    pub max_connections: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent_streams: 100,
            max_header_size: 64 * 1024,
            max_request_body: None,
            max_connections: 100_000,
        }
    }
}

/// Runtime selection.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// Which event loop runs the core.
    pub kind: RuntimeKind,
    /// Shards (threads) for the mio runtime; `None` = number of cores.
    pub shards: Option<u16>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            kind: RuntimeKind::Mio,
            shards: None,
        }
    }
}

/// The event loop that drives the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// tokio, one task owning the core.
    Tokio,
    /// mio, one thread and one SO_REUSEPORT socket per shard.
    Mio,
}

/// A configuration problem: where, what, and what would have been accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path, such as `backends[1].weight`; empty for the document itself.
    pub path: String,
    /// What is wrong, quoting the bad value and saying what is allowed.
    pub problem: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.problem)
        } else {
            write!(f, "{}: {}", self.path, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// A new error at `path`.
    pub fn new(path: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            problem: problem.into(),
        }
    }
}

impl Config {
    /// Parses and validates YAML text.
    ///
    /// Unknown keys, wrong types, unparsable addresses or durations, zero weights and duplicate
    /// backend ids are errors. Referenced files are not read here.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        yaml::parse(text)
    }

    /// A minimal configuration for tests and the demo: one listener, the given backends,
    /// round-robin, defaults everywhere else.
    pub fn with_backends(listen: ListenConfig, backends: Vec<BackendConfig>) -> Config {
        Config {
            listen,
            backends,
            load_balancing: LoadBalancing::RoundRobin,
            log: LogConfig {
                level: LogLevel::Info,
            },
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            runtime: RuntimeConfig::default(),
            circuit_breaker: CircuitBreaker::default(),
            outlier_detection: OutlierDetection::default(),
            retries: RetryPolicy::default(),
            admin: None,
            pools: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// Every backend of every pool: the default pool's first, then each pool's in order.
    /// Backend-indexed data (such as [`TlsMaterials`](crate::TlsMaterials)) follows this order.
    pub fn all_backends(&self) -> impl Iterator<Item = &BackendConfig> {
        self.backends
            .iter()
            .chain(self.pools.iter().flat_map(|p| p.backends.iter()))
    }
}

impl BackendConfig {
    /// A backend with weight 1, no TLS settings and no health check.
    pub fn new(id: impl Into<String>, address: SocketAddr, protocol: BackendProtocol) -> Self {
        BackendConfig {
            id: id.into(),
            address,
            weight: 1,
            protocol,
            tls: UpstreamTls::default(),
            health_check: None,
        }
    }
}
