//! Generated traffic against three HTTP/1.1 backends of which up to two fail at generated
//! moments: killed (connections closed, new ones refused), silent (requests accepted, never
//! answered) or answering 503 to everything. With retries on (connect failure, reset or
//! timeout, 503; a per-try timeout):
//! - every request ends;
//! - every GET succeeds, since one backend stays well and retries may go there;
//! - no POST reaches a backend twice: a request that is not safe to repeat is retried only
//!   when nothing of it was sent;
//! - whatever a POST gets back is its own answer or a gateway error;
//! - nothing stays in flight.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::{
    Just, ProptestConfig, TestCaseError, prop_assert, prop_assert_eq, prop_oneof, proptest,
};
use proptest::strategy::Strategy;
use spooky_core::config::LoadBalancing;
use spooky_core::sim::{Sim, SimConfig, SimRequest};

const BACKENDS: usize = 3;

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill,
    Silent,
    Unavailable,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Request { post: bool },
    Fault { backend: usize, fault: Fault },
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        Just(Fault::Kill),
        Just(Fault::Silent),
        Just(Fault::Unavailable)
    ]
}

fn strategy() -> impl Strategy<Value = LoadBalancing> {
    prop_oneof![
        Just(LoadBalancing::RoundRobin),
        Just(LoadBalancing::Random),
        Just(LoadBalancing::LeastRequests),
        Just(LoadBalancing::PowerOfTwoChoices),
        Just(LoadBalancing::Latency),
    ]
}

/// Requests and faults on a timeline (milliseconds from the start), sorted.
fn timeline() -> impl Strategy<Value = Vec<(u64, Action)>> {
    let requests = proptest::collection::vec(
        (0u64..400, proptest::bool::weighted(0.4))
            .prop_map(|(at, post)| (at, Action::Request { post })),
        1..24,
    );
    // Up to two of the three backends fail; the well one is chosen too.
    let faults = (
        0..BACKENDS,
        proptest::collection::vec((0u64..300, fault()), 0..=2),
    )
        .prop_map(|(well, faults)| {
            faults
                .into_iter()
                .enumerate()
                .map(|(k, (at, fault))| {
                    let backend = (well + 1 + k) % BACKENDS;
                    (at, Action::Fault { backend, fault })
                })
                .collect::<Vec<_>>()
        });
    (requests, faults).prop_map(|(mut requests, faults)| {
        requests.extend(faults);
        requests.sort_by_key(|&(at, _)| at);
        requests
    })
}

fn check(
    timeline: Vec<(u64, Action)>,
    strategy: LoadBalancing,
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut sim = Sim::with_config(
        Instant::now(),
        SimConfig {
            seed,
            h1_backends: BACKENDS,
            h3_backends: 0,
            load_balancing: strategy,
            ..SimConfig::default()
        },
        |config| {
            config.retries.on_statuses = vec![503];
            config.retries.per_try_timeout = Some(Duration::from_millis(500));
        },
    );
    let client = sim.add_client();
    let mut methods = Vec::new();
    let mut elapsed = 0;
    for (at, action) in timeline {
        sim.run_for(Duration::from_millis(at - elapsed));
        elapsed = at;
        match action {
            Action::Request { post } => {
                let n = methods.len();
                let request = if post && n % 2 == 0 {
                    SimRequest::new("POST", &format!("/orders/{n}"))
                        .field("content-length", "5")
                        .body(b"order".to_vec())
                } else if post {
                    // Without a body, nothing but the method forbids a repeat.
                    SimRequest::new("POST", &format!("/orders/{n}"))
                } else {
                    SimRequest::new("GET", &format!("/items/{n}"))
                };
                sim.request(client, request);
                methods.push(if post { "POST" } else { "GET" });
            }
            Action::Fault { backend, fault } => match fault {
                Fault::Kill => sim.kill_h1(backend),
                Fault::Silent => sim.h1_backends[backend].silent = true,
                Fault::Unavailable => sim.h1_backends[backend].status = Some(503),
            },
        }
    }
    prop_assert!(
        sim.run_until_done(Duration::from_secs(120)),
        "requests never ended"
    );

    // How many times each request reached a backend whole.
    let mut arrivals: HashMap<String, usize> = HashMap::new();
    for backend in &sim.h1_backends {
        for (_, path) in &backend.seen {
            *arrivals.entry(path.clone()).or_default() += 1;
        }
    }
    for (n, method) in methods.iter().enumerate() {
        let response = sim.clients[client].response(n);
        if *method == "GET" {
            let path = format!("/items/{n}");
            prop_assert_eq!(response.status, 200, "GET {}: {:?}", path, response);
            let backend = response.field("x-backend").unwrap_or_default();
            prop_assert_eq!(
                String::from_utf8_lossy(&response.body),
                format!("{backend} GET {path}")
            );
        } else {
            let path = format!("/orders/{n}");
            let times = arrivals.get(&path).copied().unwrap_or(0);
            prop_assert!(times <= 1, "POST {} reached backends {} times", path, times);
            prop_assert!(
                [200, 502, 503, 504].contains(&response.status),
                "POST {}: {:?}",
                path,
                response
            );
            if response.status == 200 {
                let backend = response.field("x-backend").unwrap_or_default();
                let expected = if n % 2 == 0 {
                    b"order".to_vec()
                } else {
                    format!("{backend} POST {path}").into_bytes()
                };
                prop_assert_eq!(&response.body, &expected);
            }
        }
    }
    prop_assert_eq!(sim.core.metrics().exchanges_open, 0, "left in flight");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn gets_survive_failing_backends_and_posts_are_never_repeated(
        timeline in timeline(),
        strategy in strategy(),
        seed in 0u64..1 << 32,
    ) {
        check(timeline, strategy, seed)?;
    }
}
