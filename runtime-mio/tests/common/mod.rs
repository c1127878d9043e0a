//! Shared pieces of the end-to-end tests: certificates, configs, backends (HTTP/1.1 and
//! HTTP/3) and an HTTP/3 client, all over loopback.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spooky_core::TlsMaterials;
use spooky_core::config::{
    BackendConfig, BackendProtocol, Config, ListenConfig, ListenProtocol, ListenTls,
};
use spooky_core::quic::crypto::{ServerIdentity, UpstreamVerify};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::timeout;

/// Every test ends within this, or fails.
pub const TEST_LIMIT: Duration = Duration::from_secs(60);
pub const SEED: [u8; 32] = [11; 32];

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A self-signed certificate for "localhost": Spooky's identity, the client's root, and the
/// HTTP/3 backend's identity.
pub struct TestCert {
    pub cert: CertificateDer<'static>,
    pub key: PrivatePkcs8KeyDer<'static>,
}

pub fn test_cert() -> TestCert {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("generate certificate");
    TestCert {
        cert: CertificateDer::from(generated.cert.der().to_vec()),
        key: PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()),
    }
}

/// A config listening on 127.0.0.1:0 with `shards` shards and the given backends.
pub fn config(backends: Vec<BackendConfig>, shards: u16) -> Config {
    let listen = ListenConfig {
        protocol: ListenProtocol::Http3,
        address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        tls: ListenTls {
            cert: PathBuf::from("unused.pem"),
            key: PathBuf::from("unused.key"),
        },
    };
    let mut config = Config::with_backends(listen, backends);
    config.runtime.kind = spooky_core::config::RuntimeKind::Mio;
    config.runtime.shards = Some(shards);
    config
}

/// A config with one HTTP/1.1 backend.
pub fn h1_config(backend: SocketAddr, shards: u16) -> Config {
    config(
        vec![BackendConfig::new("b1", backend, BackendProtocol::Http1)],
        shards,
    )
}

pub fn tls(cert: &TestCert, backends: Vec<Option<UpstreamVerify>>) -> TlsMaterials {
    TlsMaterials {
        server: ServerIdentity {
            chain: vec![cert.cert.clone()],
            key: PrivateKeyDer::Pkcs8(cert.key.clone_key()),
        },
        backends,
    }
}

/// Starts Spooky on mio.
pub fn start(config: Config, tls: TlsMaterials) -> spooky_runtime_mio::Handle {
    let handle =
        spooky_runtime_mio::start(Arc::new(config), tls, SEED).expect("start spooky on mio");
    assert_ne!(handle.local_addr().port(), 0);
    handle
}

/// Joins the shards from async code, failing the test if that takes longer than `limit`.
pub async fn join_within(handle: spooky_runtime_mio::Handle, limit: Duration) {
    timeout(limit, tokio::task::spawn_blocking(move || handle.join()))
        .await
        .expect("shards did not exit in time")
        .expect("join task")
        .expect("a shard ended with an error");
}

/// Summed metrics, fetched off the async threads.
pub async fn metrics(handle: &Arc<spooky_runtime_mio::Handle>) -> spooky_core::metrics::Metrics {
    let handle = handle.clone();
    tokio::task::spawn_blocking(move || handle.metrics())
        .await
        .expect("metrics task")
}

// ---- HTTP/1.1 backend ----

/// The body the HTTP/1.1 backend sends for `GET /big`.
pub fn big_body() -> Vec<u8> {
    (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect()
}

/// A keep-alive HTTP/1.1 backend. Requests with a body get it echoed; `GET /big` gets
/// [`big_body`]; anything else gets `hello`. Each answer comes after `delay`.
///
/// Responses over 64 KiB come with `connection: close` (and the backend closes), unless it
/// was spawned with `keep_alive_large`: see `keep_alive_after_a_large_response` for why.
pub struct H1Backend {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    /// Notified whenever a request has been read completely.
    pub received: Arc<Notify>,
}

pub async fn spawn_h1_backend(delay: Duration) -> H1Backend {
    spawn_h1_backend_with(delay, false).await
}

pub async fn spawn_h1_backend_with(delay: Duration, keep_alive_large: bool) -> H1Backend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(Notify::new());
    let big: Arc<[u8]> = big_body().into();
    let (count, notify) = (requests.clone(), received.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_h1(
                stream,
                delay,
                big.clone(),
                keep_alive_large,
                count.clone(),
                notify.clone(),
            ));
        }
    });
    H1Backend {
        addr,
        requests,
        received,
    }
}

async fn serve_h1(
    mut stream: TcpStream,
    delay: Duration,
    big: Arc<[u8]>,
    keep_alive_large: bool,
    count: Arc<AtomicUsize>,
    notify: Arc<Notify>,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Some(request) = parse_request(&buf) {
            buf.drain(..request.consumed);
            count.fetch_add(1, Ordering::SeqCst);
            notify.notify_one();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let body: &[u8] = if !request.body.is_empty() {
                &request.body
            } else if request.path == "/big" {
                &big
            } else {
                b"hello"
            };
            let close = body.len() > 64 * 1024 && !keep_alive_large;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}{}\r\n\r\n",
                body.len(),
                if close { "\r\nconnection: close" } else { "" },
            );
            // One write for small responses: no Nagle delay between head and body.
            let sent = if body.len() <= 64 * 1024 {
                let mut whole = head.into_bytes();
                whole.extend_from_slice(body);
                stream.write_all(&whole).await
            } else {
                match stream.write_all(head.as_bytes()).await {
                    Ok(()) => stream.write_all(body).await,
                    Err(e) => Err(e),
                }
            };
            if sent.is_err() || close {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

struct ParsedRequest {
    consumed: usize,
    path: String,
    body: Vec<u8>,
}

/// The first complete request in `buf` (head and body, content-length or chunked).
fn parse_request(buf: &[u8]) -> Option<ParsedRequest> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let head = match request.parse(buf).expect("backend got a malformed request") {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return None,
    };
    let path = request.path.unwrap_or("").to_owned();
    let mut content_length = 0;
    let mut chunked = false;
    for h in request.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            content_length = std::str::from_utf8(h.value)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        }
    }
    if chunked {
        let (used, body) = decode_chunked(&buf[head..])?;
        return Some(ParsedRequest {
            consumed: head + used,
            path,
            body,
        });
    }
    (buf.len() >= head + content_length).then(|| ParsedRequest {
        consumed: head + content_length,
        path,
        body: buf[head..head + content_length].to_vec(),
    })
}

/// A complete chunked body (no trailers) at the start of `buf`: bytes used and the body.
fn decode_chunked(buf: &[u8]) -> Option<(usize, Vec<u8>)> {
    let mut at = 0;
    let mut body = Vec::new();
    loop {
        let line_end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
        let size_text = std::str::from_utf8(&buf[at..line_end]).unwrap();
        let size_text = size_text.split(';').next().unwrap().trim();
        let size = usize::from_str_radix(size_text, 16).expect("chunk size");
        at = line_end + 2;
        if size == 0 {
            return (buf.len() >= at + 2).then_some((at + 2, body));
        }
        if buf.len() < at + size + 2 {
            return None;
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

// ---- HTTP/3 backend ----

/// An HTTP/3 backend (quinn + h3) on 127.0.0.1 answering `200 hello h3`, with `cert`.
pub async fn spawn_h3_backend(cert: &TestCert) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert.clone()],
            PrivateKeyDer::Pkcs8(cert.key.clone_key()),
        )
        .expect("backend certificate");
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("QUIC TLS config");
    let endpoint = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(quic)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .expect("backend endpoint");
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let Ok(mut h3) =
                    h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn)).await
                else {
                    return;
                };
                while let Ok(Some(resolver)) = h3.accept().await {
                    tokio::spawn(async move {
                        let Ok((_request, mut stream)) = resolver.resolve_request().await else {
                            return;
                        };
                        while let Ok(Some(_)) = stream.recv_data().await {}
                        let response = http::Response::builder().status(200).body(()).unwrap();
                        let _ = stream.send_response(response).await;
                        let _ = stream.send_data(Bytes::from_static(b"hello h3")).await;
                        let _ = stream.finish().await;
                    });
                }
            });
        }
    });
    addr
}

// ---- HTTP/3 client ----

pub type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// An HTTP/3 client connection to Spooky, trusting `cert`.
pub struct Client {
    pub endpoint: quinn::Endpoint,
    pub send: SendRequest,
    driver: tokio::task::JoinHandle<()>,
}

pub async fn connect(addr: SocketAddr, cert: &TestCert) -> Client {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.clone()).expect("add root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS config");
    let bind: SocketAddr = if addr.is_ipv4() {
        "127.0.0.1:0".parse().unwrap()
    } else {
        "[::1]:0".parse().unwrap()
    };
    let mut endpoint = quinn::Endpoint::client(bind).expect("client endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let conn = endpoint
        .connect(addr, "localhost")
        .expect("connect")
        .await
        .expect("QUIC handshake");
    let (mut connection, send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .expect("HTTP/3 setup");
    let driver = tokio::spawn(async move {
        let error = std::future::poll_fn(|cx| connection.poll_close(cx)).await;
        tracing::debug!(%error, "client connection closed");
    });
    Client {
        endpoint,
        send,
        driver,
    }
}

impl Client {
    pub async fn close(self) {
        drop(self.send);
        self.endpoint.close(0u32.into(), b"done");
        let _ = timeout(Duration::from_secs(2), self.driver).await;
        let _ = timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    pub status: http::StatusCode,
    pub body: Vec<u8>,
}

/// `GET path`.
pub async fn get(send: &mut SendRequest, path: &str) -> Result<Response, String> {
    request(send, http::Method::GET, path, Bytes::new()).await
}

/// Sends a request with `body` (sent while the response is read, in 64 KiB pieces) and
/// returns the response.
pub async fn request(
    send: &mut SendRequest,
    method: http::Method,
    path: &str,
    body: Bytes,
) -> Result<Response, String> {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"));
    if !body.is_empty() {
        builder = builder.header("content-length", body.len());
    }
    let stream = send
        .send_request(builder.body(()).unwrap())
        .await
        .map_err(|e| format!("send request: {e}"))?;
    let (mut sender, mut receiver) = stream.split();
    let upload = async move {
        let mut body = body;
        while !body.is_empty() {
            let piece = body.split_to(body.len().min(64 * 1024));
            sender
                .send_data(piece)
                .await
                .map_err(|e| format!("request body: {e}"))?;
        }
        sender
            .finish()
            .await
            .map_err(|e| format!("finish request: {e}"))
    };
    let download = async move {
        let response = receiver
            .recv_response()
            .await
            .map_err(|e| format!("response head: {e}"))?;
        let mut body = Vec::new();
        while let Some(mut chunk) = receiver
            .recv_data()
            .await
            .map_err(|e| format!("response body: {e}"))?
        {
            while chunk.has_remaining() {
                let part = chunk.chunk();
                body.extend_from_slice(part);
                let n = part.len();
                chunk.advance(n);
            }
        }
        Ok::<_, String>(Response {
            status: response.status(),
            body,
        })
    };
    let (sent, received) = tokio::join!(upload, download);
    // A server may answer before the request is complete and then stop it with H3_NO_ERROR
    // (RFC 9114 4.1, as Spooky does for a 502): a complete response is what counts.
    if let Err(e) = sent {
        tracing::debug!(error = %e, "request upload ended early");
    }
    received
}
