//! Shared setup for the end-to-end scenarios: real backends (hyper for HTTP/1.1, quinn + h3
//! for HTTP/3) and a real Spooky on 127.0.0.1, on either runtime ([`Runtime`]: tokio, or mio
//! with [`MIO_SHARDS`] shards), plus the independent HTTP/3 client (`spooky::client::H3Client`,
//! quinn + h3) connected to it.
//!
//! Every scenario is an `async fn(Runtime)` that [`on_both_runtimes!`] turns into two tests,
//! `<scenario>::on_tokio` and `<scenario>::on_mio` (`cargo test on_mio` runs one side). Each
//! runs under [`within`], so nothing can hang for longer than [`TEST_LIMIT`], and a failure
//! names the runtime it happened on.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod python;

use std::fmt;
use std::future::Future;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spooky::backends::{self, Backend};
use spooky::certs::{self, SelfSigned};
use spooky::client::{H3Client, Trust};
use spooky_core::config::{
    BackendConfig, BackendProtocol, Config, Limits, ListenConfig, ListenProtocol, ListenTls,
    LoadBalancing, RuntimeKind, Timeouts,
};
use spooky_core::metrics::Metrics;
use spooky_core::quic::crypto::{ServerIdentity, UpstreamVerify};
use spooky_core::{BackendStatus, TlsMaterials};

/// Upper bound for any one scenario.
pub const TEST_LIMIT: Duration = Duration::from_secs(60);

/// The core's seed: fixed, so a failing run can be replayed.
pub const SEED: [u8; 32] = *b"spooky end-to-end tests seed 001";

/// Shards of the mio runtime in these tests: more than one, so that connection-ID steering
/// and per-shard state are exercised.
pub const MIO_SHARDS: u16 = 2;

/// The runtime a scenario runs Spooky on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `spooky_runtime_tokio`: one task owns the core.
    Tokio,
    /// `spooky_runtime_mio` with [`MIO_SHARDS`] shards.
    Mio,
}

impl Runtime {
    /// The configuration's name for it.
    pub fn kind(self) -> RuntimeKind {
        match self {
            Runtime::Tokio => RuntimeKind::Tokio,
            Runtime::Mio => RuntimeKind::Mio,
        }
    }

    /// `tokio` or `mio`, as `spooky run --runtime` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Tokio => "tokio",
            Runtime::Mio => "mio",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// For each scenario `name` (an `async fn(Runtime)` in scope), a module `name` with two tests,
/// `on_tokio` and `on_mio`, each running the scenario through [`on_runtime`]: under
/// [`within`], with the runtime named in any failure.
///
/// Tests run on multi-threaded tokio (2 workers) unless the list starts with
/// `current_thread:`. A list that starts with `without_limit:` runs its scenarios without the
/// [`TEST_LIMIT`] (through [`on_runtime_without_limit`]): for slow set-up outside Spooky
/// (installing a peer), after which the scenario applies [`within`] itself.
#[allow(unused_macros)] // not every test file runs on both runtimes
macro_rules! on_both_runtimes {
    (current_thread: $($name:ident),+ $(,)?) => {
        on_both_runtimes!(@expand (flavor = "current_thread") on_runtime $($name),+);
    };
    (without_limit: $($name:ident),+ $(,)?) => {
        on_both_runtimes!(
            @expand (flavor = "multi_thread", worker_threads = 2) on_runtime_without_limit
            $($name),+
        );
    };
    ($($name:ident),+ $(,)?) => {
        on_both_runtimes!(
            @expand (flavor = "multi_thread", worker_threads = 2) on_runtime $($name),+
        );
    };
    (@expand $flavor:tt $runner:ident $($name:ident),+) => {
        $(
            mod $name {
                #[tokio::test $flavor]
                async fn on_tokio() {
                    crate::support::$runner(crate::support::Runtime::Tokio, super::$name).await;
                }

                #[tokio::test $flavor]
                async fn on_mio() {
                    crate::support::$runner(crate::support::Runtime::Mio, super::$name).await;
                }
            }
        )+
    };
}
#[allow(unused_imports)]
pub(crate) use on_both_runtimes;

/// Runs `scenario(runtime)` under [`within`] in a task of its own; if it fails (an assertion,
/// or the time limit), the test fails with the runtime named in the message.
pub async fn on_runtime<F, Fut>(runtime: Runtime, scenario: F)
where
    F: FnOnce(Runtime) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    on_runtime_without_limit(runtime, |runtime| within(scenario(runtime))).await;
}

/// [`on_runtime`] without the time limit.
pub async fn on_runtime_without_limit<F, Fut>(runtime: Runtime, scenario: F)
where
    F: FnOnce(Runtime) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(scenario(runtime)).await;
    if let Err(error) = outcome {
        let message = if error.is_panic() {
            let payload = error.into_panic();
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(a panic without a message)".into())
        } else {
            error.to_string()
        };
        panic!("[{runtime} runtime] {message}");
    }
}

/// Runs `body` with a [`TEST_LIMIT`] deadline; panics (failing the test) when it passes.
pub async fn within<F: Future>(body: F) -> F::Output {
    within_limit(TEST_LIMIT, body).await
}

/// Runs `body` with the given deadline (at most [`TEST_LIMIT`]).
pub async fn within_limit<F: Future>(limit: Duration, body: F) -> F::Output {
    let limit = limit.min(TEST_LIMIT);
    match tokio::time::timeout(limit, body).await {
        Ok(output) => output,
        Err(_) => panic!("scenario did not finish within {limit:?}"),
    }
}

/// Logs to the test's output when `RUST_LOG` is set (`RUST_LOG=debug` shows the core's
/// `spooky::access` lines).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A running Spooky on either runtime.
pub enum Handle {
    Tokio(spooky_runtime_tokio::Handle),
    /// Shared with the blocking-pool threads that run its blocking calls.
    Mio(Arc<spooky_runtime_mio::Handle>),
}

/// A running Spooky, with the same async methods whatever the runtime (the mio runtime's
/// blocking calls run on tokio's blocking pool). Dropped without [`Spooky::shutdown`] (a
/// failed scenario), it stops the instance.
pub struct Spooky {
    runtime: Runtime,
    local_addr: SocketAddr,
    /// `None` once joined.
    handle: Option<Handle>,
}

impl Spooky {
    /// Starts Spooky on `runtime` (with `config.runtime.shards` shards on mio).
    pub async fn start(
        runtime: Runtime,
        config: Arc<Config>,
        tls: TlsMaterials,
        seed: [u8; 32],
    ) -> io::Result<Spooky> {
        let handle = match runtime {
            Runtime::Tokio => Handle::Tokio(spooky_runtime_tokio::start(config, tls, seed).await?),
            Runtime::Mio => {
                let shards = config.runtime.shards;
                let handle = tokio::task::spawn_blocking(move || {
                    spooky_runtime_mio::start(config, tls, seed)
                })
                .await
                .map_err(io::Error::other)??;
                if let Some(shards) = shards {
                    assert_eq!(handle.shards(), usize::from(shards), "mio shards");
                }
                Handle::Mio(Arc::new(handle))
            }
        };
        let local_addr = match &handle {
            Handle::Tokio(h) => h.local_addr(),
            Handle::Mio(h) => h.local_addr(),
        };
        Ok(Spooky {
            runtime,
            local_addr,
            handle: Some(handle),
        })
    }

    fn handle(&self) -> &Handle {
        self.handle.as_ref().expect("spooky has not been joined")
    }

    /// Which runtime this is.
    pub fn runtime(&self) -> Runtime {
        self.runtime
    }

    /// The client-facing UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the admin endpoint listens, if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        match self.handle() {
            Handle::Tokio(h) => h.admin_addr(),
            Handle::Mio(h) => h.admin_addr(),
        }
    }

    /// The core's counters (summed over the shards on mio).
    pub async fn metrics(&self) -> Metrics {
        match self.handle() {
            Handle::Tokio(h) => h.metrics().await,
            Handle::Mio(h) => {
                let h = h.clone();
                tokio::task::spawn_blocking(move || h.metrics())
                    .await
                    .expect("mio metrics call panicked")
            }
        }
    }

    /// Every backend's status (merged over the shards on mio).
    pub async fn backends(&self) -> Vec<BackendStatus> {
        match self.handle() {
            Handle::Tokio(h) => h.backends().await,
            Handle::Mio(h) => {
                let h = h.clone();
                tokio::task::spawn_blocking(move || h.backends())
                    .await
                    .expect("mio backends call panicked")
            }
        }
    }

    /// Client datagrams the mio shards handed to the shard owning their connection (always 0
    /// on tokio, which has one core).
    pub fn steered(&self) -> u64 {
        match self.handle() {
            Handle::Tokio(_) => 0,
            Handle::Mio(h) => h.steered(),
        }
    }

    /// Applies a new configuration without dropping connections.
    pub fn reload(&self, config: Arc<Config>, tls: TlsMaterials) {
        let reload = spooky_core::Reload { config, tls };
        match self.handle() {
            Handle::Tokio(h) => h.reload(reload),
            Handle::Mio(h) => h.reload(&reload),
        }
    }

    /// Starts a graceful drain.
    pub fn drain(&self) {
        match self.handle() {
            Handle::Tokio(h) => h.drain(),
            Handle::Mio(h) => h.drain(),
        }
    }

    /// Waits for the instance to end (after [`Spooky::drain`]).
    pub async fn join(mut self) -> io::Result<()> {
        match self.handle.take().expect("spooky has not been joined") {
            Handle::Tokio(h) => h.join().await,
            Handle::Mio(h) => {
                let h = Arc::try_unwrap(h)
                    .map_err(|_| io::Error::other("the mio handle is still in use"))?;
                // A thread of its own, not tokio's blocking pool: the test's runtime waits for
                // the blocking pool when it shuts down, so shards that never end would hang
                // the test instead of failing it when a caller stops waiting.
                let (done, joined) = tokio::sync::oneshot::channel();
                std::thread::spawn(move || {
                    let _ = done.send(h.join());
                });
                joined
                    .await
                    .map_err(|_| io::Error::other("the thread joining the mio shards died"))?
            }
        }
    }

    /// Stops at once (no drain) and waits up to 2 s for the instance to end.
    pub async fn shutdown(self) {
        match self.handle() {
            Handle::Tokio(h) => h.abort(),
            Handle::Mio(h) => h.stop(),
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.join()).await;
    }
}

impl Drop for Spooky {
    fn drop(&mut self) {
        match &self.handle {
            Some(Handle::Tokio(h)) => h.abort(),
            Some(Handle::Mio(h)) => h.stop(),
            None => {}
        }
    }
}

/// The protocol a test backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// HTTP/1.1 over TCP (hyper).
    H1,
    /// HTTP/3 over QUIC (quinn + h3).
    H3,
}

/// An edit to the assembled configuration.
pub type ConfigEdit = Box<dyn FnOnce(&mut Config) + Send>;

/// What to start: the backends (in pool order) and Spooky's settings.
pub struct Setup {
    pub backends: Vec<Kind>,
    pub load_balancing: LoadBalancing,
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// Last edits to the assembled configuration (retries, outlier detection, ...).
    pub configure: Vec<ConfigEdit>,
}

impl Setup {
    /// Round-robin over `backends`, default limits and timeouts.
    pub fn new(backends: &[Kind]) -> Setup {
        Setup {
            backends: backends.to_vec(),
            load_balancing: LoadBalancing::RoundRobin,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            configure: Vec::new(),
        }
    }

    /// Edits the assembled configuration just before Spooky starts.
    pub fn configure(mut self, edit: impl FnOnce(&mut Config) + Send + 'static) -> Setup {
        self.configure.push(Box::new(edit));
        self
    }

    pub fn load_balancing(mut self, strategy: LoadBalancing) -> Setup {
        self.load_balancing = strategy;
        self
    }

    pub fn limits(mut self, edit: impl FnOnce(&mut Limits)) -> Setup {
        edit(&mut self.limits);
        self
    }

    pub fn timeouts(mut self, edit: impl FnOnce(&mut Timeouts)) -> Setup {
        edit(&mut self.timeouts);
        self
    }

    /// Starts the backends, then Spooky in front of them on `runtime` (on mio with
    /// [`MIO_SHARDS`] shards, unless an edit set `runtime.shards`).
    pub async fn start(self, runtime: Runtime) -> Harness {
        init_tracing();
        let identity = certs::self_signed(&certs::LOCAL_NAMES).expect("self-signed certificate");
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(identity.cert_der.clone())
            .expect("the generated certificate is a usable root");
        let roots = Arc::new(roots);

        let mut running = Vec::new();
        let mut backend_configs = Vec::new();
        let mut verify = Vec::new();
        for (i, kind) in self.backends.iter().enumerate() {
            let name = backend_name(i, *kind);
            let (backend, protocol) = match kind {
                Kind::H1 => (
                    backends::start_h1(&name, 0)
                        .await
                        .expect("start HTTP/1.1 backend"),
                    BackendProtocol::Http1,
                ),
                Kind::H3 => (
                    backends::start_h3(
                        &name,
                        0,
                        vec![identity.cert_der.clone()],
                        identity.key_der.clone_key(),
                    )
                    .await
                    .expect("start HTTP/3 backend"),
                    BackendProtocol::Http3,
                ),
            };
            let mut config = BackendConfig::new(name, backend.addr, protocol);
            if protocol == BackendProtocol::Http3 {
                config.tls.server_name = Some("localhost".into());
                verify.push(Some(UpstreamVerify::Roots(roots.clone())));
            } else {
                verify.push(None);
            }
            backend_configs.push(config);
            running.push(backend);
        }

        let mut config = Config::with_backends(
            ListenConfig {
                protocol: ListenProtocol::Http3,
                address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: 0,
                tls: ListenTls {
                    cert: "(generated in memory)".into(),
                    key: "(generated in memory)".into(),
                },
            },
            backend_configs,
        );
        config.load_balancing = self.load_balancing;
        config.limits = self.limits;
        config.timeouts = self.timeouts;
        config.runtime.kind = runtime.kind();
        if runtime == Runtime::Mio {
            config.runtime.shards = Some(MIO_SHARDS);
        }
        for edit in self.configure {
            edit(&mut config);
        }
        let config = Arc::new(config);
        let tls = TlsMaterials {
            server: ServerIdentity {
                chain: vec![identity.cert_der.clone()],
                key: identity.key_der.clone_key(),
            },
            backends: verify,
        };
        let spooky = Spooky::start(runtime, config.clone(), tls, SEED)
            .await
            .unwrap_or_else(|e| panic!("start spooky on {runtime}: {e}"));
        let addr = spooky.local_addr();
        Harness {
            backends: running,
            spooky,
            runtime,
            identity,
            addr,
            config,
        }
    }
}

/// `backend-<index>-<h1|h3>`: the name a backend reports in `x-backend`.
pub fn backend_name(index: usize, kind: Kind) -> String {
    let kind = match kind {
        Kind::H1 => "h1",
        Kind::H3 => "h3",
    };
    format!("backend-{index}-{kind}")
}

/// Backends and a Spooky in front of them, all on 127.0.0.1.
pub struct Harness {
    /// The running backends, in pool order (tests may stop and remove some).
    pub backends: Vec<Backend>,
    /// The running Spooky.
    pub spooky: Spooky,
    /// The runtime it runs on.
    pub runtime: Runtime,
    /// Spooky's certificate (also the HTTP/3 backends' certificate).
    pub identity: SelfSigned,
    /// Where Spooky listens (UDP).
    pub addr: SocketAddr,
    /// The configuration Spooky runs with.
    pub config: Arc<Config>,
}

impl Harness {
    /// [`Setup::new`] with defaults, started on `runtime`.
    pub async fn start(runtime: Runtime, backends: &[Kind]) -> Harness {
        Setup::new(backends).start(runtime).await
    }

    /// Trust exactly Spooky's generated certificate.
    pub fn trust(&self) -> Trust {
        Trust::Roots(vec![self.identity.cert_der.clone()])
    }

    /// A new client connection to Spooky (`spooky::client::H3Client`: quinn + h3), verifying
    /// the certificate for "localhost".
    pub async fn client(&self) -> H3Client {
        H3Client::connect(self.addr, "localhost", &self.trust())
            .await
            .unwrap_or_else(|e| panic!("connect to spooky on {}: {e:#}", self.runtime))
    }

    /// Like [`Harness::client`], with the given QUIC transport settings (flow-control
    /// windows, idle timeout).
    pub async fn client_with(&self, transport: quinn::TransportConfig) -> H3Client {
        let mut config = spooky::client::quinn_client_config(&self.trust()).expect("client config");
        config.transport_config(Arc::new(transport));
        H3Client::connect_with(self.addr, "localhost", config)
            .await
            .unwrap_or_else(|e| panic!("connect to spooky on {}: {e:#}", self.runtime))
    }

    /// Each backend's `request_count()`, in pool order.
    pub fn request_counts(&self) -> Vec<u64> {
        self.backends.iter().map(Backend::request_count).collect()
    }

    /// The backend named `name`.
    pub fn backend(&self, name: &str) -> &Backend {
        self.backends
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("no backend named {name}"))
    }

    /// Stops Spooky and the backends.
    pub async fn shutdown(self) {
        self.spooky.shutdown().await;
        for backend in &self.backends {
            backend.stop();
        }
    }
}

/// Stops `backend` and waits until its TCP port refuses connections.
pub async fn stop_h1_backend(backend: Backend) {
    let addr = backend.addr;
    backend.stop();
    drop(backend);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            _ if Instant::now() > deadline => {
                panic!("stopped backend at {addr} still accepts connections after 5 s")
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// SHA-256 of `bytes`, lowercase hex.
/// One HTTP/1.1 request to Spooky's admin endpoint; returns the status line and the body.
#[allow(dead_code)]
pub async fn admin_request(addr: SocketAddr, method: &str, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("admin connect");
    let request = format!("{method} {path} HTTP/1.1\r\nhost: admin\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("admin write");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("admin read");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("a complete response");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    spooky::hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// `len` bytes that differ from `backends::pattern` (so an echo cannot be confused with a
/// `/bytes/N` answer): byte i is `(i * 7 + 3) % 256`.
pub fn request_body(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + 3) % 256) as u8).collect()
}

/// The workspace root (the `spooky` package lives there).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh, empty directory under Cargo's target tmp dir, unique to this call.
pub fn scratch_dir(label: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("spooky-e2e-{label}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    socket.local_addr().expect("local addr").port()
}

/// What a child process did.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Finished {
    /// Everything it printed, for failure messages.
    pub fn transcript(&self) -> String {
        format!(
            "exit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Kills the child when dropped (a test that times out or panics leaves no process behind).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A child process started by [`spawn_child`]: its output is being collected, and it is
/// killed if dropped before it has finished.
pub struct RunningChild {
    child: KillOnDrop,
    description: String,
    started: Instant,
    stdout: std::thread::JoinHandle<String>,
    stderr: std::thread::JoinHandle<String>,
}

/// Starts `command` (stdin closed, output captured).
pub fn spawn_child(mut command: Command) -> Result<RunningChild, String> {
    let started = Instant::now();
    let description = format!("{command:?}");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(
        command
            .spawn()
            .map_err(|e| format!("cannot start {description}: {e}"))?,
    );
    let mut stdout = child.0.stdout.take().expect("piped stdout");
    let mut stderr = child.0.stderr.take().expect("piped stderr");
    let stdout = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let stderr = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    Ok(RunningChild {
        child,
        description,
        started,
        stdout,
        stderr,
    })
}

impl RunningChild {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.0.id()
    }

    /// Sends it `signal` (a name such as `TERM`) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill -{signal}: {e}"));
        assert!(status.success(), "kill -{signal} {} failed", self.id());
    }

    /// Waits for it to exit, killing it after `limit` (counted from its start). Returns `Err`
    /// with what it printed if it had to be killed.
    pub async fn finish(mut self, limit: Duration) -> Result<Finished, String> {
        let description = self.description.clone();
        let status = loop {
            match self.child.0.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if self.started.elapsed() > limit => break None,
                Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => return Err(format!("waiting for {description}: {e}")),
            }
        };
        if status.is_none() {
            let _ = self.child.0.kill();
            let _ = self.child.0.wait();
        }
        let stdout = self.stdout.join().unwrap_or_default();
        let stderr = self.stderr.join().unwrap_or_default();
        match status {
            Some(status) => Ok(Finished {
                status,
                stdout,
                stderr,
                elapsed: self.started.elapsed(),
            }),
            None => Err(format!(
                "{description} did not finish within {limit:?}; killed\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
            )),
        }
    }
}

/// Runs `command` to completion (stdin closed, output captured), killing it after `limit`.
/// Returns `Err` with what it printed if it had to be killed.
pub async fn run_with_limit(command: Command, limit: Duration) -> Result<Finished, String> {
    spawn_child(command)?.finish(limit).await
}

/// A flat JSON object as printed by the Python peers: string, integer, boolean or null values.
#[derive(Debug, Clone, Default)]
pub struct JsonObject(pub Vec<(String, JsonValue)>);

/// A scalar JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonValue {
    Str(String),
    Int(i64),
    Bool(bool),
    Null,
}

impl JsonObject {
    pub fn get(&self, key: &str) -> Option<&JsonValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(JsonValue::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.get(key) {
            Some(JsonValue::Int(n)) => Some(*n),
            _ => None,
        }
    }

    /// Parses one line holding a flat JSON object (no nested objects or arrays).
    pub fn parse(text: &str) -> Result<JsonObject, String> {
        let mut p = JsonParser {
            chars: text.trim().chars().collect(),
            at: 0,
        };
        let object = p.object()?;
        p.skip_ws();
        if p.at != p.chars.len() {
            return Err(format!("trailing characters in {text:?}"));
        }
        Ok(object)
    }
}

struct JsonParser {
    chars: Vec<char>,
    at: usize,
}

impl JsonParser {
    fn skip_ws(&mut self) {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        self.skip_ws();
        if self.chars.get(self.at) == Some(&c) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected {c:?} at offset {}", self.at))
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.chars.get(self.at).copied()
    }

    fn object(&mut self) -> Result<JsonObject, String> {
        self.expect('{')?;
        let mut fields = Vec::new();
        if self.peek() == Some('}') {
            self.at += 1;
            return Ok(JsonObject(fields));
        }
        loop {
            let key = self.string()?;
            self.expect(':')?;
            let value = self.value()?;
            fields.push((key, value));
            match self.peek() {
                Some(',') => self.at += 1,
                Some('}') => {
                    self.at += 1;
                    return Ok(JsonObject(fields));
                }
                other => return Err(format!("expected ',' or '}}', found {other:?}")),
            }
        }
    }

    fn value(&mut self) -> Result<JsonValue, String> {
        match self.peek() {
            Some('"') => Ok(JsonValue::Str(self.string()?)),
            Some(c) if c == '-' || c.is_ascii_digit() => {
                let start = self.at;
                self.at += 1;
                while self.chars.get(self.at).is_some_and(|c| c.is_ascii_digit()) {
                    self.at += 1;
                }
                let text: String = self.chars[start..self.at].iter().collect();
                text.parse()
                    .map(JsonValue::Int)
                    .map_err(|e| format!("bad integer {text:?}: {e}"))
            }
            _ => {
                for (word, value) in [
                    ("true", JsonValue::Bool(true)),
                    ("false", JsonValue::Bool(false)),
                    ("null", JsonValue::Null),
                ] {
                    let end = self.at + word.len();
                    if end <= self.chars.len()
                        && self.chars[self.at..end].iter().copied().eq(word.chars())
                    {
                        self.at = end;
                        return Ok(value);
                    }
                }
                Err(format!("unsupported JSON value at offset {}", self.at))
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect('"')?;
        let mut out = String::new();
        loop {
            let Some(&c) = self.chars.get(self.at) else {
                return Err("unterminated string".into());
            };
            self.at += 1;
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let Some(&e) = self.chars.get(self.at) else {
                        return Err("unterminated escape".into());
                    };
                    self.at += 1;
                    match e {
                        '"' | '\\' | '/' => out.push(e),
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'u' => {
                            let hex: String = self
                                .chars
                                .get(self.at..self.at + 4)
                                .ok_or("short \\u")?
                                .iter()
                                .collect();
                            self.at += 4;
                            let code = u32::from_str_radix(&hex, 16)
                                .map_err(|e| format!("bad \\u escape: {e}"))?;
                            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                        }
                        other => return Err(format!("unknown escape \\{other}")),
                    }
                }
                c => out.push(c),
            }
        }
    }
}
