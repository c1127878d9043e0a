//! Routing through a real Spooky: a default pool of two HTTP/1.1 backends and a pool "api" of
//! one HTTP/1.1 and one HTTP/3 backend, with three routes to "api":
//!
//! 1. host `*.api.test`;
//! 2. path prefix `/v2/`, with `strip_prefix: /v2`, request edits (set `x-env: test`, remove
//!    `x-debug`) and response edits (set `x-route: v2`, remove `x-backend`);
//! 3. header `x-canary: 1`.
//!
//! Requests go out through the independent HTTP/3 client and are checked at the backends (their
//! `/headers` answer shows the path and the header fields they received, and their request
//! counters say which pool served a request whose `x-backend` was removed), in the responses,
//! and in the admin endpoint's per-backend counters.
//!
//! Every batch of requests to a pool is even and sequential, so round-robin splits it exactly
//! between the pool's two backends, on either runtime (on mio each shard balances on its own,
//! and a client connection stays on one shard).

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, StatusCode};
use spooky::client::{H3Client, Response, Trust};
use spooky_core::config::{AdminConfig, HeaderEdits, LoadBalancing, PoolConfig, Route};
use support::{Harness, Kind, Runtime, Setup, admin_request, backend_name, on_both_runtimes};

/// The default pool's backends, then the "api" pool's.
const KINDS: [Kind; 4] = [Kind::H1, Kind::H1, Kind::H1, Kind::H3];
/// How many of [`KINDS`] form the default pool.
const DEFAULT_POOL: usize = 2;

on_both_runtimes!(routes_pick_pools_and_rewrite_requests_and_responses);

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn routes() -> Vec<Route> {
    vec![
        Route {
            host: Some("*.api.test".into()),
            pool: "api".into(),
            ..Route::default()
        },
        Route {
            path_prefix: Some("/v2/".into()),
            pool: "api".into(),
            strip_prefix: Some("/v2".into()),
            request_headers: HeaderEdits {
                set: owned(&[("x-env", "test")]),
                remove: vec!["x-debug".into()],
            },
            response_headers: HeaderEdits {
                set: owned(&[("x-route", "v2")]),
                // The backends' own name tag: its absence shows the removal; the backends'
                // request counters show where these requests went.
                remove: vec!["x-backend".into()],
            },
            ..Route::default()
        },
        Route {
            headers: owned(&[("x-canary", "1")]),
            pool: "api".into(),
            ..Route::default()
        },
    ]
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| backend_name(i, KINDS[i])).collect()
}

/// Sends `count` GETs of `path(i)` with `headers`, one after another; every answer must be 200.
async fn batch(
    client: &H3Client,
    count: usize,
    path: impl Fn(usize) -> String,
    headers: &[(&str, &str)],
) -> Vec<Response> {
    let mut responses = Vec::with_capacity(count);
    for i in 0..count {
        let path = path(i);
        let response = client
            .request(Method::GET, &path, headers, Bytes::new())
            .await
            .unwrap_or_else(|e| panic!("GET {path} failed: {e:#}"));
        assert_eq!(response.status, StatusCode::OK, "GET {path}");
        responses.push(response);
    }
    responses
}

/// How many responses each backend sent, by `x-backend`.
fn tally(responses: &[Response]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in responses {
        let name = r.header("x-backend").unwrap_or("(none)").to_owned();
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

/// `count` requests split evenly over `backends`.
fn evenly(backends: &[String], count: usize) -> BTreeMap<String, usize> {
    backends
        .iter()
        .map(|n| (n.clone(), count / backends.len()))
        .collect()
}

fn body(response: &Response) -> &str {
    std::str::from_utf8(&response.body).expect("a text body")
}

/// The requests each backend received since `before` (their own counters, in pool order).
fn received_since(harness: &Harness, before: &[u64]) -> Vec<u64> {
    harness
        .request_counts()
        .iter()
        .zip(before)
        .map(|(now, then)| now - then)
        .collect()
}

/// GET `path` from the admin endpoint; the body of a 200 answer.
async fn admin_get(addr: SocketAddr, path: &str) -> String {
    let (status, body) = admin_request(addr, "GET", path).await;
    assert!(
        status.starts_with("HTTP/1.1 200 "),
        "admin GET {path}: {status}"
    );
    body
}

async fn routes_pick_pools_and_rewrite_requests_and_responses(runtime: Runtime) {
    let harness = Setup::new(&KINDS)
        .configure(|c| {
            // The last two backends become the "api" pool; `Config::all_backends` keeps their
            // order, so the harness's per-backend TLS settings still line up.
            let api = c.backends.split_off(DEFAULT_POOL);
            c.pools.push(PoolConfig {
                name: "api".into(),
                backends: api,
                load_balancing: LoadBalancing::RoundRobin,
            });
            c.routes = routes();
            c.admin = Some(AdminConfig {
                address: "127.0.0.1:0".parse().unwrap(),
            });
        })
        .start(runtime)
        .await;
    let default_pool = names(0..DEFAULT_POOL);
    let api_pool = names(DEFAULT_POOL..KINDS.len());
    let client = harness.client().await;

    // No route matches: the default pool, no edits (x-debug and the path reach the backend,
    // x-backend reaches the client, nothing is added).
    let plain = batch(
        &client,
        4,
        |i| format!("/headers?plain={i}"),
        &[("x-debug", "1")],
    )
    .await;
    assert_eq!(tally(&plain), evenly(&default_pool, 4), "[{runtime}] plain");
    for (i, r) in plain.iter().enumerate() {
        let text = body(r);
        assert!(
            text.starts_with(&format!("path: /headers?plain={i}\n")),
            "[{runtime}] {text}"
        );
        assert!(text.contains("\nx-debug: 1\n"), "[{runtime}] {text}");
        assert!(!text.contains("x-env"), "[{runtime}] {text}");
        assert_eq!(r.header("x-route"), None, "[{runtime}]");
    }

    // Path prefix /v2/: the api pool, prefix stripped, request and response edited. The
    // client's own x-env is replaced, not joined.
    let before = harness.request_counts();
    let v2 = batch(
        &client,
        4,
        |i| format!("/v2/headers?v2={i}"),
        &[("x-debug", "1"), ("x-env", "prod"), ("x-keep", "yes")],
    )
    .await;
    assert_eq!(
        received_since(&harness, &before),
        [0, 0, 2, 2],
        "[{runtime}] /v2/ requests go to the api pool, evenly"
    );
    for (i, r) in v2.iter().enumerate() {
        let text = body(r);
        assert!(
            text.starts_with(&format!("path: /headers?v2={i}\n")),
            "[{runtime}] strip_prefix: {text}"
        );
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("x-env:"))
                .collect::<Vec<_>>(),
            ["x-env: test"],
            "[{runtime}] {text}"
        );
        assert!(!text.contains("x-debug"), "[{runtime}] {text}");
        assert!(text.contains("\nx-keep: yes\n"), "[{runtime}] {text}");
        assert_eq!(r.header("x-route"), Some("v2"), "[{runtime}]");
        assert_eq!(r.header("x-backend"), None, "[{runtime}] removed");
        // Fields the route does not name pass.
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str())
        );
    }

    // `/v2` is not below `/v2/`: the default pool, unchanged.
    let bare = batch(&client, 2, |_| "/v2".into(), &[]).await;
    assert_eq!(tally(&bare), evenly(&default_pool, 2), "[{runtime}] /v2");
    for r in &bare {
        assert_eq!(r.header("x-route"), None);
        let name = r.header("x-backend").unwrap();
        assert_eq!(body(r), format!("hello from {name}\n"));
    }

    // Header x-canary: 1: the api pool, without the /v2/ route's edits.
    let canary = batch(
        &client,
        4,
        |_| "/headers".into(),
        &[("x-canary", "1"), ("x-debug", "1")],
    )
    .await;
    assert_eq!(tally(&canary), evenly(&api_pool, 4), "[{runtime}] canary");
    for r in &canary {
        let text = body(r);
        assert!(text.starts_with("path: /headers\n"), "[{runtime}] {text}");
        assert!(text.contains("\nx-canary: 1\n"), "[{runtime}] {text}");
        assert!(text.contains("\nx-debug: 1\n"), "[{runtime}] {text}");
        assert_eq!(r.header("x-route"), None);
    }
    // Values match exactly.
    let not_canary = batch(&client, 2, |_| "/headers".into(), &[("x-canary", "10")]).await;
    assert_eq!(
        tally(&not_canary),
        evenly(&default_pool, 2),
        "[{runtime}] x-canary: 10"
    );

    // Host *.api.test: the client connects under another server name, which becomes the
    // request's :authority (the certificate is for localhost only, so this client does not
    // verify it). The name matches without its port and ignoring case; api.test itself is not
    // a subdomain of api.test.
    let host_client = H3Client::connect(harness.addr, "WWW.Api.Test", &Trust::Insecure)
        .await
        .unwrap_or_else(|e| panic!("[{runtime}] connect as WWW.Api.Test: {e:#}"));
    let by_host = batch(&host_client, 2, |_| "/headers".into(), &[]).await;
    assert_eq!(
        tally(&by_host),
        evenly(&api_pool, 2),
        "[{runtime}] *.api.test"
    );
    host_client.close().await;
    let apex_client = H3Client::connect(harness.addr, "api.test", &Trust::Insecure)
        .await
        .unwrap_or_else(|e| panic!("[{runtime}] connect as api.test: {e:#}"));
    let apex = batch(&apex_client, 2, |_| "/headers".into(), &[]).await;
    assert_eq!(
        tally(&apex),
        evenly(&default_pool, 2),
        "[{runtime}] api.test"
    );
    apex_client.close().await;

    // Every request, counted by the backends themselves and by Spooky's admin endpoint: the
    // default pool took plain 4 + /v2 2 + x-canary: 10 2 + api.test 2, the api pool
    // /v2/ 4 + canary 4 + *.api.test 2.
    assert_eq!(harness.request_counts(), [5, 5, 5, 5], "[{runtime}]");
    let admin = harness
        .spooky
        .admin_addr()
        .expect("admin endpoint configured");
    let metrics = admin_get(admin, "/metrics").await;
    assert!(
        metrics.contains("\nspooky_requests_total 20\n"),
        "[{runtime}] {metrics}"
    );
    for name in default_pool.iter().chain(&api_pool) {
        let line = format!("spooky_backend_requests_total{{backend=\"{name}\"}} 5\n");
        assert!(
            metrics.contains(&line),
            "[{runtime}] no `{line}` in:\n{metrics}"
        );
    }
    let backends = admin_get(admin, "/backends").await;
    for name in default_pool.iter().chain(&api_pool) {
        assert!(
            backends.contains(&format!("\"id\":\"{name}\"")),
            "[{runtime}] {backends}"
        );
    }

    client.close().await;
    harness.shutdown().await;
}
