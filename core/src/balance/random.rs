use super::{Candidate, Strategy};
use crate::rng::Rng;

/// Picks an available backend at random, in proportion to its weight, from the core's seeded RNG.
#[derive(Debug, Clone, Copy, Default)]
pub struct WeightedRandom;

impl Strategy for WeightedRandom {
    fn pick(&mut self, candidates: &[Candidate], rng: &mut Rng) -> Option<usize> {
        let total: u64 = candidates
            .iter()
            .filter(|c| c.available)
            .map(|c| u64::from(c.weight.max(1)))
            .sum();
        if total == 0 {
            return None;
        }
        let mut ticket = rng.below(total);
        for (i, c) in candidates.iter().enumerate() {
            if !c.available {
                continue;
            }
            let w = u64::from(c.weight.max(1));
            if ticket < w {
                return Some(i);
            }
            ticket -= w;
        }
        None
    }
}
