//! Pools as the balancer sees them, and routing requests to them.
//!
//! A [`Pool`] holds a `Candidate` per member backend (weight, available, requests in flight,
//! latency) and the pool's `Strategy`. Backends themselves live in the core's list, each
//! knowing its pool and its slot there; health checks and outlier detection change a
//! member's availability, which makes the strategy rebuild its index. Circuit breakers and
//! retry exclusions are applied on top of the strategy's pick.

use std::sync::Arc;

use smallvec::SmallVec;

use super::{Backend, Core, ExId};
use crate::balance::{self, Candidate, Strategy};
use crate::config::{CircuitBreaker, Config, DEFAULT_POOL, HashKey, LoadBalancing, Route};
use crate::h3::message::RequestHead;
use crate::rng::Rng;

/// `Backend::pool` of a backend that belongs to no pool (retired by a reload).
pub(super) const NO_POOL: usize = usize::MAX;

/// Why no backend was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoBackend {
    /// None is healthy (or all are ejected).
    NoneAvailable,
    /// Available ones are at their circuit breaker's request limit.
    Overflow,
}

pub(super) struct Pool {
    /// Member backends (indices into the core's list), by slot.
    pub(super) members: Vec<usize>,
    candidates: Vec<Candidate>,
    strategy: Box<dyn Strategy>,
    hash_key: Option<HashKey>,
}

impl Pool {
    /// A pool of `members`; their availability and load are taken from `backends`.
    pub(super) fn new(kind: &LoadBalancing, members: Vec<usize>, backends: &[Backend]) -> Pool {
        let candidates: Vec<Candidate> = members
            .iter()
            .map(|&b| {
                let backend = &backends[b];
                Candidate {
                    weight: backend.config.weight,
                    available: backend.takes_traffic(),
                    in_flight: backend.in_flight,
                    latency_us: backend.latency.value_us(),
                }
            })
            .collect();
        let ids: Vec<&str> = members.iter().map(|&b| &*backends[b].id).collect();
        let strategy = balance::strategy_for(kind, &candidates, &ids);
        let hash_key = match kind {
            LoadBalancing::ConsistentHash(key) => Some(key.clone()),
            _ => None,
        };
        Pool {
            members,
            candidates,
            strategy,
            hash_key,
        }
    }

    fn set_available(&mut self, slot: usize, available: bool) {
        if self.candidates[slot].available != available {
            self.candidates[slot].available = available;
            self.strategy.rebuild(&self.candidates);
        }
    }

    fn set_in_flight(&mut self, slot: usize, in_flight: u32) {
        self.candidates[slot].in_flight = in_flight;
        self.strategy.load_changed(slot, &self.candidates);
    }

    fn set_latency(&mut self, slot: usize, latency_us: f64) {
        self.candidates[slot].latency_us = latency_us;
    }

    /// The request's key for consistent hashing, if the strategy hashes.
    fn request_hash(&self, head: &RequestHead, client: std::net::IpAddr) -> Option<u64> {
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

    /// Picks a slot: the strategy's choice unless it is excluded (already tried by this
    /// request) or at its request limit, then the least loaded acceptable one.
    fn choose(
        &mut self,
        hash: Option<u64>,
        tried: &[usize],
        breaker: &CircuitBreaker,
        rng: &mut Rng,
    ) -> Result<usize, NoBackend> {
        let acceptable = |c: &Candidate| c.available && c.in_flight < breaker.max_requests;
        for _ in 0..3 {
            let Some(slot) = self.strategy.pick(&self.candidates, hash, rng) else {
                break;
            };
            if !tried.contains(&slot) && acceptable(&self.candidates[slot]) {
                return Ok(slot);
            }
            if hash.is_some() {
                // A hash always lands on the same backend; asking again will not help.
                break;
            }
        }
        // Fallback, O(n): the least loaded acceptable backend not yet tried, else one tried
        // before (a single-backend pool still gets its retry).
        let least = |allow_tried: bool| {
            let mut best: Option<(u64, usize)> = None;
            for (slot, c) in self.candidates.iter().enumerate() {
                if !acceptable(c) || (!allow_tried && tried.contains(&slot)) {
                    continue;
                }
                let load = (u64::from(c.in_flight) << 32) / u64::from(c.weight.max(1));
                if best.is_none_or(|(l, _)| load < l) {
                    best = Some((load, slot));
                }
            }
            best.map(|(_, slot)| slot)
        };
        if let Some(slot) = least(false).or_else(|| least(true)) {
            return Ok(slot);
        }
        if self.candidates.iter().any(|c| c.available) {
            Err(NoBackend::Overflow)
        } else {
            Err(NoBackend::NoneAvailable)
        }
    }
}

/// The pools a configuration describes: the default pool first (the top-level backends), then
/// each named pool. Backends are numbered in `Config::all_backends` order.
pub(super) fn pool_layout(config: &Config) -> Vec<(&str, &LoadBalancing, usize)> {
    std::iter::once((DEFAULT_POOL, &config.load_balancing, config.backends.len()))
        .chain(
            config
                .pools
                .iter()
                .map(|p| (p.name.as_str(), &p.load_balancing, p.backends.len())),
        )
        .collect()
}

/// The pool index of every route of `config` (by name; the parser checked that it exists).
pub(super) fn route_pools(config: &Config) -> Vec<usize> {
    config
        .routes
        .iter()
        .map(|r| {
            std::iter::once(DEFAULT_POOL)
                .chain(config.pools.iter().map(|p| p.name.as_str()))
                .position(|name| name == r.pool)
                .unwrap_or(0)
        })
        .collect()
}

/// True if `route` takes a request with this head.
fn route_matches(route: &Route, head: &RequestHead) -> bool {
    if let Some(wanted) = &route.host {
        let Some(host) = head.authority().map(strip_port) else {
            return false;
        };
        let matched = match wanted.strip_prefix("*.") {
            Some(suffix) => {
                host.len() > suffix.len() + 1
                    && host[host.len() - suffix.len() - 1] == b'.'
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
            }
            None => host.eq_ignore_ascii_case(wanted.as_bytes()),
        };
        if !matched {
            return false;
        }
    }
    if let Some(prefix) = &route.path_prefix {
        if !head
            .path()
            .is_some_and(|p| p.starts_with(prefix.as_bytes()))
        {
            return false;
        }
    }
    route.headers.iter().all(|(name, value)| {
        head.regular_fields()
            .any(|(n, v)| n == name.as_bytes() && v == value.as_bytes())
    })
}

/// `host[:port]` or `[v6]:port` without the port.
fn strip_port(authority: &[u8]) -> &[u8] {
    if authority.first() == Some(&b'[') {
        let end = authority
            .iter()
            .position(|&b| b == b']')
            .map_or(authority.len(), |i| i + 1);
        return &authority[..end];
    }
    match authority.iter().rposition(|&b| b == b':') {
        Some(colon) => &authority[..colon],
        None => authority,
    }
}

impl Core {
    /// A member's slot in its pool, unless it belongs to none.
    fn membership(&self, b: usize) -> Option<(usize, usize)> {
        let backend = &self.backends[b];
        (backend.pool != NO_POOL).then_some((backend.pool, backend.slot))
    }

    pub(super) fn add_in_flight(&mut self, b: usize, delta: i32) {
        let backend = &mut self.backends[b];
        backend.in_flight = backend.in_flight.saturating_add_signed(delta);
        let in_flight = backend.in_flight;
        if let Some((p, slot)) = self.membership(b) {
            self.pools[p].set_in_flight(slot, in_flight);
        }
    }

    pub(super) fn set_backend_available(&mut self, b: usize, available: bool) {
        if let Some((p, slot)) = self.membership(b) {
            self.pools[p].set_available(slot, available);
        }
    }

    pub(super) fn set_backend_latency(&mut self, b: usize, latency_us: f64) {
        if let Some((p, slot)) = self.membership(b) {
            self.pools[p].set_latency(slot, latency_us);
        }
    }

    /// The first route that takes this request, with the pool it names.
    fn route_for(&self, head: &RequestHead) -> Option<(usize, usize)> {
        self.config
            .routes
            .iter()
            .position(|r| route_matches(r, head))
            .map(|r| (r, self.route_pools.get(r).copied().unwrap_or(0)))
    }

    /// Routes `ex` and picks a backend of its pool. Remembers the route (for the request and
    /// response changes it asks for).
    pub(super) fn choose_backend(&mut self, ex: ExId) -> Result<usize, NoBackend> {
        let e = &self.exchanges[ex];
        let head = e.head.as_ref().expect("dispatched requests have a head");
        let (route, p) = match self.route_for(head) {
            Some((r, p)) => (Some(r), p),
            None => (None, 0),
        };
        let hash = self.pools[p].request_hash(head, e.peer.ip());
        let tried: SmallVec<[usize; 2]> = e
            .tried
            .iter()
            .filter_map(|&b| self.membership(b))
            .filter(|&(pool, _)| pool == p)
            .map(|(_, slot)| slot)
            .collect();
        // Remembered before the pick, so that Spooky's own 503 for an empty pool carries the
        // route's response edits like every other final response of the request.
        self.exchanges[ex].route = route.map(|r| (self.config.clone(), r));
        let slot =
            self.pools[p].choose(hash, &tried, &self.config.circuit_breaker, &mut self.rng)?;
        Ok(self.pools[p].members[slot])
    }

    /// Builds the pools for the current configuration from the backends' state.
    pub(super) fn build_pools(&mut self, members: Vec<Vec<usize>>) {
        let layout: Vec<LoadBalancing> = pool_layout(&self.config)
            .into_iter()
            .map(|(_, kind, _)| kind.clone())
            .collect();
        for backend in &mut self.backends {
            backend.pool = NO_POOL;
        }
        for (p, list) in members.iter().enumerate() {
            for (slot, &b) in list.iter().enumerate() {
                self.backends[b].pool = p;
                self.backends[b].slot = slot;
            }
        }
        self.pools = members
            .into_iter()
            .zip(&layout)
            .map(|(list, kind)| Pool::new(kind, list, &self.backends))
            .collect();
        self.route_pools = route_pools(&self.config);
    }
}

/// The route an exchange took: the configuration it came from (pinned, so a reload cannot
/// change it under the exchange) and its index there.
pub(super) type RouteRef = (Arc<Config>, usize);
