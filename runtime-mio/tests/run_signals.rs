//! `run`, as the binary uses it: SIGTERM drains (the request in flight completes), a second
//! signal stops at once.
//!
//! Signals go to the whole process, so this file holds a single test.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use signal_hook::consts::SIGTERM;
use spooky_core::config::Config;
use tokio::time::timeout;

/// A free UDP port on 127.0.0.1 (bound, read, released).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("find a free port")
        .port()
}

/// Starts `run` on its own thread and waits until its listener is bound (a plain bind of the
/// same port then fails), which is after the signal handlers are installed.
fn spawn_run(
    mut config: Config,
    cert: &TestCert,
) -> (SocketAddr, thread::JoinHandle<std::io::Result<()>>) {
    config.listen.port = free_port();
    let addr = config.listen.socket_addr();
    let tls = tls(cert, vec![None]);
    let thread = thread::spawn(move || spooky_runtime_mio::run(Arc::new(config), tls, SEED));
    let deadline = Instant::now() + Duration::from_secs(5);
    while UdpSocket::bind(addr).is_ok() {
        assert!(Instant::now() < deadline, "spooky never bound {addr}");
        thread::sleep(Duration::from_millis(10));
    }
    (addr, thread)
}

async fn join_run(thread: thread::JoinHandle<std::io::Result<()>>, limit: Duration) {
    timeout(limit, tokio::task::spawn_blocking(move || thread.join()))
        .await
        .expect("run did not return in time")
        .expect("join task")
        .expect("run panicked")
        .expect("run ended with an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_a_second_signal_stops() {
    init_tracing();
    timeout(TEST_LIMIT, async {
        let cert = test_cert();

        // One signal: drain. The slow request in flight still gets its answer.
        let backend = spawn_h1_backend(Duration::from_millis(300)).await;
        let (addr, run) = spawn_run(h1_config(backend.addr, 2), &cert);
        let client = connect(addr, &cert).await;
        let mut send = client.send.clone();
        let in_flight = tokio::spawn(async move { get(&mut send, "/slow").await });
        timeout(Duration::from_secs(5), backend.received.notified())
            .await
            .expect("backend never got the request");
        signal_hook::low_level::raise(SIGTERM).expect("raise SIGTERM");
        let response = timeout(Duration::from_secs(5), in_flight)
            .await
            .expect("in-flight request did not finish")
            .expect("request task")
            .expect("in-flight request failed during the drain");
        assert_eq!(response.status, http::StatusCode::OK);
        join_run(run, Duration::from_secs(5)).await;
        client.close().await;

        // Two signals: the drain is cut short although a request is still in flight.
        let backend = spawn_h1_backend(Duration::from_secs(20)).await;
        let (addr, run) = spawn_run(h1_config(backend.addr, 2), &cert);
        let client = connect(addr, &cert).await;
        let mut send = client.send.clone();
        let in_flight = tokio::spawn(async move { get(&mut send, "/stuck").await });
        timeout(Duration::from_secs(5), backend.received.notified())
            .await
            .expect("backend never got the request");
        signal_hook::low_level::raise(SIGTERM).expect("raise SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
        signal_hook::low_level::raise(SIGTERM).expect("raise SIGTERM again");
        join_run(run, Duration::from_secs(2)).await;
        in_flight.abort();
        client.close().await;
    })
    .await
    .expect("test timed out");
}
