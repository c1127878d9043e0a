//! Runs Spooky's sans-IO core ([`spooky_core::Core`]) on a sharded mio event loop: the
//! throughput runtime.
//!
//! # Design
//!
//! One thread per shard, each with its own [`Core`] (shard ids `0..n`), its own
//! `mio::Poll`, and no locks on the packet path.
//!
//! - **Sockets.** Every shard binds its own listener UDP socket to the listen address with
//!   `SO_REUSEADDR` + `SO_REUSEPORT`, so the kernel spreads clients over the shards by a hash
//!   of their 4-tuple (when the configured port is 0, shard 0 binds first and the others bind
//!   the port it got). Every shard also has its own upstream UDP socket (`[::]:0`,
//!   dual-stack, falling back to `0.0.0.0:0`; not shared) for its connections to HTTP/3
//!   backends, and its own TCP connections to HTTP/1.1 backends.
//! - **Receiving.** quinn-udp reads with `recvmmsg` and GRO straight into large `BytesMut`
//!   buffers, one per `recvmmsg` slot; each datagram batch is split off its buffer
//!   (`split_to`) and handed to the core without a copy, and the next message of that slot
//!   lands right behind it. A slot running low reclaims its buffer in place when nothing
//!   refers to it any more, or starts a new one. A batch whose `stride` is below its length
//!   was coalesced by GRO and becomes `segment_size: Some(stride)`. mio is edge-triggered, so
//!   a socket is read until `WouldBlock`, but at most a few `recvmmsg` calls per turn of the
//!   loop before timers, TCP and the other socket get their turn.
//! - **Connection-ID steering.** Every connection ID a shard issues names that shard
//!   ([`spooky_core::quic::cid`]). When a client's address or port changes, the kernel may hash
//!   its packets to another shard's listener; that shard looks at each received datagram
//!   (each GRO segment) and, if its connection ID names another shard, hands it over through
//!   that shard's bounded queue (owned bytes, no copy) and wakes it with its `mio::Waker`
//!   (once per receive batch). The connection keeps working on the shard that owns it, which
//!   answers from its own socket bound to the same address.
//! - **Sending.** Each turn of the loop feeds the core everything that turn brought in (ready
//!   TCP connections, steered datagrams, every `recvmmsg` batch), then drains
//!   [`Core::poll_output`] once, so that a connection's ACKs and its responses share
//!   packets. Each datagram is sent as it comes out, GSO batches included (at most 32 datagrams per batch, below the
//!   kernel's 64 KiB limit; a batch the kernel refuses goes out datagram by datagram). If a
//!   socket buffer is full, the datagram is kept (its buffer swapped out, not copied), the
//!   socket gets WRITABLE interest, and the shard takes nothing more from its core, and feeds
//!   it no new input, until the datagram is out: backpressure instead of loss or spinning.
//! - **TCP.** Non-blocking connects, a write queue of `Bytes` per connection written with
//!   `writev` (progress reported as [`TcpEvent::Sent`](spooky_core::TcpEvent::Sent)), reads of
//!   at most 64 KiB fed one at a time so that `PauseRead` takes effect at once.
//! - **Timers.** The core's [`Core::poll_timeout`] is the `poll` timeout. The clock is read
//!   once per wake-up and that `now` goes with every input of the turn; the time left to
//!   sleep is measured afresh, so that a long turn does not make deadlines late.
//! - **Control.** [`Handle`] talks to each shard through a command queue and the same waker:
//!   drain, metrics, stop.
//!
//! `std::time::Instant::now()` is read here, never in the core.

#![warn(missing_docs)]

mod admin;
mod mailbox;
mod record;
mod shard;
mod tcp;
mod udp;

use std::fmt::{self, Write as _};
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::{Poll, Waker};
use spooky_core::metrics::Metrics;
use spooky_core::rng::Rng;
use spooky_core::{BackendStatus, Config, Core, CoreParams, CryptoMode, TlsMaterials};

use mailbox::{ControlMsg, Mailbox, StatsCells};
use shard::{Shard, ShardParts};
use udp::UdpIo;

/// How long [`Handle::metrics`] waits for the shards to answer.
const METRICS_WAIT: Duration = Duration::from_secs(2);

/// Counters the runtime keeps for one shard (beside the core's [`Metrics`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Client datagrams this shard received but handed to the shard that owns their
    /// connection (connection-ID steering).
    pub steered_datagrams: u64,
    /// Client datagrams other shards handed to this one.
    pub steered_in: u64,
    /// Datagrams that could not be handed over: the owner's queue was full or it had exited.
    pub steer_dropped: u64,
    /// Times a send found a socket buffer full and the shard waited for room.
    pub send_blocked: u64,
}

impl ShardStats {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &ShardStats) {
        self.steered_datagrams += other.steered_datagrams;
        self.steered_in += other.steered_in;
        self.steer_dropped += other.steer_dropped;
        self.send_blocked += other.send_blocked;
    }
}

/// The part of a [`Handle`] that can be shared (with the signal thread of [`run`]).
struct Shards {
    mailboxes: Arc<[Arc<Mailbox>]>,
    stats: Vec<Arc<StatsCells>>,
}

impl Shards {
    fn drain(&self) {
        for mailbox in self.mailboxes.iter() {
            mailbox.control(ControlMsg::Drain);
        }
    }

    fn stop(&self) {
        for mailbox in self.mailboxes.iter() {
            mailbox.control(ControlMsg::Stop);
        }
    }

    fn reload(&self, reload: &spooky_core::Reload) {
        for mailbox in self.mailboxes.iter() {
            mailbox.control(ControlMsg::Reload(Box::new(reload.clone())));
        }
    }

    /// True while some shard has not exited (a shard leaves its final counters on exit).
    fn alive(&self) -> bool {
        self.stats
            .iter()
            .any(|s| s.final_metrics.lock().map(|m| m.is_none()).unwrap_or(false))
    }

    /// The cores' counters, summed over the shards.
    ///
    /// Each shard is asked and the answers are awaited for at most two seconds. A shard that
    /// has exited contributes the counters it ended with.
    fn metrics(&self) -> Metrics {
        let answers = self.ask(ControlMsg::Metrics);
        let mut total = Metrics::default();
        for (index, answer) in answers.into_iter().enumerate() {
            let metrics = answer.or_else(|| {
                self.stats[index]
                    .final_metrics
                    .lock()
                    .ok()
                    .and_then(|m| m.clone())
            });
            match metrics {
                Some(metrics) => total.add(&metrics),
                None => tracing::warn!(shard = index, "shard did not report its metrics in time"),
            }
        }
        total
    }

    /// What each shard's core knows about each backend: one list per shard (index = shard id),
    /// since every shard checks health and ejects outliers on its own. Shards that have
    /// exited (or did not answer within two seconds) give an empty list.
    fn shard_backends(&self) -> Vec<Vec<BackendStatus>> {
        self.ask(ControlMsg::Backends)
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect()
    }

    /// Every backend's status merged over the shards (empty once they have all exited):
    /// healthy if every shard that answered finds it healthy, ejected if any shard ejected
    /// it, available if any shard still sends it new requests, in-flight requests summed, the
    /// highest latency estimate.
    fn backends(&self) -> Vec<BackendStatus> {
        merge_backends(self.shard_backends())
    }

    /// Sends every shard a request built by `message` and collects the answers (index =
    /// shard), waiting at most [`METRICS_WAIT`] in all. `None` for a shard that has exited or
    /// did not answer in time.
    fn ask<T>(&self, message: impl Fn(mpsc::Sender<(usize, T)>) -> ControlMsg) -> Vec<Option<T>> {
        let (reply, answers) = mpsc::channel();
        let mut waiting = 0;
        for mailbox in self.mailboxes.iter() {
            if mailbox.control(message(reply.clone())) {
                waiting += 1;
            }
        }
        drop(reply);
        let mut collected: Vec<Option<T>> = (0..self.mailboxes.len()).map(|_| None).collect();
        let deadline = Instant::now() + METRICS_WAIT;
        while waiting > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match answers.recv_timeout(left) {
                Ok((index, answer)) => {
                    if let Some(slot) = collected.get_mut(index)
                        && slot.is_none()
                    {
                        *slot = Some(answer);
                        waiting -= 1;
                    }
                }
                // Timed out, or every shard that got the request has exited.
                Err(_) => break,
            }
        }
        collected
    }
}

/// A running Spooky instance on mio: one thread per shard.
///
/// Dropping the handle leaves the instance running (detached); call [`Handle::stop`] or
/// [`Handle::drain`] first to end it.
pub struct Handle {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shards: Arc<Shards>,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("local_addr", &self.local_addr)
            .field("shards", &self.shards.mailboxes.len())
            .finish_non_exhaustive()
    }
}

impl Handle {
    /// The client-facing UDP address every shard listens on (with the port resolved when
    /// the configuration asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the admin endpoint listens, if the configuration enabled it.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The number of shards (threads).
    pub fn shards(&self) -> usize {
        self.shards.mailboxes.len()
    }

    /// Starts a graceful drain ([`spooky_core::Control::Drain`]) on every shard: each core
    /// sends GOAWAY, refuses new connections and finishes the requests in flight; then the
    /// shard exits. A shard whose drain takes longer than `timeouts.drain` exits anyway.
    ///
    /// Calling it again, or after the shards ended, does nothing.
    pub fn drain(&self) {
        self.shards.drain();
    }

    /// Stops every shard at once, without a drain: open connections are dropped without
    /// notice.
    pub fn stop(&self) {
        self.shards.stop();
    }

    /// Applies a new configuration on every shard without dropping connections (see
    /// [`spooky_core::Control::Reload`]).
    pub fn reload(&self, reload: &spooky_core::Reload) {
        self.shards.reload(reload);
    }

    /// The cores' counters, summed over the shards.
    ///
    /// Each shard is asked and the answers are awaited for at most two seconds. A shard that
    /// has exited contributes the counters it ended with.
    pub fn metrics(&self) -> Metrics {
        self.shards.metrics()
    }

    /// What each shard's core knows about each backend: one list per shard (index = shard id),
    /// since every shard checks health and ejects outliers on its own. Shards that have
    /// exited (or did not answer within two seconds) give an empty list.
    pub fn shard_backends(&self) -> Vec<Vec<BackendStatus>> {
        self.shards.shard_backends()
    }

    /// Every backend's state merged over the shards.
    pub fn backends(&self) -> Vec<BackendStatus> {
        self.shards.backends()
    }

    /// The runtime's own counters, per shard.
    pub fn shard_stats(&self) -> Vec<ShardStats> {
        self.shards
            .stats
            .iter()
            .map(|s| ShardStats {
                steered_datagrams: s.steered_datagrams.load(Ordering::Relaxed),
                steered_in: s.steered_in.load(Ordering::Relaxed),
                steer_dropped: s.steer_dropped.load(Ordering::Relaxed),
                send_blocked: s.send_blocked.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Client datagrams handed from the shard that received them to the shard owning their
    /// connection, summed over the shards.
    pub fn steered(&self) -> u64 {
        self.shard_stats().iter().map(|s| s.steered_datagrams).sum()
    }

    /// Waits for every shard thread to end: after a drain completed (or `timeouts.drain`
    /// passed), or after [`stop`](Self::stop).
    ///
    /// Returns the first error a shard ended with (its poll failed) or, if a shard thread
    /// panicked, an error saying so.
    pub fn join(self) -> io::Result<()> {
        let mut result = Ok(());
        for (index, thread) in self.threads.into_iter().enumerate() {
            let outcome = match thread.join() {
                Ok(outcome) => outcome,
                Err(_) => Err(io::Error::other(format!("spooky shard {index} panicked"))),
            };
            if let Err(e) = outcome
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        result
    }
}

/// Merges per-shard backend lists (see [`Handle::backends`]).
fn merge_backends(per_shard: Vec<Vec<BackendStatus>>) -> Vec<BackendStatus> {
    let mut merged: Vec<BackendStatus> = Vec::new();
    for list in per_shard.into_iter().filter(|list| !list.is_empty()) {
        if merged.is_empty() {
            merged = list;
            continue;
        }
        for (into, b) in merged.iter_mut().zip(list) {
            into.healthy &= b.healthy;
            into.ejected |= b.ejected;
            into.available |= b.available;
            into.in_flight += b.in_flight;
            into.requests += b.requests;
            into.latency_ms = into.latency_ms.max(b.latency_ms);
        }
    }
    merged
}

/// The number of shards: `runtime.shards`, or one per available CPU.
fn shard_count(config: &Config) -> usize {
    let n = match config.runtime.shards {
        Some(n) if n > 0 => usize::from(n),
        _ => thread::available_parallelism().map_or(1, NonZeroUsize::get),
    };
    n.min(usize::from(u16::MAX))
}

/// Shard `index`'s seed for deterministic TLS (recording only).
fn crypto_seed(seed: [u8; 32], index: usize) -> [u8; 32] {
    let mut mixed = shard_seed(seed, index);
    mixed[0] ^= 0x5a;
    Rng::from_seed(mixed).seed()
}

/// Shard `index`'s seed: `seed` itself for shard 0 (so one shard runs exactly like the tokio
/// runtime with the same seed), a distinct seed derived from it for the others.
fn shard_seed(seed: [u8; 32], index: usize) -> [u8; 32] {
    if index == 0 {
        return seed;
    }
    let mut mixed = seed;
    for (byte, i) in mixed[24..].iter_mut().zip((index as u64).to_le_bytes()) {
        *byte ^= i;
    }
    Rng::from_seed(mixed).seed()
}

fn with_context(e: io::Error, what: impl fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Binds every shard's sockets, builds one [`Core`] per shard (shard ids `0..n`, each seeded
/// from `seed` and its index) and spawns the shard threads.
///
/// The number of shards is `config.runtime.shards`, or the available parallelism.
///
/// `seed`: callers pass OS randomness (the binary does) or a fixed value (tests).
///
/// Fails if a socket cannot be bound or TLS cannot be set up from `tls`.
pub fn start(config: Arc<Config>, tls: TlsMaterials, seed: [u8; 32]) -> io::Result<Handle> {
    start_with(config, tls, seed, StartOptions::default())
}

/// Optional behaviour for [`start_with`].
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Record every shard's inputs for `spooky replay`.
    pub record: Option<Recording>,
}

/// Where and what to record.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Directory for the capture files (`shard-<n>.spkcap`).
    pub dir: std::path::PathBuf,
    /// The configuration file's text, stored in each capture.
    pub config_yaml: String,
}

/// [`start`] with options. Recording switches the cores to deterministic TLS (seeded
/// randomness and X25519, a fixed clock) so that a replay can reproduce the handshakes; with
/// an Ed25519 certificate the replay is then exact.
pub fn start_with(
    config: Arc<Config>,
    tls: TlsMaterials,
    seed: [u8; 32],
    options: StartOptions,
) -> io::Result<Handle> {
    let count = shard_count(&config);
    let listen = config.listen.socket_addr();

    // Shard 0 binds first; with port 0 the others bind the port it got.
    let first = UdpIo::bind_listener(listen)
        .map_err(|e| with_context(e, format!("cannot bind the listener to {listen}")))?;
    let local_addr = first.local_addr();
    let shared = SocketAddr::new(listen.ip(), local_addr.port());
    let mut listeners = vec![first];
    for index in 1..count {
        let listener = UdpIo::bind_listener(shared).map_err(|e| {
            with_context(
                e,
                format!("shard {index} cannot bind the listener to {shared}"),
            )
        })?;
        listeners.push(listener);
    }

    let now = Instant::now();
    // The fixed wall clock of a recorded run.
    let record_clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut built = Vec::with_capacity(count);
    let mut mailboxes = Vec::with_capacity(count);
    for (index, listener) in listeners.into_iter().enumerate() {
        let upstream = UdpIo::bind_upstream().map_err(|e| {
            with_context(e, format!("shard {index} cannot bind the upstream socket"))
        })?;
        let max_gso_segments = listener
            .max_gso_segments()
            .min(upstream.max_gso_segments())
            .max(1);
        tracing::debug!(
            shard = index,
            listener = %listener.local_addr(),
            upstream = %upstream.local_addr(),
            max_gso_segments,
            gro_segments = listener.gro_segments(),
            "starting a shard"
        );
        let core = Core::new(CoreParams {
            config: config.clone(),
            tls: tls.clone(),
            seed: shard_seed(seed, index),
            shard: index as u16,
            crypto: match &options.record {
                None => CryptoMode::System,
                Some(_) => CryptoMode::Deterministic {
                    seed: crypto_seed(seed, index),
                    unix_time: record_clock,
                },
            },
            max_gso_segments,
            now,
        })
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), shard::WAKER)?;
        let (mailbox, inbox) = Mailbox::new(waker);
        mailboxes.push(Arc::new(mailbox));
        let recorder = match &options.record {
            None => None,
            Some(recording) => {
                let header = spooky_core::capture::CaptureHeader {
                    seed: shard_seed(seed, index),
                    crypto_seed: crypto_seed(seed, index),
                    unix_time: record_clock,
                    shard: index as u16,
                    max_gso_segments: max_gso_segments as u16,
                    config_yaml: recording.config_yaml.clone(),
                    cert_chain: tls.server.chain.iter().map(|c| c.to_vec()).collect(),
                    key: tls.server.key.secret_der().to_vec(),
                };
                Some(
                    record::Recorder::create(&recording.dir, index, &header, now).map_err(|e| {
                        with_context(
                            e,
                            format!("cannot create the capture in {}", recording.dir.display()),
                        )
                    })?,
                )
            }
        };
        built.push((core, poll, listener, upstream, inbox, recorder));
    }

    let mailboxes: Arc<[Arc<Mailbox>]> = mailboxes.into();
    let stats: Vec<Arc<StatsCells>> = (0..count).map(|_| Arc::default()).collect();
    let mut shards = Vec::with_capacity(count);
    for (index, (core, poll, listener, upstream, inbox, recorder)) in built.into_iter().enumerate()
    {
        shards.push(Shard::new(ShardParts {
            recorder,
            index,
            core,
            poll,
            listener,
            upstream,
            inbox,
            peers: mailboxes.clone(),
            stats: stats[index].clone(),
        })?);
    }

    let controls = Arc::new(Shards { mailboxes, stats });
    let admin_address = config.admin.as_ref().map(|a| a.address);
    let mut threads = Vec::with_capacity(count);
    for (index, shard) in shards.into_iter().enumerate() {
        let spawned = thread::Builder::new()
            .name(format!("spooky-shard-{index}"))
            .spawn(move || shard.run());
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                controls.stop();
                for thread in threads {
                    let _ = thread.join();
                }
                return Err(with_context(e, format!("cannot start shard {index}")));
            }
        }
    }
    let mut admin_addr = None;
    if let Some(address) = admin_address {
        match admin::spawn(address, controls.clone()) {
            Ok(bound) => {
                tracing::info!(address = %bound, "admin endpoint listening (/metrics, /backends, /health)");
                admin_addr = Some(bound);
            }
            Err(e) => {
                controls.stop();
                for thread in threads {
                    let _ = thread.join();
                }
                return Err(with_context(
                    e,
                    format!("cannot bind the admin endpoint to {address}"),
                ));
            }
        }
    }
    Ok(Handle {
        local_addr,
        admin_addr,
        shards: controls,
        threads,
    })
}

/// Where a reload gets its new configuration: the binary re-reads and validates the file.
/// An error leaves the running configuration in place (and is logged).
pub type ReloadSource = Box<dyn FnMut() -> Result<spooky_core::Reload, String> + Send>;

/// For the binary: [`start`], then drain on SIGINT or SIGTERM (a second signal stops at
/// once), then wait for the shards to end.
///
/// Logs the listening address and the shard count (info) and the seed in hex (debug).
pub fn run(config: Arc<Config>, tls: TlsMaterials, seed: [u8; 32]) -> io::Result<()> {
    run_with(config, tls, seed, None, StartOptions::default())
}

/// [`run`] with `options`, and on SIGHUP a reload from `reload`.
pub fn run_with(
    config: Arc<Config>,
    tls: TlsMaterials,
    seed: [u8; 32],
    mut reload: Option<ReloadSource>,
    options: StartOptions,
) -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use signal_hook::iterator::Signals;

    // Before the shards start, so that an early signal cannot kill the process.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| with_context(e, "cannot install the signal handlers"))?;
    let handle = start_with(config, tls, seed, options)?;
    tracing::info!(
        address = %handle.local_addr(),
        shards = handle.shards(),
        "spooky listening (HTTP/3 over UDP, mio runtime)"
    );
    tracing::debug!(seed = %hex(&seed), "core seed");

    let shards = handle.shards.clone();
    let signal_handle = signals.handle();
    let watcher = thread::Builder::new()
        .name("spooky-signals".into())
        .spawn(move || {
            let mut received = 0;
            for signal in signals.forever() {
                if signal == SIGHUP {
                    match reload.as_mut().map(|source| source()) {
                        Some(Ok(new)) => {
                            tracing::info!("SIGHUP: reloading the configuration");
                            shards.reload(&new);
                        }
                        Some(Err(error)) => {
                            tracing::error!(%error, "SIGHUP: the new configuration is invalid; keeping the running one");
                        }
                        None => tracing::warn!("SIGHUP: no configuration file to reload"),
                    }
                    continue;
                }
                received += 1;
                if received == 1 {
                    tracing::info!(
                        signal,
                        "shutdown signal received; draining (signal again to stop at once)"
                    );
                    shards.drain();
                } else {
                    tracing::warn!(
                        signal,
                        "second shutdown signal; stopping without finishing the drain"
                    );
                    shards.stop();
                }
            }
        })
        .map_err(|e| with_context(e, "cannot start the signal thread"));
    let watcher = match watcher {
        Ok(watcher) => watcher,
        Err(e) => {
            handle.stop();
            let _ = handle.join();
            return Err(e);
        }
    };

    let result = handle.join();
    signal_handle.close();
    let _ = watcher.join();
    result
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_seeds_differ_and_shard_zero_keeps_the_seed() {
        let seed = [9; 32];
        assert_eq!(shard_seed(seed, 0), seed);
        let seeds: Vec<_> = (0..64).map(|i| shard_seed(seed, i)).collect();
        for (i, a) in seeds.iter().enumerate() {
            for b in &seeds[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(shard_seed(seed, 5), shard_seed(seed, 5));
    }

    #[test]
    fn backend_lists_merge_over_shards() {
        let status = |healthy, ejected, available, in_flight, latency_ms, requests| BackendStatus {
            id: "b".into(),
            healthy,
            ejected,
            available,
            in_flight,
            latency_ms,
            requests,
        };
        let merged = merge_backends(vec![
            vec![status(true, false, true, 2, 1.5, 10)],
            Vec::new(),
            vec![status(false, true, false, 3, 0.5, 7)],
        ]);
        assert_eq!(merged, vec![status(false, true, true, 5, 1.5, 17)]);
        assert!(merge_backends(vec![Vec::new(), Vec::new()]).is_empty());
    }

    #[test]
    fn hex_is_lowercase_pairs() {
        assert_eq!(hex(&[0, 0xab, 0x1f]), "00ab1f");
    }
}
