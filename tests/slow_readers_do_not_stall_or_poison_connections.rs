//! Backpressure from a client that reads slower than the backend writes must neither stall the
//! response for good nor spoil the upstream connection for the next request.
//!
//! - Flow control: whichever of the client's QUIC windows (per stream, or per connection) is
//!   the one that fills up, the response resumes when the client raises it.
//! - Pooling: after a large response that had to wait for the client, the pooled upstream
//!   connection serves the next request normally.

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use spooky::backends::pattern;
use support::{Harness, Kind, Runtime, on_both_runtimes, sha256_hex};

const MIB: u32 = 1024 * 1024;

/// Downloads `len` bytes through Spooky with a quinn client whose receive windows are
/// `connection_window` (MAX_DATA) and `stream_window` (MAX_STREAM_DATA).
async fn download_with_windows(
    runtime: Runtime,
    kind: Kind,
    connection_window: u32,
    stream_window: u32,
) {
    let harness = Harness::start(runtime, &[kind]).await;
    let mut transport = quinn::TransportConfig::default();
    transport.receive_window(connection_window.into());
    transport.stream_receive_window(stream_window.into());
    let client = harness.client_with(transport).await;
    let len = 4 * MIB as usize;
    let started = Instant::now();
    let context = format!(
        "{runtime} runtime, {kind:?} backend, client connection window {connection_window} B, \
         stream window {stream_window} B"
    );
    let response = match tokio::time::timeout(
        Duration::from_secs(15),
        client.get(&format!("/bytes/{len}")),
    )
    .await
    {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => panic!(
            "{context}: download failed after {:?}: {e:#}",
            started.elapsed()
        ),
        Err(_) => panic!("{context}: the {len}-byte download stalled (not done in 15 s)"),
    };
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body.len(), len);
    assert_eq!(sha256_hex(&response.body), sha256_hex(&pattern(len)));
    client.close().await;
    harness.shutdown().await;
}

on_both_runtimes!(
    response_resumes_when_client_raises_its_stream_window,
    response_resumes_when_client_raises_its_connection_window,
    pooled_http3_connection_serves_the_next_request_after_a_large_response,
    pooled_http1_connection_serves_the_next_request_after_a_large_response
);

async fn response_resumes_when_client_raises_its_stream_window(runtime: Runtime) {
    for kind in [Kind::H1, Kind::H3] {
        download_with_windows(runtime, kind, 64 * MIB, MIB).await;
    }
}

async fn response_resumes_when_client_raises_its_connection_window(runtime: Runtime) {
    for kind in [Kind::H1, Kind::H3] {
        download_with_windows(runtime, kind, MIB, 64 * MIB).await;
    }
}

/// Three times: a large download (the client reads slower than the backend writes), then a
/// small request, which must be answered at once on the same pooled upstream connection.
async fn small_request_after_large_response(runtime: Runtime, kind: Kind) {
    support::init_tracing();
    let harness = Harness::start(runtime, &[kind]).await;
    let client = harness.client().await;
    let large = 8 * MIB as usize;
    for round in 0..3 {
        let response = client
            .get(&format!("/bytes/{large}"))
            .await
            .unwrap_or_else(|e| panic!("round {round}: large download failed: {e:#}"));
        assert_eq!(response.status, StatusCode::OK, "round {round}");
        assert_eq!(response.body.len(), large, "round {round}");

        let started = Instant::now();
        let small = tokio::time::timeout(Duration::from_secs(5), client.get("/bytes/10")).await;
        let small = match small {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => panic!("round {round}: small request failed: {e:#}"),
            Err(_) => panic!(
                "round {round}: no answer to a small request within 5 s after a large \
                 {kind:?} response: the pooled upstream connection is stuck"
            ),
        };
        assert_eq!(small.status, StatusCode::OK, "round {round}");
        assert_eq!(&small.body[..], &pattern(10)[..], "round {round}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // One upstream connection served everything.
    let metrics = harness.spooky.metrics().await;
    match kind {
        Kind::H1 => assert_eq!(metrics.tcp_connects, 1, "metrics: {metrics:?}"),
        Kind::H3 => assert_eq!(metrics.quic_connects, 1, "metrics: {metrics:?}"),
    }
    client.close().await;
    harness.shutdown().await;
}

async fn pooled_http3_connection_serves_the_next_request_after_a_large_response(runtime: Runtime) {
    small_request_after_large_response(runtime, Kind::H3).await;
}

async fn pooled_http1_connection_serves_the_next_request_after_a_large_response(runtime: Runtime) {
    small_request_after_large_response(runtime, Kind::H1).await;
}
