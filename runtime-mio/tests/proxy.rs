//! End-to-end tests over loopback: an HTTP/3 client (quinn + h3) talks to Spooky on the mio
//! runtime (2 shards), which forwards to backends written here.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use spooky_core::config::{BackendConfig, BackendProtocol};
use spooky_core::quic::crypto::UpstreamVerify;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_post_through_two_shards_to_http1_backend() {
    init_tracing();
    timeout(TEST_LIMIT, async {
        let backend = spawn_h1_backend(Duration::ZERO).await;
        let cert = test_cert();
        let handle = Arc::new(start(h1_config(backend.addr, 2), tls(&cert, vec![None])));
        assert_eq!(handle.shards(), 2);

        let mut client = connect(handle.local_addr(), &cert).await;
        let response = get(&mut client.send, "/").await.expect("GET");
        assert_eq!(response.status, http::StatusCode::OK);
        assert_eq!(response.body, b"hello");
        // The backend connection is kept alive and reused.
        let response = get(&mut client.send, "/again").await.expect("GET again");
        assert_eq!(response.body, b"hello");
        assert_eq!(metrics(&handle).await.tcp_connects, 1);
        let h = handle.clone();
        let backends = tokio::task::spawn_blocking(move || h.backends())
            .await
            .expect("backends task");
        assert_eq!(backends.len(), 1);
        assert_eq!(backends[0].id, "b1");
        assert!(backends[0].available && backends[0].healthy);

        // 1 MiB up and back: every byte must survive both directions.
        let sent: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 7 % 253) as u8).collect();
        let response = request(
            &mut client.send,
            http::Method::POST,
            "/echo",
            Bytes::from(sent.clone()),
        )
        .await
        .expect("POST");
        assert_eq!(response.status, http::StatusCode::OK);
        assert_eq!(response.body.len(), sent.len());
        assert!(
            response.body == sent,
            "echoed body differs from the one sent"
        );

        // A large response streams through the backend connection's read path (PauseRead,
        // ResumeRead).
        let response = get(&mut client.send, "/big").await.expect("GET /big");
        assert_eq!(response.status, http::StatusCode::OK);
        assert!(
            response.body == big_body(),
            "large body corrupted in transit"
        );
        assert_eq!(backend.requests.load(Ordering::SeqCst), 4);

        client.close().await;
        handle.stop();
        let handle = Arc::into_inner(handle).expect("sole owner of the handle");
        join_within(handle, Duration::from_secs(5)).await;
    })
    .await
    .expect("test timed out");
}

/// Reproduces a spooky-core bug: when the core pauses reading an HTTP/1.1 backend connection
/// (`PauseRead`, because the client is slower than the backend) and the response then ends
/// without the core passing through its resume path, the connection goes back to the
/// keep-alive pool still paused. The next request on it is written, but its response is
/// never read (no `ResumeRead` comes), until `timeouts.response_headers` (30 s) fires and
/// the request is retried on a new connection. The tokio runtime has the same exposure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_after_a_large_response() {
    init_tracing();
    timeout(TEST_LIMIT, async {
        let backend = spawn_h1_backend_with(Duration::ZERO, true).await;
        let cert = test_cert();
        let handle = start(h1_config(backend.addr, 1), tls(&cert, vec![None]));
        let mut client = connect(handle.local_addr(), &cert).await;
        for round in 0..10 {
            let response = get(&mut client.send, "/big").await.expect("GET /big");
            assert!(
                response.body == big_body(),
                "large body corrupted in transit"
            );
            let response = timeout(Duration::from_secs(5), get(&mut client.send, "/small"))
                .await
                .unwrap_or_else(|_| {
                    panic!("round {round}: no response on the reused backend connection")
                })
                .expect("GET /small");
            assert_eq!(response.body, b"hello");
        }
        client.close().await;
        handle.stop();
        join_within(handle, Duration::from_secs(5)).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_on_two_shards_and_metrics_sum_over_shards() {
    init_tracing();
    const CLIENTS: usize = 20;
    const REQUESTS: usize = 20;
    timeout(TEST_LIMIT, async {
        let backend = spawn_h1_backend(Duration::ZERO).await;
        let cert = Arc::new(test_cert());
        let handle = Arc::new(start(h1_config(backend.addr, 2), tls(&cert, vec![None])));
        assert_eq!(metrics(&handle).await.requests, 0);

        let addr = handle.local_addr();
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let cert = cert.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = connect(addr, &cert).await;
                for r in 0..REQUESTS {
                    let response = get(&mut client.send, &format!("/c{c}/r{r}"))
                        .await
                        .unwrap_or_else(|e| panic!("client {c} request {r}: {e}"));
                    assert_eq!(response.status, http::StatusCode::OK);
                    assert_eq!(response.body, b"hello");
                }
                client.close().await;
            }));
        }
        for task in tasks {
            task.await.expect("client task");
        }

        let total = (CLIENTS * REQUESTS) as u64;
        assert_eq!(backend.requests.load(Ordering::SeqCst) as u64, total);
        let m = metrics(&handle).await;
        assert_eq!(m.requests, total);
        assert_eq!(m.responses_by_class[2], total);
        assert_eq!(m.connections_accepted, CLIENTS as u64);

        handle.drain();
        let handle = Arc::into_inner(handle).expect("sole owner of the handle");
        join_within(handle, Duration::from_secs(5)).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_finishes_in_flight_request_then_exits() {
    init_tracing();
    timeout(TEST_LIMIT, async {
        let backend = spawn_h1_backend(Duration::from_millis(300)).await;
        let cert = test_cert();
        let handle = start(h1_config(backend.addr, 2), tls(&cert, vec![None]));
        let client = connect(handle.local_addr(), &cert).await;

        let mut send = client.send.clone();
        let in_flight = tokio::spawn(async move { get(&mut send, "/slow").await });
        // Drain once the backend has the request, while it sleeps on it.
        timeout(Duration::from_secs(5), backend.received.notified())
            .await
            .expect("backend never got the request");
        handle.drain();

        let response = timeout(Duration::from_secs(5), in_flight)
            .await
            .expect("in-flight request did not finish")
            .expect("request task")
            .expect("in-flight request failed during the drain");
        assert_eq!(response.status, http::StatusCode::OK);
        assert_eq!(response.body, b"hello");
        join_within(handle, Duration::from_secs(5)).await;
        client.close().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_backend_through_the_upstream_socket() {
    init_tracing();
    timeout(TEST_LIMIT, async {
        let cert = test_cert();
        let backend = spawn_h3_backend(&cert).await;
        let mut backend_config = BackendConfig::new("h3", backend, BackendProtocol::Http3);
        backend_config.tls.server_name = Some("localhost".into());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.clone()).expect("add root");
        let tls = tls(&cert, vec![Some(UpstreamVerify::Roots(Arc::new(roots)))]);
        let handle = Arc::new(start(config(vec![backend_config], 2), tls));

        let mut client = connect(handle.local_addr(), &cert).await;
        for _ in 0..3 {
            let response = get(&mut client.send, "/").await.expect("GET via HTTP/3");
            assert_eq!(response.status, http::StatusCode::OK);
            assert_eq!(response.body, b"hello h3");
        }
        // One multiplexed backend connection, opened by the shard that has the client.
        assert_eq!(metrics(&handle).await.quic_connects, 1);
        client.close().await;
        handle.stop();
        let handle = Arc::into_inner(handle).expect("sole owner of the handle");
        join_within(handle, Duration::from_secs(5)).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_backend_gets_502() {
    init_tracing();
    timeout(TEST_LIMIT, async {
        // A port nobody listens on: the connect is refused.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let cert = test_cert();
        let handle = Arc::new(start(h1_config(addr, 2), tls(&cert, vec![None])));

        let mut client = connect(handle.local_addr(), &cert).await;
        let response = get(&mut client.send, "/").await.expect("GET");
        assert_eq!(response.status, http::StatusCode::BAD_GATEWAY);
        assert_eq!(metrics(&handle).await.upstream_failures, 1);
        client.close().await;
        handle.stop();
        let handle = Arc::into_inner(handle).expect("sole owner of the handle");
        join_within(handle, Duration::from_secs(5)).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_listener() {
    init_tracing();
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    timeout(TEST_LIMIT, async {
        let backend = spawn_h1_backend(Duration::ZERO).await;
        let cert = test_cert();
        let mut config = h1_config(backend.addr, 2);
        config.listen.address = std::net::Ipv6Addr::LOCALHOST.into();
        let handle = start(config, tls(&cert, vec![None]));
        assert!(handle.local_addr().is_ipv6());

        let mut client = connect(handle.local_addr(), &cert).await;
        for _ in 0..3 {
            let response = get(&mut client.send, "/").await.expect("GET over IPv6");
            assert_eq!(response.status, http::StatusCode::OK);
            assert_eq!(response.body, b"hello");
        }
        client.close().await;
        handle.stop();
        join_within(handle, Duration::from_secs(5)).await;
    })
    .await
    .expect("test timed out");
}
