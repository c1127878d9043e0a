//! Scenarios on the in-memory network: clients, the core and backends, deterministic.

use std::time::{Duration, Instant};

use spooky_core::sim::{Sim, SimConfig, SimRequest};

fn sim(cfg: SimConfig) -> Sim {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Sim::new(Instant::now(), cfg)
}

#[test]
fn get_reaches_every_backend_round_robin() {
    let mut s = sim(SimConfig::default());
    let c = s.add_client();
    for i in 0..6 {
        s.request(c, SimRequest::new("GET", &format!("/r{i}")));
    }
    let done = s.run_until_done(Duration::from_secs(10));
    assert!(done, "requests did not finish: {:?}", s.clients[c].responses().collect::<Vec<_>>());
    let mut by_backend = std::collections::BTreeMap::new();
    for r in s.clients[c].responses() {
        assert_eq!(r.status, 200, "{r:?}");
        *by_backend.entry(r.field("x-backend").unwrap().to_owned()).or_insert(0) += 1;
    }
    assert_eq!(by_backend.len(), 3, "{by_backend:?}");
    assert!(by_backend.values().all(|&n| n == 2), "{by_backend:?}");
}
