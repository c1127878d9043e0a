//! The day a backend dies: under steady load from the load generator, over real sockets.
//!
//! - a backend killed mid-run costs no idempotent request (retries cover it), leaves the
//!   rotation within one health interval, and rejoins after it restarts;
//! - a backend that accepts but never answers gets 504s at the configured timeout, then is
//!   ejected;
//! - a backend answering 503 to everything is ejected and the pool keeps serving;
//! - with every backend down, requests get 503 at once, nothing accumulates, and service
//!   returns with the first backend.
//!
//! Each test prints what it measured (requests, failures, retries, times to eject and to
//! rejoin) so a run's numbers can be quoted.

mod faults;

use std::time::{Duration, Instant};

use faults::{Fault, quick_health_check, rss_kib, time_until};
use spooky_benches::loadgen;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_costs_no_request_and_rejoins_after_restart() {
    tokio::time::timeout(LIMIT, async {
        let interval = Duration::from_millis(500);
        let fault = Fault::start(3, |c| {
            for b in &mut c.backends {
                b.health_check = Some(quick_health_check(interval));
            }
        })
        .await;
        let mut load = fault.load("/");
        load.connections = 4;
        load.streams = 4;
        load.duration = Duration::from_secs(6);
        let run = tokio::spawn(async move { loadgen::run(&load).await });

        tokio::time::sleep(Duration::from_millis(1500)).await;
        let killed_at = Instant::now();
        fault.backends[1].kill();
        let out = time_until(&fault, 1, Duration::from_secs(5), |b| !b.available)
            .await
            .expect("the dead backend leaves the rotation");

        tokio::time::sleep(Duration::from_millis(1500)).await;
        fault.backends[1].restart().await.expect("restart");
        let restarted_at = Instant::now();
        let back = time_until(&fault, 1, Duration::from_secs(5), |b| b.available)
            .await
            .expect("the restarted backend rejoins");
        let served_before_restart = fault.backends[1].request_count();

        let report = run.await.expect("load task").expect("load runs");
        let metrics = fault.spooky.metrics().await;
        println!(
            "killed backend: {} requests ({:.0}/s), {} failed, {} retried; out of rotation {:?} \
             after the kill, back {:?} after the restart; probes {}, failed probes {}",
            report.requests,
            report.rps,
            report.errors,
            metrics.retries,
            out,
            back,
            metrics.health_probes,
            metrics.health_probe_failures,
        );
        assert_eq!(report.errors, 0, "a request failed: {report:?}");
        assert!(report.requests > 1000, "{report:?}");
        assert!(
            out <= interval + interval / 5,
            "left after {out:?}, interval {interval:?}"
        );
        assert!(back <= interval + interval / 5, "rejoined after {back:?}");
        assert!(
            fault.backends[1].request_count() > served_before_restart,
            "no traffic after rejoining"
        );
        let _ = (killed_at, restarted_at);
        fault.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_backend_gets_504_at_the_timeout_then_is_ejected() {
    tokio::time::timeout(LIMIT, async {
        let timeout = Duration::from_millis(400);
        let fault = Fault::start(3, |c| {
            c.timeouts.response_headers = timeout;
            c.retries.max_retries = 0;
            c.outlier_detection.consecutive_failures = 3;
        })
        .await;
        fault.backends[2].set_silent(true);
        let mut load = fault.load("/");
        load.requests = Some(30);
        load.duration = Duration::from_secs(30);
        let started = Instant::now();
        let report = loadgen::run(&load).await.expect("load runs");
        let elapsed = started.elapsed();
        let status = fault.backend_status().await;
        let metrics = fault.spooky.metrics().await;
        println!(
            "silent backend: {} ok, {} failed ({:?}), 504s {}, ejections {}, run took {:?}, \
             slowest response {} µs",
            report.requests,
            report.errors,
            report.status_codes,
            metrics.upstream_timeouts,
            metrics.ejections,
            elapsed,
            report.max_us
        );
        assert_eq!(
            report.status_codes.get(&504).copied(),
            Some(3),
            "{report:?}"
        );
        assert_eq!(report.requests, 27, "{report:?}");
        assert!(status[2].ejected, "{status:?}");
        // The requests ran one after another: three waited the full timeout, no longer.
        assert!(elapsed >= timeout * 3, "{elapsed:?}");
        assert!(
            elapsed < timeout * 3 + Duration::from_secs(2),
            "{elapsed:?}"
        );
        fault.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_answering_503_is_ejected_and_the_pool_keeps_serving() {
    tokio::time::timeout(LIMIT, async {
        let fault = Fault::start(3, |_| {}).await;
        fault.backends[0].set_status(Some(503));
        let mut load = fault.load("/");
        load.requests = Some(300);
        load.duration = Duration::from_secs(30);
        let report = loadgen::run(&load).await.expect("load runs");
        let status = fault.backend_status().await;
        println!(
            "503 backend: {} ok, {} failed ({:?}); ejected: {}",
            report.requests, report.errors, report.status_codes, status[0].ejected
        );
        // Outlier detection ejects after five 5xx in a row; the rest is served by the others.
        assert_eq!(
            report.status_codes.get(&503).copied(),
            Some(5),
            "{report:?}"
        );
        assert_eq!(report.requests, 295);
        assert!(status[0].ejected && !status[0].available, "{status:?}");
        fault.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_gives_fast_503s_without_growth_then_recovers() {
    tokio::time::timeout(LIMIT, async {
        let interval = Duration::from_millis(300);
        let fault = Fault::start(3, |c| {
            for b in &mut c.backends {
                b.health_check = Some(quick_health_check(interval));
            }
        })
        .await;
        for b in &fault.backends {
            b.kill();
        }
        for b in 0..3 {
            time_until(&fault, b, Duration::from_secs(5), |s| !s.available)
                .await
                .expect("every backend leaves the rotation");
        }
        // Warm up, then measure memory across many refused requests.
        let mut load = fault.load("/");
        load.connections = 2;
        load.streams = 4;
        load.requests = Some(2_000);
        load.duration = Duration::from_secs(20);
        let _ = loadgen::run(&load).await.expect("load runs");
        let rss_before = rss_kib();
        let started = Instant::now();
        let report = loadgen::run(&load).await.expect("load runs");
        let elapsed = started.elapsed();
        let rss_after = rss_kib();
        let metrics = fault.spooky.metrics().await;
        println!(
            "all down: {} responses in {:?} ({:.0}/s), all 503: {:?}, requests in flight after \
             {}, RSS of the test process {} → {} KiB",
            report.errors,
            elapsed,
            report.errors as f64 / elapsed.as_secs_f64(),
            report.status_codes,
            metrics.exchanges_open,
            rss_before,
            rss_after
        );
        assert_eq!(report.status_codes.get(&503).copied(), Some(report.errors));
        assert!(report.errors >= 1_900, "{report:?}");
        assert_eq!(metrics.exchanges_open, 0);
        assert!(
            rss_after < rss_before + 16 * 1024,
            "RSS grew {rss_before} → {rss_after} KiB"
        );

        fault.backends[0].restart().await.expect("restart");
        time_until(&fault, 0, Duration::from_secs(5), |s| s.available)
            .await
            .expect("the restarted backend rejoins");
        let mut load = fault.load("/");
        load.requests = Some(50);
        let report = loadgen::run(&load).await.expect("load runs");
        assert_eq!(report.requests, 50, "{report:?}");
        fault.shutdown().await;
    })
    .await
    .expect("test timed out");
}
