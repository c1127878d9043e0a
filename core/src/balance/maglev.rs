use super::{Candidate, Strategy, WeightIndex, stable_hash};
use crate::rng::Rng;

/// Maglev consistent hashing (Eisenbud et al., NSDI '16): a lookup table of prime size M in
/// which every available backend claims slots in its own pseudo-random order, heavier
/// backends claiming proportionally more. A key maps to `table[hash % M]`, O(1). When a
/// backend leaves or joins, about 1/n of the keys move. Backends' orders derive from their
/// ids, so every shard and every instance builds the same table.
#[derive(Debug)]
pub struct Maglev {
    /// Per backend: (offset, skip) of its slot order, from its id.
    orders: Vec<(u64, u64)>,
    table: Vec<u32>,
    /// For requests without a key.
    fallback: WeightIndex,
}

/// Smallest table: 65537 slots keeps the share error under 1% for up to a few hundred
/// backends; larger pools get a prime about 100× their size.
const MIN_TABLE: u64 = 65_537;

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

fn table_size(backends: usize) -> u64 {
    let mut m = MIN_TABLE.max(backends as u64 * 100);
    while !is_prime(m) {
        m += 1;
    }
    m
}

impl Maglev {
    /// A table for backends with these ids (in candidate order).
    pub fn new(ids: &[&str]) -> Maglev {
        let m = table_size(ids.len());
        let orders = ids
            .iter()
            .map(|id| {
                let offset = stable_hash(0x6d61_676c_6576_3031, id.as_bytes()) % m;
                let skip = stable_hash(0x6d61_676c_6576_3032, id.as_bytes()) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        Maglev {
            orders,
            table: Vec::new(),
            fallback: WeightIndex::default(),
        }
    }

    fn populate(&mut self, candidates: &[Candidate]) {
        let available: Vec<usize> = (0..candidates.len().min(self.orders.len()))
            .filter(|&i| candidates[i].available)
            .collect();
        self.table.clear();
        if available.is_empty() {
            return;
        }
        let m = table_size(self.orders.len());
        let mut table = vec![u32::MAX; m as usize];
        let max_weight = available
            .iter()
            .map(|&i| u64::from(candidates[i].weight.max(1)))
            .max()
            .unwrap_or(1);
        // Per backend: position in its slot order, and weight credit.
        let mut next = vec![0u64; candidates.len()];
        let mut credit = vec![0u64; candidates.len()];
        let mut filled = 0u64;
        'fill: loop {
            for &i in &available {
                // A backend of weight w claims w/max_weight slots per round.
                credit[i] += u64::from(candidates[i].weight.max(1));
                if credit[i] < max_weight {
                    continue;
                }
                credit[i] -= max_weight;
                let (offset, skip) = self.orders[i];
                let slot = loop {
                    let slot = (offset + next[i] * skip) % m;
                    next[i] += 1;
                    if table[slot as usize] == u32::MAX {
                        break slot;
                    }
                };
                table[slot as usize] = i as u32;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
        self.table = table;
    }
}

impl Strategy for Maglev {
    fn rebuild(&mut self, candidates: &[Candidate]) {
        self.populate(candidates);
        self.fallback = WeightIndex::build(candidates);
    }

    fn pick(
        &mut self,
        candidates: &[Candidate],
        hash: Option<u64>,
        rng: &mut Rng,
    ) -> Option<usize> {
        let pick = match hash {
            Some(h) if !self.table.is_empty() => {
                Some(self.table[(h % self.table.len() as u64) as usize] as usize)
            }
            _ => self.fallback.sample(rng),
        };
        pick.filter(|&i| candidates.get(i).is_some_and(|c| c.available))
    }
}
