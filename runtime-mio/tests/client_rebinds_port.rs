//! A client whose port changes keeps its connection, whichever shard the kernel's
//! `SO_REUSEPORT` hash now delivers its packets to: connection-ID steering hands them to the
//! shard that owns the connection.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::time::timeout;

/// Rebinds at least this many times...
const MIN_REBINDS: usize = 10;
/// ...and on until steering was seen (each new port has about even odds of hashing to the
/// other shard, so 40 rebinds without steering would be a one-in-a-trillion event).
const MAX_REBINDS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_rebinds_port() {
    init_tracing();
    timeout(TEST_LIMIT, async {
        let backend = spawn_h1_backend(Duration::ZERO).await;
        let cert = test_cert();
        let handle = Arc::new(start(h1_config(backend.addr, 2), tls(&cert, vec![None])));
        assert_eq!(handle.shards(), 2);

        let mut client = connect(handle.local_addr(), &cert).await;
        let mut requests = 0u64;
        for r in 0..3 {
            let response = get(&mut client.send, &format!("/before/{r}"))
                .await
                .expect("request before any rebind");
            assert_eq!(response.status, http::StatusCode::OK);
            requests += 1;
        }
        assert_eq!(
            handle.steered(),
            0,
            "nothing to steer before the client moves"
        );

        let mut rebinds = 0;
        while rebinds < MIN_REBINDS || (handle.steered() == 0 && rebinds < MAX_REBINDS) {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind new client port");
            let port = socket.local_addr().unwrap().port();
            client.endpoint.rebind(socket).expect("rebind");
            rebinds += 1;
            for r in 0..3 {
                let response = get(&mut client.send, &format!("/rebind{rebinds}/{r}"))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("request {r} after rebind {rebinds} (port {port}) failed: {e}")
                    });
                assert_eq!(response.status, http::StatusCode::OK);
                assert_eq!(response.body, b"hello");
                requests += 1;
            }
        }

        let stats = handle.shard_stats();
        tracing::info!(rebinds, ?stats, "done");
        assert!(
            handle.steered() > 0,
            "after {rebinds} rebinds no datagram was ever steered: {stats:?}"
        );
        // What one shard steered, the other received: nothing was dropped on the way (the
        // last handed-over ACKs may still be in the queue for a moment).
        let mut stats = handle.shard_stats();
        for _ in 0..100 {
            let steered: u64 = stats.iter().map(|s| s.steered_datagrams).sum();
            let steered_in: u64 = stats.iter().map(|s| s.steered_in).sum();
            if steered_in == steered {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            stats = handle.shard_stats();
        }
        let steered: u64 = stats.iter().map(|s| s.steered_datagrams).sum();
        let steered_in: u64 = stats.iter().map(|s| s.steered_in).sum();
        let dropped: u64 = stats.iter().map(|s| s.steer_dropped).sum();
        assert_eq!(dropped, 0, "{stats:?}");
        assert_eq!(steered_in, steered, "{stats:?}");

        // One connection the whole time, every request answered.
        let handle_for_metrics = handle.clone();
        let m = metrics(&handle_for_metrics).await;
        assert_eq!(m.connections_accepted, 1);
        assert_eq!(m.requests, requests);
        assert_eq!(m.responses_by_class[2], requests);

        client.close().await;
        handle.stop();
        drop(handle_for_metrics);
        let handle = Arc::into_inner(handle).expect("sole owner of the handle");
        join_within(handle, Duration::from_secs(5)).await;
    })
    .await
    .expect("test timed out");
}
