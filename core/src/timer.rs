//! A keyed timer queue: one deadline per key, updated in O(log n).
//!
//! quinn-proto connections move their deadline on almost every packet, so a plain heap with
//! lazy deletion would fill with stale entries; an indexed heap keeps exactly one entry per key.

use std::hash::Hash;
use std::time::Instant;

use hashbrown::HashMap;

/// Deadlines (`T`, normally `Instant`) keyed by `K`; ties are broken by key so order never
/// depends on insertion.
pub(crate) struct TimerQueue<K, T = Instant> {
    heap: Vec<(T, K)>,
    position: HashMap<K, usize, FixedState>,
}

/// A hasher with a fixed seed, so the core's behaviour never depends on process randomness.
#[derive(Clone, Default)]
pub(crate) struct FixedState;

impl std::hash::BuildHasher for FixedState {
    type Hasher = FxHasher;
    fn build_hasher(&self) -> FxHasher {
        FxHasher(0)
    }
}

/// The Fx hash (as used in rustc): fast and good enough for small integer keys.
pub(crate) struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl<K: Copy + Eq + Hash + Ord, T: Copy + Ord> TimerQueue<K, T> {
    pub(crate) fn new() -> Self {
        TimerQueue {
            heap: Vec::new(),
            position: HashMap::with_hasher(FixedState),
        }
    }

    /// Sets, moves or (with `None`) cancels the deadline of `key`.
    pub(crate) fn set(&mut self, key: K, deadline: Option<T>) {
        match (self.position.get(&key).copied(), deadline) {
            (None, None) => {}
            (None, Some(at)) => {
                self.heap.push((at, key));
                let i = self.heap.len() - 1;
                self.position.insert(key, i);
                self.sift_up(i);
            }
            (Some(i), Some(at)) => {
                if self.heap[i].0 != at {
                    self.heap[i].0 = at;
                    self.sift_up(i);
                    let i = self.position[&key];
                    self.sift_down(i);
                }
            }
            (Some(i), None) => self.remove_at(i),
        }
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<T> {
        self.heap.first().map(|(at, _)| *at)
    }

    /// True if `key` has a deadline.
    pub(crate) fn contains(&self, key: K) -> bool {
        self.position.contains_key(&key)
    }

    /// The key with the earliest deadline.
    pub(crate) fn peek(&self) -> Option<K> {
        self.heap.first().map(|(_, key)| *key)
    }

    /// Removes and returns a key whose deadline is at or before `now`.
    pub(crate) fn pop_expired(&mut self, now: T) -> Option<K> {
        let &(at, key) = self.heap.first()?;
        if at > now {
            return None;
        }
        self.remove_at(0);
        Some(key)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    fn remove_at(&mut self, i: usize) {
        let last = self.heap.len() - 1;
        self.swap(i, last);
        let (_, key) = self.heap.pop().expect("non-empty");
        self.position.remove(&key);
        if i < self.heap.len() {
            self.sift_up(i);
            let i = self.position[&self.heap[i.min(self.heap.len() - 1)].1];
            self.sift_down(i);
        }
    }

    fn less(&self, a: usize, b: usize) -> bool {
        self.heap[a] < self.heap[b]
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.position.insert(self.heap[a].1, a);
        self.position.insert(self.heap[b].1, b);
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if !self.less(i, parent) {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let left = 2 * i + 1;
            let right = left + 1;
            let mut smallest = i;
            if left < self.heap.len() && self.less(left, smallest) {
                smallest = left;
            }
            if right < self.heap.len() && self.less(right, smallest) {
                smallest = right;
            }
            if smallest == i {
                break;
            }
            self.swap(i, smallest);
            i = smallest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// The queue pops exactly what a simple map model says, in deadline order.
        #[test]
        fn matches_a_model(ops in proptest::collection::vec((0u8..20, proptest::option::of(0u64..1000)), 1..200)) {
            // Plain integers stand in for instants.
            let mut q: TimerQueue<u8, u64> = TimerQueue::new();
            let mut model: BTreeMap<u8, u64> = BTreeMap::new();
            for (key, at) in ops {
                q.set(key, at);
                match at {
                    Some(at) => { model.insert(key, at); }
                    None => { model.remove(&key); }
                }
                prop_assert_eq!(q.len(), model.len());
                prop_assert_eq!(q.next_deadline(), model.values().min().copied());
            }
            let mut expected: Vec<(u64, u8)> = model.iter().map(|(k, at)| (*at, *k)).collect();
            expected.sort();
            let far = 10_000;
            let mut popped = Vec::new();
            while let Some(k) = q.pop_expired(far) {
                popped.push((model[&k], k));
            }
            prop_assert_eq!(popped, expected);
        }
    }
}
