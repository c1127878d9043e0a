//! Broken and ambiguous HTTP/1.1 responses (conflicting framing, bad chunk sizes, bare
//! LFs, interim responses, a second response smuggled behind the first) from a simulated
//! backend. Whatever the backend sends for one request:
//! - that request ends (a response, a 502 or 504, or a reset), within the timeouts, and
//!   what reaches the client is valid HTTP/3 (no connection-specific or uppercase fields);
//! - the next request on the same pool gets its own, real answer: bytes left over from the
//!   broken response never become another client's response (no response desync).

use std::time::{Duration, Instant};

use proptest::prelude::{
    Just, ProptestConfig, TestCaseError, prop_assert, prop_assert_eq, prop_oneof, proptest,
};
use proptest::strategy::Strategy;
use spooky_core::sim::{Sim, SimConfig, SimRequest};

/// What a backend smuggles behind a response, hoping a proxy takes it for the next one.
const SMUGGLED: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nx-backend: evil\r\n\r\nsmuggle";

fn status_line() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![
        4 => Just(&b"HTTP/1.1 200 OK\r\n"[..]),
        1 => Just(&b"HTTP/1.1 204 No Content\r\n"[..]),
        1 => Just(&b"HTTP/1.1 304 Not Modified\r\n"[..]),
        1 => Just(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"[..]),
        1 => Just(&b"HTTP/1.0 200 OK\r\n"[..]),
        1 => Just(&b"HTTP/1.1 200 OK\n"[..]),
        1 => Just(&b"HTTP/1.1 999 Nine\r\n"[..]),
        1 => Just(&b"HTTP/1.1 20 OK\r\n"[..]),
        1 => Just(&b"HTTP/2 200\r\n"[..]),
    ]
}

/// Header lines; `{n}` stands for the body's real length.
fn header_line() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        4 => Just("content-length: {n}\r\n"),
        1 => Just("content-length: {n}\r\ncontent-length: {n}\r\n"),
        1 => Just("content-length: 1\r\n"),
        1 => Just("content-length: {n}, {n}\r\n"),
        1 => Just("content-length: 1, 2\r\n"),
        1 => Just("content-length: -1\r\n"),
        1 => Just("content-length: +{n}\r\n"),
        1 => Just("content-length: 0x10\r\n"),
        1 => Just("content-length : {n}\r\n"),
        3 => Just("transfer-encoding: chunked\r\n"),
        1 => Just("transfer-encoding: gzip, chunked\r\n"),
        1 => Just("transfer-encoding: chunked, gzip\r\n"),
        1 => Just("transfer-encoding: identity\r\n"),
        1 => Just("Transfer-Encoding: CHUNKED\r\n"),
        1 => Just("connection: close\r\n"),
        1 => Just("connection: keep-alive\r\n"),
        1 => Just("x-folded: a\r\n b\r\n"),
        1 => Just("x-bare-lf: a\n"),
        1 => Just("x-nul: a\0b\r\n"),
        1 => Just("no colon\r\n"),
        2 => Just("x-fine: yes\r\n"),
        1 => Just("Connection: x-hop\r\nx-hop: secret\r\n"),
        1 => Just("Keep-Alive: timeout=5\r\n"),
        1 => Just("Upgrade: h2c\r\n"),
        1 => Just("Proxy-Connection: keep-alive\r\n"),
        1 => Just("X-Upper-Case: Value\r\n"),
        1 => Just("x-tab:\tvalue\t\r\n"),
    ]
}

/// The body as sent: raw, properly chunked, or chunked wrongly.
fn body_encoding(body: &[u8]) -> impl Strategy<Value = Vec<u8>> + use<> {
    let raw = body.to_vec();
    let chunked = {
        let mut out = format!("{:x}\r\n", body.len()).into_bytes();
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n0\r\n\r\n");
        if body.is_empty() {
            b"0\r\n\r\n".to_vec()
        } else {
            out
        }
    };
    let oversized = {
        let mut out = format!("{:x}\r\n", body.len() + 3).into_bytes();
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n0\r\n\r\n");
        out
    };
    prop_oneof![
        Just(raw),
        Just(chunked.clone()),
        Just(oversized),
        Just(b"zz\r\nhello\r\n0\r\n\r\n".to_vec()),
        Just(b"ffffffffffffffffff\r\nx\r\n0\r\n\r\n".to_vec()),
        Just(b"5;ext=1\r\nhello\r\n0\r\nx-trailer: t\r\n\r\n".to_vec()),
        Just(b"5\nhello\n0\n\n".to_vec()),
        Just([chunked.as_slice(), b"garbage".as_slice()].concat()),
    ]
}

/// One raw response, perhaps with a second one smuggled behind it.
fn raw_response() -> impl Strategy<Value = Vec<u8>> {
    let body = proptest::collection::vec(b'a'..=b'z', 0..40);
    (
        status_line(),
        proptest::collection::vec(header_line(), 0..4),
        body,
        proptest::bool::weighted(0.5),
    )
        .prop_flat_map(|(status, headers, body, smuggle)| {
            let head: Vec<u8> = [
                status.to_vec(),
                headers
                    .iter()
                    .map(|h| h.replace("{n}", &body.len().to_string()))
                    .collect::<String>()
                    .into_bytes(),
                b"\r\n".to_vec(),
            ]
            .concat();
            body_encoding(&body).prop_map(move |encoded| {
                let mut out = [head.as_slice(), encoded.as_slice()].concat();
                if smuggle {
                    out.extend_from_slice(SMUGGLED);
                }
                out
            })
        })
}

fn check(raw: Vec<u8>, seed: u64) -> Result<(), TestCaseError> {
    let mut sim = Sim::with_config(
        Instant::now(),
        SimConfig {
            seed,
            h1_backends: 1,
            h3_backends: 0,
            ..SimConfig::default()
        },
        |config| {
            // Answers that never end (a body delimited by a close that never comes) must
            // end well before the client's QUIC idle timeout (30 s).
            config.timeouts.response_headers = Duration::from_secs(5);
            config.timeouts.request = Duration::from_secs(10);
        },
    );
    sim.h1_backends[0].scripted.push_back(raw);
    let client = sim.add_client();
    sim.request(client, SimRequest::new("GET", "/first"));
    prop_assert!(
        sim.run_until_done(Duration::from_secs(60)),
        "the first request never ended"
    );
    let first = sim.clients[client].response(0).clone();
    prop_assert!(first.connection_error.is_none(), "{:?}", first);
    // Whatever reached the client is valid HTTP/3: lowercase names, no connection-specific
    // fields (nor the ones `Connection` named), no CR, LF or NUL in values.
    for (name, value) in &first.fields {
        prop_assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "{:?}", first);
        prop_assert!(
            ![
                "connection",
                "keep-alive",
                "proxy-connection",
                "transfer-encoding",
                "upgrade",
                "x-hop"
            ]
            .contains(&name.as_str()),
            "{:?}",
            first
        );
        prop_assert!(
            !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)),
            "{:?}",
            first
        );
    }

    sim.request(client, SimRequest::new("GET", "/second"));
    prop_assert!(
        sim.run_until_done(Duration::from_secs(60)),
        "the second request never ended"
    );
    let second = sim.clients[client].response(1);
    prop_assert_eq!(second.status, 200, "after {:?}: {:?}", first, second);
    prop_assert_eq!(second.field("x-backend"), Some("h1-0"), "{:?}", second);
    prop_assert_eq!(&second.body[..], &b"h1-0 GET /second"[..], "{:?}", second);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn a_broken_response_never_answers_another_request(
        raw in raw_response(),
        seed in 0u64..1 << 32,
    ) {
        check(raw, seed)?;
    }
}
