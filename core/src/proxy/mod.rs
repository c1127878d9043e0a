//! The proxy state machine: client connections in, backend exchanges out.
//!
//! [`Core`] owns two quinn-proto endpoints (clients connect to one; the other connects to
//! HTTP/3 backends), the HTTP/1.1 backend connections, and one `Exchange` per
//! request in flight. Each exchange moves a request from a client stream to a backend and the
//! response back, one bounded piece at a time: nothing is read from one side until the other
//! side has taken what was read before, so QUIC and TCP flow control carry backpressure end to
//! end and no body is ever buffered whole.
//!
//! The code is split by side: `client` (client connections and request streams), `dispatch`
//! (choosing a backend and attaching an exchange to it), `backend_h3` and `backend_h1` (the two
//! kinds of backend connection), `exchange` (per-request state and the shared response path).

mod arena;
mod backend_h1;
mod backend_h3;
mod client;
mod dispatch;
mod exchange;
mod health;
mod pool;
mod reload;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use hashbrown::HashMap;
use quinn_proto::{ConnectionHandle, DatagramEvent, Endpoint, ServerConfig};
use slab::Slab;

use crate::balance::PeakEwma;
use crate::config::{BackendConfig, BackendProtocol, Config};
use crate::metrics::Metrics;
use crate::quic;
use crate::quic::crypto::{self, CryptoMode, TlsMaterials};
use crate::rng::Rng;
use crate::timer::{FixedState, TimerQueue};
use crate::{Control, Datagram, Input, Output, SocketKind, TcpId, Transmit};

use backend_h1::TcpConn;
use backend_h3::BackendConn;
use client::ClientConn;
use exchange::Exchange;
use health::{Health, Outlier};
use pool::Pool;

/// Most datagrams in one GSO batch.
const MAX_GSO_SEGMENTS: usize = 10;

/// Identifies an exchange in the core's slab.
type ExId = usize;

/// Everything needed to build a [`Core`].
pub struct CoreParams {
    /// The configuration.
    pub config: Arc<Config>,
    /// Certificates and keys, loaded by the caller.
    pub tls: TlsMaterials,
    /// Seed for every random choice; runtimes draw it from the OS and log it.
    pub seed: [u8; 32],
    /// This core's shard number, written into every connection ID it issues.
    pub shard: u16,
    /// Where TLS gets randomness and time.
    pub crypto: CryptoMode,
    /// Datagrams the runtime can send in one GSO batch (1 without GSO).
    pub max_gso_segments: usize,
    /// The time the core starts at.
    pub now: Instant,
}

/// Why a core could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// TLS configuration failed.
    #[error("TLS setup failed for {what}: {reason}")]
    Tls {
        /// Which part.
        what: String,
        /// Why.
        reason: String,
    },
}

/// What the core knows about one backend right now.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendStatus {
    /// Its id from the configuration.
    pub id: String,
    /// Active health checks say it is healthy (always true without health checks).
    pub healthy: bool,
    /// Outlier detection has ejected it.
    pub ejected: bool,
    /// It receives new requests (healthy and not ejected).
    pub available: bool,
    /// Requests in flight to it.
    pub in_flight: u32,
    /// Peak-EWMA response time, milliseconds (0 before the first response).
    pub latency_ms: f64,
    /// Attempts sent to it (health probes not counted).
    pub requests: u64,
}

/// Timer owners. Each has at most one deadline in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum TimerKey {
    Client(usize),
    Backend(usize),
    Exchange(ExId),
    Tcp(TcpId),
    /// Backend's next health probe.
    Probe(usize),
    /// Backend's ejection ends.
    Uneject(usize),
}

/// Run-time state of one configured backend. Backends keep their index for the core's
/// whole life: a reload that drops one retires it (no new requests) instead of removing it,
/// and new ones are appended, so nothing that refers to a backend by index goes stale.
struct Backend {
    /// Its configuration (weight and health check may change on reload).
    config: BackendConfig,
    /// Dropped from the configuration by a reload: finishes what it has, takes nothing new.
    retired: bool,
    id: Arc<str>,
    address: SocketAddr,
    protocol: BackendProtocol,
    /// quinn-proto client config (HTTP/3 backends).
    quic_config: Option<quinn_proto::ClientConfig>,
    server_name: String,
    /// Open QUIC connections (handles into `Core::backend_conns`).
    quic_conns: Vec<usize>,
    /// Idle keep-alive TCP connections, most recently used last.
    tcp_idle: Vec<TcpId>,
    /// TCP connections open or opening.
    tcp_open: u32,
    /// Exchanges waiting for a connection or stream.
    waiting: VecDeque<ExId>,
    health: Health,
    outlier: Outlier,
    latency: PeakEwma,
    /// Attempts sent to it (not counting probes).
    requests: u64,
    /// Requests in flight to it (probes included).
    in_flight: u32,
    /// Its pool (index into `Core::pools`; `pool::NO_POOL` once retired) and slot there.
    pool: usize,
    slot: usize,
}

/// Spooky's core. See the crate documentation for the loop that drives it.
pub struct Core {
    now: Instant,
    config: Arc<Config>,
    rng: Rng,
    max_gso_segments: usize,
    client_endpoint: Endpoint,
    backend_endpoint: Endpoint,
    clients: Vec<Option<ClientConn>>,
    backend_conns: Vec<Option<BackendConn>>,
    tcp: HashMap<TcpId, TcpConn, FixedState>,
    next_tcp_id: u64,
    exchanges: Slab<Exchange>,
    backends: Vec<Backend>,
    /// The default pool first, then the named ones.
    pools: Vec<Pool>,
    /// The pool of each route of the configuration.
    route_pools: Vec<usize>,
    /// Retries in flight, for the retry budget.
    retries_in_flight: u32,
    timers: TimerQueue<TimerKey>,
    /// TCP commands waiting for `poll_output`.
    commands: VecDeque<Output>,
    /// Datagrams an endpoint produced on its own (stateless resets, refusals).
    endpoint_transmits: VecDeque<(Transmit, Vec<u8>)>,
    /// Connections that may have datagrams to send.
    dirty_clients: VecDeque<usize>,
    dirty_backends: VecDeque<usize>,
    metrics: Metrics,
    draining: bool,
    /// Reused buffer for encoding header sections.
    scratch: Vec<u8>,
    /// Where small owned buffers (frame headers, heads) are cut from.
    arena: arena::Arena,
    /// How TLS configs are built (kept for reloads).
    crypto_mode: CryptoMode,
}

impl Core {
    /// Builds a core. Fails only if TLS cannot be set up from the given materials.
    pub fn new(params: CoreParams) -> Result<Core, CoreError> {
        let CoreParams {
            config,
            tls,
            seed,
            shard,
            crypto: mode,
            max_gso_segments,
            now,
        } = params;
        let mut rng = Rng::from_seed(seed);

        let server_crypto =
            crypto::server_crypto(&tls.server, mode).map_err(|reason| CoreError::Tls {
                what: "the listener".into(),
                reason,
            })?;
        let server_config = Arc::new(listener_config(&config, server_crypto, mode, &mut rng));

        let client_endpoint = Endpoint::new(
            Arc::new(quic::endpoint_config(shard, &mut rng)),
            Some(server_config),
            true,
            None,
        );
        let backend_endpoint = Endpoint::new(
            Arc::new(quic::endpoint_config(shard, &mut rng)),
            None,
            true,
            None,
        );

        let mut backends = Vec::new();
        for (i, b) in config.all_backends().enumerate() {
            let verify = tls.backends.get(i).and_then(Option::as_ref);
            backends.push(Backend::new(b, verify, &config, mode, &mut rng)?);
        }
        // Members of each pool, in configuration order.
        let mut members = Vec::new();
        let mut next = 0;
        for (_, _, count) in pool::pool_layout(&config) {
            members.push((next..next + count).collect::<Vec<usize>>());
            next += count;
        }

        let mut core = Core {
            now,
            config,
            rng,
            // Batches over 64 KiB fail with EMSGSIZE; ten full-size datagrams stay under it
            // (quinn caps its batches the same way).
            max_gso_segments: max_gso_segments.clamp(1, MAX_GSO_SEGMENTS),
            client_endpoint,
            backend_endpoint,
            clients: Vec::new(),
            backend_conns: Vec::new(),
            tcp: HashMap::with_hasher(FixedState),
            next_tcp_id: 0,
            exchanges: Slab::new(),
            backends,
            pools: Vec::new(),
            route_pools: Vec::new(),
            retries_in_flight: 0,
            timers: TimerQueue::new(),
            commands: VecDeque::new(),
            endpoint_transmits: VecDeque::new(),
            dirty_clients: VecDeque::new(),
            dirty_backends: VecDeque::new(),
            metrics: Metrics::default(),
            draining: false,
            scratch: Vec::new(),
            arena: arena::Arena::default(),
            crypto_mode: mode,
        };
        core.build_pools(members);
        core.schedule_initial_probes();
        Ok(core)
    }

    /// Feeds one input. Afterwards drain [`poll_output`](Self::poll_output).
    pub fn handle_input(&mut self, input: Input) {
        let now = input.now();
        if now > self.now {
            self.now = now;
        }
        match input {
            Input::Datagram(d) => self.on_datagram(d),
            Input::Timeout { .. } => self.on_timeout(),
            Input::Tcp { id, event, .. } => self.on_tcp_event(id, event),
            Input::Control { command, .. } => match command {
                Control::Drain => self.start_drain(),
                Control::Reload(reload) => {
                    let crate::Reload { config, tls } = *reload;
                    self.reload(config, tls);
                }
            },
        }
    }

    /// The next thing to do, or `None` when there is nothing left. Datagram payloads are
    /// written into `buf` (cleared first).
    pub fn poll_output(&mut self, buf: &mut Vec<u8>) -> Option<Output> {
        if let Some(out) = self.commands.pop_front() {
            return Some(out);
        }
        buf.clear();
        if let Some((transmit, bytes)) = self.endpoint_transmits.pop_front() {
            buf.extend_from_slice(&bytes);
            return Some(Output::Transmit(transmit));
        }
        while let Some(&h) = self.dirty_clients.front() {
            if let Some(conn) = self.clients.get_mut(h).and_then(Option::as_mut) {
                if let Some(t) = conn
                    .quic
                    .poll_transmit(self.now, self.max_gso_segments, buf)
                {
                    return Some(Output::Transmit(transmit(SocketKind::Listener, t)));
                }
                conn.dirty = false;
                let deadline = conn.quic.poll_timeout();
                self.timers.set(TimerKey::Client(h), deadline);
            }
            self.dirty_clients.pop_front();
        }
        while let Some(&h) = self.dirty_backends.front() {
            if let Some(conn) = self.backend_conns.get_mut(h).and_then(Option::as_mut) {
                if let Some(t) = conn
                    .quic
                    .poll_transmit(self.now, self.max_gso_segments, buf)
                {
                    return Some(Output::Transmit(transmit(SocketKind::Upstream, t)));
                }
                conn.dirty = false;
                let deadline = conn.quic.poll_timeout();
                self.timers.set(TimerKey::Backend(h), deadline);
            }
            self.dirty_backends.pop_front();
        }
        None
    }

    /// The earliest deadline; feed [`Input::Timeout`] when it passes.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Counters.
    pub fn metrics(&self) -> Metrics {
        let mut m = self.metrics.clone();
        // Health probes are exchanges too, but not requests.
        let probes = self
            .exchanges
            .iter()
            .filter(|(_, e)| e.probe.is_some())
            .count();
        m.exchanges_open = (self.exchanges.len() - probes) as u64;
        m.connections_open = self.clients.iter().filter(|c| c.is_some()).count() as u64;
        m
    }

    /// One line per exchange in flight, for diagnostics.
    pub fn describe_exchanges(&self) -> Vec<String> {
        self.exchanges
            .iter()
            .map(|(id, e)| {
                let path = e
                    .head
                    .as_ref()
                    .and_then(|h| h.path())
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .unwrap_or_default();
                let leg = match &e.leg {
                    exchange::Leg::Unassigned => "unassigned".to_owned(),
                    exchange::Leg::Waiting => "waiting".to_owned(),
                    exchange::Leg::H3 { conn, stream, .. } => format!("h3 conn {conn} stream {stream}"),
                    exchange::Leg::Connecting { tcp } => format!("connecting tcp {}", tcp.0),
                    exchange::Leg::H1 { tcp } => format!(
                        "h1 tcp {} ({:?})",
                        tcp.0,
                        self.tcp.get(tcp).map(|c| c.describe())
                    ),
                    exchange::Leg::Released => "released".to_owned(),
                };
                format!(
                    "#{id} {path} req={:?} resp={:?} leg={leg} to_backend={} to_client={} sent={} client_done={}",
                    e.req,
                    e.resp,
                    e.to_backend.len(),
                    e.to_client.len(),
                    e.request_sent,
                    e.client_done
                )
            })
            .collect()
    }

    /// The state of every backend, in configuration order.
    pub fn backends(&self) -> Vec<BackendStatus> {
        self.backends
            .iter()
            .map(|backend| BackendStatus {
                id: backend.id.to_string(),
                healthy: backend.health.state == health::HealthState::Healthy,
                ejected: backend.outlier.ejected_until.is_some(),
                available: backend.takes_traffic(),
                in_flight: backend.in_flight,
                latency_ms: backend.latency.value_us() / 1e3,
                requests: backend.requests,
            })
            .collect()
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// True once a drain finished: no client connections remain.
    pub fn is_drained(&self) -> bool {
        self.draining && self.clients.iter().all(Option::is_none)
    }

    /// True while draining.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    fn on_datagram(&mut self, d: Datagram) {
        let Datagram {
            socket,
            from,
            local_ip,
            ecn,
            mut data,
            segment_size,
            ..
        } = d;
        let step = segment_size.unwrap_or(data.len()).max(1);
        while !data.is_empty() {
            let segment = data.split_to(step.min(data.len()));
            match socket {
                SocketKind::Listener => self.on_client_datagram(from, local_ip, ecn, segment),
                SocketKind::Upstream => self.on_backend_datagram(from, local_ip, ecn, segment),
            }
        }
    }

    fn on_client_datagram(
        &mut self,
        from: SocketAddr,
        local_ip: Option<std::net::IpAddr>,
        ecn: Option<crate::EcnCodepoint>,
        data: BytesMut,
    ) {
        let mut response = Vec::new();
        let event = self
            .client_endpoint
            .handle(self.now, from, local_ip, ecn, data, &mut response);
        match event {
            Some(DatagramEvent::ConnectionEvent(h, event)) => {
                if let Some(conn) = self.clients.get_mut(h.0).and_then(Option::as_mut) {
                    conn.quic.handle_event(event);
                    self.drive_client(h.0);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => self.on_incoming(incoming),
            Some(DatagramEvent::Response(t)) => {
                response.truncate(t.size);
                self.endpoint_transmits
                    .push_back((transmit(SocketKind::Listener, t), response));
            }
            None => {}
        }
    }

    fn on_backend_datagram(
        &mut self,
        from: SocketAddr,
        local_ip: Option<std::net::IpAddr>,
        ecn: Option<crate::EcnCodepoint>,
        data: BytesMut,
    ) {
        let mut response = Vec::new();
        let event =
            self.backend_endpoint
                .handle(self.now, from, local_ip, ecn, data, &mut response);
        match event {
            Some(DatagramEvent::ConnectionEvent(h, event)) => {
                if let Some(conn) = self.backend_conns.get_mut(h.0).and_then(Option::as_mut) {
                    conn.quic.handle_event(event);
                    self.drive_backend(h.0);
                }
            }
            // Nobody may connect to the backend-facing endpoint.
            Some(DatagramEvent::NewConnection(incoming)) => self.backend_endpoint.ignore(incoming),
            Some(DatagramEvent::Response(t)) => {
                response.truncate(t.size);
                self.endpoint_transmits
                    .push_back((transmit(SocketKind::Upstream, t), response));
            }
            None => {}
        }
    }

    fn on_timeout(&mut self) {
        while let Some(key) = self.timers.pop_expired(self.now) {
            match key {
                TimerKey::Client(h) => {
                    if let Some(conn) = self.clients.get_mut(h).and_then(Option::as_mut) {
                        conn.quic.handle_timeout(self.now);
                        self.drive_client(h);
                    }
                }
                TimerKey::Backend(h) => {
                    if let Some(conn) = self.backend_conns.get_mut(h).and_then(Option::as_mut) {
                        conn.quic.handle_timeout(self.now);
                        self.drive_backend(h);
                    }
                }
                TimerKey::Exchange(ex) => self.on_exchange_timeout(ex),
                TimerKey::Tcp(id) => self.on_tcp_timeout(id),
                TimerKey::Probe(b) => self.on_probe_timer(b),
                TimerKey::Uneject(b) => self.on_uneject_timer(b),
            }
        }
    }

    fn mark_client_dirty(&mut self, h: usize) {
        if let Some(conn) = self.clients.get_mut(h).and_then(Option::as_mut) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty_clients.push_back(h);
            }
        }
    }

    fn mark_backend_dirty(&mut self, h: usize) {
        if let Some(conn) = self.backend_conns.get_mut(h).and_then(Option::as_mut) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty_backends.push_back(h);
            }
        }
    }

    fn new_tcp_id(&mut self) -> TcpId {
        self.next_tcp_id += 1;
        TcpId(self.next_tcp_id)
    }
}

impl Backend {
    fn new(
        b: &BackendConfig,
        verify: Option<&crypto::UpstreamVerify>,
        config: &Config,
        mode: CryptoMode,
        rng: &mut Rng,
    ) -> Result<Backend, CoreError> {
        let quic_config = match verify {
            Some(verify) if b.protocol == BackendProtocol::Http3 => {
                let crypto =
                    crypto::client_crypto(verify, mode).map_err(|reason| CoreError::Tls {
                        what: format!("backend {}", b.id),
                        reason,
                    })?;
                let mut c = quinn_proto::ClientConfig::new(crypto);
                c.transport_config(Arc::new(quic::backend_facing_transport(
                    config.timeouts.upstream_idle,
                )));
                c.initial_dst_cid_provider(quic::initial_dcid_provider(rng));
                Some(c)
            }
            // TLS materials out of step with the configuration: fail loudly here rather than
            // with a 502 on every request.
            None if b.protocol == BackendProtocol::Http3 => {
                return Err(CoreError::Tls {
                    what: format!("backend {}", b.id),
                    reason: "no TLS settings were loaded for this HTTP/3 backend".into(),
                });
            }
            _ => None,
        };
        Ok(Backend {
            config: b.clone(),
            retired: false,
            id: b.id.as_str().into(),
            address: b.address,
            protocol: b.protocol,
            quic_config,
            server_name: crypto::backend_server_name(b.tls.server_name.as_deref(), b.address.ip()),
            quic_conns: Vec::new(),
            tcp_idle: Vec::new(),
            tcp_open: 0,
            waiting: VecDeque::new(),
            health: Health::new(b.health_check.as_ref().map(|hc| hc.initial)),
            outlier: Outlier::default(),
            latency: PeakEwma::default(),
            requests: 0,
            in_flight: 0,
            pool: pool::NO_POOL,
            slot: 0,
        })
    }

    /// May receive new requests: not retired, healthy, not ejected.
    fn takes_traffic(&self) -> bool {
        !self.retired
            && self.health.state == health::HealthState::Healthy
            && self.outlier.ejected_until.is_none()
    }
}

/// The listener's quinn-proto server config for `config`.
fn listener_config(
    config: &Config,
    crypto: Arc<quinn_proto::crypto::rustls::QuicServerConfig>,
    mode: CryptoMode,
    rng: &mut Rng,
) -> ServerConfig {
    let mut server_config = ServerConfig::new(crypto, quic::token_key(rng));
    server_config.transport_config(Arc::new(quic::client_facing_transport(
        config.limits.max_concurrent_streams,
        config.timeouts.client_idle,
    )));
    if let CryptoMode::Deterministic { unix_time, .. } = mode {
        server_config.time_source(Arc::new(quic::FixedSystemTime(unix_time)));
    }
    server_config
}

fn transmit(socket: SocketKind, t: quinn_proto::Transmit) -> Transmit {
    Transmit {
        socket,
        destination: t.destination,
        ecn: t.ecn,
        size: t.size,
        segment_size: t.segment_size,
        src_ip: t.src_ip,
    }
}

/// quinn-proto hands out dense handles; connections live in a `Vec` indexed by them.
fn slot<T>(v: &mut Vec<Option<T>>, h: ConnectionHandle) -> &mut Option<T> {
    if v.len() <= h.0 {
        v.resize_with(h.0 + 1, || None);
    }
    &mut v[h.0]
}
