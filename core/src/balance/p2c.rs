use super::{Candidate, Strategy, WeightIndex};
use crate::rng::Rng;

/// Power of two choices: sample two backends (by weight), keep the one with the lower cost.
/// Cost is requests in flight per unit of weight, or, for the latency strategy, the expected
/// wait: peak-EWMA response time × (requests in flight + 1) / weight. O(log n) a pick.
#[derive(Debug)]
pub struct PowerOfTwoChoices {
    index: WeightIndex,
    by_latency: bool,
}

impl PowerOfTwoChoices {
    /// Compares requests in flight.
    pub fn by_load() -> Self {
        PowerOfTwoChoices {
            index: WeightIndex::default(),
            by_latency: false,
        }
    }

    /// Compares expected latency (peak EWMA × load).
    pub fn by_latency() -> Self {
        PowerOfTwoChoices {
            index: WeightIndex::default(),
            by_latency: true,
        }
    }

    fn cost(&self, c: &Candidate) -> f64 {
        let load = f64::from(c.in_flight + 1) / f64::from(c.weight.max(1));
        if self.by_latency {
            // Unmeasured backends look fast, so they get tried and measured.
            (c.latency_us.max(1.0)) * load
        } else {
            load
        }
    }
}

impl Strategy for PowerOfTwoChoices {
    fn rebuild(&mut self, candidates: &[Candidate]) {
        self.index = WeightIndex::build(candidates);
    }

    fn pick(
        &mut self,
        candidates: &[Candidate],
        _hash: Option<u64>,
        rng: &mut Rng,
    ) -> Option<usize> {
        let a = self.index.sample(rng)?;
        if self.index.indices.len() == 1 {
            return Some(a);
        }
        // A second, different choice (weights make a repeat likely; a few tries suffice).
        let mut b = a;
        for _ in 0..8 {
            b = self.index.sample(rng)?;
            if b != a {
                break;
            }
        }
        let (ca, cb) = (self.cost(&candidates[a]), self.cost(&candidates[b]));
        Some(if cb < ca || (cb == ca && rng.below(2) == 1) {
            b
        } else {
            a
        })
    }
}

/// Peak-EWMA of response times: jumps up to a slower sample at once, decays towards faster
/// ones with time constant `tau` (so one slow response counts until others show it was a
/// fluke). Times are in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakEwma {
    value_us: f64,
    last: Option<std::time::Instant>,
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma {
            value_us: 0.0,
            last: None,
        }
    }
}

impl PeakEwma {
    /// Decay time constant.
    pub const TAU: std::time::Duration = std::time::Duration::from_secs(10);

    /// Records a response time observed at `now`.
    pub fn observe(&mut self, now: std::time::Instant, sample_us: f64) {
        match self.last {
            Some(last) if sample_us <= self.value_us => {
                let elapsed = now.saturating_duration_since(last).as_secs_f64();
                let keep = (-elapsed / Self::TAU.as_secs_f64()).exp();
                self.value_us = self.value_us * keep + sample_us * (1.0 - keep);
            }
            _ => self.value_us = sample_us,
        }
        self.last = Some(now);
    }

    /// The current estimate (0 before the first sample).
    pub fn value_us(&self) -> f64 {
        self.value_us
    }
}
