//! Spooky interoperates with an HTTP/3 stack that shares no code with it or with quinn:
//! curl_cffi, i.e. libcurl with ngtcp2 (QUIC), nghttp3 (HTTP/3 and QPACK) and BoringSSL (TLS).
//!
//! A Python script (`tests/peers/curl_cffi_get.py`) forces HTTP/3 only (no fallback), verifies
//! Spooky's generated certificate for "localhost" against a CA file, and sends GETs and POSTs
//! with bodies through Spooky to an HTTP/1.1 and an HTTP/3 backend; it prints status,
//! `x-backend`, HTTP version and the body's SHA-256 as JSON, and this test checks them.
//!
//! curl_cffi comes from PyPI, installed into `target/peers-venv` on first use (see
//! `support::python`). Without network the test fails, unless `SPOOKY_SKIP_PYTHON_PEERS=1`.

mod support;

use support::python::{self, check_results, get, post, run_peer};
use support::{Harness, Kind, Runtime, backend_name, on_both_runtimes, within};

on_both_runtimes!(without_limit: curl_cffi_gets_and_posts_over_http3);

async fn curl_cffi_gets_and_posts_over_http3(runtime: Runtime) {
    // Installing from PyPI has its own limit (support::python::PROVISION_LIMIT).
    let Some(python) = python::python_with("curl_cffi", "curl_cffi==0.*").await else {
        return;
    };
    within(async {
        let kinds = [Kind::H1, Kind::H3];
        let harness = Harness::start(runtime, &kinds).await;
        let names: Vec<String> = kinds
            .iter()
            .enumerate()
            .map(|(i, k)| backend_name(i, *k))
            .collect();
        let requests = vec![
            get("/bytes/1048576"),
            get("/bytes/1048576"),
            post("/echo", 300_000),
            post("/echo", 300_000),
            get("/bytes/0"),
            get("/bytes/1"),
            post("/echo", 1),
            post("/echo", 0),
        ];
        let results = run_peer(&python, "curl_cffi_get.py", &harness, &requests).await;
        check_results(&requests, &results, &names);
        assert_eq!(harness.request_counts(), [4, 4]);
        let metrics = harness.spooky.metrics().await;
        assert_eq!(
            metrics.requests,
            requests.len() as u64,
            "metrics: {metrics:?}"
        );
        assert_eq!(metrics.client_protocol_errors, 0, "metrics: {metrics:?}");
        harness.shutdown().await;
    })
    .await;
}
