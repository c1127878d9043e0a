//! Choosing a backend for each request.
//!
//! Every strategy implements [`Strategy`]: given the pool's backends as [`Candidate`]s, an
//! optional request hash and the core's RNG, pick an available one. The pool calls
//! [`Strategy::rebuild`] when the set of available backends changes (health, ejection), so
//! strategies can keep an index that makes each pick O(1) or O(log n), and
//! [`Strategy::load_changed`] when a backend's requests in flight change.
//!
//! Strategies are pure apart from their own counters and the RNG they are handed, so property
//! tests can check their shares, and hashing uses fixed seeds, so every shard and every
//! instance maps a key to the same backend.

mod edf;
mod least;
mod maglev;
mod p2c;
mod random;

pub use edf::EarliestDeadlineFirst;
pub use least::LeastRequests;
pub use maglev::Maglev;
pub use p2c::{PeakEwma, PowerOfTwoChoices};
pub use random::WeightedRandom;

use crate::config::LoadBalancing;
use crate::rng::Rng;

/// What a strategy may know about one backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Configured weight (at least 1).
    pub weight: u32,
    /// False if the backend must not be picked (unhealthy or ejected).
    pub available: bool,
    /// Requests currently in flight to it.
    pub in_flight: u32,
    /// Peak-EWMA response time in microseconds (0 before the first response).
    pub latency_us: f64,
}

impl Candidate {
    /// An available backend with `weight` and no load.
    pub fn new(weight: u32) -> Candidate {
        Candidate {
            weight,
            available: true,
            in_flight: 0,
            latency_us: 0.0,
        }
    }
}

/// A balancing strategy for one pool.
pub trait Strategy: Send {
    /// The set of available candidates (or their weights) changed.
    fn rebuild(&mut self, candidates: &[Candidate]);

    /// Picks the index of an available candidate, or `None` if none is available. `hash` is
    /// the request's key for hashing strategies (others ignore it).
    fn pick(&mut self, candidates: &[Candidate], hash: Option<u64>, rng: &mut Rng)
    -> Option<usize>;

    /// Candidate `i`'s requests in flight changed.
    fn load_changed(&mut self, _i: usize, _candidates: &[Candidate]) {}
}

/// The strategy configured by `kind`, built for `candidates`.
pub fn strategy_for(
    kind: &LoadBalancing,
    candidates: &[Candidate],
    ids: &[&str],
) -> Box<dyn Strategy> {
    let mut strategy: Box<dyn Strategy> = match kind {
        LoadBalancing::RoundRobin | LoadBalancing::WeightBased => {
            Box::new(EarliestDeadlineFirst::default())
        }
        LoadBalancing::Random => Box::new(WeightedRandom::default()),
        LoadBalancing::LeastRequests => Box::new(LeastRequests::default()),
        LoadBalancing::PowerOfTwoChoices => Box::new(PowerOfTwoChoices::by_load()),
        LoadBalancing::Latency => Box::new(PowerOfTwoChoices::by_latency()),
        LoadBalancing::ConsistentHash(_) => Box::new(Maglev::new(ids)),
    };
    strategy.rebuild(candidates);
    strategy
}

/// A 64-bit hash with a fixed seed (FNV-1a, then a finalizer that spreads the bits), the
/// same on every shard and every run.
pub fn stable_hash(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // SplitMix64's finalizer.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Indices of available candidates and the running sums of their weights, for weighted
/// sampling by binary search.
#[derive(Debug, Clone, Default)]
struct WeightIndex {
    indices: Vec<usize>,
    cumulative: Vec<u64>,
}

impl WeightIndex {
    fn build(candidates: &[Candidate]) -> WeightIndex {
        let mut index = WeightIndex::default();
        let mut total = 0u64;
        for (i, c) in candidates.iter().enumerate().filter(|(_, c)| c.available) {
            total += u64::from(c.weight.max(1));
            index.indices.push(i);
            index.cumulative.push(total);
        }
        index
    }

    fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// A weighted random available index, in O(log n).
    fn sample(&self, rng: &mut Rng) -> Option<usize> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let ticket = rng.below(total);
        let at = self.cumulative.partition_point(|&c| c <= ticket);
        self.indices.get(at).copied()
    }
}

#[cfg(test)]
mod tests;
