//! Clients that give up: generated uploads and downloads of assorted sizes, some cancelled
//! (stream reset and STOP_SENDING) at a generated moment, before, during or after the
//! backend's answer, with an HTTP/1.1 or an HTTP/3 backend. Afterwards:
//! - every request that was not cancelled got its own body back, whole;
//! - nothing is left in flight in the core, and the HTTP/1.1 backend holds no half
//!   request on a connection Spooky kept open;
//! - a request after all of them is answered correctly (no connection was reused in a
//!   state that mixes it up with a cancelled one).

use std::time::{Duration, Instant};

use proptest::prelude::{
    Just, ProptestConfig, TestCaseError, prop_assert, prop_assert_eq, prop_oneof, proptest,
};
use proptest::strategy::Strategy;
use spooky_core::sim::{Sim, SimConfig, SimRequest};

#[derive(Debug, Clone, Copy)]
enum Backend {
    Http1,
    Http3,
}

/// One upload (echoed back, so also a download) and when, if ever, it is cancelled.
#[derive(Debug, Clone)]
struct Plan {
    body_len: usize,
    cancel_at: Option<Duration>,
}

fn plan() -> impl Strategy<Value = Plan> {
    let body_len = prop_oneof![
        Just(0usize),
        Just(1),
        Just(1_500),
        Just(40_000),
        Just(300_000)
    ];
    // The links add 5 ms each way: 0-60 ms covers the request's way out, the backend's
    // answer and the response's way back.
    let cancel_at = proptest::option::weighted(0.6, (0u64..60).prop_map(Duration::from_millis));
    (body_len, cancel_at).prop_map(|(body_len, cancel_at)| Plan {
        body_len,
        cancel_at,
    })
}

/// A body whose bytes say which request and offset they belong to.
fn body(request: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + request * 7) as u8).collect()
}

fn upload(request: usize, len: usize) -> SimRequest {
    let mut r = SimRequest::new("POST", &format!("/upload/{request}"));
    if len > 0 {
        r = r.field("content-length", &len.to_string());
        r.body = body(request, len)
            .chunks(16 * 1024)
            .map(<[u8]>::to_vec)
            .collect();
    }
    r
}

fn check(kind: Backend, plans: Vec<Plan>, seed: u64) -> Result<(), TestCaseError> {
    let (h1, h3) = match kind {
        Backend::Http1 => (1, 0),
        Backend::Http3 => (0, 1),
    };
    let mut sim = Sim::new(
        Instant::now(),
        SimConfig {
            seed,
            h1_backends: h1,
            h3_backends: h3,
            ..SimConfig::default()
        },
    );
    let client = sim.add_client();
    for (i, plan) in plans.iter().enumerate() {
        sim.request(client, upload(i, plan.body_len));
    }
    let mut cancels: Vec<(Duration, usize)> = plans
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.cancel_at.map(|at| (at, i)))
        .collect();
    cancels.sort();
    let mut elapsed = Duration::ZERO;
    for (at, i) in cancels {
        sim.run_for(at - elapsed);
        elapsed = at;
        sim.cancel(client, i);
    }
    prop_assert!(
        sim.run_until_done(Duration::from_secs(60)),
        "requests never ended"
    );
    sim.run_for(Duration::from_secs(2));

    for (i, plan) in plans.iter().enumerate() {
        let response = sim.clients[client].response(i);
        if response.cancelled {
            continue;
        }
        prop_assert_eq!(response.status, 200, "request {}: {:?}", i, response.reset);
        if plan.body_len > 0 {
            prop_assert!(
                response.body == body(i, plan.body_len),
                "request {}: {} bytes back of {}",
                i,
                response.body.len(),
                plan.body_len
            );
        }
    }
    prop_assert_eq!(sim.core.metrics().exchanges_open, 0, "left in flight");
    if let Backend::Http1 = kind {
        prop_assert_eq!(
            sim.h1_backends[0].unparsed_input(),
            0,
            "a half request on a connection Spooky kept"
        );
    }

    // One more, after everything.
    let last = plans.len();
    let index = sim.request(client, upload(last, 10_000));
    prop_assert!(
        sim.run_until_done(Duration::from_secs(60)),
        "the last request never ended"
    );
    let response = sim.clients[client].response(index);
    prop_assert_eq!(response.status, 200);
    prop_assert!(
        response.body == body(last, 10_000),
        "the last request's body came back wrong"
    );
    prop_assert_eq!(sim.core.metrics().exchanges_open, 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn cancelled_requests_leave_nothing_behind_with_http1_backends(
        plans in proptest::collection::vec(plan(), 1..6),
        seed in 0u64..1 << 32,
    ) {
        check(Backend::Http1, plans, seed)?;
    }

    #[test]
    fn cancelled_requests_leave_nothing_behind_with_http3_backends(
        plans in proptest::collection::vec(plan(), 1..6),
        seed in 0u64..1 << 32,
    ) {
        check(Backend::Http3, plans, seed)?;
    }
}
