use super::{Candidate, Strategy, WeightIndex};
use crate::rng::Rng;

/// An available backend at random, in proportion to its weight, from the core's seeded RNG.
/// O(log n) a pick (binary search over cumulative weights).
#[derive(Debug, Default)]
pub struct WeightedRandom {
    index: WeightIndex,
}

impl Strategy for WeightedRandom {
    fn rebuild(&mut self, candidates: &[Candidate]) {
        self.index = WeightIndex::build(candidates);
    }

    fn pick(
        &mut self,
        candidates: &[Candidate],
        _hash: Option<u64>,
        rng: &mut Rng,
    ) -> Option<usize> {
        self.index
            .sample(rng)
            .filter(|&i| candidates.get(i).is_some_and(|c| c.available))
    }
}
