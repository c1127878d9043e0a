use super::{Candidate, Strategy};
use crate::rng::Rng;

/// Smooth weighted round-robin (as nginx does it): each pick adds every available backend's
/// weight to its credit, takes the backend with the most credit and charges it the total.
/// Shares are exact over a cycle and heavy backends are interleaved with light ones.
#[derive(Debug, Clone)]
pub struct SmoothWeightedRoundRobin {
    credit: Vec<i64>,
}

impl SmoothWeightedRoundRobin {
    /// State for a pool of `len` backends.
    pub fn new(len: usize) -> Self {
        SmoothWeightedRoundRobin {
            credit: vec![0; len],
        }
    }
}

impl Strategy for SmoothWeightedRoundRobin {
    fn pick(&mut self, candidates: &[Candidate], _rng: &mut Rng) -> Option<usize> {
        if self.credit.len() != candidates.len() {
            self.credit = vec![0; candidates.len()];
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, c) in candidates.iter().enumerate() {
            if !c.available {
                continue;
            }
            let w = i64::from(c.weight.max(1));
            self.credit[i] += w;
            total += w;
            if best.is_none_or(|b| self.credit[i] > self.credit[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        self.credit[best] -= total;
        Some(best)
    }
}
