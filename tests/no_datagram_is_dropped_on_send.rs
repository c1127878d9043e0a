//! Spooky never drops its own datagrams on the way out: every batch it hands to the kernel
//! (with UDP GSO, several segments in one send) is one the kernel accepts.
//!
//! A large download on loopback makes the congestion window big enough for large batches.
//! Both runtimes log each datagram the kernel refused ("UDP send failed; datagram dropped", at
//! debug level); this test installs a tracing layer that counts those events, per runtime (by
//! the event's target), and expects none. (Linux caps one UDP_SEGMENT send at 64 KiB in total,
//! whatever the segment count.)

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

use http::StatusCode;
use spooky::backends::pattern;
use support::{Harness, Kind, Runtime, on_both_runtimes, sha256_hex};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

/// Refused sends and the first one's fields, for one runtime.
struct Dropped {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Dropped {
    const fn new() -> Dropped {
        Dropped {
            count: AtomicU64::new(0),
            first: Mutex::new(None),
        }
    }
}

static TOKIO: Dropped = Dropped::new();
static MIO: Dropped = Dropped::new();

fn dropped(runtime: Runtime) -> &'static Dropped {
    match runtime {
        Runtime::Tokio => &TOKIO,
        Runtime::Mio => &MIO,
    }
}

/// Counts "UDP send failed" events from the runtimes and keeps the first one's fields.
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
        let target = event.metadata().target();
        let runtime = if target.starts_with("spooky_runtime_tokio") {
            Runtime::Tokio
        } else if target.starts_with("spooky_runtime_mio") {
            Runtime::Mio
        } else {
            return;
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.0.contains("UDP send failed") {
            let dropped = dropped(runtime);
            dropped.count.fetch_add(1, Ordering::SeqCst);
            let mut first = dropped.first.lock().unwrap();
            if first.is_none() {
                *first = Some(fields.0);
            }
        }
    }
}

/// Installs the counting subscriber once for this test binary (both tests use it, and it
/// must come before anything else installs a subscriber).
fn count_send_failures() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(SendFailures))
            .expect("this test binary installs the only subscriber");
    });
}

on_both_runtimes!(large_download_drops_no_datagram);

async fn large_download_drops_no_datagram(runtime: Runtime) {
    count_send_failures();
    let harness = Harness::start(runtime, &[Kind::H1, Kind::H3]).await;
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
    let dropped = dropped(runtime);
    let count = dropped.count.load(Ordering::SeqCst);
    assert_eq!(
        count,
        0,
        "Spooky dropped {count} outgoing UDP batch(es); the first: {}",
        dropped.first.lock().unwrap().clone().unwrap_or_default()
    );
}
