//! A configuration reload swaps backends and the balancing strategy while clients keep their
//! connections and requests in flight finish.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use spooky::backends;
use spooky_core::TlsMaterials;
use spooky_core::config::{BackendConfig, BackendProtocol, LoadBalancing};
use spooky_core::quic::crypto::ServerIdentity;
use support::{Kind, Runtime, Setup, backend_name, on_both_runtimes};

on_both_runtimes!(reload_swaps_backends_without_dropping_connections);

async fn reload_swaps_backends_without_dropping_connections(runtime: Runtime) {
    let harness = Setup::new(&[Kind::H1, Kind::H1]).start(runtime).await;
    let client = harness.client().await;
    // Warm up both backends (round-robin), then hold a slow request on backend 0.
    for i in 0..2 {
        let response = client
            .get(&format!("/warm/{i}"))
            .await
            .expect("warm-up request");
        assert_eq!(response.status, StatusCode::OK);
    }
    let slow_client = client.clone();
    let slow = tokio::spawn(async move { slow_client.get("/sleep/800").await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The new configuration: backend 0 goes, a new backend joins, least-requests.
    let joining = backends::start_h1("joining", 0).await.expect("new backend");
    let mut config = (*harness.config).clone();
    config.backends.remove(0);
    config.backends.push(BackendConfig::new(
        "joining",
        joining.addr,
        BackendProtocol::Http1,
    ));
    config.load_balancing = LoadBalancing::LeastRequests;
    let tls = TlsMaterials {
        server: ServerIdentity {
            chain: vec![harness.identity.cert_der.clone()],
            key: harness.identity.key_der.clone_key(),
        },
        backends: vec![None, None],
    };
    harness.spooky.reload(Arc::new(config), tls);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut answered_by = std::collections::BTreeMap::new();
    for i in 0..20 {
        let response = client
            .get(&format!("/after/{i}"))
            .await
            .unwrap_or_else(|e| panic!("{runtime}: request {i} after the reload failed: {e:#}"));
        assert_eq!(response.status, StatusCode::OK);
        *answered_by
            .entry(response.header("x-backend").unwrap_or("?").to_owned())
            .or_insert(0) += 1;
    }
    let slow = slow
        .await
        .expect("slow task")
        .expect("the request in flight finishes");
    assert_eq!(slow.status, StatusCode::OK, "{runtime}");
    assert_eq!(
        slow.header("x-backend"),
        Some(backend_name(0, Kind::H1).as_str())
    );

    let names: Vec<&str> = answered_by.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [backend_name(1, Kind::H1).as_str(), "joining"],
        "{runtime}: after the reload only the new set answers: {answered_by:?}"
    );
    assert!(joining.request_count() >= 5, "{runtime}: {answered_by:?}");
    let metrics = harness.spooky.metrics().await;
    assert_eq!(
        metrics.connections_accepted, 1,
        "{runtime}: the client kept its connection"
    );
    let status = harness.spooky.backends().await;
    assert_eq!(status.len(), 3, "{status:?}");
    assert!(
        !status[0].available && status[1].available && status[2].available,
        "{status:?}"
    );
    client.close().await;
    harness.shutdown().await;
}
