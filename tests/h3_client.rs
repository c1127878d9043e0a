//! `spooky::client::H3Client` (the client of `spooky client`, the demo and these tests) against
//! Spooky, for the two ways it used to fail:
//!
//! - It sent the whole request body before reading anything, so an echo larger than the
//!   flow-control windows along the path (a few MiB) stalled until the idle timeout: now the
//!   body goes out while the response is read, and a 10 MiB echo comes back whole.
//! - When sending the rest of the request failed because the server had already sent a
//!   complete response and STOP_SENDING with H3_NO_ERROR (RFC 9114 §4.1), it discarded the
//!   complete response. Spooky does exactly that when a body exceeds `max_request_body`: the
//!   client must get the 413, not an error.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use spooky::client::H3Client;
use support::{
    Harness, Kind, Runtime, Setup, backend_name, on_both_runtimes, request_body, sha256_hex,
    within_limit,
};

const MIB: usize = 1024 * 1024;

on_both_runtimes!(
    ten_mib_echo_through_spooky_does_not_stall,
    complete_response_survives_stop_sending
);

/// POSTs 10 MiB through Spooky to an echoing backend of each kind; the echo must be complete
/// and identical, well within the client's 30 s idle timeout.
async fn ten_mib_echo_through_spooky_does_not_stall(runtime: Runtime) {
    for kind in [Kind::H1, Kind::H3] {
        let harness = Harness::start(runtime, &[kind]).await;
        let client = H3Client::connect(harness.addr, "localhost", &harness.trust())
            .await
            .expect("connect to spooky");
        let sent = request_body(10 * MIB);
        let started = Instant::now();
        let response = within_limit(
            Duration::from_secs(20),
            client.request(
                Method::POST,
                "/echo",
                &[("content-type", "application/octet-stream")],
                Bytes::from(sent.clone()),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{kind:?} backend: 10 MiB echo failed: {e:#}"));
        let took = started.elapsed();
        assert_eq!(response.status, StatusCode::OK, "{kind:?} backend");
        assert_eq!(
            response.header("x-backend"),
            Some(backend_name(0, kind).as_str()),
            "{kind:?} backend"
        );
        assert_eq!(
            response.body.len(),
            sent.len(),
            "{kind:?} backend: echo length"
        );
        assert_eq!(
            sha256_hex(&response.body),
            sha256_hex(&sent),
            "{kind:?} backend: echo SHA-256"
        );
        eprintln!("{runtime}: 10 MiB echo through a {kind:?} backend took {took:?}");
        client.close().await;
        harness.shutdown().await;
    }
}

/// A request whose content-length exceeds `limits.max_request_body` (4 MiB against 64 KiB):
/// Spooky answers 413 as soon as it has the head and stops reading the request (STOP_SENDING
/// with H3_NO_ERROR) while the client is still sending the body. The client returns the 413,
/// and the connection keeps working.
async fn complete_response_survives_stop_sending(runtime: Runtime) {
    let harness = Setup::new(&[Kind::H1])
        .limits(|limits| limits.max_request_body = Some(64 * 1024))
        .start(runtime)
        .await;
    let client = harness.client().await;
    for round in 0..3 {
        let response = client
            .request(
                Method::POST,
                "/echo",
                &[("content-length", &(4 * MIB).to_string())],
                Bytes::from(request_body(4 * MIB)),
            )
            .await
            .unwrap_or_else(|e| {
                panic!("round {round}: the complete 413 response was discarded: {e:#}")
            });
        assert_eq!(
            response.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "round {round}"
        );
        // The same connection still serves requests, bodies within the limit included.
        let small = request_body(1024);
        let echoed = client
            .request(Method::POST, "/echo", &[], Bytes::from(small.clone()))
            .await
            .unwrap_or_else(|e| panic!("round {round}: small echo after the 413 failed: {e:#}"));
        assert_eq!(echoed.status, StatusCode::OK, "round {round}");
        assert_eq!(&echoed.body[..], &small[..], "round {round}");
    }
    assert_eq!(
        harness.request_counts(),
        [3],
        "only the small echoes reach the backend"
    );
    let metrics = harness.spooky.metrics().await;
    assert_eq!(metrics.responses_by_class[4], 3, "metrics: {metrics:?}");
    client.close().await;
    harness.shutdown().await;
}
