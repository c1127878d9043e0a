//! Balancing and resilience on the in-memory network: retries, health checks, outlier
//! detection, circuit breakers, hashing. Deterministic and fast; the same stories over real
//! sockets live in the spooky package's tests.

use std::time::{Duration, Instant};

use spooky_core::config::{Config, HashKey, HealthCheck, InitialHealth, LoadBalancing, PoolConfig};
use spooky_core::sim::{Sim, SimConfig, SimRequest, SimResponse};

fn sim(cfg: SimConfig, tweak: impl FnOnce(&mut Config)) -> Sim {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Sim::with_config(Instant::now(), cfg, tweak)
}

fn h1_only(n: usize) -> SimConfig {
    SimConfig {
        h1_backends: n,
        h3_backends: 0,
        ..SimConfig::default()
    }
}

fn run(s: &mut Sim, limit: Duration) {
    let done = s.run_until_done(limit);
    assert!(
        done,
        "requests did not finish; in flight: {:#?}",
        s.core.describe_exchanges()
    );
}

fn statuses(s: &Sim, c: usize) -> Vec<u16> {
    s.clients[c].responses().map(|r| r.status).collect()
}

fn health_check(interval_ms: u64) -> HealthCheck {
    HealthCheck {
        path: "/health".into(),
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(interval_ms / 2),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
        expected_status: (200, 399),
        initial: InitialHealth::Healthy,
    }
}

#[test]
fn connect_failures_are_retried_on_another_backend() {
    let mut s = sim(h1_only(3), |_| {});
    s.h1_backends[1].up = false;
    let c = s.add_client();
    for i in 0..30 {
        s.request(c, SimRequest::new("GET", &format!("/{i}")));
    }
    // A POST with a body is safe to retry when nothing reached the backend.
    s.request(
        c,
        SimRequest::new("POST", "/upload")
            .field("content-length", "5")
            .body(b"hello".to_vec()),
    );
    run(&mut s, Duration::from_secs(30));
    assert!(
        statuses(&s, c).iter().all(|&st| st == 200),
        "{:?}",
        statuses(&s, c)
    );
    let m = s.core.metrics();
    assert!(m.retries >= 5, "{m:?}");
    assert_eq!(s.h1_backends[1].requests, 0);
    // Five consecutive failures ejected it.
    assert_eq!(m.ejections, 1, "{m:?}");
    let status = s.core.backends();
    assert!(status[1].ejected && !status[1].available, "{status:?}");
}

#[test]
fn a_backend_killed_mid_request_costs_no_idempotent_request() {
    let mut s = sim(h1_only(3), |_| {});
    // A backend that never answers, then dies while holding requests.
    s.h1_backends[0].silent = true;
    let c = s.add_client();
    for i in 0..9 {
        s.request(c, SimRequest::new("GET", &format!("/{i}")));
    }
    s.run_for(Duration::from_millis(200));
    s.kill_h1(0);
    run(&mut s, Duration::from_secs(30));
    assert!(
        statuses(&s, c).iter().all(|&st| st == 200),
        "{:?}",
        statuses(&s, c)
    );
    assert!(s.core.metrics().retries >= 3);
}

#[test]
fn silent_backend_times_out_with_504_then_is_ejected() {
    let mut s = sim(h1_only(3), |c| {
        c.retries.max_retries = 0;
        c.timeouts.response_headers = Duration::from_millis(500);
        c.outlier_detection.consecutive_failures = 3;
    });
    s.h1_backends[2].silent = true;
    let c = s.add_client();
    for i in 0..30 {
        s.request(c, SimRequest::new("GET", &format!("/{i}")));
        run(&mut s, Duration::from_secs(60));
    }
    let st = statuses(&s, c);
    let timeouts = st.iter().filter(|&&x| x == 504).count();
    assert_eq!(timeouts, 3, "{st:?}");
    assert_eq!(st.iter().filter(|&&x| x == 200).count(), 27, "{st:?}");
    assert!(s.core.backends()[2].ejected);
    // The 504s came at the configured timeout, not earlier.
    assert!(s.elapsed() >= Duration::from_millis(500));
}

#[test]
fn silent_backend_is_retried_elsewhere_when_retries_are_on() {
    let mut s = sim(h1_only(3), |c| {
        c.retries.per_try_timeout = Some(Duration::from_millis(300));
    });
    s.h1_backends[2].silent = true;
    let c = s.add_client();
    for i in 0..12 {
        s.request(c, SimRequest::new("GET", &format!("/{i}")));
    }
    run(&mut s, Duration::from_secs(60));
    assert!(
        statuses(&s, c).iter().all(|&st| st == 200),
        "{:?}",
        statuses(&s, c)
    );
}

#[test]
fn backend_answering_503_is_ejected_and_the_pool_keeps_serving() {
    let mut s = sim(h1_only(3), |_| {});
    s.h1_backends[0].status = Some(503);
    let c = s.add_client();
    // Sequential requests, so the order of responses is the order of picks.
    for i in 0..60 {
        s.request(c, SimRequest::new("GET", &format!("/{i}")));
        run(&mut s, Duration::from_secs(10));
    }
    let st = statuses(&s, c);
    let failed = st.iter().filter(|&&x| x == 503).count();
    assert_eq!(failed, 5, "five 5xx in a row eject it: {st:?}");
    assert!(st[30..].iter().all(|&x| x == 200), "{st:?}");
    assert!(s.core.backends()[0].ejected);
}

#[test]
fn configured_statuses_are_retried() {
    let mut s = sim(h1_only(3), |c| {
        c.retries.on_statuses = vec![503];
    });
    s.h1_backends[0].status = Some(503);
    let c = s.add_client();
    for i in 0..30 {
        s.request(c, SimRequest::new("GET", &format!("/{i}")));
    }
    run(&mut s, Duration::from_secs(30));
    assert!(
        statuses(&s, c).iter().all(|&st| st == 200),
        "{:?}",
        statuses(&s, c)
    );
}

#[test]
fn health_checks_take_a_dead_backend_out_and_bring_it_back() {
    let mut s = sim(h1_only(3), |c| {
        for b in &mut c.backends {
            b.health_check = Some(health_check(1000));
        }
        c.outlier_detection.enabled = false;
        c.retries.max_retries = 0;
    });
    s.run_for(Duration::from_secs(3));
    assert!(s.core.backends().iter().all(|b| b.healthy));
    s.kill_h1(1);
    // Two failed probes, about a second apart.
    s.run_for(Duration::from_millis(2500));
    assert!(!s.core.backends()[1].healthy, "{:?}", s.core.backends());
    let c = s.add_client();
    for i in 0..20 {
        s.request(c, SimRequest::new("GET", &format!("/{i}")));
    }
    run(&mut s, Duration::from_secs(10));
    assert!(statuses(&s, c).iter().all(|&st| st == 200));
    s.h1_backends[1].up = true;
    s.run_for(Duration::from_millis(2500));
    assert!(s.core.backends()[1].healthy, "{:?}", s.core.backends());
    let before = s.h1_backends[1].requests;
    for i in 0..30 {
        s.request(c, SimRequest::new("GET", &format!("/again/{i}")));
    }
    run(&mut s, Duration::from_secs(10));
    assert!(s.h1_backends[1].requests >= before + 10);
    assert!(s.core.metrics().health_transitions >= 2);
}

#[test]
fn unknown_backends_wait_for_their_first_probe() {
    let mut s = sim(h1_only(2), |c| {
        for b in &mut c.backends {
            let mut hc = health_check(1000);
            hc.initial = InitialHealth::Unknown;
            b.health_check = Some(hc);
        }
    });
    assert!(s.core.backends().iter().all(|b| !b.available));
    s.run_for(Duration::from_millis(500));
    assert!(
        s.core.backends().iter().all(|b| b.available),
        "{:?}",
        s.core.backends()
    );
}

#[test]
fn all_backends_down_gives_fast_503_without_leaks_and_recovers() {
    let mut s = sim(h1_only(2), |c| {
        for b in &mut c.backends {
            b.health_check = Some(health_check(500));
        }
    });
    s.kill_h1(0);
    s.kill_h1(1);
    s.run_for(Duration::from_secs(2));
    assert!(s.core.backends().iter().all(|b| !b.available));
    let c = s.add_client();
    s.run_for(Duration::from_millis(200));
    let start = s.elapsed();
    for i in 0..50 {
        s.request(c, SimRequest::new("GET", &format!("/{i}")));
    }
    run(&mut s, Duration::from_secs(10));
    assert!(
        statuses(&s, c).iter().all(|&st| st == 503),
        "{:?}",
        statuses(&s, c)
    );
    // One round trip to the client, nothing more.
    assert!(
        s.elapsed() - start < Duration::from_millis(50),
        "{:?}",
        s.elapsed() - start
    );
    assert_eq!(s.core.metrics().exchanges_open, 0);
    s.h1_backends[0].up = true;
    s.run_for(Duration::from_secs(2));
    for i in 0..4 {
        s.request(c, SimRequest::new("GET", &format!("/back/{i}")));
    }
    run(&mut s, Duration::from_secs(10));
    assert!(statuses(&s, c)[50..].iter().all(|&st| st == 200));
}

#[test]
fn circuit_breaker_overflow_is_an_immediate_503() {
    let mut s = sim(h1_only(1), |c| {
        c.circuit_breaker.max_requests = 2;
        c.retries.max_retries = 0;
    });
    s.h1_backends[0].silent = true;
    let c = s.add_client();
    for i in 0..5 {
        s.request(c, SimRequest::new("GET", &format!("/{i}")));
    }
    s.run_for(Duration::from_millis(100));
    let overflowed: Vec<&SimResponse> = s.clients[c].responses().filter(|r| r.done).collect();
    assert_eq!(overflowed.len(), 3);
    assert!(overflowed.iter().all(|r| r.status == 503));
    assert_eq!(s.core.metrics().circuit_breaker_overflow, 3);
}

#[test]
fn consistent_hashing_keeps_a_key_on_one_backend() {
    let mut s = sim(
        SimConfig {
            load_balancing: LoadBalancing::ConsistentHash(HashKey::Header("x-user".into())),
            ..h1_only(4)
        },
        |_| {},
    );
    let c = s.add_client();
    for user in 0..8 {
        for i in 0..5 {
            s.request(
                c,
                SimRequest::new("GET", &format!("/{user}/{i}"))
                    .field("x-user", &format!("user-{user}")),
            );
        }
    }
    run(&mut s, Duration::from_secs(30));
    let responses: Vec<&SimResponse> = s.clients[c].responses().collect();
    let mut backends_used = std::collections::BTreeSet::new();
    for user in 0..8 {
        let chosen: std::collections::BTreeSet<&str> = responses[user * 5..user * 5 + 5]
            .iter()
            .map(|r| r.field("x-backend").unwrap())
            .collect();
        assert_eq!(chosen.len(), 1, "user {user} went to {chosen:?}");
        backends_used.extend(chosen);
    }
    assert!(backends_used.len() >= 2);
}

#[test]
fn every_strategy_serves_traffic() {
    for lb in [
        LoadBalancing::RoundRobin,
        LoadBalancing::WeightBased,
        LoadBalancing::Random,
        LoadBalancing::LeastRequests,
        LoadBalancing::PowerOfTwoChoices,
        LoadBalancing::ConsistentHash(HashKey::Path),
        LoadBalancing::Latency,
    ] {
        let mut s = sim(
            SimConfig {
                load_balancing: lb.clone(),
                ..SimConfig::default()
            },
            |_| {},
        );
        let c = s.add_client();
        for i in 0..30 {
            s.request(c, SimRequest::new("GET", &format!("/{i}")));
        }
        run(&mut s, Duration::from_secs(30));
        assert!(statuses(&s, c).iter().all(|&st| st == 200), "{lb:?}");
    }
}

#[test]
fn runs_with_probes_and_retries_are_deterministic() {
    let run_once = || {
        let mut s = sim(
            SimConfig {
                loss_ppm: 20_000,
                jitter: Duration::from_millis(3),
                ..SimConfig::default()
            },
            |c| {
                for b in &mut c.backends {
                    b.health_check = Some(health_check(700));
                }
            },
        );
        s.h1_backends[1].up = false;
        let c = s.add_client();
        for i in 0..20 {
            s.request(c, SimRequest::new("GET", &format!("/{i}")));
        }
        run(&mut s, Duration::from_secs(30));
        s.run_for(Duration::from_secs(3));
        s.digest()
    };
    assert_eq!(run_once(), run_once());
}

#[test]
fn reload_swaps_backends_without_dropping_connections() {
    let mut s = sim(h1_only(3), |c| {
        // Start with the first two; the third joins on reload.
        c.backends.truncate(2);
    });
    let c = s.add_client();
    for i in 0..4 {
        s.request(c, SimRequest::new("GET", &format!("/before/{i}")));
    }
    run(&mut s, Duration::from_secs(10));
    // A request in flight to the backend that is about to be removed.
    s.h1_backends[0].silent = true;
    s.request(c, SimRequest::new("GET", "/in-flight"));
    s.run_for(Duration::from_millis(100));

    let third = s.core.config().backends[0].clone();
    s.reload(|config| {
        let mut added = third;
        added.id = "h1-2".into();
        added.address = "10.3.0.3:80".parse().unwrap();
        config.backends.remove(0);
        config.backends.push(added);
        config.load_balancing = LoadBalancing::LeastRequests;
    });
    let status = s.core.backends();
    assert_eq!(
        status.len(),
        3,
        "retired backends keep their place: {status:?}"
    );
    assert!(!status[0].available, "{status:?}");
    assert!(status[1].available && status[2].available, "{status:?}");

    for i in 0..20 {
        s.request(c, SimRequest::new("GET", &format!("/after/{i}")));
    }
    s.run_for(Duration::from_secs(2));
    // The removed backend now answers what it holds.
    s.h1_backends[0].silent = false;
    run(&mut s, Duration::from_secs(40));
    let responses: Vec<&SimResponse> = s.clients[c].responses().collect();
    assert!(
        responses
            .iter()
            .all(|r| r.status == 200 && r.connection_error.is_none()),
        "{responses:?}"
    );
    let after: std::collections::BTreeSet<&str> = responses[5..]
        .iter()
        .map(|r| r.field("x-backend").unwrap())
        .collect();
    assert_eq!(
        after,
        ["h1-1", "h1-2"].into_iter().collect(),
        "new requests go to the new set"
    );
    assert_eq!(
        s.core.metrics().connections_accepted,
        1,
        "the client kept its connection"
    );
}

/// Moves the backends from `first` on out of the default pool into a round-robin pool
/// named "api".
fn move_to_api_pool(c: &mut Config, first: usize) {
    let api = c.backends.split_off(first);
    c.pools.push(PoolConfig {
        name: "api".into(),
        backends: api,
        load_balancing: LoadBalancing::RoundRobin,
    });
}

#[test]
fn routes_send_requests_to_pools_and_rewrite_them() {
    use spooky_core::config::{HeaderEdits, Route};
    let mut s = sim(h1_only(4), |c| {
        move_to_api_pool(c, 2);
        c.routes = vec![
            Route {
                host: Some("*.api.sim".into()),
                pool: "api".into(),
                ..Route::default()
            },
            Route {
                path_prefix: Some("/v2/".into()),
                pool: "api".into(),
                strip_prefix: Some("/v2".into()),
                response_headers: HeaderEdits {
                    set: vec![("x-route".into(), "v2".into())],
                    remove: vec!["x-backend".into()],
                },
                ..Route::default()
            },
            Route {
                headers: vec![("x-canary".into(), "1".into())],
                pool: "api".into(),
                ..Route::default()
            },
        ];
    });
    let c = s.add_client();
    let by_host = |host: &str| {
        let mut r = SimRequest::new("GET", "/hosted");
        r.fields[2].1 = host.as_bytes().to_vec();
        r
    };
    s.request(c, by_host("eu.api.sim:443"));
    s.request(c, by_host("api.sim"));
    s.request(c, SimRequest::new("GET", "/v2/users?id=7"));
    s.request(c, SimRequest::new("GET", "/v2"));
    s.request(c, SimRequest::new("GET", "/plain").field("x-canary", "1"));
    s.request(c, SimRequest::new("GET", "/plain").field("x-canary", "0"));
    run(&mut s, Duration::from_secs(10));
    let r: Vec<&SimResponse> = s.clients[c].responses().collect();
    let backend = |i: usize| r[i].field("x-backend").unwrap_or("-").to_owned();
    assert!(
        backend(0).starts_with("h1-2") || backend(0).starts_with("h1-3"),
        "wildcard host: {:?}",
        r[0]
    );
    assert!(
        ["h1-0", "h1-1"].contains(&backend(1).as_str()),
        "a bare api.sim is not *.api.sim: {:?}",
        r[1]
    );
    // The prefix is stripped before forwarding; the response is edited.
    assert!(
        r[2].body.ends_with(b"GET /users?id=7"),
        "{:?}",
        String::from_utf8_lossy(&r[2].body)
    );
    assert_eq!(r[2].field("x-route"), Some("v2"));
    assert_eq!(r[2].field("x-backend"), None);
    assert!(
        r[3].body.ends_with(b"GET /v2"),
        "/v2 does not match /v2/: {:?}",
        String::from_utf8_lossy(&r[3].body)
    );
    assert!(
        ["h1-2", "h1-3"].contains(&backend(4).as_str()),
        "{:?}",
        r[4]
    );
    assert!(
        ["h1-0", "h1-1"].contains(&backend(5).as_str()),
        "{:?}",
        r[5]
    );
}

#[test]
fn reload_moves_a_route_to_another_pool() {
    use spooky_core::config::Route;
    let mut s = sim(h1_only(3), |c| {
        let blue = c.backends.split_off(2);
        c.pools.push(PoolConfig {
            name: "blue".into(),
            backends: blue,
            load_balancing: LoadBalancing::Random,
        });
    });
    let c = s.add_client();
    for i in 0..4 {
        s.request(c, SimRequest::new("GET", &format!("/app/{i}")));
    }
    run(&mut s, Duration::from_secs(10));
    s.reload(|config| {
        config.routes.push(Route {
            path_prefix: Some("/app/".into()),
            pool: "blue".into(),
            ..Route::default()
        });
    });
    for i in 0..4 {
        s.request(c, SimRequest::new("GET", &format!("/app/again/{i}")));
    }
    run(&mut s, Duration::from_secs(10));
    let names: Vec<String> = s.clients[c]
        .responses()
        .map(|r| r.field("x-backend").unwrap().to_owned())
        .collect();
    assert!(
        names[..4].iter().all(|n| n == "h1-0" || n == "h1-1"),
        "{names:?}"
    );
    assert!(names[4..].iter().all(|n| n == "h1-2"), "{names:?}");
    assert_eq!(s.core.metrics().connections_accepted, 1);
}

/// `max_ejection_percent` counts within the failing backend's own pool: the only backend of
/// a named pool is never ejected at 50%, however many backends the default pool has.
#[test]
fn ejection_limit_is_per_pool() {
    use spooky_core::config::Route;
    let mut s = sim(h1_only(3), |c| {
        move_to_api_pool(c, 2);
        c.routes = vec![Route {
            path_prefix: Some("/api/".into()),
            pool: "api".into(),
            ..Route::default()
        }];
    });
    s.h1_backends[2].status = Some(503);
    let c = s.add_client();
    for i in 0..20 {
        s.request(c, SimRequest::new("GET", &format!("/api/{i}")));
        run(&mut s, Duration::from_secs(10));
    }
    // Every answer is the backend's own 503, not Spooky's "no backend available".
    let answered_by: Vec<String> = s.clients[c]
        .responses()
        .map(|r| r.field("x-backend").unwrap_or("spooky").to_owned())
        .collect();
    assert!(
        answered_by.iter().all(|b| b.starts_with("h1-2")),
        "{answered_by:?}"
    );
    assert!(!s.core.backends()[2].ejected, "{:?}", s.core.backends());
}

/// Spooky's own 503 for a routed request whose pool has nothing to offer carries the route's
/// response edits, like the backend's answers before it.
#[test]
fn a_routed_503_from_spooky_carries_the_response_edits() {
    use spooky_core::config::{HeaderEdits, Route};
    let mut s = sim(h1_only(3), |c| {
        move_to_api_pool(c, 2);
        c.routes = vec![Route {
            path_prefix: Some("/api/".into()),
            pool: "api".into(),
            response_headers: HeaderEdits {
                set: vec![("x-route".into(), "api".into())],
                remove: vec![],
            },
            ..Route::default()
        }];
        c.outlier_detection.max_ejection_percent = 100;
    });
    s.h1_backends[2].status = Some(503);
    let c = s.add_client();
    for i in 0..8 {
        s.request(c, SimRequest::new("GET", &format!("/api/{i}")));
        run(&mut s, Duration::from_secs(10));
    }
    assert!(s.core.backends()[2].ejected, "{:?}", s.core.backends());
    let responses: Vec<&SimResponse> = s.clients[c].responses().collect();
    let last = responses.last().expect("responses");
    assert_eq!(last.status, 503);
    assert_eq!(
        last.field("x-backend"),
        None,
        "answered by Spooky: {last:?}"
    );
    assert!(
        responses.iter().all(|r| r.field("x-route") == Some("api")),
        "{responses:?}"
    );
}
