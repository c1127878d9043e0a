use super::{Candidate, Strategy};
use crate::rng::Rng;
use crate::timer::TimerQueue;

/// The backend with the fewest requests in flight per unit of weight; among equals, the one
/// picked longest ago, so an idle pool still rotates. An indexed heap keeps each pick and
/// each load change O(log n).
#[derive(Default)]
pub struct LeastRequests {
    /// Keyed by candidate index; ordered by (load, last pick).
    heap: Option<TimerQueue<usize, (u64, u64)>>,
    last_pick: Vec<u64>,
    picks: u64,
}

/// In-flight requests per unit of weight, as an integer that orders like the fraction.
fn load(c: &Candidate) -> u64 {
    (u64::from(c.in_flight) << 32) / u64::from(c.weight.max(1))
}

impl LeastRequests {
    fn update(&mut self, i: usize, candidates: &[Candidate]) {
        let Some(heap) = self.heap.as_mut() else {
            return;
        };
        let key = candidates
            .get(i)
            .filter(|c| c.available)
            .map(|c| (load(c), self.last_pick.get(i).copied().unwrap_or(0)));
        heap.set(i, key);
    }
}

impl Strategy for LeastRequests {
    fn rebuild(&mut self, candidates: &[Candidate]) {
        self.heap = Some(TimerQueue::new());
        self.last_pick.resize(candidates.len(), 0);
        for i in 0..candidates.len() {
            self.update(i, candidates);
        }
    }

    fn pick(
        &mut self,
        candidates: &[Candidate],
        _hash: Option<u64>,
        _rng: &mut Rng,
    ) -> Option<usize> {
        let i = self.heap.as_ref()?.peek()?;
        self.picks += 1;
        self.last_pick[i] = self.picks;
        // The caller will bump its load; until then, the new pick time moves it back.
        self.update(i, candidates);
        Some(i)
    }

    fn load_changed(&mut self, i: usize, candidates: &[Candidate]) {
        self.update(i, candidates);
    }
}
