//! Generated sequences of traffic and reloads: backends join and leave, weights, strategies
//! and routes change while requests are in flight. As long as every pool keeps a backend
//! that is up, every request is answered by a backend, whole, and by one the configuration
//! could have sent it to; nothing hangs and no connection drops.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use proptest::prelude::{
    Just, ProptestConfig, TestCaseError, prop_assert, prop_assert_eq, prop_oneof, proptest,
};
use proptest::strategy::Strategy;
use spooky_core::config::{BackendConfig, Config, HashKey, LoadBalancing, PoolConfig, Route};
use spooky_core::sim::{Sim, SimConfig, SimRequest};

/// Three HTTP/1.1 backends and one HTTP/3 backend, all up for the whole run.
const BACKENDS: usize = 4;

fn strategy() -> impl Strategy<Value = LoadBalancing> {
    prop_oneof![
        Just(LoadBalancing::RoundRobin),
        Just(LoadBalancing::WeightBased),
        Just(LoadBalancing::Random),
        Just(LoadBalancing::LeastRequests),
        Just(LoadBalancing::PowerOfTwoChoices),
        Just(LoadBalancing::ConsistentHash(HashKey::ClientIp)),
        Just(LoadBalancing::ConsistentHash(HashKey::Path)),
        Just(LoadBalancing::Latency),
    ]
}

/// One configuration: which backends, their weights, the strategy, and whether the last
/// chosen backend serves `/api/` alone through a route.
#[derive(Debug, Clone)]
struct Shape {
    members: Vec<usize>,
    weights: Vec<u32>,
    strategy: LoadBalancing,
    api_pool: bool,
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        1u8..1 << BACKENDS,
        proptest::collection::vec(1u32..5, BACKENDS),
        strategy(),
        proptest::bool::ANY,
    )
        .prop_map(|(mask, weights, strategy, api_pool)| {
            let members: Vec<usize> = (0..BACKENDS).filter(|i| mask & (1 << i) != 0).collect();
            // A route needs a backend for each of the two pools.
            let api_pool = api_pool && members.len() >= 2;
            Shape {
                members,
                weights,
                strategy,
                api_pool,
            }
        })
}

/// Requests to start, simulated time to let pass, then perhaps a reload.
#[derive(Debug, Clone)]
struct Step {
    requests: usize,
    run_for: Duration,
    reload: Option<Shape>,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0usize..6,
        0u64..40,
        proptest::option::weighted(0.7, shape()),
    )
        .prop_map(|(requests, ms, reload)| Step {
            requests,
            run_for: Duration::from_millis(ms),
            reload,
        })
}

/// Rewrites `config` to `shape`, drawing backends from `all`.
fn apply(config: &mut Config, all: &[BackendConfig], shape: &Shape) {
    let mut chosen: Vec<BackendConfig> = shape
        .members
        .iter()
        .map(|&i| {
            let mut b = all[i].clone();
            b.weight = shape.weights[i];
            b
        })
        .collect();
    config.load_balancing = shape.strategy.clone();
    config.pools.clear();
    config.routes.clear();
    if shape.api_pool {
        let api = chosen.split_off(chosen.len() - 1);
        config.pools.push(PoolConfig {
            name: "api".into(),
            backends: api,
            load_balancing: shape.strategy.clone(),
        });
        config.routes.push(Route {
            path_prefix: Some("/api/".into()),
            pool: "api".into(),
            ..Route::default()
        });
    }
    config.backends = chosen;
}

/// Backends a request for `path` may go to under `shape`.
fn allowed(shape: &Shape, path: &str, names: &[String]) -> BTreeSet<String> {
    let last = *shape.members.last().expect("never empty");
    shape
        .members
        .iter()
        .filter(|&&i| !shape.api_pool || (i == last) == path.starts_with("/api/"))
        .map(|&i| names[i].clone())
        .collect()
}

fn check(initial: Shape, steps: Vec<Step>, seed: u64) -> Result<(), TestCaseError> {
    let mut all = Vec::new();
    let mut sim = Sim::with_config(
        Instant::now(),
        SimConfig {
            seed,
            h1_backends: 3,
            h3_backends: 1,
            ..SimConfig::default()
        },
        |config| {
            all = config.backends.clone();
            apply(config, &all, &initial);
        },
    );
    let names: Vec<String> = all.iter().map(|b| b.id.clone()).collect();
    let client = sim.add_client();
    // For each request: its path, and the backends the configuration of its moment allows.
    // A reload while it is in flight may legitimately let the old or the new set serve it.
    let mut expected: Vec<(String, BTreeSet<String>)> = Vec::new();
    let mut shape = initial;
    for step in steps {
        for _ in 0..step.requests {
            let n = expected.len();
            let path = if n % 2 == 0 {
                format!("/api/{n}")
            } else {
                format!("/web/{n}")
            };
            sim.request(client, SimRequest::new("GET", &path));
            expected.push((path.clone(), allowed(&shape, &path, &names)));
        }
        sim.run_for(step.run_for);
        if let Some(next) = step.reload {
            sim.reload(|config| apply(config, &all, &next));
            // Requests still in flight may be dispatched (or retried) under the new
            // configuration; finished ones and later ones know only one.
            for (i, (path, set)) in expected.iter_mut().enumerate() {
                if !sim.clients[client].response(i).done {
                    set.extend(allowed(&next, path, &names));
                }
            }
            shape = next;
        }
    }
    prop_assert!(
        sim.run_until_done(Duration::from_secs(120)),
        "requests never ended"
    );

    for (i, (path, set)) in expected.iter().enumerate() {
        let response = sim.clients[client].response(i);
        prop_assert_eq!(response.status, 200, "{} {:?}", path, response);
        let backend = response.field("x-backend").unwrap_or_default().to_owned();
        prop_assert!(
            set.contains(&backend),
            "{} went to {} not {:?}",
            path,
            backend,
            set
        );
        prop_assert_eq!(
            String::from_utf8_lossy(&response.body),
            format!("{backend} GET {path}")
        );
    }
    // One connection carried everything: no reload dropped it.
    if !expected.is_empty() {
        prop_assert_eq!(sim.core.metrics().connections_accepted, 1);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn reloads_never_lose_or_misroute_a_request(
        initial in shape(),
        steps in proptest::collection::vec(step(), 1..8),
        seed in 0u64..1 << 32,
    ) {
        check(initial, steps, seed)?;
    }
}
