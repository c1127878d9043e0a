//! The load generator against tiny HTTP/3 (quinn + h3) and HTTP/1.1 (hyper) servers on
//! loopback: it counts responses, reports in JSON, and ends promptly even when requests hang.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spooky_benches::loadgen::{self, Config, Target, Trust};

/// What the test servers answer: `/status/N` gets status N, `/hang` never gets an answer, and
/// everything else gets 200 with a body of `BODY_LEN` bytes.
const BODY_LEN: usize = 1000;

fn answer(path: &str) -> Option<(StatusCode, Bytes)> {
    if path == "/hang" {
        return None;
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let status = StatusCode::from_u16(code.parse().unwrap()).unwrap();
        return Some((status, Bytes::from_static(b"status\n")));
    }
    Some((StatusCode::OK, Bytes::from(vec![b'a'; BODY_LEN])))
}

struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// The certificate as a PEM file, for `--ca`.
    pem_file: PathBuf,
}

fn identity(tag: &str) -> Identity {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let pem_file = std::env::temp_dir().join(format!(
        "spooky-loadgen-test-{}-{tag}.pem",
        std::process::id()
    ));
    std::fs::write(&pem_file, certified.cert.pem()).unwrap();
    Identity {
        chain: vec![certified.cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        )),
        pem_file,
    }
}

/// An HTTP/3 server on 127.0.0.1:0; returns its address.
fn start_h3(identity: &Identity) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .unwrap();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let endpoint = quinn::Endpoint::server(config, ([127, 0, 0, 1], 0).into()).unwrap();
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
                        let Ok((request, mut stream)) = resolver.resolve_request().await else {
                            return;
                        };
                        while let Ok(Some(mut chunk)) = stream.recv_data().await {
                            chunk.advance(chunk.remaining());
                        }
                        let Some((status, body)) = answer(request.uri().path()) else {
                            std::future::pending::<()>().await;
                            return;
                        };
                        let head = Response::builder()
                            .status(status)
                            .header("content-length", body.len())
                            .body(())
                            .unwrap();
                        if stream.send_response(head).await.is_ok()
                            && stream.send_data(body).await.is_ok()
                        {
                            let _ = stream.finish().await;
                        }
                    });
                }
            });
        }
    });
    addr
}

/// An HTTP/1.1 server on 127.0.0.1:0; returns its address.
async fn start_h1() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let service =
                hyper::service::service_fn(|request: Request<hyper::body::Incoming>| async move {
                    let path = request.uri().path().to_owned();
                    let _ = request.into_body().collect().await;
                    let Some((status, body)) = answer(&path) else {
                        std::future::pending::<()>().await;
                        unreachable!()
                    };
                    let mut response = Response::new(Full::new(body));
                    *response.status_mut() = status;
                    Ok::<_, Infallible>(response)
                });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// Runs the `loadgen` binary with `args` (bounded in time) and returns its JSON report and
/// how long it ran.
async fn run_binary(args: Vec<String>) -> (serde_json::Value, Duration) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(&args)
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let limit = started + Duration::from_secs(20);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > limit {
                child.kill().unwrap();
                let _ = child.wait();
                panic!("loadgen {args:?} still running after 20 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let elapsed = started.elapsed();
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "loadgen {args:?} failed: {}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"));
        (report, elapsed)
    })
    .await
    .unwrap()
}

fn field(report: &serde_json::Value, name: &str) -> u64 {
    report[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

fn assert_clean_run(report: &serde_json::Value, elapsed: Duration, duration: Duration) {
    assert!(field(report, "requests") > 0, "{report}");
    assert_eq!(field(report, "errors"), 0, "{report}");
    assert_eq!(field(report, "non_2xx"), 0, "{report}");
    assert_eq!(
        field(report, "body_bytes"),
        field(report, "requests") * BODY_LEN as u64,
        "{report}"
    );
    for key in ["duration_s", "rps", "mbps"] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{report}");
    }
    for key in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
        assert!(field(report, key) > 0, "{report}");
    }
    assert!(
        elapsed < duration + Duration::from_secs(3),
        "ran {elapsed:?} for a {duration:?} run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_run_counts_responses_and_ends_promptly() {
    let identity = identity("h3");
    let addr = start_h3(&identity);
    let (report, elapsed) = run_binary(vec![
        format!("https://localhost:{}/", addr.port()),
        "--connect-to".into(),
        addr.to_string(),
        "--ca".into(),
        identity.pem_file.display().to_string(),
        "--connections".into(),
        "2".into(),
        "--streams".into(),
        "4".into(),
        "--duration".into(),
        "1s".into(),
    ])
    .await;
    let _ = std::fs::remove_file(&identity.pem_file);
    assert_clean_run(&report, elapsed, Duration::from_secs(1));
    assert_eq!(field(&report, "connects"), 2, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_run_counts_responses_and_ends_promptly() {
    let addr = start_h1().await;
    let (report, elapsed) = run_binary(vec![
        format!("http://{addr}/"),
        "--http1".into(),
        "--connections".into(),
        "2".into(),
        "--streams".into(),
        "2".into(),
        "--duration".into(),
        "1s".into(),
        "--warmup".into(),
        "200ms".into(),
    ])
    .await;
    assert_clean_run(
        &report,
        elapsed,
        Duration::from_secs(1) + Duration::from_millis(200),
    );
    // HTTP/1.1 opens a connection per loop.
    assert_eq!(field(&report, "connects"), 4, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_requests_do_not_hold_up_the_end() {
    let identity = identity("hang");
    let addr = start_h3(&identity);
    let (report, elapsed) = run_binary(vec![
        format!("https://127.0.0.1:{}/hang", addr.port()),
        "--insecure".into(),
        "--streams".into(),
        "3".into(),
        "--duration".into(),
        "1s".into(),
        "--grace".into(),
        "300ms".into(),
    ])
    .await;
    let _ = std::fs::remove_file(&identity.pem_file);
    assert_eq!(field(&report, "requests"), 0, "{report}");
    assert_eq!(field(&report, "cancelled"), 3, "{report}");
    assert_eq!(field(&report, "errors"), 0, "{report}");
    assert!(elapsed < Duration::from_millis(2500), "ran {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_request_budget_and_status_counts() {
    let identity = identity("lib");
    let addr = start_h3(&identity);
    let target = Target::parse(
        &format!("https://127.0.0.1:{}/status/503", addr.port()),
        None,
    )
    .unwrap();
    let mut config = Config::new(target, Trust::from_pem_file(&identity.pem_file).unwrap());
    let _ = std::fs::remove_file(&identity.pem_file);
    config.streams = 4;
    config.requests = Some(50);
    config.duration = Duration::from_secs(10);
    let started = Instant::now();
    let report = loadgen::run(&config).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(report.requests, 0, "{report:?}");
    assert_eq!(report.non_2xx, 50, "{report:?}");
    assert_eq!(report.errors, 50, "{report:?}");
    assert_eq!(report.status_codes.get(&503), Some(&50));
    assert!(report.duration_s > 0.0 && report.duration_s < 5.0);

    // A budget of good requests.
    let target = Target::parse(&format!("https://127.0.0.1:{}/", addr.port()), None).unwrap();
    let mut config = Config::new(target, Trust::Insecure);
    config.connections = 2;
    config.streams = 2;
    config.requests = Some(200);
    let report = loadgen::run(&config).await.unwrap();
    assert_eq!((report.requests, report.errors), (200, 0), "{report:?}");
    assert_eq!(report.body_bytes, 200 * BODY_LEN as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_counted() {
    // Nothing listens on this TCP port (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = Target::parse(&format!("http://127.0.0.1:{port}/"), None).unwrap();
    let mut config = Config::new(target, Trust::Insecure);
    config.duration = Duration::from_millis(300);
    let started = Instant::now();
    let report = loadgen::run(&config).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(report.requests, 0);
    let connect = report
        .errors_by_kind
        .iter()
        .find(|(k, _)| *k == loadgen::ErrorKind::Connect)
        .unwrap()
        .1;
    assert!(connect >= 2, "{report:?}");
    assert_eq!(report.errors, connect);
}
