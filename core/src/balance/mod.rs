//! Choosing a backend for each request.
//!
//! Every strategy implements [`Strategy`]: given the pool's backends as [`Candidate`]s and the
//! core's RNG, pick one that is available. Strategies keep whatever state they need
//! (round-robin counters) and are pure otherwise, so property tests can check their shares.

mod random;
mod round_robin;

pub use random::WeightedRandom;
pub use round_robin::SmoothWeightedRoundRobin;

use crate::config::LoadBalancing;
use crate::rng::Rng;

/// What a strategy may know about one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Configured weight (at least 1).
    pub weight: u32,
    /// False if the backend must not be picked (unhealthy, ejected, over its limits).
    pub available: bool,
    /// Requests currently in flight to it.
    pub in_flight: u32,
}

/// A balancing strategy for one pool.
pub trait Strategy: Send {
    /// Picks the index of an available candidate, or `None` if none is available.
    fn pick(&mut self, candidates: &[Candidate], rng: &mut Rng) -> Option<usize>;
}

/// The strategy configured by `kind` for a pool of `len` backends.
pub fn strategy_for(kind: LoadBalancing, len: usize) -> Box<dyn Strategy> {
    match kind {
        LoadBalancing::RoundRobin => Box::new(SmoothWeightedRoundRobin::new(len)),
        LoadBalancing::Random => Box::new(WeightedRandom),
    }
}

#[cfg(test)]
mod tests {
    use super::{Candidate, SmoothWeightedRoundRobin, Strategy, WeightedRandom};
    use crate::rng::Rng;
    use proptest::prelude::{any, prop_assert, prop_assert_eq, proptest};

    fn shares(strategy: &mut dyn Strategy, candidates: &[Candidate], picks: usize) -> Vec<usize> {
        let mut rng = Rng::from_u64(42);
        let mut counts = vec![0; candidates.len()];
        for _ in 0..picks {
            counts[strategy.pick(candidates, &mut rng).unwrap()] += 1;
        }
        counts
    }

    fn candidates(weights: &[u32], available: &[bool]) -> Vec<Candidate> {
        weights
            .iter()
            .zip(available)
            .map(|(&weight, &available)| Candidate {
                weight,
                available,
                in_flight: 0,
            })
            .collect()
    }

    #[test]
    fn round_robin_equal_weights_is_exact() {
        let c = candidates(&[1, 1, 1], &[true; 3]);
        let mut rr = SmoothWeightedRoundRobin::new(3);
        let mut rng = Rng::from_u64(0);
        let order: Vec<usize> = (0..6).map(|_| rr.pick(&c, &mut rng).unwrap()).collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn round_robin_is_smooth() {
        // nginx's example: weights 5, 1, 1 give a a b a c a a, never five a's in a row.
        let c = candidates(&[5, 1, 1], &[true; 3]);
        let mut rr = SmoothWeightedRoundRobin::new(3);
        let mut rng = Rng::from_u64(0);
        let order: Vec<usize> = (0..7).map(|_| rr.pick(&c, &mut rng).unwrap()).collect();
        assert_eq!(order, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn nothing_available_picks_nothing() {
        let c = candidates(&[1, 1], &[false, false]);
        let mut rng = Rng::from_u64(0);
        assert_eq!(SmoothWeightedRoundRobin::new(2).pick(&c, &mut rng), None);
        assert_eq!(WeightedRandom.pick(&c, &mut rng), None);
        assert_eq!(WeightedRandom.pick(&[], &mut rng), None);
    }

    proptest! {
        /// Round-robin hands out exactly weight-proportional shares over a full cycle.
        #[test]
        fn round_robin_shares_are_exact(weights in proptest::collection::vec(1u32..20, 1..8), cycles in 1usize..4) {
            let c = candidates(&weights, &vec![true; weights.len()]);
            let total: u32 = weights.iter().sum();
            let counts = shares(&mut SmoothWeightedRoundRobin::new(c.len()), &c, total as usize * cycles);
            for (count, weight) in counts.iter().zip(&weights) {
                prop_assert_eq!(*count, *weight as usize * cycles);
            }
        }

        /// Random shares converge to the weights: within 3 percentage points after 20k picks.
        #[test]
        fn random_shares_follow_weights(weights in proptest::collection::vec(1u32..10, 1..6)) {
            let c = candidates(&weights, &vec![true; weights.len()]);
            let picks = 20_000;
            let counts = shares(&mut WeightedRandom, &c, picks);
            let total: u32 = weights.iter().sum();
            for (count, weight) in counts.iter().zip(&weights) {
                let expected = f64::from(*weight) / f64::from(total);
                let actual = *count as f64 / picks as f64;
                prop_assert!((expected - actual).abs() < 0.03, "expected {expected}, got {actual}");
            }
        }

        /// No strategy ever returns an unavailable backend.
        #[test]
        fn unavailable_is_never_picked(weights in proptest::collection::vec(1u32..10, 1..8), mask in proptest::collection::vec(any::<bool>(), 8)) {
            let c = candidates(&weights, &mask[..weights.len()]);
            let any_available = c.iter().any(|c| c.available);
            let mut rng = Rng::from_u64(9);
            let mut rr = SmoothWeightedRoundRobin::new(c.len());
            for _ in 0..50 {
                for pick in [rr.pick(&c, &mut rng), WeightedRandom.pick(&c, &mut rng)] {
                    match pick {
                        Some(i) => prop_assert!(c[i].available),
                        None => prop_assert!(!any_available),
                    }
                }
            }
        }
    }
}
