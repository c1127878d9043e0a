//! The backend pool as the balancer sees it: who is available, how loaded, and the strategy
//! that picks among them. Health checks and outlier detection change availability; circuit
//! breakers and retry exclusions are applied on top of the strategy's pick.

use smallvec::SmallVec;

use super::Backend;
use crate::balance::{self, Candidate, Strategy};
use crate::config::{CircuitBreaker, HashKey, LoadBalancing};
use crate::h3::message::RequestHead;
use crate::rng::Rng;

/// Why no backend was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoBackend {
    /// None is healthy (or all are ejected).
    NoneAvailable,
    /// Available ones are at their circuit breaker's request limit.
    Overflow,
}

pub(super) struct Pool {
    candidates: Vec<Candidate>,
    strategy: Box<dyn Strategy>,
    hash_key: Option<HashKey>,
    /// Retries in flight, for the retry budget.
    pub(super) retries_in_flight: u32,
}

impl Pool {
    pub(super) fn new(kind: &LoadBalancing, backends: &[Backend]) -> Pool {
        let candidates: Vec<Candidate> = backends
            .iter()
            .map(|b| Candidate::new(b.config.weight))
            .collect();
        let mut pool = Pool {
            candidates,
            strategy: Box::new(balance::WeightedRandom::default()),
            hash_key: None,
            retries_in_flight: 0,
        };
        pool.restrategize(kind, backends);
        pool
    }

    /// Rebuilds the strategy (`kind` may have changed) for the current backends, keeping
    /// their availability and load.
    pub(super) fn restrategize(&mut self, kind: &LoadBalancing, backends: &[Backend]) {
        let ids: Vec<&str> = backends.iter().map(|b| &*b.id).collect();
        self.strategy = balance::strategy_for(kind, &self.candidates, &ids);
        self.hash_key = match kind {
            LoadBalancing::ConsistentHash(key) => Some(key.clone()),
            _ => None,
        };
    }

    /// A new backend (unavailable until `set_available`); its index is the next one.
    pub(super) fn push(&mut self, weight: u32) {
        let mut candidate = Candidate::new(weight);
        candidate.available = false;
        self.candidates.push(candidate);
    }

    pub(super) fn set_weight(&mut self, b: usize, weight: u32) {
        self.candidates[b].weight = weight;
    }

    pub(super) fn in_flight(&self, b: usize) -> u32 {
        self.candidates[b].in_flight
    }

    pub(super) fn is_available(&self, b: usize) -> bool {
        self.candidates[b].available
    }

    pub(super) fn set_available(&mut self, b: usize, available: bool) {
        if self.candidates[b].available != available {
            self.candidates[b].available = available;
            self.strategy.rebuild(&self.candidates);
        }
    }

    pub(super) fn add_in_flight(&mut self, b: usize, delta: i32) {
        let c = &mut self.candidates[b];
        c.in_flight = c.in_flight.saturating_add_signed(delta);
        self.strategy.load_changed(b, &self.candidates);
    }

    pub(super) fn set_latency(&mut self, b: usize, latency_us: f64) {
        self.candidates[b].latency_us = latency_us;
    }

    /// The request's key for consistent hashing, if the strategy hashes.
    pub(super) fn request_hash(&self, head: &RequestHead, client: std::net::IpAddr) -> Option<u64> {
        const SEED: u64 = 0x7370_6f6f_6b79_6b65;
        let key = self.hash_key.as_ref()?;
        match key {
            HashKey::ClientIp => Some(match client {
                std::net::IpAddr::V4(ip) => balance::stable_hash(SEED, &ip.octets()),
                std::net::IpAddr::V6(ip) => balance::stable_hash(SEED, &ip.octets()),
            }),
            HashKey::Path => {
                let path = head.path()?;
                let path = path.split(|&b| b == b'?').next().unwrap_or(path);
                Some(balance::stable_hash(SEED, path))
            }
            HashKey::Header(name) => head
                .regular_fields()
                .find(|(n, _)| *n == name.as_bytes())
                .map(|(_, v)| balance::stable_hash(SEED, v)),
            HashKey::Cookie(name) => head
                .regular_fields()
                .filter(|(n, _)| *n == b"cookie")
                .flat_map(|(_, v)| v.split(|&b| b == b';'))
                .find_map(|pair| {
                    let pair = pair.trim_ascii();
                    let (n, v) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
                    (n == name.as_bytes()).then(|| balance::stable_hash(SEED, &v[1..]))
                }),
        }
    }

    /// Picks a backend: the strategy's choice unless it is excluded (already tried by this
    /// request) or at its request limit, then the least loaded acceptable one.
    pub(super) fn choose(
        &mut self,
        hash: Option<u64>,
        tried: &[usize],
        breaker: &CircuitBreaker,
        rng: &mut Rng,
    ) -> Result<usize, NoBackend> {
        let acceptable = |c: &Candidate| c.available && c.in_flight < breaker.max_requests;
        for _ in 0..3 {
            let Some(b) = self.strategy.pick(&self.candidates, hash, rng) else {
                break;
            };
            if !tried.contains(&b) && acceptable(&self.candidates[b]) {
                return Ok(b);
            }
            if hash.is_some() {
                // A hash always lands on the same backend; asking again will not help.
                break;
            }
        }
        // Fallback, O(n): the least loaded acceptable backend not yet tried, else one tried
        // before (a single-backend pool still gets its retry).
        let least = |allow_tried: bool| {
            let mut best: SmallVec<[(u64, usize); 1]> = SmallVec::new();
            for (i, c) in self.candidates.iter().enumerate() {
                if !acceptable(c) || (!allow_tried && tried.contains(&i)) {
                    continue;
                }
                let load = (u64::from(c.in_flight) << 32) / u64::from(c.weight.max(1));
                if best.first().is_none_or(|&(l, _)| load < l) {
                    best.clear();
                    best.push((load, i));
                }
            }
            best.first().map(|&(_, i)| i)
        };
        if let Some(b) = least(false).or_else(|| least(true)) {
            return Ok(b);
        }
        if self.candidates.iter().any(|c| c.available) {
            Err(NoBackend::Overflow)
        } else {
            Err(NoBackend::NoneAvailable)
        }
    }
}
