//! Malformed requests are answered by Spooky itself and never reach a backend.
//!
//! A raw client (quinn, no HTTP/3 library) writes exactly the bytes each case needs: a HEADERS
//! frame whose field section is encoded from a raw list of (name, value) pairs (pseudo-headers
//! in the order given, nothing checked), optional DATA frames, then FIN. Every case breaks one
//! rule of RFC 9114 §4.1–4.3 and must get a 400 (or a stream reset with H3_MESSAGE_ERROR);
//! the backends behind Spooky (one HTTP/1.1, one HTTP/3) must see none of them, and a
//! well-formed request afterwards must work. Frame-level violations close the connection with
//! the matching HTTP/3 or QPACK error code.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use spooky::client::Trust;
use spooky_core::fields::FieldSection;
use spooky_core::h3::frame::{Frame, FrameReader, ty, write_frame};
use spooky_core::h3::qpack::{decode_field_section, encode_field_section};
use support::{Harness, Kind, Runtime, on_both_runtimes};

/// The client control stream: stream type 0x00, then an empty SETTINGS frame.
const CONTROL_WITH_SETTINGS: &[u8] = &[0x00, 0x04, 0x00];

/// A QUIC connection speaking HTTP/3 by hand.
struct RawConn {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    /// Kept open: closing the control stream is a connection error.
    _control: quinn::SendStream,
}

async fn raw_connect(addr: SocketAddr, trust: &Trust, control: &[u8]) -> RawConn {
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("endpoint");
    // ALPN h3, certificate verified for "localhost".
    endpoint.set_default_client_config(spooky::client::quinn_client_config(trust).expect("config"));
    let conn = endpoint
        .connect(addr, "localhost")
        .expect("connect")
        .await
        .expect("QUIC handshake with spooky");
    let mut control_stream = conn.open_uni().await.expect("open control stream");
    control_stream
        .write_all(control)
        .await
        .expect("write control stream");
    RawConn {
        endpoint,
        conn,
        _control: control_stream,
    }
}

impl RawConn {
    async fn close(self) {
        self.conn.close(0x100u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

/// A HEADERS frame with `fields` encoded as given.
fn headers_frame(fields: &[(&str, &str)], out: &mut Vec<u8>) {
    let mut block = Vec::new();
    encode_field_section(
        fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        &mut block,
    );
    write_frame(ty::HEADERS, &block, out);
}

/// What came back on a request stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// A complete response with this status.
    Status(u16),
    /// A response head with this status, then a reset of the stream with this code.
    StatusThenReset(u16, u64),
    /// The stream was reset with this code before any response head.
    Reset(u64),
    /// Anything else (described).
    Other(String),
}

/// Writes `wire` on a new request stream, finishes it, and reads what comes back.
async fn exchange(conn: &quinn::Connection, wire: &[u8]) -> Outcome {
    let (mut send, mut recv) = match conn.open_bi().await {
        Ok(pair) => pair,
        Err(e) => return Outcome::Other(format!("cannot open a stream: {e}")),
    };
    // Spooky may answer and stop reading before all of this is written: that is fine.
    let _ = send.write_all(wire).await;
    let _ = send.finish();
    let mut received = Vec::new();
    let mut reset = None;
    loop {
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk.bytes),
            Ok(None) => break,
            Err(quinn::ReadError::Reset(code)) => {
                reset = Some(code.into_inner());
                break;
            }
            Err(e) => return Outcome::Other(format!("reading the response: {e}")),
        }
    }
    match response_status(&received) {
        Ok(Some(status)) => match reset {
            Some(code) => Outcome::StatusThenReset(status, code),
            None => Outcome::Status(status),
        },
        Ok(None) => match reset {
            Some(code) => Outcome::Reset(code),
            None => Outcome::Other("the stream ended without a response".into()),
        },
        Err(e) => Outcome::Other(e),
    }
}

/// `:status` of the first HEADERS frame in `bytes`, parsed with the core's own frame reader
/// and QPACK decoder.
fn response_status(bytes: &[u8]) -> Result<Option<u16>, String> {
    let mut reader = FrameReader::new(1 << 20);
    let mut input = Bytes::copy_from_slice(bytes);
    while let Some(frame) = reader
        .read(&mut input)
        .map_err(|e| format!("bad response frames: {e}"))?
    {
        if let Frame::Headers(block) = frame {
            let mut fields = FieldSection::new();
            decode_field_section(&block, 1 << 20, &mut fields)
                .map_err(|e| format!("bad response field section: {e}"))?;
            let status = fields
                .find(b":status")
                .ok_or("response HEADERS without :status")?;
            let status = std::str::from_utf8(status)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("unparsable :status")?;
            return Ok(Some(status));
        }
    }
    Ok(None)
}

/// One rule broken: a name, the fields in wire order, and DATA frames.
struct Case {
    name: &'static str,
    fields: Vec<(&'static str, &'static str)>,
    data: Vec<&'static [u8]>,
}

fn case(name: &'static str, fields: &[(&'static str, &'static str)]) -> Case {
    Case {
        name,
        fields: fields.to_vec(),
        data: Vec::new(),
    }
}

fn case_with_body(
    name: &'static str,
    fields: &[(&'static str, &'static str)],
    data: &[&'static [u8]],
) -> Case {
    Case {
        name,
        fields: fields.to_vec(),
        data: data.to_vec(),
    }
}

const M: (&str, &str) = (":method", "GET");
const POST: (&str, &str) = (":method", "POST");
const S: (&str, &str) = (":scheme", "https");
const A: (&str, &str) = (":authority", "localhost");
const P: (&str, &str) = (":path", "/");

fn cases() -> Vec<Case> {
    vec![
        case("uppercase field name", &[M, S, A, P, ("X-Upper", "1")]),
        case("space in a field name", &[M, S, A, P, ("bad name", "1")]),
        case("NUL in a value", &[M, S, A, P, ("x-value", "a\0b")]),
        case("CR in a value", &[M, S, A, P, ("x-value", "a\rb")]),
        case("LF in a value", &[M, S, A, P, ("x-value", "a\nb")]),
        case(
            "pseudo-header after a regular field",
            &[M, S, A, ("x-early", "1"), P],
        ),
        case("unknown pseudo-header :foo", &[M, S, A, P, (":foo", "bar")]),
        case("`:status` in a request", &[M, S, A, P, (":status", "200")]),
        case("duplicate :method", &[M, M, S, A, P]),
        case("duplicate :path", &[M, S, A, P, (":path", "/other")]),
        case("missing :method", &[S, A, P]),
        case("missing :scheme", &[M, A, P]),
        case("missing :path", &[M, S, A]),
        case("missing both :authority and host", &[M, S, P]),
        case("empty :path", &[M, S, A, (":path", "")]),
        case(
            "userinfo in :authority",
            &[M, S, (":authority", "user:secret@localhost"), P],
        ),
        case("connection field", &[M, S, A, P, ("connection", "close")]),
        case(
            "keep-alive field",
            &[M, S, A, P, ("keep-alive", "timeout=5")],
        ),
        case(
            "proxy-connection field",
            &[M, S, A, P, ("proxy-connection", "keep-alive")],
        ),
        case(
            "transfer-encoding field",
            &[M, S, A, P, ("transfer-encoding", "chunked")],
        ),
        case("upgrade field", &[M, S, A, P, ("upgrade", "websocket")]),
        case("te: gzip", &[M, S, A, P, ("te", "gzip")]),
        case(
            "host disagreeing with :authority",
            &[M, S, A, P, ("host", "example.com")],
        ),
        case_with_body(
            "unparsable content-length",
            &[POST, S, A, P, ("content-length", "ten")],
            &[b"0123456789"],
        ),
        case_with_body(
            "content-length: 1, 2",
            &[POST, S, A, P, ("content-length", "1, 2")],
            &[b"x"],
        ),
        case_with_body(
            "body shorter than content-length",
            &[POST, S, A, P, ("content-length", "10")],
            &[b"12345"],
        ),
        case_with_body(
            "body longer than content-length",
            &[POST, S, A, P, ("content-length", "2")],
            &[b"12", b"345"],
        ),
        case(
            "CONNECT with :path",
            &[(":method", "CONNECT"), (":authority", "localhost:443"), P],
        ),
    ]
}

/// The two cases whose head is valid: Spooky only finds out from the body, after it has
/// dispatched the head.
const BODY_LENGTH_CASES: [&str; 2] = [
    "body shorter than content-length",
    "body longer than content-length",
];

/// Sends each case on `conn` and returns the failures: a case fails if it is not rejected, or
/// if any backend's request count moved because of it.
async fn run_cases(harness: &Harness, conn: &mut RawConn, cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        let before = harness.request_counts();
        let mut wire = Vec::new();
        headers_frame(&case.fields, &mut wire);
        for data in &case.data {
            write_frame(ty::DATA, data, &mut wire);
        }
        let outcome = exchange(&conn.conn, &wire).await;
        match outcome {
            Outcome::Status(400) | Outcome::Reset(0x10e) => {}
            other => failures.push(format!(
                "{}: expected 400 or a reset with H3_MESSAGE_ERROR, got {other:?}",
                case.name
            )),
        }
        // Give a request that was (wrongly) forwarded time to be counted.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let after = harness.request_counts();
        if after != before {
            failures.push(format!(
                "{}: reached a backend (request counts {before:?} -> {after:?})",
                case.name
            ));
        }
        if let Some(reason) = conn.conn.close_reason() {
            failures.push(format!(
                "{}: the connection closed ({reason}); reconnecting for the next case",
                case.name
            ));
            *conn = raw_connect(harness.addr, &harness.trust(), CONTROL_WITH_SETTINGS).await;
        }
    }
    failures
}

/// A well-formed GET, byte for byte like the cases.
async fn control_request(conn: &RawConn) -> Outcome {
    let mut wire = Vec::new();
    headers_frame(&[M, S, A, (":path", "/control")], &mut wire);
    exchange(&conn.conn, &wire).await
}

/// Runs `cases` on a fresh connection, first with no upstream connection open, then (after a
/// well-formed request per backend) with warm, pooled upstream connections, where a request
/// whose head is valid is attached at once. Checks that each case is rejected, that no
/// backend saw any of them, and that well-formed requests still work.
async fn cases_cold_and_warm(runtime: Runtime, kinds: &[Kind], cases: Vec<Case>) {
    let harness = Harness::start(runtime, kinds).await;
    let n = kinds.len();
    let mut conn = raw_connect(harness.addr, &harness.trust(), CONTROL_WITH_SETTINGS).await;

    let mut failures = Vec::new();
    for failure in run_cases(&harness, &mut conn, &cases).await {
        failures.push(format!("cold: {failure}"));
    }
    // Every backend works (round-robin gives each one request), and is now warm.
    for _ in 0..n {
        assert_eq!(control_request(&conn).await, Outcome::Status(200));
    }
    let counts = harness.request_counts();
    for failure in run_cases(&harness, &mut conn, &cases).await {
        failures.push(format!("warm: {failure}"));
    }
    assert!(
        failures.is_empty(),
        "{} malformed request(s) not handled as RFC 9114 §4.1.2 requires (never forwarded, \
         answered 400 or reset with H3_MESSAGE_ERROR):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        counts,
        vec![1; n],
        "after the cold round and one control request each"
    );
    assert_eq!(harness.request_counts(), vec![1; n], "after the warm round");
    let metrics = harness.spooky.metrics().await;
    assert_eq!(
        metrics.requests_malformed,
        2 * cases.len() as u64,
        "metrics: {metrics:?}"
    );
    assert_eq!(metrics.client_protocol_errors, 0, "metrics: {metrics:?}");

    // The same connection still works after all of that.
    for _ in 0..n {
        assert_eq!(control_request(&conn).await, Outcome::Status(200));
    }
    assert_eq!(harness.request_counts(), vec![2; n]);
    conn.close().await;
    harness.shutdown().await;
}

// current_thread: quinn's connection driver cannot run between writing a case and finishing
// its stream, so each case (HEADERS, DATA, FIN) leaves in one packet and Spooky has the whole
// request in hand when it decides.
on_both_runtimes!(
    current_thread: malformed_requests_get_400_and_never_reach_a_backend,
    body_length_mismatch_never_reaches_an_http3_backend,
    body_length_mismatch_never_reaches_an_http1_backend,
);

on_both_runtimes!(frame_violations_close_the_connection_with_the_right_code);

async fn malformed_requests_get_400_and_never_reach_a_backend(runtime: Runtime) {
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| !BODY_LENGTH_CASES.contains(&c.name))
        .collect();
    cases_cold_and_warm(runtime, &[Kind::H1, Kind::H3], cases).await;
}

fn body_length_cases() -> Vec<Case> {
    cases()
        .into_iter()
        .filter(|c| BODY_LENGTH_CASES.contains(&c.name))
        .collect()
}

async fn body_length_mismatch_never_reaches_an_http3_backend(runtime: Runtime) {
    cases_cold_and_warm(runtime, &[Kind::H3], body_length_cases()).await;
}

async fn body_length_mismatch_never_reaches_an_http1_backend(runtime: Runtime) {
    cases_cold_and_warm(runtime, &[Kind::H1], body_length_cases()).await;
}

/// Opens a fresh connection (control stream `control`), lets `violate` break a framing rule,
/// and returns the application error code Spooky closed the connection with.
async fn close_code<F, Fut>(harness: &Harness, control: &[u8], violate: F) -> Result<u64, String>
where
    F: FnOnce(quinn::Connection) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let raw = raw_connect(harness.addr, &harness.trust(), control).await;
    violate(raw.conn.clone()).await;
    let result = match tokio::time::timeout(Duration::from_secs(5), raw.conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => Ok(close.error_code.into_inner()),
        Ok(other) => Err(format!("connection ended otherwise: {other}")),
        Err(_) => Err("the connection was not closed within 5 s".into()),
    };
    raw.close().await;
    result
}

/// Opens a request stream, writes `wire`, and leaves the stream open.
async fn write_request_stream(conn: quinn::Connection, wire: Vec<u8>) {
    if let Ok((mut send, recv)) = conn.open_bi().await {
        let _ = send.write_all(&wire).await;
        // Keep both halves alive until the connection closes.
        tokio::spawn(async move {
            let _ = conn.closed().await;
            drop((send, recv));
        });
    }
}

async fn frame_violations_close_the_connection_with_the_right_code(runtime: Runtime) {
    let harness = Harness::start(runtime, &[Kind::H1]).await;
    let mut failures = Vec::new();
    let mut check = |name: &str, got: Result<u64, String>, want: u64| match got {
        Ok(code) if code == want => {}
        Ok(code) => failures.push(format!("{name}: closed with 0x{code:x}, want 0x{want:x}")),
        Err(e) => failures.push(format!("{name}: {e} (want 0x{want:x})")),
    };

    // DATA before HEADERS on a request stream: H3_FRAME_UNEXPECTED.
    let got = close_code(&harness, CONTROL_WITH_SETTINGS, |conn| async move {
        let mut wire = Vec::new();
        write_frame(ty::DATA, b"early", &mut wire);
        write_request_stream(conn, wire).await;
    })
    .await;
    check("DATA before HEADERS", got, 0x105);

    // A frame type reserved from HTTP/2 (0x02, PRIORITY): H3_FRAME_UNEXPECTED.
    let got = close_code(&harness, CONTROL_WITH_SETTINGS, |conn| async move {
        let mut wire = Vec::new();
        write_frame(0x02, &[0x00], &mut wire);
        write_request_stream(conn, wire).await;
    })
    .await;
    check("reserved HTTP/2 frame type 0x02", got, 0x105);

    // A second control stream: H3_STREAM_CREATION_ERROR.
    let got = close_code(&harness, CONTROL_WITH_SETTINGS, |conn| async move {
        if let Ok(mut second) = conn.open_uni().await {
            let _ = second.write_all(CONTROL_WITH_SETTINGS).await;
            tokio::spawn(async move {
                let _ = conn.closed().await;
                drop(second);
            });
        }
    })
    .await;
    check("second control stream", got, 0x103);

    // A control stream whose first frame is GOAWAY, not SETTINGS: H3_MISSING_SETTINGS.
    let got = close_code(&harness, &[0x00, 0x07, 0x01, 0x00], |_| async {}).await;
    check("control stream without SETTINGS first", got, 0x10a);

    // A field section with Required Insert Count 1, though our dynamic table has capacity
    // 0: QPACK_DECOMPRESSION_FAILED.
    let got = close_code(&harness, CONTROL_WITH_SETTINGS, |conn| async move {
        let mut wire = Vec::new();
        write_frame(ty::HEADERS, &[0x01, 0x00, 0x80], &mut wire);
        write_request_stream(conn, wire).await;
    })
    .await;
    check("HEADERS referencing the dynamic table", got, 0x200);

    assert!(
        failures.is_empty(),
        "frame-level violations not handled as RFC 9114 / RFC 9204 require:\n{}",
        failures.join("\n")
    );
    assert_eq!(harness.request_counts(), [0]);
    let metrics = harness.spooky.metrics().await;
    assert_eq!(metrics.client_protocol_errors, 5, "metrics: {metrics:?}");

    // Spooky itself is fine: a new connection gets answers.
    let client = harness.client().await;
    let response = client
        .get("/after")
        .await
        .expect("request after violations");
    assert_eq!(response.status, http::StatusCode::OK);
    client.close().await;
    harness.shutdown().await;
}
