//! A graceful drain: the request in flight is answered in full, new connections are not
//! accepted, and the instance then ends by itself (well before `timeouts.drain`), on either
//! runtime; on mio every shard has to end, the idle one as well as the one with the request.

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use spooky::client::H3Client;
use support::{Harness, Kind, Runtime, on_both_runtimes};

on_both_runtimes!(drain_answers_the_request_in_flight_then_ends);

async fn drain_answers_the_request_in_flight_then_ends(runtime: Runtime) {
    let harness = Harness::start(runtime, &[Kind::H1]).await;
    let drain_limit = harness.config.timeouts.drain;
    let client = harness.client().await;
    let warm = client.get("/").await.expect("request before the drain");
    assert_eq!(warm.status, StatusCode::OK);

    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.get("/sleep/700").await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    harness.spooky.drain();

    // While draining, a new connection is refused (or, once a shard's socket is closed,
    // not answered at all).
    let newcomer = tokio::time::timeout(
        Duration::from_secs(2),
        H3Client::connect(harness.addr, "localhost", &harness.trust()),
    )
    .await;
    assert!(
        !matches!(newcomer, Ok(Ok(_))),
        "a new connection was accepted during the drain"
    );

    let response = slow
        .await
        .expect("request task")
        .unwrap_or_else(|e| panic!("the request in flight failed during the drain: {e:#}"));
    assert_eq!(response.status, StatusCode::OK, "the request in flight");
    assert_eq!(&response.body[..], b"slept\n", "the request in flight");
    assert_eq!(harness.request_counts(), [2]);

    let Harness {
        spooky, backends, ..
    } = harness;
    let joined = tokio::time::timeout(drain_limit, spooky.join()).await;
    let took = started.elapsed();
    match joined {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("spooky ended with an error after the drain: {e}"),
        Err(_) => panic!("spooky did not end within timeouts.drain ({drain_limit:?})"),
    }
    assert!(
        took < drain_limit / 2,
        "the drain took {took:?}: it waited for its timeout ({drain_limit:?}) instead of \
         ending when the last request was answered"
    );
    eprintln!("{runtime}: drained in {took:?}");
    client.close().await;
    for backend in &backends {
        backend.stop();
    }
}
