//! Spooky interoperates with aioquic, a pure-Python QUIC and HTTP/3 implementation (QPACK by
//! pylsqpack), which shares no code with Spooky, quinn or curl.
//!
//! `tests/peers/aioquic_get.py` is a small client written on `aioquic.asyncio.connect` and
//! `aioquic.h3.connection.H3Connection`: it verifies Spooky's certificate for "localhost",
//! sends GETs and POSTs (with content-length) through Spooky to an HTTP/1.1 and an HTTP/3
//! backend, and prints status, `x-backend` and the body's SHA-256 as JSON.
//!
//! aioquic comes from PyPI, installed into `target/peers-venv` on first use (see
//! `support::python`). Without network the test fails, unless `SPOOKY_SKIP_PYTHON_PEERS=1`.

mod support;

use support::python::{self, check_results, get, post, run_peer};
use support::{Harness, Kind, Runtime, backend_name, on_both_runtimes, within};

on_both_runtimes!(without_limit: aioquic_gets_and_posts_over_http3);

async fn aioquic_gets_and_posts_over_http3(runtime: Runtime) {
    // Installing from PyPI has its own limit (support::python::PROVISION_LIMIT).
    let Some(python) = python::python_with("aioquic", "aioquic==1.*").await else {
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
        // aioquic opens with a 1 MiB connection receive window (max_data). Responses here
        // total less than that, because Spooky stalls when the client's connection-level
        // window is what blocks it (see slow_readers_do_not_stall_or_poison_connections.rs).
        let requests = vec![
            get("/bytes/262144"),
            get("/bytes/262144"),
            post("/echo", 100_000),
            post("/echo", 100_000),
            get("/bytes/0"),
            get("/bytes/1"),
            post("/echo", 1),
            post("/echo", 0),
        ];
        let results = run_peer(&python, "aioquic_get.py", &harness, &requests).await;
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
