//! The admin endpoint: Prometheus metrics summed over shards, backend states as JSON, a
//! health route, and clear answers to anything else.

mod support;

use http::StatusCode;
use spooky_core::config::AdminConfig;
use support::{Kind, Runtime, Setup, admin_request, backend_name, on_both_runtimes};

on_both_runtimes!(admin_endpoint_reports_what_spooky_did);

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

    let (status, metrics) = admin_request(admin, "GET", "/metrics").await;
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

    let (status, backends) = admin_request(admin, "GET", "/backends").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        backends.starts_with('[') && backends.contains("\"available\":true"),
        "{backends}"
    );
    assert!(backends.contains(&format!("\"id\":\"{}\"", backend_name(0, Kind::H1))));

    assert_eq!(
        admin_request(admin, "GET", "/health").await,
        ("HTTP/1.1 200 OK".into(), "ok\n".into())
    );
    assert_eq!(
        admin_request(admin, "GET", "/nope").await.0,
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(
        admin_request(admin, "POST", "/metrics").await.0,
        "HTTP/1.1 405 Method Not Allowed"
    );
    client.close().await;
    harness.shutdown().await;
}
