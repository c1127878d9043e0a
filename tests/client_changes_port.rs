//! A client whose UDP port changes in the middle of its connection (NAT rebinding) keeps the
//! connection and every request on it, downloads in flight included.
//!
//! On mio (2 shards) each new port has about even odds of being hashed by `SO_REUSEPORT` to
//! the shard that does not own the connection, which then hands its datagrams over
//! (connection-ID steering): the scenario rebinds until that has happened at least once. On
//! tokio the one core simply sees the peer's new address.

mod support;

use std::time::Duration;

use http::StatusCode;
use spooky::backends::pattern;
use spooky::client::H3Client;
use support::{Harness, Kind, Runtime, backend_name, on_both_runtimes, sha256_hex};

/// Rebinds at least this many times...
const MIN_REBINDS: usize = 6;
/// ...and on until a datagram was steered on mio (40 rebinds without it: odds of 2^-40).
const MAX_REBINDS: usize = 40;

on_both_runtimes!(client_port_change_keeps_the_connection_and_its_requests);

async fn client_port_change_keeps_the_connection_and_its_requests(runtime: Runtime) {
    let kinds = [Kind::H1, Kind::H3];
    let harness = Harness::start(runtime, &kinds).await;
    let names: Vec<String> = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| backend_name(i, *k))
        .collect();
    let client = harness.client().await;
    let mut requests = 0usize;
    for i in 0..2 {
        get(&client, &names, &mut requests, &format!("/before/{i}")).await;
    }
    assert_eq!(
        harness.spooky.steered(),
        0,
        "nothing to steer before a move"
    );

    let len = 2 * 1024 * 1024;
    let mut rebinds = 0;
    // Only mio has shards to steer between.
    let until_steered = runtime == Runtime::Mio;
    while rebinds < MIN_REBINDS
        || (until_steered && harness.spooky.steered() == 0 && rebinds < MAX_REBINDS)
    {
        // A download in flight while the port changes...
        let downloading = tokio::spawn({
            let client = client.clone();
            async move { client.get(&format!("/bytes/{len}")).await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a new client port");
        let port = socket.local_addr().expect("local address").port();
        client.rebind(socket).expect("rebind the client");
        rebinds += 1;
        let response = downloading
            .await
            .expect("download task")
            .unwrap_or_else(|e| panic!("download across rebind {rebinds} (port {port}): {e:#}"));
        assert_eq!(
            response.status,
            StatusCode::OK,
            "download across rebind {rebinds}"
        );
        assert_eq!(
            sha256_hex(&response.body),
            sha256_hex(&pattern(len)),
            "download across rebind {rebinds}: body"
        );
        requests += 1;
        // ...and new requests from the new port.
        get(&client, &names, &mut requests, &format!("/after/{rebinds}")).await;
    }
    let steered = harness.spooky.steered();
    eprintln!("{runtime}: {rebinds} rebinds, {steered} datagram(s) steered between shards");
    if until_steered {
        assert!(
            steered > 0,
            "after {rebinds} rebinds no datagram was ever steered to the owning shard"
        );
    }

    let metrics = harness.spooky.metrics().await;
    assert_eq!(metrics.connections_accepted, 1, "metrics: {metrics:?}");
    assert_eq!(metrics.requests, requests as u64, "metrics: {metrics:?}");
    assert_eq!(
        metrics.responses_by_class[2], requests as u64,
        "metrics: {metrics:?}"
    );
    client.close().await;
    harness.shutdown().await;
}

/// GETs `path`, expecting a 200 from the backend whose turn it is (request number
/// `requests`, counted over the whole connection, round-robin over `names`).
async fn get(client: &H3Client, names: &[String], requests: &mut usize, path: &str) {
    let response = client
        .get(path)
        .await
        .unwrap_or_else(|e| panic!("GET {path} failed: {e:#}"));
    assert_eq!(response.status, StatusCode::OK, "GET {path}");
    assert_eq!(
        response.header("x-backend"),
        Some(names[*requests % names.len()].as_str()),
        "GET {path} (request {requests}) went to the wrong backend"
    );
    *requests += 1;
}
