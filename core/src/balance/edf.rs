use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::{Candidate, Strategy};
use crate::rng::Rng;

/// Weighted round-robin by earliest deadline first: backend i's k-th turn is due at
/// (2k + 1) / (2 wᵢ), and each pick takes the earliest due turn (ties by backend order).
/// Over a cycle of Σw picks every backend gets exactly its weight; with equal weights it is
/// plain rotation; turns of heavy backends are spread between light ones. O(log n) a pick.
#[derive(Debug, Default)]
pub struct EarliestDeadlineFirst {
    heap: BinaryHeap<Turn>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Turn {
    /// Due at `(2 * taken + 1) / (2 * weight)`.
    taken: u64,
    weight: u64,
    index: usize,
}

impl Turn {
    fn due_cmp(&self, other: &Turn) -> Ordering {
        let a = u128::from(2 * self.taken + 1) * u128::from(other.weight);
        let b = u128::from(2 * other.taken + 1) * u128::from(self.weight);
        a.cmp(&b).then(self.index.cmp(&other.index))
    }
}

impl Ord for Turn {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: the earliest turn must compare greatest.
        other.due_cmp(self)
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Strategy for EarliestDeadlineFirst {
    fn rebuild(&mut self, candidates: &[Candidate]) {
        self.heap = candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.available)
            .map(|(index, c)| Turn {
                taken: 0,
                weight: u64::from(c.weight.max(1)),
                index,
            })
            .collect();
    }

    fn pick(
        &mut self,
        candidates: &[Candidate],
        _hash: Option<u64>,
        _rng: &mut Rng,
    ) -> Option<usize> {
        let mut turn = self.heap.peek_mut()?;
        let index = turn.index;
        turn.taken += 1;
        drop(turn);
        candidates.get(index).filter(|c| c.available).map(|_| index)
    }
}
