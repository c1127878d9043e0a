//! Generated HTTP/3 requests, well-formed and not, through a client, the core and an
//! HTTP/1.1 or HTTP/3 backend in the simulator, over a clean or a lossy, reordering network.
//! Whatever the client sends:
//! - the request ends (answered, reset or closed);
//! - one HTTP/3 request is never more than one HTTP/1.1 request at the backend, and the
//!   backend holds no bytes that frame as no request (no request smuggling);
//! - a field section that request validation rejects sends no byte to the backend;
//! - a valid request with a consistent body reaches the backend once, and the body the
//!   backend echoes is the body the client sent.
//!
//! The fuzz target `proxied_request` asserts the same over arbitrary bytes.

use std::time::{Duration, Instant};

use proptest::prelude::{
    Just, ProptestConfig, TestCaseError, prop_assert, prop_assert_eq, prop_oneof, proptest,
};
use proptest::strategy::Strategy;
use spooky_core::fields::FieldSection;
use spooky_core::h3::message::{Method, validate_request};
use spooky_core::sim::{Sim, SimConfig, SimRequest};

/// Values an attacker would try, plus arbitrary printable text with CR, LF, NUL and tabs.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"0".to_vec()),
        Just(b"5".to_vec()),
        Just(b"5, 5".to_vec()),
        Just(b"chunked".to_vec()),
        Just(b"trailers".to_vec()),
        Just(b"close".to_vec()),
        Just(b"spooky.sim".to_vec()),
        Just(b"x\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n".to_vec()),
        Just(b"1\r\ncontent-length: 0".to_vec()),
        "[ -~\t\r\n\0]{0,12}".prop_map(String::into_bytes),
    ]
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"content-length".to_vec()),
        Just(b"transfer-encoding".to_vec()),
        Just(b"te".to_vec()),
        Just(b"connection".to_vec()),
        Just(b"host".to_vec()),
        Just(b"upgrade".to_vec()),
        Just(b"cookie".to_vec()),
        Just(b"x-forwarded-for".to_vec()),
        Just(b"Content-Length".to_vec()),
        Just(b":path".to_vec()),
        Just(b":protocol".to_vec()),
        Just(b"x-a\r\nx-b".to_vec()),
        "[a-z-]{1,8}".prop_map(String::into_bytes),
        "[ -~]{0,6}".prop_map(String::into_bytes),
    ]
}

fn method() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"GET".to_vec()),
        Just(b"POST".to_vec()),
        Just(b"PUT".to_vec()),
        Just(b"HEAD".to_vec()),
        Just(b"DELETE".to_vec()),
        Just(b"CONNECT".to_vec()),
        Just(b"G T".to_vec()),
        Just(b"GET /x HTTP/1.1\r\n".to_vec()),
    ]
}

fn path() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"/".to_vec()),
        Just(b"/a/b?c=d".to_vec()),
        Just(b"/echo".to_vec()),
        Just(b"*".to_vec()),
        Just(Vec::new()),
        Just(b"/x HTTP/1.1\r\nhost: evil\r\n\r\nGET /y".to_vec()),
        "/[ -~]{0,10}".prop_map(String::into_bytes),
    ]
}

/// Either a well-formed request (perhaps with a wrong content-length) or a hostile one.
fn request() -> impl Strategy<Value = SimRequest> {
    prop_oneof![2 => clean_request(), 3 => hostile_request()]
}

/// Valid pseudo-headers, harmless fields, a body and a content-length that matches it, is
/// off by one, or is absent.
fn clean_request() -> impl Strategy<Value = SimRequest> {
    let method = prop_oneof![
        Just("GET"),
        Just("POST"),
        Just("PUT"),
        Just("HEAD"),
        Just("DELETE")
    ];
    let path = prop_oneof![Just("/"), Just("/echo"), Just("/a/b?c=d")];
    let fields = proptest::collection::vec(("x-[a-z]{1,6}", "[!-~]([ -~]{0,10}[!-~])?"), 0..4);
    let body = proptest::collection::vec(proptest::collection::vec(0u8..=255, 1..300), 0..4);
    let length = prop_oneof![Just(None), Just(Some(0i64)), Just(Some(1)), Just(Some(-1))];
    (method, path, fields, body, length).prop_map(|(method, path, fields, body, length)| {
        let mut request = SimRequest::new(method, path);
        for (name, value) in fields {
            request = request.field(&name, &value);
        }
        let total = body.iter().map(Vec::len).sum::<usize>() as i64;
        if let Some(delta) = length
            && total + delta >= 0
        {
            request = request.field("content-length", &(total + delta).to_string());
        }
        request.body = body;
        request
    })
}

/// Pseudo-headers in order or not, fields an attacker would send, body pieces.
fn hostile_request() -> impl Strategy<Value = SimRequest> {
    let pseudo = (method(), path(), proptest::bool::weighted(0.9)).prop_map(|(m, p, authority)| {
        let mut fields = vec![
            (b":method".to_vec(), m),
            (b":scheme".to_vec(), b"https".to_vec()),
        ];
        if authority {
            fields.push((b":authority".to_vec(), b"spooky.sim".to_vec()));
        }
        fields.push((b":path".to_vec(), p));
        fields
    });
    let extra = proptest::collection::vec((name(), value()), 0..4);
    let body = proptest::collection::vec(proptest::collection::vec(0u8..=255, 0..24), 0..3);
    (pseudo, extra, body, proptest::bool::weighted(0.2)).prop_map(
        |(mut fields, extra, body, shuffle)| {
            if shuffle {
                // A regular field before a pseudo-header: malformed.
                fields.insert(1, (b"x-early".to_vec(), b"1".to_vec()));
            }
            fields.extend(extra);
            SimRequest {
                fields,
                body,
                prefix: Vec::new(),
            }
        },
    )
}

/// The simulated network: clean, or losing 3% of datagrams and reordering them.
#[derive(Debug, Clone, Copy)]
struct Network {
    seed: u64,
    lossy: bool,
}

fn network() -> impl Strategy<Value = Network> {
    (0u64..1 << 32, proptest::bool::weighted(0.3)).prop_map(|(seed, lossy)| Network { seed, lossy })
}

/// Which backend the simulated pool has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Http1,
    Http3,
}

/// Sends `request` through a one-backend simulation and checks everything the module
/// promises.
fn check(request: SimRequest, kind: Backend, network: Network) -> Result<(), TestCaseError> {
    let mut section = FieldSection::new();
    for (name, value) in &request.fields {
        section.push(name, value);
    }
    let verdict = validate_request(section);
    let body: Vec<u8> = request.body.concat();

    let (h1_backends, h3_backends) = match kind {
        Backend::Http1 => (1, 0),
        Backend::Http3 => (0, 1),
    };
    let mut sim = Sim::new(
        Instant::now(),
        SimConfig {
            seed: network.seed,
            h1_backends,
            h3_backends,
            loss_ppm: if network.lossy { 30_000 } else { 0 },
            jitter: if network.lossy {
                Duration::from_millis(4)
            } else {
                Duration::ZERO
            },
            ..SimConfig::default()
        },
    );
    let client = sim.add_client();
    sim.request(client, request);
    let done = sim.run_until_done(Duration::from_secs(120));
    sim.run_for(Duration::from_secs(1));
    prop_assert!(done, "the request neither finished nor failed");

    // What reached the backend: requests received whole, and bytes at all.
    let (seen, reached) = match kind {
        Backend::Http1 => {
            let backend = &sim.h1_backends[0];
            prop_assert!(
                backend.complete_requests_seen <= 1,
                "{} requests",
                backend.complete_requests_seen
            );
            prop_assert_eq!(backend.unparsed_input(), 0);
            (backend.complete_requests_seen, backend.bytes_received > 0)
        }
        Backend::Http3 => {
            let requests = sim.h3_backends[0].requests;
            (requests, requests > 0)
        }
    };

    let response = sim.clients[client].response(0);
    match verdict {
        Err(reason) => {
            prop_assert!(!reached, "rejected ({:?}) yet forwarded", reason);
            prop_assert!(
                response.status == 400
                    || response.reset.is_some()
                    || response.connection_error.is_some(),
                "{:?}",
                response
            );
        }
        Ok(head) if head.method == Method::Connect => {}
        Ok(head) if head.content_length.is_none_or(|n| n == body.len() as u64) => {
            prop_assert_eq!(seen, 1, "{:?}", response);
            prop_assert_eq!(response.status, 200, "{:?}", response);
            if head.method != Method::Head && !body.is_empty() {
                prop_assert_eq!(&response.body, &body);
            }
        }
        Ok(_) => {
            // The DATA frames disagree with content-length: a malformed request.
            prop_assert!(
                response.status == 400 || response.reset.is_some(),
                "{:?}",
                response
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn nothing_is_smuggled_to_http1_backends(request in request(), network in network()) {
        check(request, Backend::Http1, network)?;
    }

    #[test]
    fn http3_backends_get_only_valid_requests_and_whole_bodies(
        request in request(),
        network in network(),
    ) {
        check(request, Backend::Http3, network)?;
    }
}
