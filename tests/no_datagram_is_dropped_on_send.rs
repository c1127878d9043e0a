//! Spooky never drops its own datagrams on the way out: every batch it hands to the kernel
//! (with UDP GSO, several segments in one send) is one the kernel accepts.
//!
//! A large download on loopback makes the congestion window big enough for large batches.
//! The runtime logs each datagram the kernel refused ("UDP send failed; datagram dropped", at
//! debug level); this test installs a tracing layer that counts those events and expects none.
//! (Linux caps one UDP_SEGMENT send at 64 KiB in total, whatever the segment count.)

mod support;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;
use spooky::backends::pattern;
use support::{Harness, Kind, sha256_hex, within};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

static DROPPED: AtomicU64 = AtomicU64::new(0);
static FIRST: Mutex<Option<String>> = Mutex::new(None);

/// Counts "UDP send failed" events from the runtime and keeps the first one's fields.
struct SendFailures;

#[derive(Default)]
struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SendFailures {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if !event
            .metadata()
            .target()
            .starts_with("spooky_runtime_tokio")
        {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.0.contains("UDP send failed") {
            DROPPED.fetch_add(1, Ordering::SeqCst);
            let mut first = FIRST.lock().unwrap();
            if first.is_none() {
                *first = Some(fields.0);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_download_drops_no_datagram() {
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(SendFailures))
        .expect("this test binary installs the only subscriber");
    within(async {
        let harness = Harness::start(&[Kind::H1, Kind::H3]).await;
        let client = harness.client().await;
        let len = 16 * 1024 * 1024;
        for _ in 0..2 {
            let response = client
                .get(&format!("/bytes/{len}"))
                .await
                .expect("large download");
            assert_eq!(response.status, StatusCode::OK);
            assert_eq!(sha256_hex(&response.body), sha256_hex(&pattern(len)));
        }
        client.close().await;
        harness.shutdown().await;
        let dropped = DROPPED.load(Ordering::SeqCst);
        assert_eq!(
            dropped,
            0,
            "Spooky dropped {dropped} outgoing UDP batch(es); the first: {}",
            FIRST.lock().unwrap().clone().unwrap_or_default()
        );
    })
    .await;
}
