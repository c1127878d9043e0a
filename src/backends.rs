//! Backends for the demo and the tests, built on independent HTTP stacks: hyper for
//! HTTP/1.1, quinn + h3 for HTTP/3.
//!
//! Every response carries `x-backend: NAME`. Routes:
//! - `GET /bytes/N`: N bytes where byte i is `i % 251`;
//! - `GET /sleep/MS`: answers after MS milliseconds;
//! - `GET /status/NNN`: answers with that status;
//! - `POST`/`PUT` anything: echoes the request body back, streaming;
//! - anything else: `hello from NAME`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::{Buf, Bytes};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::task::JoinHandle;

/// A running backend.
pub struct Backend {
    /// Name reported in `x-backend`.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests it has received (head parsed).
    pub requests: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Backend {
    /// Requests received so far.
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Stops accepting and drops open connections.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The bytes `/bytes/N` returns.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

enum Route {
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
    if let Some(n) = number("/bytes/") {
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

async fn handle_h1(
    name: Arc<str>,
    requests: Arc<AtomicU64>,
    req: Request<Incoming>,
) -> Result<Response<HyperBody>, Infallible> {
    requests.fetch_add(1, Ordering::SeqCst);
    let builder = Response::builder().header("x-backend", &*name);
    let response = match route(req.method(), req.uri().path()) {
        Route::Echo => builder.body(req.into_body().boxed()),
        Route::Bytes(n) => builder.body(full(pattern(n))),
        Route::Sleep(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            builder.body(full("slept\n"))
        }
        Route::Status(code) => builder
            .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
            .body(full(format!("status {code}\n"))),
        Route::Hello => builder.body(full(format!("hello from {name}\n"))),
    };
    Ok(response.expect("valid response"))
}

/// Starts an HTTP/1.1 backend (hyper) on `127.0.0.1:port` (0 = any free port).
pub async fn start_h1(name: &str, port: u16) -> anyhow::Result<Backend> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let requests = Arc::new(AtomicU64::new(0));
    let name_arc: Arc<str> = name.into();
    let counter = requests.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let name = name_arc.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    handle_h1(name.clone(), counter.clone(), req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(Backend {
        name: name.to_owned(),
        addr,
        requests,
        task,
    })
}

/// Starts an HTTP/3 backend (quinn + h3) on `127.0.0.1:port` with the given identity.
pub async fn start_h3(
    name: &str,
    port: u16,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<Backend> {
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
    let requests = Arc::new(AtomicU64::new(0));
    let name_arc: Arc<str> = name.into();
    let counter = requests.clone();
    let task = tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let name = name_arc.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else {
                    return;
                };
                let Ok(mut h3) =
                    h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn)).await
                else {
                    return;
                };
                while let Ok(Some(resolver)) = h3.accept().await {
                    let name = name.clone();
                    let counter = counter.clone();
                    tokio::spawn(async move {
                        let Ok((req, stream)) = resolver.resolve_request().await else {
                            return;
                        };
                        counter.fetch_add(1, Ordering::SeqCst);
                        let _ = serve_h3(&name, req, stream).await;
                    });
                }
            });
        }
    });
    Ok(Backend {
        name: name.to_owned(),
        addr,
        requests,
        task,
    })
}

async fn serve_h3(
    name: &str,
    req: Request<()>,
    mut stream: h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
) -> anyhow::Result<()> {
    let response = |status: StatusCode| {
        Response::builder()
            .status(status)
            .header("x-backend", name)
            .body(())
            .expect("valid response")
    };
    match route(req.method(), req.uri().path()) {
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
                Route::Bytes(n) => (StatusCode::OK, Bytes::from(pattern(n))),
                Route::Sleep(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    (StatusCode::OK, Bytes::from_static(b"slept\n"))
                }
                Route::Status(code) => (
                    StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
                    Bytes::from(format!("status {code}\n")),
                ),
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
