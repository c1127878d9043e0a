//! Backends for the demo and the tests, built on independent HTTP stacks: hyper for
//! HTTP/1.1, quinn + h3 for HTTP/3.
//!
//! Every response carries `x-backend: NAME`. Routes:
//! - `GET /bytes/N`: N bytes where byte i is `i % 251`;
//! - `GET /sleep/MS`: answers after MS milliseconds;
//! - `GET /status/NNN`: answers with that status;
//! - `GET /headers` (or any path ending in `/headers`): the request's path and header
//!   fields, one `name: value` line each;
//! - `POST`/`PUT` anything: echoes the request body back, streaming;
//! - anything else: `hello from NAME`.
//!
//! For fault tests a backend can be made silent (accepts, never answers), made to answer
//! every request with one status, killed (listener and every open connection dropped) and
//! restarted on the same port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::{Buf, Bytes};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::task::JoinHandle;

/// How a backend behaves; shared with its tasks so tests can change it while it runs.
#[derive(Default)]
struct Behaviour {
    /// Accept requests and never answer.
    silent: AtomicBool,
    /// Answer every request with this status (0: the normal routes).
    status: AtomicU16,
}

/// What a backend's tasks share.
struct Shared {
    name: Arc<str>,
    requests: AtomicU64,
    behaviour: Behaviour,
    /// The accept loop and every connection task, so `kill` can end them all.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Shared {
    fn track(&self, task: &JoinHandle<()>) {
        let mut tasks = self.tasks.lock().expect("not poisoned");
        tasks.retain(|t| !t.is_finished());
        tasks.push(task.abort_handle());
    }

    fn kill(&self) {
        for task in self.tasks.lock().expect("not poisoned").drain(..) {
            task.abort();
        }
    }

    /// Waits forever if silent; otherwise the status override, if any.
    async fn behave(&self) -> Option<u16> {
        if self.behaviour.silent.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        match self.behaviour.status.load(Ordering::SeqCst) {
            0 => None,
            status => Some(status),
        }
    }
}

enum Kind {
    Http1,
    Http3 {
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    },
}

/// A running backend.
pub struct Backend {
    /// Name reported in `x-backend`.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    kind: Kind,
}

impl Backend {
    /// Requests received so far.
    pub fn request_count(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Stops listening and drops every open connection, as if the process died.
    pub fn kill(&self) {
        self.shared.kill();
    }

    /// Same as [`kill`](Self::kill).
    pub fn stop(&self) {
        self.kill();
    }

    /// Listens again on the same address after a kill.
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.kill();
        match &self.kind {
            Kind::Http1 => spawn_h1(&self.shared, self.addr.port()).await?,
            Kind::Http3 { chain, key } => {
                spawn_h3(
                    &self.shared,
                    self.addr.port(),
                    chain.clone(),
                    key.clone_key(),
                )
                .await?
            }
        };
        Ok(())
    }

    /// Accepts requests but never answers them (`false`: answers normally again).
    pub fn set_silent(&self, silent: bool) {
        self.shared.behaviour.silent.store(silent, Ordering::SeqCst);
    }

    /// Answers every request with `status` (`None`: the normal routes again).
    pub fn set_status(&self, status: Option<u16>) {
        self.shared
            .behaviour
            .status
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shared.kill();
    }
}

fn new_shared(name: &str) -> Arc<Shared> {
    Arc::new(Shared {
        name: name.into(),
        requests: AtomicU64::new(0),
        behaviour: Behaviour::default(),
        tasks: Mutex::new(Vec::new()),
    })
}

/// What `/headers` answers: the path, then every header field.
fn describe_request(path: &str, headers: &http::HeaderMap) -> String {
    let mut out = format!("path: {path}\n");
    for (name, value) in headers {
        out.push_str(&format!(
            "{name}: {}\n",
            value.to_str().unwrap_or("<binary>")
        ));
    }
    out
}

/// The bytes `/bytes/N` returns.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

enum Route {
    Headers,
    Bytes(usize),
    Sleep(u64),
    Status(u16),
    Echo,
    Hello,
}

fn route(method: &Method, path: &str) -> Route {
    if *method == Method::POST || *method == Method::PUT {
        return Route::Echo;
    }
    let number = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|n| n.parse::<u64>().ok())
    };
    if path.ends_with("/headers") {
        Route::Headers
    } else if let Some(n) = number("/bytes/") {
        Route::Bytes(n as usize)
    } else if let Some(ms) = number("/sleep/") {
        Route::Sleep(ms)
    } else if let Some(code) = number("/status/") {
        Route::Status(code as u16)
    } else {
        Route::Hello
    }
}

type HyperBody = BoxBody<Bytes, hyper::Error>;

fn full(bytes: impl Into<Bytes>) -> HyperBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::OK)
}

async fn handle_h1(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<HyperBody>, Infallible> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let name = shared.name.clone();
    let builder = Response::builder().header("x-backend", &*name);
    if let Some(status) = shared.behave().await {
        let response = builder
            .status(status_code(status))
            .body(full(format!("status {status}\n")));
        return Ok(response.expect("valid response"));
    }
    let response = match route(req.method(), req.uri().path()) {
        Route::Headers => builder.body(full(describe_request(
            req.uri().path_and_query().map_or("/", |p| p.as_str()),
            req.headers(),
        ))),
        Route::Echo => builder.body(req.into_body().boxed()),
        Route::Bytes(n) => builder.body(full(pattern(n))),
        Route::Sleep(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            builder.body(full("slept\n"))
        }
        Route::Status(code) => builder
            .status(status_code(code))
            .body(full(format!("status {code}\n"))),
        Route::Hello => builder.body(full(format!("hello from {name}\n"))),
    };
    Ok(response.expect("valid response"))
}

/// Starts an HTTP/1.1 backend (hyper) on `127.0.0.1:port` (0 = any free port).
pub async fn start_h1(name: &str, port: u16) -> anyhow::Result<Backend> {
    let shared = new_shared(name);
    let addr = spawn_h1(&shared, port).await?;
    Ok(Backend {
        name: name.to_owned(),
        addr,
        shared,
        kind: Kind::Http1,
    })
}

async fn spawn_h1(shared: &Arc<Shared>, port: u16) -> anyhow::Result<SocketAddr> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    // A restarted backend rebinds its port while old connections linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let listener = socket.listen(1024)?;
    let addr = listener.local_addr()?;
    let accept_shared = shared.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let shared = accept_shared.clone();
            let connection = tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle_h1(shared.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
            accept_shared.track(&connection);
        }
    });
    shared.track(&task);
    Ok(addr)
}

/// Starts an HTTP/3 backend (quinn + h3) on `127.0.0.1:port` with the given identity.
pub async fn start_h3(
    name: &str,
    port: u16,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<Backend> {
    let shared = new_shared(name);
    let addr = spawn_h3(&shared, port, chain.clone(), key.clone_key()).await?;
    Ok(Backend {
        name: name.to_owned(),
        addr,
        shared,
        kind: Kind::Http3 { chain, key },
    })
}

async fn spawn_h3(
    shared: &Arc<Shared>,
    port: u16,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<SocketAddr> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("backend certificate")?;
    tls.alpn_protocols = vec![b"h3".to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let endpoint =
        quinn::Endpoint::server(server_config, SocketAddr::from(([127, 0, 0, 1], port)))?;
    let addr = endpoint.local_addr()?;
    let accept_shared = shared.clone();
    let task = tokio::spawn(async move {
        // Aborting this task drops the endpoint, which ends every connection.
        while let Some(incoming) = endpoint.accept().await {
            let shared = accept_shared.clone();
            let connection = tokio::spawn(async move {
                let Ok(conn) = incoming.await else {
                    return;
                };
                let Ok(mut h3) =
                    h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn)).await
                else {
                    return;
                };
                while let Ok(Some(resolver)) = h3.accept().await {
                    let request_shared = shared.clone();
                    let request = tokio::spawn(async move {
                        let Ok((req, stream)) = resolver.resolve_request().await else {
                            return;
                        };
                        request_shared.requests.fetch_add(1, Ordering::SeqCst);
                        let _ = serve_h3(&request_shared, req, stream).await;
                    });
                    shared.track(&request);
                }
            });
            accept_shared.track(&connection);
        }
    });
    shared.track(&task);
    Ok(addr)
}

async fn serve_h3(
    shared: &Shared,
    req: Request<()>,
    mut stream: h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
) -> anyhow::Result<()> {
    let name = &*shared.name;
    let response = |status: StatusCode| {
        Response::builder()
            .status(status)
            .header("x-backend", name)
            .body(())
            .expect("valid response")
    };
    let route = match shared.behave().await {
        Some(status) => Route::Status(status),
        None => route(req.method(), req.uri().path()),
    };
    match route {
        Route::Echo => {
            stream.send_response(response(StatusCode::OK)).await?;
            while let Some(mut chunk) = stream.recv_data().await? {
                let bytes = chunk.copy_to_bytes(chunk.remaining());
                stream.send_data(bytes).await?;
            }
        }
        other => {
            // Read (and ignore) whatever body a GET carries.
            while stream.recv_data().await?.is_some() {}
            let (status, body) = match other {
                Route::Headers => (
                    StatusCode::OK,
                    Bytes::from(describe_request(
                        req.uri().path_and_query().map_or("/", |p| p.as_str()),
                        req.headers(),
                    )),
                ),
                Route::Bytes(n) => (StatusCode::OK, Bytes::from(pattern(n))),
                Route::Sleep(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    (StatusCode::OK, Bytes::from_static(b"slept\n"))
                }
                Route::Status(code) => (status_code(code), Bytes::from(format!("status {code}\n"))),
                _ => (StatusCode::OK, Bytes::from(format!("hello from {name}\n"))),
            };
            let mut head = response(status);
            head.headers_mut()
                .insert(http::header::CONTENT_LENGTH, body.len().into());
            stream.send_response(head).await?;
            if req.method() != Method::HEAD && !body.is_empty() {
                stream.send_data(body).await?;
            }
        }
    }
    stream.finish().await?;
    Ok(())
}
