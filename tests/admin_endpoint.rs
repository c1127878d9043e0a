//! The admin endpoint: Prometheus metrics summed over shards, backend states as JSON, a
//! health route, and clear answers to anything else.

mod support;

use std::net::SocketAddr;

use http::StatusCode;
use spooky_core::config::AdminConfig;
use support::{Kind, Runtime, Setup, backend_name, on_both_runtimes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

on_both_runtimes!(admin_endpoint_reports_what_spooky_did);

/// One request to the admin endpoint; returns the status line and the body.
async fn get(addr: SocketAddr, method: &str, path: &str) -> (String, String) {
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

async fn admin_endpoint_reports_what_spooky_did(runtime: Runtime) {
    let harness = Setup::new(&[Kind::H1, Kind::H3])
        .configure(|c| {
            c.admin = Some(AdminConfig {
                address: "127.0.0.1:0".parse().unwrap(),
            });
        })
        .start(runtime)
        .await;
    let admin = harness
        .spooky
        .admin_addr()
        .expect("admin endpoint configured");
    let client = harness.client().await;
    for i in 0..4 {
        let response = client.get(&format!("/{i}")).await.expect("request");
        assert_eq!(response.status, StatusCode::OK);
    }

    let (status, metrics) = get(admin, "GET", "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{runtime:?}");
    assert!(
        metrics.contains("\nspooky_requests_total 4\n"),
        "{runtime:?}: {metrics}"
    );
    assert!(
        metrics.contains("spooky_responses_total{class=\"2xx\"} 4\n"),
        "{metrics}"
    );
    for (i, kind) in [Kind::H1, Kind::H3].into_iter().enumerate() {
        let name = backend_name(i, kind);
        assert!(
            metrics.contains(&format!(
                "spooky_backend_requests_total{{backend=\"{name}\"}} 2\n"
            )),
            "{runtime:?}: {metrics}"
        );
        assert!(metrics.contains(&format!(
            "spooky_backend_available{{backend=\"{name}\"}} 1\n"
        )));
    }

    let (status, backends) = get(admin, "GET", "/backends").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        backends.starts_with('[') && backends.contains("\"available\":true"),
        "{backends}"
    );
    assert!(backends.contains(&format!("\"id\":\"{}\"", backend_name(0, Kind::H1))));

    assert_eq!(
        get(admin, "GET", "/health").await,
        ("HTTP/1.1 200 OK".into(), "ok\n".into())
    );
    assert_eq!(get(admin, "GET", "/nope").await.0, "HTTP/1.1 404 Not Found");
    assert_eq!(
        get(admin, "POST", "/metrics").await.0,
        "HTTP/1.1 405 Method Not Allowed"
    );
    client.close().await;
    harness.shutdown().await;
}
