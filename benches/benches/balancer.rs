//! `Strategy::pick` for each balancing strategy over 1, 10 and 1000 backends, all available,
//! with equal and with mixed weights.
//!
//! Round-robin (and weight-based) is earliest-deadline-first weighted round-robin, which
//! replaced the smooth weighted round-robin of the first version; random is weighted random.
//! The load-aware strategies see a fixed spread of requests in flight and latencies.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use spooky_core::balance::{
    Candidate, EarliestDeadlineFirst, LeastRequests, Maglev, PowerOfTwoChoices, Strategy,
    WeightedRandom,
};
use spooky_core::rng::Rng;

fn candidates(n: usize, mixed: bool) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate {
            weight: if mixed { 1 + (i as u32 * 7) % 10 } else { 1 },
            available: true,
            in_flight: (i as u32 * 3) % 5,
            latency_us: 200.0 + ((i * 13) % 17) as f64 * 50.0,
        })
        .collect()
}

type Make = fn(&[&str]) -> Box<dyn Strategy>;

fn bench_pick(c: &mut Criterion) {
    let strategies: [(&str, Make); 6] = [
        ("round_robin_edf", |_| {
            Box::new(EarliestDeadlineFirst::default())
        }),
        ("random", |_| Box::new(WeightedRandom::default())),
        ("least_requests", |_| Box::new(LeastRequests::default())),
        ("p2c_load", |_| Box::new(PowerOfTwoChoices::by_load())),
        ("p2c_latency", |_| Box::new(PowerOfTwoChoices::by_latency())),
        ("maglev", |ids| Box::new(Maglev::new(ids))),
    ];
    let mut group = c.benchmark_group("balance_pick");
    for (name, make) in strategies {
        for n in [1usize, 10, 1000] {
            for mixed in [false, true] {
                let cands = candidates(n, mixed);
                let names: Vec<String> = (0..n).map(|i| format!("backend-{i}")).collect();
                let ids: Vec<&str> = names.iter().map(String::as_str).collect();
                let mut strategy = make(&ids);
                strategy.rebuild(&cands);
                let mut rng = Rng::from_u64(7);
                let mut hash = 0x9e37_79b9_7f4a_7c15u64;
                let hashed = name == "maglev";
                let weights = if mixed { "mixed" } else { "equal" };
                group.bench_function(BenchmarkId::new(name, format!("{n}_{weights}")), |b| {
                    b.iter(|| {
                        hash = hash.wrapping_add(0x9e37_79b9_7f4a_7c15);
                        let key = hashed.then_some(hash);
                        black_box(strategy.pick(black_box(&cands), key, &mut rng))
                    })
                });
                assert!(strategy.pick(&cands, Some(1), &mut rng).is_some());
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench_pick);
criterion_main!(benches);
