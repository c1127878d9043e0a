use proptest::prelude::{ProptestConfig, any, prop_assert, prop_assert_eq, proptest};

use super::*;
use crate::config::{HashKey, LoadBalancing};

fn candidates(weights: &[u32]) -> Vec<Candidate> {
    weights.iter().map(|&w| Candidate::new(w)).collect()
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("backend-{i}")).collect()
}

fn build(kind: &LoadBalancing, c: &[Candidate]) -> Box<dyn Strategy> {
    let names = ids(c.len());
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    strategy_for(kind, c, &refs)
}

const ALL: [LoadBalancing; 7] = [
    LoadBalancing::RoundRobin,
    LoadBalancing::WeightBased,
    LoadBalancing::Random,
    LoadBalancing::LeastRequests,
    LoadBalancing::PowerOfTwoChoices,
    LoadBalancing::ConsistentHash(HashKey::ClientIp),
    LoadBalancing::Latency,
];

fn counts(strategy: &mut dyn Strategy, c: &[Candidate], picks: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::from_u64(seed);
    let mut n = vec![0; c.len()];
    for k in 0..picks {
        let hash = Some(stable_hash(7, &(k as u64).to_le_bytes()));
        n[strategy
            .pick(c, hash, &mut rng)
            .expect("something is available")] += 1;
    }
    n
}

#[test]
fn round_robin_rotates_in_order() {
    let c = candidates(&[1, 1, 1]);
    let mut s = build(&LoadBalancing::RoundRobin, &c);
    let mut rng = Rng::from_u64(0);
    let order: Vec<usize> = (0..6)
        .map(|_| s.pick(&c, None, &mut rng).unwrap())
        .collect();
    assert_eq!(order, [0, 1, 2, 0, 1, 2]);
}

#[test]
fn weighted_round_robin_interleaves() {
    // Weights 5, 1, 1: the light backends come in the middle of the cycle, not at its end.
    let c = candidates(&[5, 1, 1]);
    let mut s = build(&LoadBalancing::WeightBased, &c);
    let mut rng = Rng::from_u64(0);
    let order: Vec<usize> = (0..7)
        .map(|_| s.pick(&c, None, &mut rng).unwrap())
        .collect();
    assert_eq!(order, [0, 0, 0, 1, 2, 0, 0]);
}

#[test]
fn least_requests_rotates_when_idle_and_prefers_the_least_loaded() {
    let mut c = candidates(&[1, 1, 1]);
    let mut s = build(&LoadBalancing::LeastRequests, &c);
    let mut rng = Rng::from_u64(0);
    let order: Vec<usize> = (0..6)
        .map(|_| s.pick(&c, None, &mut rng).unwrap())
        .collect();
    assert_eq!(order, [0, 1, 2, 0, 1, 2]);
    c[0].in_flight = 5;
    s.load_changed(0, &c);
    c[1].in_flight = 1;
    s.load_changed(1, &c);
    assert_eq!(s.pick(&c, None, &mut rng), Some(2));
}

#[test]
fn maglev_sends_a_key_to_one_backend() {
    let c = candidates(&[1; 5]);
    let mut s = build(&LoadBalancing::ConsistentHash(HashKey::ClientIp), &c);
    let mut rng = Rng::from_u64(0);
    for key in 0..100u64 {
        let h = Some(stable_hash(1, &key.to_le_bytes()));
        let first = s.pick(&c, h, &mut rng);
        for _ in 0..3 {
            assert_eq!(s.pick(&c, h, &mut rng), first);
        }
    }
}

#[test]
fn nothing_available_picks_nothing() {
    let mut c = candidates(&[1, 2]);
    for x in &mut c {
        x.available = false;
    }
    let mut rng = Rng::from_u64(0);
    for kind in &ALL {
        let mut s = build(kind, &c);
        assert_eq!(s.pick(&c, Some(1), &mut rng), None, "{kind:?}");
    }
}

/// Keys that map to a different backend between two tables.
fn moved_keys(
    before: &mut dyn Strategy,
    b: &[Candidate],
    after: &mut dyn Strategy,
    a: &[Candidate],
    keys: u64,
) -> u64 {
    let mut rng = Rng::from_u64(0);
    (0..keys)
        .filter(|k| {
            let h = Some(stable_hash(3, &k.to_le_bytes()));
            before.pick(b, h, &mut rng) != after.pick(a, h, &mut rng)
        })
        .count() as u64
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Round-robin and weight-based give every backend exactly its weight over each cycle.
    #[test]
    fn edf_shares_are_exact(weights in proptest::collection::vec(1u32..20, 1..10), cycles in 1usize..4) {
        let c = candidates(&weights);
        let total: usize = weights.iter().map(|&w| w as usize).sum();
        let n = counts(&mut *build(&LoadBalancing::WeightBased, &c), &c, total * cycles, 1);
        for (count, weight) in n.iter().zip(&weights) {
            prop_assert_eq!(*count, *weight as usize * cycles);
        }
    }

    /// Random, P2C (without load) and Maglev shares converge to the weights: within 3
    /// percentage points after 20,000 picks.
    #[test]
    fn weighted_shares_converge(weights in proptest::collection::vec(1u32..10, 1..6), seed in any::<u64>()) {
        let c = candidates(&weights);
        let total: u32 = weights.iter().sum();
        for kind in [LoadBalancing::Random, LoadBalancing::ConsistentHash(HashKey::ClientIp)] {
            let picks = 20_000;
            let n = counts(&mut *build(&kind, &c), &c, picks, seed);
            for (count, weight) in n.iter().zip(&weights) {
                let expected = f64::from(*weight) / f64::from(total);
                let actual = *count as f64 / picks as f64;
                prop_assert!((expected - actual).abs() < 0.03, "{kind:?}: expected {expected}, got {actual}");
            }
        }
    }

    /// No strategy ever returns an unavailable backend.
    #[test]
    fn unavailable_is_never_picked(
        weights in proptest::collection::vec(1u32..10, 1..8),
        mask in proptest::collection::vec(any::<bool>(), 8),
        seed in any::<u64>(),
    ) {
        let mut c = candidates(&weights);
        for (x, &up) in c.iter_mut().zip(&mask) {
            x.available = up;
        }
        let any_available = c.iter().any(|x| x.available);
        let mut rng = Rng::from_u64(seed);
        for kind in &ALL {
            let mut s = build(kind, &c);
            for k in 0..50u64 {
                match s.pick(&c, Some(stable_hash(0, &k.to_le_bytes())), &mut rng) {
                    Some(i) => prop_assert!(c[i].available, "{kind:?} picked {i}"),
                    None => prop_assert!(!any_available || matches!(kind, LoadBalancing::ConsistentHash(_)), "{kind:?} found nothing"),
                }
            }
        }
    }

    /// Removing one of n backends moves about 1/n of the keys (at most 1/n + 3%), and adding
    /// one back moves them back.
    #[test]
    fn maglev_moves_about_one_nth(n in 3usize..12, gone in 0usize..12) {
        let gone = gone % n;
        let full = candidates(&vec![1; n]);
        let mut less = full.clone();
        less[gone].available = false;
        let kind = LoadBalancing::ConsistentHash(HashKey::ClientIp);
        let mut before = build(&kind, &full);
        let mut after = build(&kind, &less);
        let keys = 20_000;
        let moved = moved_keys(&mut *before, &full, &mut *after, &less, keys);
        let share = moved as f64 / keys as f64;
        prop_assert!(share <= 1.0 / n as f64 + 0.03, "removing 1 of {n} moved {share}");
        let mut back = build(&kind, &full);
        prop_assert_eq!(moved_keys(&mut *before, &full, &mut *back, &full, keys), 0);
    }

    /// Under a load where each pick holds a request for a while, P2C and least-requests still
    /// send every backend a fair part of the traffic.
    #[test]
    fn load_aware_strategies_never_starve(n in 2usize..8, seed in any::<u64>(), hold in 1usize..20) {
        for kind in [LoadBalancing::LeastRequests, LoadBalancing::PowerOfTwoChoices, LoadBalancing::Latency] {
            let mut c = candidates(&vec![1; n]);
            let mut s = build(&kind, &c);
            let mut rng = Rng::from_u64(seed);
            let mut active: std::collections::VecDeque<usize> = Default::default();
            let mut picked = vec![0usize; n];
            let picks = 2_000;
            for _ in 0..picks {
                let i = s.pick(&c, None, &mut rng).unwrap();
                picked[i] += 1;
                c[i].in_flight += 1;
                s.load_changed(i, &c);
                active.push_back(i);
                if active.len() > hold {
                    let done = active.pop_front().unwrap();
                    c[done].in_flight -= 1;
                    s.load_changed(done, &c);
                }
            }
            let fair = picks / n;
            for (i, &p) in picked.iter().enumerate() {
                prop_assert!(p * 2 >= fair, "{kind:?}: backend {i} got {p} of {picks} ({picked:?})");
            }
        }
    }
}
