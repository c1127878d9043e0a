//! Shared setup for the end-to-end scenarios: real backends (hyper for HTTP/1.1, quinn + h3
//! for HTTP/3) and a real Spooky (`spooky_runtime_tokio::start`) on 127.0.0.1, plus an
//! independent HTTP/3 client (quinn + h3) connected to it.
//!
//! Every scenario wraps its body in [`within`], so nothing can hang for longer than
//! [`TEST_LIMIT`].

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod python;

use std::future::Future;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Buf, Bytes, BytesMut};
use http::Method;
use spooky::backends::{self, Backend};
use spooky::certs::{self, SelfSigned};
use spooky::client::{H3Client, Response, Trust};
use spooky_core::TlsMaterials;
use spooky_core::config::{
    BackendConfig, BackendProtocol, Config, Limits, ListenConfig, ListenProtocol, ListenTls,
    LoadBalancing, Timeouts,
};
use spooky_core::quic::crypto::{ServerIdentity, UpstreamVerify};
use spooky_runtime_tokio::Handle;

/// Upper bound for any one scenario.
pub const TEST_LIMIT: Duration = Duration::from_secs(60);

/// The core's seed: fixed, so a failing run can be replayed.
pub const SEED: [u8; 32] = *b"spooky end-to-end tests seed 001";

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

/// The protocol a test backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// HTTP/1.1 over TCP (hyper).
    H1,
    /// HTTP/3 over QUIC (quinn + h3).
    H3,
}

/// An edit to the assembled configuration.
pub type ConfigEdit = Box<dyn FnOnce(&mut Config)>;

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
    pub fn configure(mut self, edit: impl FnOnce(&mut Config) + 'static) -> Setup {
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

    /// Starts the backends, then Spooky in front of them.
    pub async fn start(self) -> Harness {
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
        let spooky = spooky_runtime_tokio::start(config.clone(), tls, SEED)
            .await
            .expect("start spooky");
        let addr = spooky.local_addr();
        Harness {
            backends: running,
            spooky,
            identity,
            addr,
            config,
        }
    }
}

/// A client connection (quinn + h3) that sends a request body while it reads the response,
/// and keeps a complete response even when the server stopped the request stream early.
///
/// `H3Client::request` differs in two ways that matter here:
/// - it sends the whole body before it reads anything, so an echo larger than the
///   flow-control windows along the path (a few MiB) stalls until the idle timeout, even
///   against an HTTP/3 backend directly;
/// - it fails the whole request when finishing the request stream fails. h3 writes a grease
///   frame when finishing, and if the server has already answered (a fast 502) and sent
///   STOP_SENDING with H3_NO_ERROR, as RFC 9114 §4.1 allows, that write fails with
///   "Remote reset: H3_NO_ERROR" and the complete response is discarded, which §4.1 says a
///   client must not do. Spooky does this whenever a response is complete before the
///   request's FIN was read, so under load even plain GETs fail now and then.
///
/// Clones share the connection (like `H3Client`).
#[derive(Clone)]
pub struct DuplexClient {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    connection: quinn::Connection,
    endpoint: quinn::Endpoint,
    authority: String,
}

impl DuplexClient {
    /// Connects to `addr`, verifying the certificate for "localhost".
    pub async fn connect(addr: SocketAddr, trust: &Trust) -> DuplexClient {
        let mut transport = quinn::TransportConfig::default();
        transport.max_idle_timeout(Some(
            Duration::from_secs(30).try_into().expect("idle timeout"),
        ));
        DuplexClient::connect_with(addr, trust, transport).await
    }

    /// Like [`DuplexClient::connect`], with the given QUIC transport settings (flow-control
    /// windows, idle timeout).
    pub async fn connect_with(
        addr: SocketAddr,
        trust: &Trust,
        transport: quinn::TransportConfig,
    ) -> DuplexClient {
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("endpoint");
        let mut config = spooky::client::quinn_client_config(trust).expect("client config");
        config.transport_config(Arc::new(transport));
        endpoint.set_default_client_config(config);
        let connection = endpoint
            .connect(addr, "localhost")
            .expect("connect")
            .await
            .expect("QUIC handshake with spooky");
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(connection.clone()))
            .await
            .expect("HTTP/3 setup");
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        DuplexClient {
            send,
            connection,
            endpoint,
            authority: format!("localhost:{}", addr.port()),
        }
    }

    /// A GET without a body.
    pub async fn get(&self, path: &str) -> anyhow::Result<Response> {
        self.request(Method::GET, path, Bytes::new()).await
    }

    /// Sends `method path` with `body` (in 64 KiB DATA frames) while reading the response.
    /// The response decides the outcome: once it is complete, a failure on the sending side
    /// (the server stopped reading) is ignored.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<Response> {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("https://{}{}", self.authority, path))
            .body(())?;
        let mut send = self.send.clone();
        let stream = send.send_request(request).await?;
        let (mut tx, mut rx) = stream.split();
        let sender = tokio::spawn(async move {
            let mut rest = body;
            while !rest.is_empty() {
                let piece = rest.split_to(rest.len().min(64 * 1024));
                tx.send_data(piece)
                    .await
                    .context("sending the request body")?;
            }
            tx.finish().await.context("finishing the request")?;
            anyhow::Ok(())
        });
        let receiver = async move {
            let head = rx.recv_response().await.context("response head")?;
            let mut collected = BytesMut::new();
            while let Some(mut chunk) = rx.recv_data().await.context("response body")? {
                while chunk.has_remaining() {
                    let piece = chunk.chunk();
                    collected.extend_from_slice(piece);
                    let n = piece.len();
                    chunk.advance(n);
                }
            }
            anyhow::Ok(Response {
                status: head.status(),
                headers: head.headers().clone(),
                body: collected.freeze(),
            })
        };
        let response = receiver.await;
        sender.abort();
        response
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.connection.close(0x100u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
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
    pub spooky: Handle,
    /// Spooky's certificate (also the HTTP/3 backends' certificate).
    pub identity: SelfSigned,
    /// Where Spooky listens (UDP).
    pub addr: SocketAddr,
    /// The configuration Spooky runs with.
    pub config: Arc<Config>,
}

impl Harness {
    /// [`Setup::new`] with defaults, started.
    pub async fn start(backends: &[Kind]) -> Harness {
        Setup::new(backends).start().await
    }

    /// Trust exactly Spooky's generated certificate.
    pub fn trust(&self) -> Trust {
        Trust::Roots(vec![self.identity.cert_der.clone()])
    }

    /// A new client connection to Spooky (quinn + h3), verifying the certificate for
    /// "localhost". This is the client the scenarios use; see [`DuplexClient`] for why it is
    /// not [`Harness::h3_client`].
    pub async fn client(&self) -> DuplexClient {
        DuplexClient::connect(self.addr, &self.trust()).await
    }

    /// A new `spooky::client::H3Client` connection to Spooky, verifying the certificate for
    /// "localhost".
    pub async fn h3_client(&self) -> H3Client {
        H3Client::connect(self.addr, "localhost", &self.trust())
            .await
            .expect("connect to spooky")
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
        self.spooky.abort();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.spooky.join()).await;
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

/// Runs `command` to completion (stdin closed, output captured), killing it after `limit`.
/// Returns `Err` with what it printed if it had to be killed.
pub async fn run_with_limit(mut command: Command, limit: Duration) -> Result<Finished, String> {
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
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let status = loop {
        match child.0.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() > limit => break None,
            Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => return Err(format!("waiting for {description}: {e}")),
        }
    };
    if status.is_none() {
        let _ = child.0.kill();
        let _ = child.0.wait();
    }
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Finished {
            status,
            stdout,
            stderr,
            elapsed: started.elapsed(),
        }),
        None => Err(format!(
            "{description} did not finish within {limit:?}; killed\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        )),
    }
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
