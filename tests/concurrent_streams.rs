//! One client connection carries 100 requests at once, Spooky's default stream limit
//! (`limits.max_concurrent_streams: 100`), and every one of them gets its own right answer.
//!
//! The requests share ONE QUIC connection (the client is cloned, not reconnected), go to a
//! pool of an HTTP/1.1 and an HTTP/3 backend, and mix downloads of distinct sizes with echoes
//! of distinct bodies, so a response delivered on the wrong stream would be caught.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use spooky::backends::pattern;
use support::{Harness, Kind, Runtime, backend_name, on_both_runtimes, request_body, sha256_hex};

const REQUESTS: usize = 100;

on_both_runtimes!(
    hundred_concurrent_requests_on_one_connection,
    hundred_slow_requests_overlap
);

async fn hundred_concurrent_requests_on_one_connection(runtime: Runtime) {
    let harness = Harness::start(runtime, &[Kind::H1, Kind::H3]).await;
    assert_eq!(harness.config.limits.max_concurrent_streams, 100);
    let client = harness.client().await;

    let mut tasks = Vec::new();
    for i in 0..REQUESTS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            // Distinct sizes per request: a mix-up between streams changes the digest.
            let len = 1000 + i * 137;
            if i % 4 == 3 {
                let sent = request_body(len);
                let response = client
                    .request(
                        Method::POST,
                        &format!("/echo/{i}"),
                        &[],
                        Bytes::from(sent.clone()),
                    )
                    .await;
                (i, response, sha256_hex(&sent))
            } else {
                let response = client.get(&format!("/bytes/{len}")).await;
                (i, response, sha256_hex(&pattern(len)))
            }
        }));
    }

    let mut failures = Vec::new();
    let mut per_backend = [0usize; 2];
    for task in tasks {
        let (i, response, expected) = task.await.expect("request task panicked");
        match response {
            Ok(r) if r.status == StatusCode::OK && sha256_hex(&r.body) == expected => {
                let backend = r.header("x-backend").unwrap_or("?");
                if backend == backend_name(0, Kind::H1) {
                    per_backend[0] += 1;
                } else if backend == backend_name(1, Kind::H3) {
                    per_backend[1] += 1;
                } else {
                    failures.push(format!("request {i}: unknown x-backend {backend:?}"));
                }
            }
            Ok(r) => failures.push(format!(
                "request {i}: status {} with {} body bytes (digest mismatch or error)",
                r.status,
                r.body.len()
            )),
            Err(e) => failures.push(format!("request {i}: {e:#}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {REQUESTS} requests failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Round-robin over two backends.
    assert_eq!(per_backend, [REQUESTS / 2, REQUESTS / 2]);
    assert_eq!(harness.request_counts(), [50, 50]);

    client.close().await;
    harness.shutdown().await;
}

/// 100 requests that each take 500 ms at the backend finish in far less than 100 × 500 ms:
/// they really are in flight at the same time, on one connection.
async fn hundred_slow_requests_overlap(runtime: Runtime) {
    let harness = Harness::start(runtime, &[Kind::H1, Kind::H3]).await;
    let client = harness.client().await;
    // Warm up both upstream connections so the timing below measures only the requests.
    for _ in 0..2 {
        assert_eq!(
            client.get("/").await.expect("warm-up").status,
            StatusCode::OK
        );
    }

    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..REQUESTS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move { client.get("/sleep/500").await }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let response = task
            .await
            .expect("request task panicked")
            .unwrap_or_else(|e| panic!("slow request {i} failed: {e:#}"));
        assert_eq!(response.status, StatusCode::OK, "slow request {i}");
        assert_eq!(&response.body[..], b"slept\n", "slow request {i}");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "100 requests of 500 ms each took {elapsed:?}: they did not run concurrently"
    );
    assert_eq!(harness.request_counts(), [51, 51]);

    client.close().await;
    harness.shutdown().await;
}
