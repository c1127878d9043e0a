//! Runs Spooky's sans-IO core ([`spooky_core::Core`]) on tokio.
//!
//! The runtime is thin: it owns the sockets, the clock and the signals, and nothing else. All
//! protocol logic lives in the core.
//!
//! # Design
//!
//! One tokio task owns the [`Core`] (no locks). It waits, with `tokio::select!`, for:
//!
//! - the client-facing UDP socket to become readable (datagrams become
//!   [`SocketKind::Listener`](spooky_core::SocketKind::Listener) input),
//! - the upstream UDP socket (for HTTP/3 backends) to become readable
//!   ([`SocketKind::Upstream`](spooky_core::SocketKind::Upstream)),
//! - the core's next deadline ([`Core::poll_timeout`]),
//! - events from the upstream TCP connections (each runs in a task of its own),
//! - commands from the [`Handle`] (drain, metrics).
//!
//! After every input the task drains [`Core::poll_output`] and carries each output out: a UDP
//! send through quinn-udp (GSO, ECN, source address), or a command to a TCP connection task.
//! UDP is received through quinn-udp as well (`recvmmsg`, GRO, ECN, destination address).
//!
//! The upstream UDP socket is bound to `[::]:0` as a dual-stack socket (or `0.0.0.0:0` when
//! IPv6 is unavailable). IPv4 peers of an IPv6 socket are shown to the core as plain IPv4
//! addresses, and mapped back (`::ffff:a.b.c.d`) when sending.
//!
//! `std::time::Instant::now()` is read here, never in the core.

#![warn(missing_docs)]

mod admin;
mod driver;
mod tcp;
mod udp;

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use spooky_core::metrics::Metrics;
use spooky_core::{Config, Core, CoreParams, CryptoMode, TlsMaterials};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use driver::{ControlMsg, Driver, FinalMetrics};
use udp::UdpIo;

/// A running Spooky instance on tokio.
///
/// Dropping the handle leaves the instance running (detached); call [`Handle::abort`] or
/// [`Handle::drain`] first to stop it.
#[derive(Debug)]
pub struct Handle {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    control: mpsc::UnboundedSender<ControlMsg>,
    task: JoinHandle<io::Result<()>>,
    final_metrics: FinalMetrics,
}

impl Handle {
    /// The bound client-facing UDP address (useful when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Applies a new configuration without dropping connections (see
    /// [`spooky_core::Control::Reload`]).
    pub fn reload(&self, reload: spooky_core::Reload) {
        let _ = self.control.send(ControlMsg::Reload(Box::new(reload)));
    }

    /// Where the admin endpoint listens, if the configuration enabled it.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Starts a graceful drain ([`spooky_core::Control::Drain`]): the core sends GOAWAY, refuses
    /// new connections and finishes the requests in flight; then the task exits. If the drain
    /// takes longer than `timeouts.drain`, the task exits anyway.
    ///
    /// Calling it again, or after the task ended, does nothing.
    pub fn drain(&self) {
        let _ = self.control.send(ControlMsg::Drain);
    }

    /// The core's latest counters.
    ///
    /// Once the task has ended this returns the counters it ended with (or all zeros if it was
    /// aborted).
    pub async fn metrics(&self) -> Metrics {
        let (reply, answer) = oneshot::channel();
        if self.control.send(ControlMsg::Metrics(reply)).is_ok()
            && let Ok(metrics) = answer.await
        {
            return metrics;
        }
        self.final_metrics
            .lock()
            .ok()
            .and_then(|m| m.clone())
            .unwrap_or_default()
    }

    /// Health, ejection and load of every backend (empty once the task has ended).
    pub async fn backends(&self) -> Vec<spooky_core::BackendStatus> {
        let (reply, answer) = oneshot::channel();
        if self.control.send(ControlMsg::Backends(reply)).is_ok() {
            return answer.await.unwrap_or_default();
        }
        Vec::new()
    }

    /// Waits for the runtime task to end: after a drain completed, or once `timeouts.drain`
    /// has passed since the drain began.
    ///
    /// Returns an error if a socket failed fatally, if the task panicked, or (with kind
    /// [`io::ErrorKind::Interrupted`]) if it was aborted.
    pub async fn join(self) -> io::Result<()> {
        flatten(self.task.await)
    }

    /// Stops immediately: the task is aborted without a drain, open connections are dropped
    /// without notice.
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Interprets the end of the runtime task.
fn flatten(result: Result<io::Result<()>, tokio::task::JoinError>) -> io::Result<()> {
    match result {
        Ok(result) => result,
        Err(e) if e.is_cancelled() => Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "the spooky runtime task was aborted",
        )),
        Err(e) => Err(io::Error::other(format!(
            "the spooky runtime task panicked: {e}"
        ))),
    }
}

/// Binds the sockets, builds the core and spawns the task that drives it. Must be called
/// inside a tokio runtime (with I/O and time enabled).
///
/// `seed`: callers pass OS randomness (the binary does) or a fixed value (tests). It is logged
/// in hex at debug level so that a run can be replayed.
///
/// Fails if a socket cannot be bound or TLS cannot be set up from `tls`.
pub async fn start(config: Arc<Config>, tls: TlsMaterials, seed: [u8; 32]) -> io::Result<Handle> {
    let listen = config.listen.socket_addr();
    let listener = UdpIo::bind(listen).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot bind the listener to {listen}: {e}"),
        )
    })?;
    let upstream = UdpIo::bind_upstream()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind the upstream socket: {e}")))?;
    let local_addr = listener.local_addr();
    let max_gso_segments = listener
        .max_gso_segments()
        .min(upstream.max_gso_segments())
        .max(1);
    tracing::debug!(
        seed = %hex(&seed),
        listener = %local_addr,
        upstream = %upstream.local_addr(),
        max_gso_segments,
        gro_segments = listener.gro_segments(),
        "starting the spooky core"
    );

    let admin_address = config.admin.as_ref().map(|a| a.address);
    let core = Core::new(CoreParams {
        config,
        tls,
        seed,
        shard: 0,
        crypto: CryptoMode::System,
        max_gso_segments,
        now: Instant::now(),
    })
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;

    let (control, control_rx) = mpsc::unbounded_channel();
    let final_metrics: FinalMetrics = Arc::new(Mutex::new(None));
    let driver = Driver::new(core, listener, upstream, control_rx, final_metrics.clone());
    let task = tokio::spawn(driver.run());
    let mut admin_addr = None;
    if let Some(address) = admin_address {
        match admin::spawn(address, control.clone()).await {
            Ok(bound) => {
                tracing::info!(address = %bound, "admin endpoint listening (/metrics, /backends, /health)");
                admin_addr = Some(bound);
            }
            Err(e) => {
                task.abort();
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot bind the admin endpoint to {address}: {e}"),
                ));
            }
        }
    }
    Ok(Handle {
        local_addr,
        admin_addr,
        control,
        task,
        final_metrics,
    })
}

/// Where a reload gets its new configuration: the binary re-reads and validates the file.
/// An error leaves the running configuration in place (and is logged).
pub type ReloadSource = Box<dyn FnMut() -> Result<spooky_core::Reload, String> + Send>;

/// Convenience for the binary: [`start`], then drain on SIGINT or SIGTERM, then wait for the
/// task to end. A second signal during the drain stops at once.
///
/// Logs the listening address (info) and the seed in hex (debug).
pub async fn run(config: Arc<Config>, tls: TlsMaterials, seed: [u8; 32]) -> io::Result<()> {
    run_with(config, tls, seed, None).await
}

/// [`run`], and on SIGHUP a reload from `reload`.
pub async fn run_with(
    config: Arc<Config>,
    tls: TlsMaterials,
    seed: [u8; 32],
    mut reload: Option<ReloadSource>,
) -> io::Result<()> {
    let Handle {
        local_addr,
        admin_addr: _,
        control,
        mut task,
        final_metrics: _,
    } = start(config, tls, seed).await?;
    tracing::info!(address = %local_addr, "spooky listening (HTTP/3 over UDP)");

    #[cfg(unix)]
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hangups.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        tokio::select! {
            result = &mut task => return flatten(result),
            () = shutdown_signal() => break,
            () = hangup => match reload.as_mut().map(|source| source()) {
                Some(Ok(new)) => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let _ = control.send(ControlMsg::Reload(Box::new(new)));
                }
                Some(Err(error)) => {
                    tracing::error!(%error, "SIGHUP: the new configuration is invalid; keeping the running one");
                }
                None => tracing::warn!("SIGHUP: no configuration file to reload"),
            },
        }
    }
    tracing::info!("shutdown signal received; draining (signal again to stop at once)");
    let _ = control.send(ControlMsg::Drain);
    tokio::select! {
        result = &mut task => flatten(result),
        () = shutdown_signal() => {
            tracing::warn!("second shutdown signal; stopping without finishing the drain");
            task.abort();
            Ok(())
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM. If no handler can be installed, never
/// resolves (the instance then runs until stopped otherwise).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                if sigterm.recv().await.is_none() {
                    std::future::pending::<()>().await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
