//! Scenarios on the in-memory network: clients, the core and backends, deterministic.

use std::time::{Duration, Instant};

use spooky_core::config::LoadBalancing;
use spooky_core::sim::{Sim, SimConfig, SimRequest, SimResponse};

fn sim(cfg: SimConfig) -> Sim {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Sim::new(Instant::now(), cfg)
}

fn run(s: &mut Sim, limit: Duration) {
    let done = s.run_until_done(limit);
    let pending: Vec<&SimResponse> = s
        .clients
        .iter()
        .flat_map(|c| c.responses())
        .filter(|r| !r.done)
        .collect();
    assert!(
        done,
        "requests did not finish: {pending:?}; metrics {:?}; backends answered {}; in flight: {:#?}",
        s.core.metrics(),
        backend_requests(s),
        s.core.describe_exchanges()
    );
}

/// Requests the backends received whole.
fn backend_requests(s: &Sim) -> u64 {
    s.h1_backends
        .iter()
        .map(|b| b.complete_requests_seen)
        .sum::<u64>()
        + s.h3_backends.iter().map(|b| b.requests).sum::<u64>()
}

fn by_backend<'a>(
    responses: impl Iterator<Item = &'a SimResponse>,
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for r in responses {
        assert_eq!(r.status, 200, "{r:?}");
        *counts
            .entry(r.field("x-backend").unwrap().to_owned())
            .or_insert(0) += 1;
    }
    counts
}

#[test]
fn get_reaches_every_backend_round_robin() {
    let mut s = sim(SimConfig::default());
    let c = s.add_client();
    for i in 0..6 {
        s.request(c, SimRequest::new("GET", &format!("/r{i}")));
    }
    run(&mut s, Duration::from_secs(10));
    let counts = by_backend(s.clients[c].responses());
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&n| n == 2), "{counts:?}");
    let body = &s.clients[c].response(0).body;
    assert_eq!(body, b"h1-0 GET /r0");
}

/// A lossy, reordering network with many clients and body sizes: everything arrives intact.
fn lossy_workload(seed: u64) -> Sim {
    let mut s = sim(SimConfig {
        seed,
        latency: Duration::from_millis(10),
        jitter: Duration::from_millis(8),
        loss_ppm: 30_000,
        ..SimConfig::default()
    });
    for client in 0..3 {
        let c = s.add_client();
        for i in 0..5 {
            let len = [0usize, 1, 1024, 70_000, 300_000][i];
            let body: Vec<u8> = (0..len).map(|b| (b * 7 + client) as u8).collect();
            let mut req = SimRequest::new("POST", &format!("/c{client}/{i}"))
                .field("content-length", &len.to_string());
            if len > 0 {
                // Split the body into several DATA frames.
                for piece in body.chunks(50_000) {
                    req = req.body(piece.to_vec());
                }
            }
            s.request(c, req);
        }
    }
    run(&mut s, Duration::from_secs(120));
    s
}

#[test]
fn bodies_survive_loss_and_reordering() {
    let s = lossy_workload(7);
    assert!(s.lost > 0, "the network was supposed to lose datagrams");
    for (client, c) in s.clients.iter().enumerate() {
        for (i, r) in c.responses().enumerate() {
            let len = [0usize, 1, 1024, 70_000, 300_000][i];
            assert_eq!(r.status, 200, "client {client} request {i}: {r:?}");
            if len == 0 {
                assert!(r.body.ends_with(format!("POST /c{client}/{i}").as_bytes()));
            } else {
                let expected: Vec<u8> = (0..len).map(|b| (b * 7 + client) as u8).collect();
                assert!(
                    r.body == expected,
                    "client {client} request {i}: body differs"
                );
            }
        }
    }
}

#[test]
fn same_seed_same_transcript() {
    let a = lossy_workload(11);
    let b = lossy_workload(11);
    let c = lossy_workload(12);
    assert_eq!(a.digest(), b.digest(), "two runs with one seed diverged");
    assert_eq!(a.elapsed(), b.elapsed());
    assert_ne!(
        a.digest(),
        c.digest(),
        "a different seed should give a different run"
    );
}

#[test]
fn body_without_content_length_is_chunked_to_http1() {
    let mut s = sim(SimConfig {
        h1_backends: 1,
        h3_backends: 0,
        ..SimConfig::default()
    });
    let c = s.add_client();
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut req = SimRequest::new("PUT", "/upload");
    for piece in body.chunks(30_000) {
        req = req.body(piece.to_vec());
    }
    s.request(c, req);
    run(&mut s, Duration::from_secs(10));
    let r = s.clients[c].response(0);
    assert_eq!(r.status, 200);
    assert!(r.body == body);
}

#[test]
fn weighted_random_is_seeded() {
    let counts = |seed| {
        let mut s = sim(SimConfig {
            seed,
            load_balancing: LoadBalancing::Random,
            ..SimConfig::default()
        });
        let c = s.add_client();
        for i in 0..30 {
            s.request(c, SimRequest::new("GET", &format!("/{i}")));
        }
        run(&mut s, Duration::from_secs(10));
        by_backend(s.clients[c].responses())
    };
    assert_eq!(counts(3), counts(3));
}

#[test]
fn dead_backend_gets_502_and_others_keep_working() {
    // Without retries and outlier detection, the dead backend's share fails.
    let mut s = Sim::with_config(Instant::now(), SimConfig::default(), |c| {
        c.retries.max_retries = 0;
        c.outlier_detection.enabled = false;
    });
    s.h1_backends[1].up = false;
    let c = s.add_client();
    for i in 0..9 {
        s.request(c, SimRequest::new("GET", &format!("/{i}")));
    }
    run(&mut s, Duration::from_secs(30));
    let statuses: Vec<u16> = s.clients[c].responses().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|&&st| st == 502).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&st| st == 200).count(),
        6,
        "{statuses:?}"
    );
    assert_eq!(s.core.metrics().upstream_failures, 3);
}

#[test]
fn http3_backend_gone_means_502() {
    let mut s = sim(SimConfig {
        h1_backends: 0,
        h3_backends: 1,
        ..SimConfig::default()
    });
    // Nobody answers at the backend's address.
    s.h3_backends.clear();
    let c = s.add_client();
    s.request(c, SimRequest::new("GET", "/"));
    run(&mut s, Duration::from_secs(60));
    let r = s.clients[c].response(0);
    assert!(r.status == 502 || r.status == 504, "{r:?}");
}

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn fields(list: &[(&str, &str)]) -> Fields {
    list.iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

const BASE: [(&str, &str); 4] = [
    (":method", "GET"),
    (":scheme", "https"),
    (":authority", "spooky.sim"),
    (":path", "/"),
];

fn with(extra: &[(&str, &str)]) -> Fields {
    let mut all = fields(&BASE);
    all.extend(fields(extra));
    all
}

/// Every rule of RFC 9114 §4.1.2 / §4.2 / §4.3: the request gets a 400 and no backend sees it.
#[test]
fn malformed_requests_never_reach_a_backend() {
    let cases: Vec<(&str, Fields, Vec<Vec<u8>>)> = vec![
        ("uppercase field name", with(&[("X-Upper", "1")]), vec![]),
        ("space in field name", with(&[("bad name", "1")]), vec![]),
        ("NUL in value", with(&[("x", "a\0b")]), vec![]),
        ("CR in value", with(&[("x", "a\rb")]), vec![]),
        ("LF in value", with(&[("x", "a\nb")]), vec![]),
        (
            "pseudo after regular",
            [fields(&BASE[..3]), fields(&[("x", "1"), (":path", "/")])].concat(),
            vec![],
        ),
        ("unknown pseudo", with(&[(":foo", "bar")]), vec![]),
        (
            "response pseudo in request",
            with(&[(":status", "200")]),
            vec![],
        ),
        ("duplicate :method", with(&[(":method", "POST")]), vec![]),
        ("duplicate :path", with(&[(":path", "/again")]), vec![]),
        ("missing :method", fields(&BASE[1..]), vec![]),
        (
            "missing :scheme",
            fields(&[BASE[0], BASE[2], BASE[3]]),
            vec![],
        ),
        ("missing :path", fields(&BASE[..3]), vec![]),
        (
            "missing authority",
            fields(&[BASE[0], BASE[1], BASE[3]]),
            vec![],
        ),
        (
            "empty :path",
            fields(&[BASE[0], BASE[1], BASE[2], (":path", "")]),
            vec![],
        ),
        (
            "userinfo in :authority",
            fields(&[BASE[0], BASE[1], (":authority", "user@spooky.sim"), BASE[3]]),
            vec![],
        ),
        ("connection", with(&[("connection", "keep-alive")]), vec![]),
        ("keep-alive", with(&[("keep-alive", "timeout=5")]), vec![]),
        (
            "proxy-connection",
            with(&[("proxy-connection", "close")]),
            vec![],
        ),
        (
            "transfer-encoding",
            with(&[("transfer-encoding", "chunked")]),
            vec![],
        ),
        ("upgrade", with(&[("upgrade", "websocket")]), vec![]),
        ("te other than trailers", with(&[("te", "gzip")]), vec![]),
        (
            "host disagrees with :authority",
            with(&[("host", "elsewhere.example")]),
            vec![],
        ),
        (
            "unparsable content-length",
            with(&[("content-length", "ten")]),
            vec![],
        ),
        (
            "content-length list that disagrees",
            with(&[("content-length", "1, 2")]),
            vec![],
        ),
        (
            "body shorter than content-length",
            with(&[("content-length", "10")]),
            vec![b"short".to_vec()],
        ),
        (
            "body longer than content-length",
            with(&[("content-length", "3")]),
            vec![b"too long".to_vec()],
        ),
        (
            "CONNECT with :path",
            fields(&[
                (":method", "CONNECT"),
                (":authority", "a:443"),
                (":path", "/"),
            ]),
            vec![],
        ),
    ];
    for (name, fields, body) in cases {
        let mut s = sim(SimConfig::default());
        let c = s.add_client();
        s.request(
            c,
            SimRequest {
                fields,
                body,
                prefix: Vec::new(),
            },
        );
        run(&mut s, Duration::from_secs(10));
        let r = s.clients[c].response(0);
        assert_eq!(r.status, 400, "{name}: {r:?}");
        assert!(
            String::from_utf8_lossy(&r.body).contains("malformed"),
            "{name}: {r:?}"
        );
        assert_eq!(backend_requests(&s), 0, "{name}: a backend saw the request");
        assert_eq!(s.core.metrics().requests_malformed, 1, "{name}");
    }
}

/// Frame-level violations close the connection with the RFC's error code.
#[test]
fn frame_violations_close_the_connection() {
    let data_frame = vec![0x00, 0x01, b'x'];
    let h2_priority_frame = vec![0x02, 0x00];
    let settings_on_request = vec![0x04, 0x00];
    let cases: Vec<(&str, Vec<u8>, Fields, u64)> = vec![
        ("DATA before HEADERS", data_frame, with(&[]), 0x105),
        ("HTTP/2 frame type", h2_priority_frame, with(&[]), 0x105),
        (
            "SETTINGS on a request stream",
            settings_on_request,
            with(&[]),
            0x105,
        ),
    ];
    for (name, prefix, fields, code) in cases {
        let mut s = sim(SimConfig::default());
        let c = s.add_client();
        s.request(
            c,
            SimRequest {
                fields,
                body: Vec::new(),
                prefix,
            },
        );
        run(&mut s, Duration::from_secs(10));
        let r = s.clients[c].response(0);
        assert_eq!(r.connection_error_code, Some(code), "{name}: {r:?}");
        assert_eq!(backend_requests(&s), 0, "{name}: a backend saw the request");
    }
}

#[test]
fn many_concurrent_streams_on_one_connection() {
    let mut s = sim(SimConfig::default());
    let c = s.add_client();
    for i in 0..100 {
        s.request(c, SimRequest::new("GET", &format!("/{i}")));
    }
    run(&mut s, Duration::from_secs(30));
    let counts = by_backend(s.clients[c].responses());
    let total: usize = counts.values().sum();
    assert_eq!(total, 100);
}

#[test]
fn generated_error_for_head_has_no_body() {
    let mut s = sim(SimConfig::default());
    for b in &mut s.h1_backends {
        b.up = false;
    }
    s.h3_backends.clear();
    let c = s.add_client();
    s.request(c, SimRequest::new("HEAD", "/"));
    run(&mut s, Duration::from_secs(60));
    let r = s.clients[c].response(0);
    assert!(r.status >= 500, "{r:?}");
    assert!(r.body.is_empty(), "{r:?}");
}

/// The simulated HTTP/3 backend sends the body even for HEAD, as sloppy servers do: Spooky
/// drops it, and the client gets a complete 200 with the head only.
#[test]
fn content_on_a_head_response_from_an_http3_backend_is_dropped() {
    let mut s = sim(SimConfig {
        h1_backends: 0,
        h3_backends: 1,
        ..SimConfig::default()
    });
    let c = s.add_client();
    s.request(c, SimRequest::new("HEAD", "/"));
    s.request(c, SimRequest::new("GET", "/"));
    run(&mut s, Duration::from_secs(60));
    let head = s.clients[c].response(0);
    assert_eq!(head.status, 200, "{head:?}");
    assert!(head.body.is_empty() && head.reset.is_none(), "{head:?}");
    assert!(head.field("content-length").is_some(), "{head:?}");
    // The connection to the backend is still good.
    let get = s.clients[c].response(1);
    assert_eq!(get.status, 200, "{get:?}");
    assert!(!get.body.is_empty(), "{get:?}");
}

/// A GET whose stream end comes late (its FIN lost and retransmitted, say) is held back until
/// the end arrives, then forwarded as a plain GET: a chunked GET makes some HTTP/1.1 servers
/// reset the connection mid-response. Found as a flaky download across a client port change.
#[test]
fn a_get_waits_for_its_late_stream_end_and_goes_out_without_a_body() {
    let mut s = sim(SimConfig {
        h1_backends: 1,
        h3_backends: 0,
        ..SimConfig::default()
    });
    let c = s.add_client();
    // Something on the connection first, so that other events come and go during the wait.
    s.request(c, SimRequest::new("GET", "/warm-up"));
    run(&mut s, Duration::from_secs(10));
    let late = s.request(c, SimRequest::new("GET", "/late-end"));
    s.hold_end(c, late, true);
    let during = s.request(c, SimRequest::new("GET", "/meanwhile"));
    s.run_for(Duration::from_millis(300));
    assert_eq!(s.clients[c].response(during).status, 200);
    assert!(
        !s.h1_backends[0]
            .seen
            .iter()
            .any(|(_, path)| path == "/late-end"),
        "forwarded before its end: {:?}",
        s.h1_backends[0].seen
    );
    s.hold_end(c, late, false);
    run(&mut s, Duration::from_secs(10));
    assert_eq!(s.clients[c].response(late).status, 200);
    assert_eq!(
        s.h1_backends[0].chunked_requests, 0,
        "a chunked GET went out"
    );
}
