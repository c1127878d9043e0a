//! A closed-loop HTTP load generator: HTTP/3 on quinn + h3 (a client stack independent of
//! Spooky's core), or HTTP/1.1 on hyper for measuring backends directly.
//!
//! `connections` connections each run `streams` request loops; a loop sends its next request
//! as soon as the previous response has been read whole. Only responses completed inside the
//! measured window count (after `warmup`, before `warmup + duration`); with a request budget
//! ([`Config::requests`]) the requests issued after the warm-up count instead, and the window
//! ends with the last of them.
//!
//! The run ends promptly: at the end of the window no new request starts, requests in flight
//! get [`Config::grace`] to finish (they are not counted either way), then every connection is
//! closed explicitly, so nothing waits for an idle timeout.
//!
//! HTTP/1.1 has no multiplexing, so there every request loop has a keep-alive connection of its
//! own: `connections × streams` TCP connections, the same concurrency as HTTP/3.
//!
//! With a request rate ([`Config::rate`]) the run is open-loop instead: request `i` is
//! scheduled at `start + i / rate` whether or not earlier requests have completed, the request
//! loops take the scheduled requests in turn, and latency is measured from the scheduled start
//! (so a server that falls behind is charged for the queueing it causes: no coordinated
//! omission). The loops are the pool of workers; if all of them are busy, requests start late
//! and the lateness shows in their latency and in [`Report::late`].
//!
//! [`Config::watch_pids`] names processes (the proxy under test) whose CPU time over the
//! measured window and whose memory are reported alongside the load, see [`ProcReport`].
//! [`run_idle`] holds many idle connections open instead of generating load.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use spooky_benches::loadgen::{Config, Target, Trust, run};
//! let target = Target::parse("https://127.0.0.1:9889/", None)?;
//! let mut config = Config::new(target, Trust::Insecure);
//! config.connections = 4;
//! config.streams = 8;
//! let report = run(&config).await?;
//! println!("{}", report.to_json());
//! # Ok(()) }
//! ```

mod args;
mod h1;
mod h3;
mod idle;
mod procfs;
mod stats;
mod tls;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Uri};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use args::{Args, parse_duration};
pub use idle::{IdleOptions, IdleReport, run_idle};
pub use procfs::{ProcReport, ProcSnapshot, ProcUsage};
pub use stats::{ErrorKind, Report, Stats};
pub use tls::{Trust, client_config, client_config_with_idle};

use h1::{H1Conn, H1Connector};
use h3::{H3Conn, H3Connector, H3Requester, RequestTemplate};

/// Which HTTP version to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/3 over QUIC (`https://` URLs).
    Http3,
    /// HTTP/1.1 over plain TCP (`http://` URLs).
    Http1,
}

/// Where requests go.
#[derive(Debug, Clone)]
pub struct Target {
    /// The full URL (scheme, authority, path and query).
    pub uri: Uri,
    /// The address connected to.
    pub addr: SocketAddr,
    /// The URL's host: TLS server name (HTTP/3) and `Host` (HTTP/1.1).
    pub host: String,
    /// HTTP/3 for `https`, HTTP/1.1 for `http`.
    pub protocol: Protocol,
}

impl Target {
    /// Parses `url`; connects to `connect_to` if given, else to the URL's host (an IPv4 address
    /// is preferred when the name has both: QUIC clients do not fall back).
    pub fn parse(url: &str, connect_to: Option<SocketAddr>) -> anyhow::Result<Target> {
        let uri: Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
        let protocol = match uri.scheme_str() {
            Some("https") => Protocol::Http3,
            Some("http") => Protocol::Http1,
            _ => bail!("URL {url:?} must start with https:// (HTTP/3) or http:// (HTTP/1.1)"),
        };
        let host = uri
            .host()
            .with_context(|| format!("URL {url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(match protocol {
            Protocol::Http3 => 443,
            Protocol::Http1 => 80,
        });
        let addr = match connect_to {
            Some(a) => a,
            None => {
                let addrs: Vec<SocketAddr> = (host.as_str(), port)
                    .to_socket_addrs()
                    .with_context(|| format!("resolving {host}"))?
                    .collect();
                addrs
                    .iter()
                    .find(|a| a.is_ipv4())
                    .or(addrs.first())
                    .copied()
                    .with_context(|| format!("{host} has no address"))?
            }
        };
        let uri = if uri.path_and_query().is_none() {
            Uri::builder()
                .scheme(uri.scheme_str().expect("checked"))
                .authority(uri.authority().expect("has a host").clone())
                .path_and_query("/")
                .build()?
        } else {
            uri
        };
        Ok(Target {
            uri,
            addr,
            host,
            protocol,
        })
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where requests go.
    pub target: Target,
    /// Connections (HTTP/3); HTTP/1.1 opens `connections × streams`.
    pub connections: usize,
    /// Concurrent request loops per connection.
    pub streams: usize,
    /// Length of the measured window.
    pub duration: Duration,
    /// Time before the window, with requests running but not counted.
    pub warmup: Duration,
    /// Stop after this many requests issued after the warm-up (the window then ends with the
    /// last response, or at `duration` if that comes first).
    pub requests: Option<u64>,
    /// How long requests in flight at the end may take before the connections are closed.
    pub grace: Duration,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// Request method.
    pub method: Method,
    /// Extra request header fields.
    pub headers: HeaderMap,
    /// Request body (sent with every request).
    pub body: Bytes,
    /// Certificate checking (HTTP/3).
    pub trust: Trust,
    /// Open-loop mode: requests per second started on a fixed schedule (None: closed loop).
    pub rate: Option<f64>,
    /// Processes whose CPU time over the measured window and memory are reported.
    pub watch_pids: Vec<u32>,
}

impl Config {
    /// Defaults: 1 connection, 1 stream, 10 s, no warm-up, GET, 1 s grace, 5 s connect timeout.
    pub fn new(target: Target, trust: Trust) -> Config {
        Config {
            target,
            connections: 1,
            streams: 1,
            duration: Duration::from_secs(10),
            warmup: Duration::ZERO,
            requests: None,
            grace: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            method: Method::GET,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            trust,
            rate: None,
            watch_pids: Vec::new(),
        }
    }

    /// The number of connections actually opened and loops per connection, after the
    /// HTTP/1.1 adjustment.
    pub fn shape(&self) -> (usize, usize) {
        let (c, s) = (self.connections.max(1), self.streams.max(1));
        match self.target.protocol {
            Protocol::Http3 => (c, s),
            Protocol::Http1 => (c * s, 1),
        }
    }
}

/// How one request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A whole response was read.
    Response { status: u16, body_bytes: u64 },
    /// The request failed.
    Failed(ErrorKind),
    /// The connection was closed gracefully before the request went out: reconnect.
    Gone,
}

/// The run's schedule, shared by every loop.
struct Plan {
    window_start: Instant,
    end: Instant,
    hard_deadline: Instant,
    budget: Option<u64>,
    issued: AtomicU64,
    /// Nanoseconds from `window_start` to the first counted request of a budget (u64::MAX
    /// until there is one): a loop may still be busy with a warm-up request when the window
    /// opens, and the time it spends on it is not part of the budget's run.
    first_counted_ns: AtomicU64,
    /// Open loop: requests per second, and the scheduled requests `(start, counted)` as a
    /// pacer thread releases them.
    rate: Option<f64>,
    tickets: Option<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<(Instant, bool)>>>,
}

impl Plan {
    /// May a new request start at `now`? `Some(counted)` if so.
    fn admit(&self, now: Instant) -> Option<bool> {
        if now >= self.end {
            return None;
        }
        let Some(budget) = self.budget else {
            return Some(false);
        };
        if now < self.window_start {
            return Some(false); // warm-up: outside the budget, never counted
        }
        let admitted = self.issued.fetch_add(1, Ordering::Relaxed) < budget;
        if admitted {
            let ns = now.saturating_duration_since(self.window_start).as_nanos() as u64;
            self.first_counted_ns.fetch_min(ns, Ordering::Relaxed);
        }
        admitted.then_some(true)
    }

    /// Open loop: waits for the next scheduled request, `(scheduled start, counted)`; `None`
    /// when the schedule has passed the end of the window (or the budget is spent).
    async fn next_scheduled(&self) -> Option<(Instant, bool)> {
        let tickets = self.tickets.as_ref()?;
        tickets.lock().await.recv().await
    }

    /// How long the measured part of a budget run took, given its last completion.
    fn budget_window(&self, last_completion: Duration) -> Duration {
        let first = self.first_counted_ns.load(Ordering::Relaxed);
        if first == u64::MAX {
            return last_completion;
        }
        let measured = last_completion.saturating_sub(Duration::from_nanos(first));
        if measured.is_zero() {
            last_completion
        } else {
            measured
        }
    }

    /// Does a request admitted with `ticket` and finished at `done` count?
    fn counts(&self, ticket: bool, done: Instant) -> bool {
        if self.budget.is_some() || self.rate.is_some() {
            ticket
        } else {
            done >= self.window_start && done <= self.end
        }
    }

    fn exhausted(&self) -> bool {
        if self.rate.is_some() {
            // Open loop: the schedule, not the budget, says when to stop.
            return Instant::now() >= self.end;
        }
        self.budget
            .is_some_and(|b| self.issued.load(Ordering::Relaxed) >= b)
    }
}

enum Connector {
    H3(H3Connector),
    H1(H1Connector),
}

enum Conn {
    H3(H3Conn),
    H1(H1Conn),
}

enum Requester {
    H3(H3Requester),
    H1(H1Conn),
}

impl Requester {
    async fn request(&mut self) -> Outcome {
        match self {
            Requester::H3(r) => r.request().await,
            Requester::H1(c) => c.request().await,
        }
    }
}

impl Connector {
    async fn connect(&self) -> anyhow::Result<Conn> {
        Ok(match self {
            Connector::H3(c) => Conn::H3(c.connect().await?),
            Connector::H1(c) => Conn::H1(c.connect().await?),
        })
    }

    /// Connects within `timeout`, counting success or failure in `stats`.
    async fn connect_counted(&self, timeout: Duration, stats: &mut Stats) -> Option<Conn> {
        match tokio::time::timeout(timeout, self.connect()).await {
            Ok(Ok(conn)) => {
                stats.connects += 1;
                Some(conn)
            }
            Ok(Err(_)) | Err(_) => {
                stats.record_error(ErrorKind::Connect);
                None
            }
        }
    }
}

/// Why a request loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoopEnd {
    /// The run is over.
    Done,
    /// The connection can no longer be used.
    Broken,
}

async fn request_loop(mut requester: Requester, plan: Arc<Plan>) -> (Stats, LoopEnd, Requester) {
    let mut stats = Stats::default();
    loop {
        let (start, ticket) = if plan.rate.is_some() {
            let Some((at, counted)) = plan.next_scheduled().await else {
                return (stats, LoopEnd::Done, requester);
            };
            if counted && Instant::now().saturating_duration_since(at) > LATE {
                stats.late += 1;
            }
            (at, counted)
        } else {
            let Some(ticket) = plan.admit(Instant::now()) else {
                return (stats, LoopEnd::Done, requester);
            };
            (Instant::now(), ticket)
        };
        let outcome = match tokio::time::timeout_at(plan.hard_deadline, requester.request()).await {
            Ok(outcome) => outcome,
            Err(_) => {
                stats.cancelled += 1;
                return (stats, LoopEnd::Done, requester);
            }
        };
        let done = Instant::now();
        let counted = plan.counts(ticket, done);
        if counted {
            stats.completed_at(done.saturating_duration_since(plan.window_start));
        }
        match outcome {
            Outcome::Response { status, body_bytes } if counted => {
                if (200..300).contains(&status) {
                    stats.record_ok(done - start, body_bytes);
                } else {
                    stats.record_status(status, body_bytes);
                }
            }
            Outcome::Response { .. } => {}
            Outcome::Failed(kind) => {
                if counted {
                    stats.record_error(kind);
                }
                if kind == ErrorKind::Connection {
                    return (stats, LoopEnd::Broken, requester);
                }
            }
            Outcome::Gone => return (stats, LoopEnd::Broken, requester),
        }
    }
}

/// A scheduled request that starts later than this after its time counts as late.
const LATE: Duration = Duration::from_millis(1);

/// Open loop: releases request `i` at `start + i / rate` into `tickets`, as
/// `(scheduled start, counted)`, until the schedule reaches `end` (or `budget` counted requests
/// have been released, or nobody listens any more).
///
/// A thread of its own, because tokio's timers tick in whole milliseconds: waiting for each
/// scheduled start on them would make every request up to a millisecond late, and that
/// lateness would be charged to the server. `std::thread::sleep` wakes within tens of
/// microseconds; requests due while the thread slept are released together when it wakes.
fn pace(
    rate: f64,
    start: Instant,
    window_start: Instant,
    end: Instant,
    budget: Option<u64>,
    tickets: tokio::sync::mpsc::Sender<(Instant, bool)>,
) {
    let (start, window_start, end) = (start.into_std(), window_start.into_std(), end.into_std());
    let mut counted_so_far = 0u64;
    for i in 0u64.. {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        if at >= end {
            break;
        }
        let counted = at >= window_start;
        if counted {
            if budget.is_some_and(|b| counted_so_far >= b) {
                break;
            }
            counted_so_far += 1;
        }
        let now = std::time::Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        if tickets.blocking_send((at.into(), counted)).is_err() {
            break;
        }
    }
}

/// Runs one connection's loops until the run ends, reconnecting if the connection fails.
async fn connection_task(
    connector: Arc<Connector>,
    mut conn: Option<Conn>,
    streams: usize,
    plan: Arc<Plan>,
    connect_timeout: Duration,
) -> Stats {
    let mut stats = Stats::default();
    loop {
        let conn = match conn.take() {
            Some(c) => c,
            None => {
                let now = Instant::now();
                if now >= plan.end || plan.exhausted() {
                    break;
                }
                let timeout = connect_timeout.min(plan.end - now);
                match connector.connect_counted(timeout, &mut stats).await {
                    Some(c) => c,
                    None => {
                        // Back off briefly rather than spin against a dead server.
                        let retry = (Instant::now() + Duration::from_millis(100)).min(plan.end);
                        tokio::time::sleep_until(retry).await;
                        continue;
                    }
                }
            }
        };
        let mut loops = JoinSet::new();
        let h3 = match conn {
            Conn::H3(c) => {
                for _ in 0..streams {
                    loops.spawn(request_loop(Requester::H3(c.requester()), plan.clone()));
                }
                Some(c)
            }
            Conn::H1(c) => {
                // No multiplexing: the connection is its one loop's requester.
                loops.spawn(request_loop(Requester::H1(c), plan.clone()));
                None
            }
        };
        let mut broken = false;
        let mut served = 0;
        while let Some(joined) = loops.join_next().await {
            let (loop_stats, end, requester) = joined.expect("request loop panicked");
            served += loop_stats.ok + loop_stats.error_total();
            stats.merge(&loop_stats);
            broken |= end == LoopEnd::Broken;
            if let Requester::H1(c) = requester {
                c.close();
            }
        }
        if let Some(c) = h3 {
            c.close().await;
        }
        if !broken {
            break;
        }
        if served == 0 {
            // A connection that ended before serving anything: don't reconnect in a hot loop.
            let retry = (Instant::now() + Duration::from_millis(10)).min(plan.end);
            tokio::time::sleep_until(retry).await;
        }
    }
    stats
}

/// Runs the load described by `config` and returns what was measured.
///
/// Connections are established first; the clock (warm-up, then the measured window) starts
/// once every first attempt has succeeded or failed.
pub async fn run(config: &Config) -> anyhow::Result<Report> {
    let (connections, streams) = config.shape();
    let template = Arc::new(RequestTemplate::new(
        &config.target,
        config.method.clone(),
        config.headers.clone(),
        config.body.clone(),
    ));
    let connector = Arc::new(match config.target.protocol {
        Protocol::Http3 => Connector::H3(H3Connector {
            client_config: client_config(&config.trust)?,
            addr: config.target.addr,
            server_name: config.target.host.clone(),
            request: template,
        }),
        Protocol::Http1 => {
            let authority = config
                .target
                .uri
                .authority()
                .map_or(config.target.host.as_str(), |a| a.as_str());
            Connector::H1(H1Connector {
                addr: config.target.addr,
                host: HeaderValue::from_str(authority).context("bad Host")?,
                request: template,
            })
        }
    });

    // Connect everything before the clock starts.
    let mut stats = Stats::default();
    let mut first = JoinSet::new();
    for _ in 0..connections {
        let connector = connector.clone();
        let timeout = config.connect_timeout;
        first.spawn(async move {
            let mut stats = Stats::default();
            let conn = connector.connect_counted(timeout, &mut stats).await;
            (conn, stats)
        });
    }
    let mut established = Vec::with_capacity(connections);
    while let Some(joined) = first.join_next().await {
        let (conn, s) = joined.expect("connect task panicked");
        stats.merge(&s);
        established.push(conn);
    }

    if let Some(rate) = config.rate {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "the request rate must be a positive number, not {rate}"
        );
    }
    let start = Instant::now();
    let window_start = start + config.warmup;
    let end = window_start + config.duration;
    let mut plan = Plan {
        window_start,
        end,
        hard_deadline: end + config.grace,
        budget: config.requests,
        issued: AtomicU64::new(0),
        first_counted_ns: AtomicU64::new(u64::MAX),
        rate: config.rate,
        tickets: None,
    };
    let pacer = match config.rate {
        Some(rate) => {
            let (tx, rx) = tokio::sync::mpsc::channel(4096);
            plan.tickets = Some(tokio::sync::Mutex::new(rx));
            let budget = config.requests;
            Some(
                std::thread::Builder::new()
                    .name("loadgen-pacer".into())
                    .spawn(move || pace(rate, start, window_start, end, budget, tx))
                    .context("starting the pacer thread")?,
            )
        }
        None => None,
    };
    let plan = Arc::new(plan);
    // CPU and memory readings at the edges of the measured window.
    let before: Arc<Mutex<Option<ProcSnapshot>>> = Arc::default();
    let monitor = {
        let pids = config.watch_pids.clone();
        let before = before.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(window_start).await;
            let snapshot = ProcSnapshot::take(&pids);
            *before.lock().expect("not poisoned") = Some(snapshot);
            tokio::time::sleep_until(end).await;
            ProcSnapshot::take(&pids)
        })
    };
    let mut tasks = JoinSet::new();
    for conn in established {
        tasks.spawn(connection_task(
            connector.clone(),
            conn,
            streams,
            plan.clone(),
            config.connect_timeout,
        ));
    }
    while let Some(joined) = tasks.join_next().await {
        stats.merge(&joined.expect("connection task panicked"));
    }
    if let Some(pacer) = pacer {
        // Every loop has ended, so the channel is closed and the thread has stopped or stops
        // at its next release.
        if let Some(Ok(mut rx)) = plan.tickets.as_ref().map(|t| t.try_lock()) {
            rx.close();
        }
        let _ = tokio::task::spawn_blocking(move || pacer.join()).await;
    }
    let measured = if config.requests.is_some() {
        plan.budget_window(stats.last_completion.min(config.duration))
    } else {
        (Instant::now().min(end)).saturating_duration_since(window_start)
    };
    // A budget may finish before the window's planned end: read the end state now then.
    let after = if monitor.is_finished() {
        monitor.await.ok()
    } else {
        monitor.abort();
        Some(ProcSnapshot::take(&config.watch_pids))
    };
    let before = before.lock().expect("not poisoned").take();
    let mut report = stats.report(measured);
    report.target_rps = config.rate;
    report.proc = match (before, after) {
        (Some(b), Some(a)) => ProcReport::between(&b, &a),
        _ => ProcReport::memory(&config.watch_pids),
    };
    Ok(report)
}
