//! The core's cost per exchange on the in-memory network of `spooky_core::sim` (no sockets, a
//! simulated clock): (a) a client's full QUIC handshake plus one GET, and (b) 100 concurrent
//! GETs on an established connection, each with an HTTP/1.1 backend and with an HTTP/3
//! backend.
//!
//! The simulation runs everything in this one thread: besides the core, the simulated client
//! (quinn-proto plus the core's HTTP/3 codec), the simulated backends (for HTTP/3 another
//! quinn-proto endpoint with its own TLS), the event queue, and a SHA-256 digest of every
//! datagram the core sends. The times here are therefore an upper bound on the core's own cost
//! per exchange; a profile (`perf record` on this bench) separates the parts. The simulated
//! latency costs no wall time.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use spooky_core::sim::{Sim, SimConfig, SimRequest};

/// Simulated time allowed for any batch of requests (generous: nothing is lost).
const LIMIT: Duration = Duration::from_secs(30);

fn config(h1: usize, h3: usize) -> SimConfig {
    SimConfig {
        seed: 7,
        latency: Duration::from_micros(100),
        jitter: Duration::ZERO,
        loss_ppm: 0,
        h1_backends: h1,
        h3_backends: h3,
        ..SimConfig::default()
    }
}

/// Runs `n` GETs on client `c` and checks every one succeeded.
fn gets(sim: &mut Sim, c: usize, n: usize) {
    let first = (0..n)
        .map(|_| sim.request(c, SimRequest::new("GET", "/x")))
        .min()
        .unwrap_or(0);
    assert!(sim.run_until_done(LIMIT), "requests did not finish");
    for r in sim.clients[c].responses().skip(first) {
        assert_eq!(r.status, 200, "{r:?}");
    }
}

/// A world with one connected client that has already fetched once (so the core's
/// connections to the backends are up too).
fn warmed(cfg: &SimConfig) -> (Sim, usize) {
    let mut sim = Sim::new(Instant::now(), cfg.clone());
    let c = sim.add_client();
    gets(&mut sim, c, 2);
    (sim, c)
}

fn bench_core(c: &mut Criterion) {
    let mut group = c.benchmark_group("core_sim");
    group.sample_size(20);
    for (backend, cfg) in [("h1_backend", config(1, 0)), ("h3_backend", config(0, 1))] {
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(
            BenchmarkId::new("handshake_plus_1_get", backend),
            &cfg,
            |b, cfg| {
                b.iter_batched(
                    || Sim::new(Instant::now(), cfg.clone()),
                    |mut sim| {
                        let client = sim.add_client();
                        gets(&mut sim, client, 1);
                        sim // dropped outside the timing
                    },
                    BatchSize::PerIteration,
                )
            },
        );

        group.throughput(Throughput::Elements(100));
        group.bench_with_input(
            BenchmarkId::new("100_gets_established", backend),
            &cfg,
            |b, cfg| {
                b.iter_batched(
                    || warmed(cfg),
                    |(mut sim, client)| {
                        gets(&mut sim, client, 100);
                        black_box(sim)
                    },
                    BatchSize::PerIteration,
                )
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_core);
criterion_main!(benches);
