//! A deterministic in-memory network: HTTP/3 clients, the core, and HTTP/3 and HTTP/1.1
//! backends exchange datagrams and TCP bytes through a simulated network with latency,
//! jitter (so reordering) and loss, on a simulated clock.
//!
//! Everything, including TLS, is driven from one seed ([`CryptoMode::Deterministic`]), so two
//! runs with the same seed produce the same transcript: [`Sim::digest`] hashes every output
//! of the core with the simulated time it happened at. Tests use it to prove determinism and
//! to exercise the proxy under loss without sockets.
//!
//! The clients and backends here reuse the core's own HTTP/3 codec; independent
//! implementations are exercised by the real-socket tests of the runtimes.

mod backend;
mod client;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

pub use backend::{H1Backend, H3Backend};
pub use client::{SimClient, SimRequest, SimResponse};

use crate::capture::{CaptureEncoder, CaptureHeader};
use crate::config::{
    BackendConfig, BackendProtocol, Config, ListenConfig, ListenProtocol, ListenTls, LoadBalancing,
};
use crate::quic::crypto::{
    CryptoMode, ServerIdentity, TlsMaterials, UpstreamVerify, parse_certificates, parse_private_key,
};
use crate::rng::Rng;
use crate::{Core, CoreParams, Datagram, Input, Output, SocketKind, TcpCommand, TcpEvent, TcpId};

/// The simulated wall clock (2027-01-01), after the simulation certificate's start date.
pub const SIM_UNIX_TIME: u64 = 1_798_761_600;

/// GSO segments the simulated runtime allows.
const SIM_GSO: usize = 4;

/// Spooky's client-facing address in the simulation.
pub const LISTENER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 443);
/// Spooky's backend-facing UDP address.
pub const UPSTREAM: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 9000);

/// The Ed25519 identity every simulated server uses (deterministic signatures).
pub fn sim_identity() -> ServerIdentity {
    ServerIdentity {
        chain: parse_certificates(include_bytes!("sim-cert.pem")).expect("valid fixture"),
        key: parse_private_key(include_bytes!("sim-key.pem")).expect("valid fixture"),
    }
}

/// Shape of a simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed for everything.
    pub seed: u64,
    /// One-way latency of every link.
    pub latency: Duration,
    /// Extra random delay per datagram, up to this much (reorders datagrams).
    pub jitter: Duration,
    /// Probability that a UDP datagram is lost, in parts per million.
    pub loss_ppm: u32,
    /// HTTP/1.1 backends.
    pub h1_backends: usize,
    /// HTTP/3 backends.
    pub h3_backends: usize,
    /// Balancing strategy.
    pub load_balancing: LoadBalancing,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            latency: Duration::from_millis(5),
            jitter: Duration::ZERO,
            loss_ppm: 0,
            h1_backends: 2,
            h3_backends: 1,
            load_balancing: LoadBalancing::RoundRobin,
        }
    }
}

enum Event {
    /// A UDP datagram reaches `to`.
    Packet {
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
    },
    /// A TCP event reaches the core.
    TcpToCore(TcpId, TcpEvent),
    /// Bytes (or a close) reach an HTTP/1.1 backend.
    TcpToBackend {
        backend: usize,
        conn: TcpId,
        data: Option<Vec<u8>>,
    },
}

struct Scheduled {
    at: Instant,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The whole simulated world.
pub struct Sim {
    epoch: Instant,
    now: Instant,
    cfg: SimConfig,
    rng: Rng,
    /// The system under test.
    pub core: Core,
    /// Clients, by index.
    pub clients: Vec<SimClient>,
    /// HTTP/3 backends, in config order after the HTTP/1.1 ones.
    pub h3_backends: Vec<H3Backend>,
    /// HTTP/1.1 backends, first in config order.
    pub h1_backends: Vec<H1Backend>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    digest: ring::digest::Context,
    buf: Vec<u8>,
    /// Datagrams dropped by simulated loss.
    pub lost: u64,
    /// The core's seeds, for a capture's header.
    seeds: ([u8; 32], [u8; 32]),
    capture: Option<CaptureEncoder>,
}

impl Sim {
    /// A world whose clock starts at `epoch` (any instant: only differences matter).
    pub fn new(epoch: Instant, cfg: SimConfig) -> Sim {
        Sim::with_config(epoch, cfg, |_| {})
    }

    /// A world like [`Sim::new`] whose configuration `tweak` adjusts before the core starts.
    pub fn with_config(epoch: Instant, cfg: SimConfig, tweak: impl FnOnce(&mut Config)) -> Sim {
        let mut rng = Rng::from_u64(cfg.seed);
        let mut backends = Vec::new();
        for i in 0..cfg.h1_backends {
            backends.push(BackendConfig::new(
                format!("h1-{i}"),
                h1_addr(i),
                BackendProtocol::Http1,
            ));
        }
        for i in 0..cfg.h3_backends {
            let mut b = BackendConfig::new(format!("h3-{i}"), h3_addr(i), BackendProtocol::Http3);
            b.tls.insecure_skip_verify = true;
            backends.push(b);
        }
        let mut config = Config::with_backends(
            ListenConfig {
                protocol: ListenProtocol::Http3,
                address: LISTENER.ip(),
                port: LISTENER.port(),
                tls: ListenTls {
                    cert: "sim-cert.pem".into(),
                    key: "sim-key.pem".into(),
                },
            },
            backends,
        );
        config.load_balancing = cfg.load_balancing.clone();
        tweak(&mut config);
        let tls = sim_tls(&config);
        let seeds = (rng.seed(), rng.seed());
        let core = Core::new(CoreParams {
            config: Arc::new(config),
            tls,
            seed: seeds.0,
            shard: 0,
            crypto: CryptoMode::Deterministic {
                seed: seeds.1,
                unix_time: SIM_UNIX_TIME,
            },
            max_gso_segments: SIM_GSO,
            now: epoch,
        })
        .expect("simulation TLS fixture works");
        let h1_backends = (0..cfg.h1_backends)
            .map(|i| H1Backend::new(format!("h1-{i}"), h1_addr(i)))
            .collect();
        let h3_backends = (0..cfg.h3_backends)
            .map(|i| H3Backend::new(format!("h3-{i}"), h3_addr(i), rng.seed()))
            .collect();
        Sim {
            epoch,
            now: epoch,
            cfg,
            rng,
            core,
            clients: Vec::new(),
            h3_backends,
            h1_backends,
            queue: BinaryHeap::new(),
            seq: 0,
            digest: ring::digest::Context::new(&ring::digest::SHA256),
            buf: Vec::new(),
            lost: 0,
            seeds,
            capture: None,
        }
    }

    /// Starts recording the core's inputs (call before anything happens).
    pub fn record(&mut self) {
        let identity = sim_identity();
        let key = match &identity.key {
            rustls::pki_types::PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
            _ => Vec::new(),
        };
        self.capture = Some(CaptureEncoder::new(
            &CaptureHeader {
                seed: self.seeds.0,
                crypto_seed: self.seeds.1,
                unix_time: SIM_UNIX_TIME,
                shard: 0,
                max_gso_segments: SIM_GSO as u16,
                config_yaml: String::new(),
                cert_chain: identity.chain.iter().map(|c| c.to_vec()).collect(),
                key,
            },
            self.epoch,
        ));
    }

    /// Ends the recording: the capture's bytes.
    pub fn finish_recording(&mut self) -> Option<Vec<u8>> {
        self.capture.take().map(CaptureEncoder::finish)
    }

    /// Parameters that build the core this simulation runs, for replaying a capture of it.
    pub fn core_params(&self, now: Instant) -> CoreParams {
        let config = Arc::new(self.core.config().clone());
        CoreParams {
            tls: sim_tls(&config),
            config,
            seed: self.seeds.0,
            shard: 0,
            crypto: CryptoMode::Deterministic {
                seed: self.seeds.1,
                unix_time: SIM_UNIX_TIME,
            },
            max_gso_segments: SIM_GSO,
            now,
        }
    }

    /// Feeds the core (and the recording).
    fn feed(&mut self, input: Input) {
        if let Some(capture) = &mut self.capture {
            capture.input(&input);
        }
        self.core.handle_input(input);
    }

    /// The simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Time since the simulation began.
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// Adds a client that connects to Spooky right away; returns its index.
    pub fn add_client(&mut self) -> usize {
        let i = self.clients.len();
        let addr = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, 1, 0, (i % 250) as u8 + 1)),
            5000 + i as u16,
        );
        let client = SimClient::new(addr, LISTENER, self.now, self.rng.seed());
        self.clients.push(client);
        i
    }

    /// Reloads the core with its current configuration as `tweak` changes it.
    pub fn reload(&mut self, tweak: impl FnOnce(&mut Config)) {
        let mut config = self.core.config().clone();
        tweak(&mut config);
        let tls = sim_tls(&config);
        let now = self.now;
        self.feed(Input::Control {
            now,
            command: crate::Control::Reload(Box::new(crate::Reload {
                config: Arc::new(config),
                tls,
            })),
        });
    }

    /// Takes HTTP/1.1 backend `i` down: open connections are closed and new ones refused.
    pub fn kill_h1(&mut self, i: usize) {
        self.h1_backends[i].up = false;
        for id in self.h1_backends[i].close_all() {
            let at = self.now + self.cfg.latency;
            self.schedule(
                at,
                Event::TcpToCore(id, TcpEvent::Closed(Some("killed".into()))),
            );
        }
    }

    /// Client `c` holds back the end (FIN) of its request `i`'s stream, or lets it go.
    pub fn hold_end(&mut self, c: usize, i: usize, held: bool) {
        self.clients[c].hold_end(i, held);
    }

    /// Client `c` gives up on its request `i` (see [`SimRequest`]'s index from
    /// [`Sim::request`]).
    pub fn cancel(&mut self, c: usize, i: usize) {
        self.clients[c].cancel(i);
    }

    /// Starts a request on client `c`; returns its index in that client's request list.
    pub fn request(&mut self, c: usize, request: SimRequest) -> usize {
        self.clients[c].request(request)
    }

    /// Hash of every output the core produced, with the simulated time it happened.
    pub fn digest(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.digest.clone().finish().as_ref());
        out
    }

    /// Runs until every client request has finished, or `limit` of simulated time passed.
    /// Returns true if everything finished.
    pub fn run_until_done(&mut self, limit: Duration) -> bool {
        let deadline = self.now + limit;
        loop {
            if self.clients.iter().all(SimClient::all_done) {
                return true;
            }
            if !self.step(deadline) {
                return self.clients.iter().all(SimClient::all_done);
            }
        }
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let deadline = self.now + d;
        while self.step(deadline) {}
    }

    /// Advances to the next event (not past `deadline`) and processes it. Returns false when
    /// nothing is left to do before `deadline`.
    pub fn step(&mut self, deadline: Instant) -> bool {
        self.flush_outputs();
        let mut next: Option<Instant> = self.queue.peek().map(|s| s.0.at);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.core.poll_timeout());
        for c in &mut self.clients {
            consider(c.poll_timeout());
        }
        for b in &mut self.h3_backends {
            consider(b.poll_timeout());
        }
        let Some(next) = next else {
            return false;
        };
        if next > deadline {
            self.now = deadline;
            return false;
        }
        self.now = self.now.max(next);
        let now = self.now;

        while self.queue.peek().is_some_and(|s| s.0.at <= now) {
            let Reverse(s) = self.queue.pop().expect("peeked");
            self.deliver(s.event);
        }
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.feed(Input::Timeout { now });
        }
        for c in &mut self.clients {
            c.handle_timeout(now);
        }
        for b in &mut self.h3_backends {
            b.handle_timeout(now);
        }
        true
    }

    fn deliver(&mut self, event: Event) {
        let now = self.now;
        match event {
            Event::Packet { from, to, data } => {
                let data = BytesMut::from(&data[..]);
                if to == LISTENER || to == UPSTREAM {
                    let socket = if to == LISTENER {
                        SocketKind::Listener
                    } else {
                        SocketKind::Upstream
                    };
                    self.feed(Input::Datagram(Datagram {
                        now,
                        socket,
                        from,
                        local_ip: Some(to.ip()),
                        ecn: None,
                        data,
                        segment_size: None,
                    }));
                } else if let Some(c) = self.clients.iter_mut().find(|c| c.addr == to) {
                    c.handle_datagram(now, from, data);
                } else if let Some(b) = self.h3_backends.iter_mut().find(|b| b.addr == to) {
                    b.handle_datagram(now, from, data);
                }
            }
            Event::TcpToCore(id, event) => {
                self.feed(Input::Tcp { now, id, event });
            }
            Event::TcpToBackend {
                backend,
                conn,
                data,
            } => {
                let replies = self.h1_backends[backend].on_bytes(conn, data);
                for reply in replies {
                    let event = match reply {
                        Some(bytes) => TcpEvent::Data(bytes.into()),
                        None => TcpEvent::Closed(None),
                    };
                    let at = self.now + self.cfg.latency;
                    self.schedule(at, Event::TcpToCore(conn, event));
                }
            }
        }
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            event,
        }));
    }

    /// Schedules a datagram (or a GSO batch, split) with latency, jitter and loss.
    fn send_udp(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
        segment: Option<usize>,
    ) {
        let step = segment.unwrap_or(payload.len()).max(1);
        for datagram in payload.chunks(step) {
            if self.cfg.loss_ppm > 0 && self.rng.below(1_000_000) < u64::from(self.cfg.loss_ppm) {
                self.lost += 1;
                continue;
            }
            let jitter = if self.cfg.jitter.is_zero() {
                Duration::ZERO
            } else {
                Duration::from_nanos(self.rng.below(self.cfg.jitter.as_nanos() as u64))
            };
            let at = self.now + self.cfg.latency + jitter;
            self.schedule(
                at,
                Event::Packet {
                    from,
                    to,
                    data: datagram.to_vec(),
                },
            );
        }
    }

    fn flush_outputs(&mut self) {
        loop {
            let mut progressed = false;
            let mut buf = std::mem::take(&mut self.buf);
            while let Some(out) = self.core.poll_output(&mut buf) {
                progressed = true;
                self.record_output(&out, &buf);
                match out {
                    Output::Transmit(t) => {
                        let from = match t.socket {
                            SocketKind::Listener => LISTENER,
                            SocketKind::Upstream => UPSTREAM,
                        };
                        self.send_udp(from, t.destination, &buf[..t.size], t.segment_size);
                    }
                    Output::Tcp(id, command) => self.on_tcp_command(id, command),
                }
            }
            if let Some(capture) = &mut self.capture {
                capture.flushed(true);
            }
            self.buf = buf;
            let now = self.now;
            let mut datagrams = Vec::new();
            for c in &mut self.clients {
                c.drive(now);
                c.poll_transmits(now, &mut datagrams);
            }
            for b in &mut self.h3_backends {
                b.drive(now);
                b.poll_transmits(now, &mut datagrams);
            }
            for (from, to, data, segment) in datagrams {
                progressed = true;
                self.send_udp(from, to, &data, segment);
            }
            if !progressed {
                return;
            }
        }
    }

    fn on_tcp_command(&mut self, id: TcpId, command: TcpCommand) {
        let at = self.now + self.cfg.latency;
        match command {
            TcpCommand::Connect(addr) => {
                let target = self.h1_backends.iter().position(|b| b.addr == addr && b.up);
                let event = match target {
                    Some(b) => {
                        self.h1_backends[b].accept(id);
                        TcpEvent::Connected
                    }
                    None => TcpEvent::ConnectFailed("connection refused".into()),
                };
                self.schedule(at + self.cfg.latency, Event::TcpToCore(id, event));
            }
            TcpCommand::Send(bytes) => {
                let n = bytes.len();
                if let Some(b) = self.h1_backends.iter().position(|b| b.has_conn(id)) {
                    self.schedule(
                        at,
                        Event::TcpToBackend {
                            backend: b,
                            conn: id,
                            data: Some(bytes.to_vec()),
                        },
                    );
                }
                // The bytes left the socket at once.
                self.schedule(self.now, Event::TcpToCore(id, TcpEvent::Sent(n)));
            }
            TcpCommand::Close => {
                if let Some(b) = self.h1_backends.iter().position(|b| b.has_conn(id)) {
                    self.schedule(
                        at,
                        Event::TcpToBackend {
                            backend: b,
                            conn: id,
                            data: None,
                        },
                    );
                }
            }
            // The simulated backends answer small responses; pausing is not modelled.
            TcpCommand::PauseRead | TcpCommand::ResumeRead => {}
        }
    }

    fn record_output(&mut self, out: &Output, buf: &[u8]) {
        if let Some(capture) = &mut self.capture {
            capture.output(out, buf);
        }
        let t = (self.now - self.epoch).as_nanos() as u64;
        self.digest.update(&t.to_le_bytes());
        match out {
            Output::Transmit(tr) => {
                self.digest.update(b"udp");
                self.digest.update(tr.destination.to_string().as_bytes());
                self.digest.update(&buf[..tr.size]);
            }
            Output::Tcp(id, command) => {
                self.digest.update(b"tcp");
                self.digest.update(&id.0.to_le_bytes());
                match command {
                    TcpCommand::Send(bytes) => self.digest.update(bytes),
                    other => self.digest.update(format!("{other:?}").as_bytes()),
                }
            }
        }
    }
}

/// TLS for a simulated configuration: the simulation identity, no verification of backends.
pub fn sim_tls(config: &Config) -> TlsMaterials {
    TlsMaterials {
        server: sim_identity(),
        // In `Config::all_backends` order, like `TlsMaterials::load`.
        backends: config
            .all_backends()
            .map(|b| {
                (b.protocol == BackendProtocol::Http3).then_some(UpstreamVerify::InsecureSkipVerify)
            })
            .collect(),
    }
}

fn h1_addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 3, 0, i as u8 + 1)), 80)
}

fn h3_addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 2, 0, i as u8 + 1)), 443)
}
