//! Bodies cross Spooky byte for byte, in both directions, whatever the backend speaks.
//!
//! A quinn + h3 client sends requests through Spooky to an HTTP/1.1 backend (hyper) and, in a
//! separate Spooky instance, to an HTTP/3 backend (quinn + h3). Request bodies are echoed back
//! and response bodies come from `/bytes/N`; both are compared by SHA-256 (and length), for
//! empty, small (1 KiB) and large (10 MiB, many flow-control windows) bodies. A HEAD request
//! gets the head only.

mod support;

use bytes::Bytes;
use http::{Method, StatusCode};
use spooky::backends::pattern;
use support::{Harness, Kind, Runtime, backend_name, on_both_runtimes, request_body, sha256_hex};

const SIZES: [usize; 3] = [0, 1024, 10 * 1024 * 1024];

async fn echo_is_intact(runtime: Runtime, kind: Kind) {
    let harness = Harness::start(runtime, &[kind]).await;
    // H3Client sends the body while it reads the echo: 10 MiB exceed the flow-control
    // windows along the path, so sending it whole before reading would stall.
    let client = harness.client().await;
    let expected_backend = backend_name(0, kind);
    for len in SIZES {
        let sent = request_body(len);
        let response = client
            .request(Method::POST, "/echo", &[], Bytes::from(sent.clone()))
            .await
            .unwrap_or_else(|e| panic!("POST of {len} bytes failed: {e:#}"));
        assert_eq!(response.status, StatusCode::OK, "POST of {len} bytes");
        assert_eq!(
            response.header("x-backend"),
            Some(expected_backend.as_str()),
            "POST of {len} bytes"
        );
        assert_eq!(
            response.body.len(),
            len,
            "echoed body length for a {len}-byte POST"
        );
        assert_eq!(
            sha256_hex(&response.body),
            sha256_hex(&sent),
            "echoed body SHA-256 for a {len}-byte POST"
        );
    }
    assert_eq!(harness.request_counts(), [SIZES.len() as u64]);
    client.close().await;
    harness.shutdown().await;
}

async fn downloads_are_intact(runtime: Runtime, kind: Kind) {
    let harness = Harness::start(runtime, &[kind]).await;
    let client = harness.client().await;
    let expected_backend = backend_name(0, kind);
    for len in SIZES {
        let path = format!("/bytes/{len}");
        let response = client
            .get(&path)
            .await
            .unwrap_or_else(|e| panic!("GET {path} failed: {e:#}"));
        assert_eq!(response.status, StatusCode::OK, "GET {path}");
        assert_eq!(
            response.header("x-backend"),
            Some(expected_backend.as_str()),
            "GET {path}"
        );
        assert_eq!(response.body.len(), len, "body length of GET {path}");
        assert_eq!(
            sha256_hex(&response.body),
            sha256_hex(&pattern(len)),
            "body SHA-256 of GET {path}"
        );
    }
    assert_eq!(harness.request_counts(), [SIZES.len() as u64]);
    client.close().await;
    harness.shutdown().await;
}

async fn head_has_no_body(runtime: Runtime, kind: Kind) {
    let harness = Harness::start(runtime, &[kind]).await;
    let client = harness.client().await;
    for path in ["/bytes/1024", "/"] {
        let response = client
            .request(Method::HEAD, path, &[], Bytes::new())
            .await
            .unwrap_or_else(|e| panic!("HEAD {path} failed: {e:#}"));
        assert_eq!(response.status, StatusCode::OK, "HEAD {path}");
        assert_eq!(
            response.header("x-backend"),
            Some(backend_name(0, kind).as_str()),
            "HEAD {path}"
        );
        assert!(
            response.body.is_empty(),
            "HEAD {path} returned {} body bytes",
            response.body.len()
        );
    }
    // The connection is still usable, and a GET of the same resource has its body.
    let response = client.get("/bytes/1024").await.expect("GET after HEAD");
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(sha256_hex(&response.body), sha256_hex(&pattern(1024)));
    client.close().await;
    harness.shutdown().await;
}

on_both_runtimes!(
    post_echo_through_http1_backend_is_intact,
    post_echo_through_http3_backend_is_intact,
    downloads_from_http1_backend_are_intact,
    downloads_from_http3_backend_are_intact,
    head_through_http1_backend_has_no_body,
    head_through_http3_backend_has_no_body
);

async fn post_echo_through_http1_backend_is_intact(runtime: Runtime) {
    echo_is_intact(runtime, Kind::H1).await;
}

async fn post_echo_through_http3_backend_is_intact(runtime: Runtime) {
    echo_is_intact(runtime, Kind::H3).await;
}

async fn downloads_from_http1_backend_are_intact(runtime: Runtime) {
    downloads_are_intact(runtime, Kind::H1).await;
}

async fn downloads_from_http3_backend_are_intact(runtime: Runtime) {
    downloads_are_intact(runtime, Kind::H3).await;
}

async fn head_through_http1_backend_has_no_body(runtime: Runtime) {
    head_has_no_body(runtime, Kind::H1).await;
}

async fn head_through_http3_backend_has_no_body(runtime: Runtime) {
    head_has_no_body(runtime, Kind::H3).await;
}
