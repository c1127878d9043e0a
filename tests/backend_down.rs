//! A backend that is down costs exactly its share of requests, as prompt 502s, and nothing
//! else, when Spooky is told not to retry; with its default retries the same dead backend
//! costs the client nothing at all.
//!
//! - Retries and outlier detection off: with one of three HTTP/1.1 backends stopped (its
//!   port refuses connections), 90 sequential round-robin requests give exactly 30 × 502 and
//!   60 × 200 (30 from each live backend), and Spooky counts exactly 30 upstream failures.
//! - Defaults (retries on connect failure, outlier detection): all 90 get 200 from the live
//!   backends, and the dead one is ejected.
//! - Every backend down (defaults, so each request tries three of them): each request still
//!   gets its 502 promptly instead of hanging.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http::StatusCode;
use support::{Harness, Kind, Runtime, Setup, backend_name, on_both_runtimes, stop_h1_backend};

const KINDS: [Kind; 3] = [Kind::H1, Kind::H1, Kind::H1];

/// Three HTTP/1.1 backends behind Spooky, the middle one stopped before any request.
async fn middle_backend_dead(runtime: Runtime, setup: Setup) -> Harness {
    let mut harness = setup.start(runtime).await;
    let dead = harness.backends.remove(1);
    stop_h1_backend(dead).await;
    harness
}

on_both_runtimes!(
    one_dead_backend_costs_exactly_its_share_without_retries,
    default_retries_route_around_a_dead_backend,
    all_backends_down_answers_502_quickly
);

async fn one_dead_backend_costs_exactly_its_share_without_retries(runtime: Runtime) {
    let setup = Setup::new(&KINDS).configure(|config| {
        config.retries.max_retries = 0;
        config.outlier_detection.enabled = false;
    });
    let harness = middle_backend_dead(runtime, setup).await;
    let client = harness.client().await;
    let mut ok_from = BTreeMap::<String, usize>::new();
    let mut bad_gateway = 0;
    for i in 0..90 {
        let started = Instant::now();
        let response = client
            .get(&format!("/r/{i}"))
            .await
            .unwrap_or_else(|e| panic!("request {i} failed at the HTTP/3 level: {e:#}"));
        match response.status {
            StatusCode::OK => {
                let name = response.header("x-backend").unwrap_or("?").to_owned();
                *ok_from.entry(name).or_insert(0) += 1;
            }
            StatusCode::BAD_GATEWAY => {
                // Round-robin in pool order: every third request picks the dead backend.
                assert_eq!(
                    i % 3,
                    1,
                    "request {i} got 502 but should reach a live backend"
                );
                let took = started.elapsed();
                assert!(
                    took < Duration::from_millis(500),
                    "request {i}: 502 took {took:?}"
                );
                bad_gateway += 1;
            }
            other => panic!("request {i}: unexpected status {other}"),
        }
    }
    assert_eq!(bad_gateway, 30, "502s");
    assert_eq!(
        ok_from.into_iter().collect::<Vec<_>>(),
        [
            (backend_name(0, Kind::H1), 30),
            (backend_name(2, Kind::H1), 30)
        ],
        "200s by backend"
    );
    assert_eq!(harness.request_counts(), [30, 30]);

    let metrics = harness.spooky.metrics().await;
    assert_eq!(metrics.upstream_failures, 30, "metrics: {metrics:?}");
    assert_eq!(metrics.responses_by_class[2], 60, "metrics: {metrics:?}");
    assert_eq!(metrics.responses_by_class[5], 30, "metrics: {metrics:?}");
    assert_eq!(metrics.retries, 0, "metrics: {metrics:?}");

    client.close().await;
    harness.shutdown().await;
}

async fn default_retries_route_around_a_dead_backend(runtime: Runtime) {
    let harness = middle_backend_dead(runtime, Setup::new(&KINDS)).await;
    let client = harness.client().await;
    let mut ok_from = BTreeMap::<String, usize>::new();
    for i in 0..90 {
        let response = client
            .get(&format!("/r/{i}"))
            .await
            .unwrap_or_else(|e| panic!("request {i} failed at the HTTP/3 level: {e:#}"));
        assert_eq!(response.status, StatusCode::OK, "request {i}");
        let name = response.header("x-backend").unwrap_or("?").to_owned();
        *ok_from.entry(name).or_insert(0) += 1;
    }
    let live = [backend_name(0, Kind::H1), backend_name(2, Kind::H1)];
    assert_eq!(
        ok_from.keys().cloned().collect::<Vec<_>>(),
        live,
        "answers by backend: {ok_from:?}"
    );
    assert_eq!(harness.request_counts().iter().sum::<u64>(), 90);

    let metrics = harness.spooky.metrics().await;
    // Every failed attempt was retried elsewhere; after `consecutive_failures` of them the
    // dead backend is ejected and not tried again.
    let threshold = u64::from(harness.config.outlier_detection.consecutive_failures);
    assert_eq!(metrics.retries, threshold, "metrics: {metrics:?}");
    assert_eq!(metrics.upstream_failures, 0, "metrics: {metrics:?}");
    assert_eq!(metrics.ejections, 1, "metrics: {metrics:?}");
    assert_eq!(metrics.responses_by_class[2], 90, "metrics: {metrics:?}");
    assert_eq!(metrics.responses_by_class[5], 0, "metrics: {metrics:?}");
    eprintln!("dead backend with default retries: {metrics:?}");
    // The pool as Spooky reports it (merged over the shards on mio): only the dead one out.
    let pool = harness.spooky.backends().await;
    let ejected: Vec<(&str, bool)> = pool.iter().map(|b| (&*b.id, b.ejected)).collect();
    assert_eq!(
        ejected,
        [
            (backend_name(0, Kind::H1).as_str(), false),
            (backend_name(1, Kind::H1).as_str(), true),
            (backend_name(2, Kind::H1).as_str(), false)
        ],
        "ejected backends: {pool:?}"
    );

    client.close().await;
    harness.shutdown().await;
}

async fn all_backends_down_answers_502_quickly(runtime: Runtime) {
    let mut harness = Harness::start(runtime, &KINDS).await;
    for backend in std::mem::take(&mut harness.backends) {
        stop_h1_backend(backend).await;
    }
    let client = harness.client().await;
    let mut slowest = Duration::ZERO;
    for i in 0..30 {
        let started = Instant::now();
        let response = client
            .get(&format!("/down/{i}"))
            .await
            .unwrap_or_else(|e| panic!("request {i} failed at the HTTP/3 level: {e:#}"));
        let took = started.elapsed();
        slowest = slowest.max(took);
        assert_eq!(response.status, StatusCode::BAD_GATEWAY, "request {i}");
        assert!(
            took < Duration::from_millis(500),
            "request {i} took {took:?} to fail; a refused connection should fail at once"
        );
    }
    eprintln!("all backends down: slowest failure took {slowest:?}");
    let metrics = harness.spooky.metrics().await;
    assert_eq!(metrics.responses_by_class[5], 30, "metrics: {metrics:?}");
    eprintln!("all backends down: {metrics:?}");

    client.close().await;
    harness.shutdown().await;
}
