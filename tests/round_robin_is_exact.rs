//! Round-robin over equal weights is exact, not just fair on average: across two HTTP/1.1
//! backends and one HTTP/3 backend, 300 sequential requests give exactly 100 to each, in strict
//! rotation, and 300 more with 10 in flight at a time again give exactly 100 to each. The
//! backends' own request counters agree with what the client saw in `x-backend`.

mod support;

use std::collections::BTreeMap;

use http::StatusCode;
use support::{Harness, Kind, Runtime, backend_name, on_both_runtimes};

const KINDS: [Kind; 3] = [Kind::H1, Kind::H1, Kind::H3];
const ROUNDS: usize = 300;

on_both_runtimes!(round_robin_is_exact_sequential_then_concurrent);

async fn round_robin_is_exact_sequential_then_concurrent(runtime: Runtime) {
    let harness = Harness::start(runtime, &KINDS).await;
    let names: Vec<String> = KINDS
        .iter()
        .enumerate()
        .map(|(i, k)| backend_name(i, *k))
        .collect();
    let client = harness.client().await;

    // Sequential: strict rotation in pool order.
    let mut order = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS {
        let response = client
            .get(&format!("/seq/{i}"))
            .await
            .unwrap_or_else(|e| panic!("sequential request {i} failed: {e:#}"));
        assert_eq!(response.status, StatusCode::OK, "sequential request {i}");
        order.push(response.header("x-backend").unwrap_or("?").to_owned());
    }
    for (i, name) in order.iter().enumerate() {
        assert_eq!(
            name,
            &names[i % names.len()],
            "request {i} went to the wrong backend; first 12 picks: {:?}",
            &order[..12]
        );
    }
    let sequential = tally(&order);
    let expected: BTreeMap<String, usize> = names.iter().map(|n| (n.clone(), ROUNDS / 3)).collect();
    assert_eq!(sequential, expected, "sequential shares");
    assert_eq!(harness.request_counts(), [100, 100, 100]);

    // Concurrent: 10 in flight at a time on the same connection.
    let mut running = tokio::task::JoinSet::new();
    let mut concurrent = Vec::with_capacity(ROUNDS);
    let mut next = 0;
    while next < ROUNDS || !running.is_empty() {
        while next < ROUNDS && running.len() < 10 {
            let client = client.clone();
            let path = format!("/concurrent/{next}");
            running.spawn(async move { (client.get(&path).await, path) });
            next += 1;
        }
        let (response, path) = running
            .join_next()
            .await
            .expect("a request is running")
            .expect("request task panicked");
        let response = response.unwrap_or_else(|e| panic!("GET {path} failed: {e:#}"));
        assert_eq!(response.status, StatusCode::OK, "GET {path}");
        concurrent.push(response.header("x-backend").unwrap_or("?").to_owned());
    }
    assert_eq!(tally(&concurrent), expected, "concurrent shares");
    assert_eq!(harness.request_counts(), [200, 200, 200]);

    let metrics = harness.spooky.metrics().await;
    assert_eq!(metrics.requests, 2 * ROUNDS as u64);
    assert_eq!(metrics.responses_by_class[2], 2 * ROUNDS as u64);
    assert_eq!(metrics.upstream_failures, 0);

    client.close().await;
    harness.shutdown().await;
}

fn tally(names: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for name in names {
        *counts.entry(name.clone()).or_insert(0) += 1;
    }
    counts
}
