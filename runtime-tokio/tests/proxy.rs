//! End-to-end tests over loopback: an HTTP/3 client (quinn + h3) talks to Spooky on tokio,
//! which forwards to a tiny HTTP/1.1 backend.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Buf;
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

const TEST_LIMIT: Duration = Duration::from_secs(20);
const SEED: [u8; 32] = [7; 32];

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A self-signed certificate for "localhost", as Spooky's identity and the client's root.
struct TestCert {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

fn test_cert() -> TestCert {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("generate certificate");
    TestCert {
        cert: CertificateDer::from(generated.cert.der().to_vec()),
        key: PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()),
    }
}

/// A Spooky config listening on 127.0.0.1:0 with one HTTP/1.1 backend.
fn config(backend: SocketAddr) -> Config {
    config_with(vec![BackendConfig::new(
        "b1",
        backend,
        BackendProtocol::Http1,
    )])
}

/// A Spooky config listening on 127.0.0.1:0 with the given backends.
fn config_with(backends: Vec<BackendConfig>) -> Config {
    let listen = ListenConfig {
        protocol: ListenProtocol::Http3,
        address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        tls: ListenTls {
            cert: PathBuf::from("unused.pem"),
            key: PathBuf::from("unused.key"),
        },
    };
    Config::with_backends(listen, backends)
}

fn tls(cert: &TestCert, backends: usize) -> TlsMaterials {
    tls_with(cert, vec![None; backends])
}

fn tls_with(cert: &TestCert, backends: Vec<Option<UpstreamVerify>>) -> TlsMaterials {
    TlsMaterials {
        server: ServerIdentity {
            chain: vec![cert.cert.clone()],
            key: PrivateKeyDer::Pkcs8(cert.key.clone_key()),
        },
        backends,
    }
}

/// An HTTP/1.1 backend answering `200 hello` to every request, after `delay`.
async fn spawn_backend(delay: Duration) -> Backend {
    spawn_backend_with_body(delay, Arc::from(&b"hello"[..])).await
}

/// An HTTP/1.1 backend answering `200` with `body` to every request, after `delay`.
struct Backend {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    /// Notified whenever a request has been read completely.
    received: Arc<Notify>,
}

async fn spawn_backend_with_body(delay: Duration, body: Arc<[u8]>) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(Notify::new());
    let (count, notify) = (requests.clone(), received.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_http1(
                stream,
                delay,
                body.clone(),
                count.clone(),
                notify.clone(),
            ));
        }
    });
    Backend {
        addr,
        requests,
        received,
    }
}

/// Serves keep-alive requests on one connection until the peer closes it.
async fn serve_http1(
    mut stream: TcpStream,
    delay: Duration,
    body: Arc<[u8]>,
    count: Arc<AtomicUsize>,
    notify: Arc<Notify>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        while let Some(used) = complete_request(&buf) {
            buf.drain(..used);
            count.fetch_add(1, Ordering::SeqCst);
            notify.notify_one();
            tokio::time::sleep(delay).await;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            if stream.write_all(head.as_bytes()).await.is_err()
                || stream.write_all(&body).await.is_err()
            {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Length of the first complete request in `buf` (head and body), if it is all there.
fn complete_request(buf: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let head = match request.parse(buf).expect("backend got a malformed request") {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return None,
    };
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
        return chunked_body_len(&buf[head..]).map(|n| head + n);
    }
    (buf.len() >= head + content_length).then_some(head + content_length)
}

/// Length of a complete chunked body (without trailers) at the start of `buf`.
fn chunked_body_len(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
        let size_text = std::str::from_utf8(&buf[at..line_end]).unwrap();
        let size_text = size_text.split(';').next().unwrap().trim();
        let size = usize::from_str_radix(size_text, 16).expect("chunk size");
        at = line_end + 2;
        if size == 0 {
            // No trailers in these tests: the last chunk is followed by an empty line.
            return (buf.len() >= at + 2).then_some(at + 2);
        }
        at += size + 2;
        if buf.len() < at {
            return None;
        }
    }
}

/// An HTTP/3 backend (quinn + h3) on 127.0.0.1 answering `200 hello h3`, with `cert`.
///
/// With `read_request_body` false it answers without reading the request to its end; quinn
/// then sends STOP_SENDING (code 0) on the request stream, in the same packet as the response.
async fn spawn_h3_backend(cert: &TestCert, read_request_body: bool) -> SocketAddr {
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
                    h3::server::Connection::<_, bytes::Bytes>::new(h3_quinn::Connection::new(conn))
                        .await
                else {
                    return;
                };
                while let Ok(Some(resolver)) = h3.accept().await {
                    tokio::spawn(async move {
                        let Ok((_request, mut stream)) = resolver.resolve_request().await else {
                            return;
                        };
                        if read_request_body {
                            while let Ok(Some(_)) = stream.recv_data().await {}
                        }
                        let response = http::Response::builder().status(200).body(()).unwrap();
                        let _ = stream.send_response(response).await;
                        let _ = stream
                            .send_data(bytes::Bytes::from_static(b"hello h3"))
                            .await;
                        let _ = stream.finish().await;
                    });
                }
            });
        }
    });
    addr
}

/// An HTTP/3 client connected to `addr`, trusting `cert`.
struct Client {
    endpoint: quinn::Endpoint,
    send: h3::client::SendRequest<h3_quinn::OpenStreams, bytes::Bytes>,
    driver: tokio::task::JoinHandle<()>,
}

async fn connect(addr: SocketAddr, cert: &TestCert) -> Client {
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
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("client endpoint");
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

/// Sends `GET path` and returns the status and body.
async fn get(
    send: &mut h3::client::SendRequest<h3_quinn::OpenStreams, bytes::Bytes>,
    path: &str,
) -> (http::StatusCode, Vec<u8>) {
    try_get(send, path).await.expect("GET failed")
}

/// Like [`get`], but reports failures instead of panicking.
async fn try_get(
    send: &mut h3::client::SendRequest<h3_quinn::OpenStreams, bytes::Bytes>,
    path: &str,
) -> Result<(http::StatusCode, Vec<u8>), String> {
    let request = http::Request::get(format!("https://localhost{path}"))
        .body(())
        .unwrap();
    let mut stream = send
        .send_request(request)
        .await
        .map_err(|e| format!("send request: {e}"))?;
    stream
        .finish()
        .await
        .map_err(|e| format!("finish request: {e}"))?;
    let response = stream
        .recv_response()
        .await
        .map_err(|e| format!("response head: {e}"))?;
    let mut body = Vec::new();
    while let Some(mut chunk) = stream
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
    Ok((response.status(), body))
}

impl Client {
    async fn close(self) {
        drop(self.send);
        self.endpoint.close(0u32.into(), b"done");
        let _ = timeout(Duration::from_secs(2), self.driver).await;
        let _ = timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

#[tokio::test]
async fn get_through_spooky_to_http1_backend() {
    init_tracing();
    timeout(TEST_LIMIT, async {
        let backend = spawn_backend(Duration::ZERO).await;
        let cert = test_cert();
        let handle =
            spooky_runtime_tokio::start(Arc::new(config(backend.addr)), tls(&cert, 1), SEED)
                .await
                .expect("start spooky");
        assert_ne!(handle.local_addr().port(), 0);

        let mut client = connect(handle.local_addr(), &cert).await;
        let (status, body) = get(&mut client.send, "/").await;
        assert_eq!(status, http::StatusCode::OK);
        assert_eq!(body, b"hello");
        // The backend connection is kept alive and reused.
        let (status, body) = get(&mut client.send, "/again").await;
        assert_eq!(status, http::StatusCode::OK);
        assert_eq!(body, b"hello");
        assert_eq!(backend.requests.load(Ordering::SeqCst), 2);

        client.close().await;
        handle.abort();
        let joined = handle.join().await;
        assert_eq!(
            joined.expect_err("aborted").kind(),
            std::io::ErrorKind::Interrupted
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn drain_finishes_in_flight_request_then_exits() {
    init_tracing();
    timeout(TEST_LIMIT, async {
        let backend = spawn_backend(Duration::from_millis(300)).await;
        let cert = test_cert();
        let handle =
            spooky_runtime_tokio::start(Arc::new(config(backend.addr)), tls(&cert, 1), SEED)
                .await
                .expect("start spooky");
        let client = connect(handle.local_addr(), &cert).await;

        let mut send = client.send.clone();
        let request = tokio::spawn(async move { try_get(&mut send, "/slow").await });
        // Drain once the backend has the request, while it sleeps on it.
        timeout(Duration::from_secs(5), backend.received.notified())
            .await
            .expect("backend never got the request");
        handle.drain();

        let response = timeout(Duration::from_secs(5), request)
            .await
            .expect("in-flight request did not finish")
            .expect("request task");
        timeout(Duration::from_secs(5), handle.join())
            .await
            .expect("runtime did not exit within 5 s of the drain")
            .expect("runtime ended with an error");
        let (status, body) = response.expect("in-flight request failed during the drain");
        assert_eq!(status, http::StatusCode::OK);
        assert_eq!(body, b"hello");
        client.close().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn metrics_count_requests() {
    init_tracing();
    timeout(TEST_LIMIT, async {
        let backend = spawn_backend(Duration::ZERO).await;
        let cert = test_cert();
        let handle =
            spooky_runtime_tokio::start(Arc::new(config(backend.addr)), tls(&cert, 1), SEED)
                .await
                .expect("start spooky");
        assert_eq!(handle.metrics().await.requests, 0);

        let mut client = connect(handle.local_addr(), &cert).await;
        for _ in 0..3 {
            let (status, _) = get(&mut client.send, "/").await;
            assert_eq!(status, http::StatusCode::OK);
        }
        let metrics = handle.metrics().await;
        assert_eq!(metrics.requests, 3);
        assert_eq!(metrics.responses_by_class[2], 3);
        assert_eq!(metrics.connections_accepted, 1);
        assert_eq!(metrics.tcp_connects, 1);

        client.close().await;
        handle.drain();
        timeout(Duration::from_secs(5), handle.join())
            .await
            .expect("runtime did not exit after the drain")
            .expect("runtime ended with an error");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn large_response_body_streams_through() {
    init_tracing();
    timeout(TEST_LIMIT, async {
        let body: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let backend = spawn_backend_with_body(Duration::ZERO, Arc::from(body.clone())).await;
        let cert = test_cert();
        let handle =
            spooky_runtime_tokio::start(Arc::new(config(backend.addr)), tls(&cert, 1), SEED)
                .await
                .expect("start spooky");
        let mut client = connect(handle.local_addr(), &cert).await;
        let (status, received) = get(&mut client.send, "/big").await;
        assert_eq!(status, http::StatusCode::OK);
        assert_eq!(received.len(), body.len());
        assert!(received == body, "body corrupted in transit");
        client.close().await;
        handle.abort();
    })
    .await
    .expect("test timed out");
}

/// GET through Spooky to an HTTP/3 backend, over the upstream (dual-stack) UDP socket.
async fn get_via_http3_backend(read_request_body: bool) {
    let cert = test_cert();
    let backend = spawn_h3_backend(&cert, read_request_body).await;
    let mut backend_config = BackendConfig::new("h3", backend, BackendProtocol::Http3);
    backend_config.tls.server_name = Some("localhost".into());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.clone()).expect("add root");
    let tls = tls_with(&cert, vec![Some(UpstreamVerify::Roots(Arc::new(roots)))]);
    let handle =
        spooky_runtime_tokio::start(Arc::new(config_with(vec![backend_config])), tls, SEED)
            .await
            .expect("start spooky");

    let mut client = connect(handle.local_addr(), &cert).await;
    for _ in 0..3 {
        let (status, body) = get(&mut client.send, "/").await;
        assert_eq!(status, http::StatusCode::OK);
        assert_eq!(body, b"hello h3");
    }
    assert_eq!(handle.metrics().await.quic_connects, 1);
    client.close().await;
    handle.abort();
}

#[tokio::test]
async fn get_through_spooky_to_http3_backend() {
    init_tracing();
    timeout(TEST_LIMIT, get_via_http3_backend(true))
        .await
        .expect("test timed out");
}

/// Reproduces a spooky-core bug: STOP_SENDING with a code other than H3_NO_ERROR on the
/// backend request stream turns into a 502 even though the complete response arrived with it
/// (RFC 9114 §4.1: clients must not discard complete responses because their request was
/// stopped).
#[tokio::test]
async fn http3_backend_that_stops_reading_the_request() {
    init_tracing();
    timeout(TEST_LIMIT, get_via_http3_backend(false))
        .await
        .expect("test timed out");
}
