use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

/// Everything a parser produced for one response.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    /// Events, adjacent `Body` events merged.
    events: Vec<ResponseEvent>,
    /// The error that stopped parsing, if any.
    error: Option<ParseError>,
    /// Input left unconsumed.
    rest: Bytes,
}

/// Feeds `pieces` one after the other (unconsumed bytes are kept and prefixed to the next
/// piece), then signals end of file if `eof` and the response is not done.
fn run(method: &[u8], limits: ParserLimits, pieces: &[&[u8]], eof: bool) -> Outcome {
    let mut parser = ResponseParser::new(method, limits);
    let mut events: Vec<ResponseEvent> = Vec::new();
    let push = |events: &mut Vec<ResponseEvent>, event: ResponseEvent| {
        if let ResponseEvent::Body(b) = &event {
            assert!(!b.is_empty(), "empty body event");
            if let Some(ResponseEvent::Body(prev)) = events.last_mut() {
                let mut merged = BytesMut::from(&prev[..]);
                merged.extend_from_slice(b);
                *prev = merged.freeze();
                return;
            }
        }
        events.push(event);
    };
    let mut input = Bytes::new();
    for piece in pieces {
        let mut joined = BytesMut::from(&input[..]);
        joined.extend_from_slice(piece);
        input = joined.freeze();
        loop {
            match parser.parse(&mut input) {
                Ok(Some(event)) => push(&mut events, event),
                Ok(None) => break,
                Err(error) => {
                    // Errors are sticky.
                    assert_eq!(parser.parse(&mut input), Err(error.clone()));
                    assert_eq!(parser.on_eof(), Err(error.clone()));
                    return Outcome {
                        events,
                        error: Some(error),
                        rest: input,
                    };
                }
            }
        }
    }
    let mut error = None;
    if eof {
        match parser.on_eof() {
            Ok(Some(event)) => push(&mut events, event),
            Ok(None) => {}
            Err(e) => error = Some(e),
        }
    }
    if matches!(events.last(), Some(ResponseEvent::End { .. })) {
        assert!(parser.is_done());
        assert_eq!(parser.parse(&mut input), Ok(None));
        assert_eq!(parser.on_eof(), Ok(None));
    } else {
        assert!(!parser.is_done());
    }
    Outcome {
        events,
        error,
        rest: input,
    }
}

fn whole(method: &[u8], wire: &[u8]) -> Outcome {
    run(method, ParserLimits::default(), &[wire], false)
}

fn whole_eof(method: &[u8], wire: &[u8]) -> Outcome {
    run(method, ParserLimits::default(), &[wire], true)
}

fn fields(pairs: &[(&str, &str)]) -> FieldSection {
    pairs
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect()
}

fn head(
    status: u16,
    pairs: &[(&str, &str)],
    content_length: Option<u64>,
    no_body: bool,
) -> ResponseEvent {
    ResponseEvent::Head(ResponseHead {
        status,
        fields: fields(pairs),
        content_length,
        no_body,
    })
}

fn body(data: &[u8]) -> ResponseEvent {
    ResponseEvent::Body(Bytes::copy_from_slice(data))
}

fn end(keep_alive: bool) -> ResponseEvent {
    ResponseEvent::End { keep_alive }
}

fn error_of(method: &[u8], wire: &[u8]) -> ParseError {
    let outcome = whole_eof(method, wire);
    outcome
        .error
        .unwrap_or_else(|| panic!("no error, got {:?}", outcome.events))
}

#[test]
fn status_line_and_fields() {
    let outcome = whole(
        b"GET",
        b"HTTP/1.1 200 OK\r\nServer: Test/1.0\r\nX-Multi: a\r\nx-multi:b  \r\n\
          Set-Cookie: a=1; Path=/\r\nEmpty:\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(outcome.error, None);
    assert_eq!(
        outcome.events,
        vec![
            head(
                200,
                &[
                    ("server", "Test/1.0"),
                    ("x-multi", "a"),
                    ("x-multi", "b"),
                    ("set-cookie", "a=1; Path=/"),
                    ("empty", ""),
                    ("content-length", "5"),
                ],
                Some(5),
                false
            ),
            body(b"hello"),
            end(true),
        ]
    );
    assert!(outcome.rest.is_empty());

    // No reason phrase, bare LF line endings, obs-text in the reason phrase.
    let outcome = whole(b"GET", b"HTTP/1.1 404\nContent-Length: 0\n\n");
    assert_eq!(
        outcome.events,
        vec![
            head(404, &[("content-length", "0")], Some(0), false),
            end(true)
        ]
    );
    let outcome = whole(
        b"GET",
        b"HTTP/1.1 500 Erreur \xe9trange\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(
        outcome.events[0],
        head(500, &[("content-length", "0")], Some(0), false)
    );
}

#[test]
fn malformed_heads() {
    for (wire, expected) in [
        (
            &b"HTTP/2.0 200 OK\r\n\r\n"[..],
            ParseError::UnsupportedVersion,
        ),
        (b"HTTP/1.2 200 OK\r\n\r\n", ParseError::UnsupportedVersion),
        (b"ICY 200 OK\r\n\r\n", ParseError::UnsupportedVersion),
        (b"http/1.1 200 OK\r\n\r\n", ParseError::UnsupportedVersion),
        (b"HTTP/1.1 20 OK\r\n\r\n", ParseError::InvalidStatusLine),
        (b"HTTP/1.1 2000 OK\r\n\r\n", ParseError::InvalidStatusLine),
        (b"HTTP/1.1  200 OK\r\n\r\n", ParseError::InvalidStatusLine),
        (
            b"HTTP/1.1 200 O\x01K\r\n\r\n",
            ParseError::InvalidStatusLine,
        ),
        (b"HTTP/1.1 099 Low\r\n\r\n", ParseError::InvalidStatus(99)),
        (b"HTTP/1.1 600 High\r\n\r\n", ParseError::InvalidStatus(600)),
        (
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            ParseError::InvalidHeaderName,
        ),
        (
            b"HTTP/1.1 200 OK\r\nName : x\r\n\r\n",
            ParseError::InvalidHeaderName,
        ),
        (
            b"HTTP/1.1 200 OK\r\n: x\r\n\r\n",
            ParseError::InvalidHeaderName,
        ),
        (
            b"HTTP/1.1 200 OK\r\nN\xe9: x\r\n\r\n",
            ParseError::InvalidHeaderName,
        ),
        (
            b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
            ParseError::InvalidHeaderName,
        ),
        (
            b"HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n",
            ParseError::InvalidHeaderValue,
        ),
        (
            b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
            ParseError::InvalidHeaderValue,
        ),
        (
            b"HTTP/1.1 200 OK\r\nX: a\x7fb\r\n\r\n",
            ParseError::InvalidHeaderValue,
        ),
        (
            b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
            ParseError::ObsFold,
        ),
        (
            b"HTTP/1.1 200 OK\r\nX: a\r\n\tb\r\n\r\n",
            ParseError::ObsFold,
        ),
        (b"HTTP/1.1 200 OK\r\n Lead: x\r\n\r\n", ParseError::ObsFold),
        (
            b"HTTP/1.1 200 OK\r\nX: y\r\r\n",
            ParseError::InvalidHeaderValue,
        ),
        (b"HTTP/1.1 200 OK\r\n\rx", ParseError::InvalidLineEnding),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
            ParseError::SwitchingProtocols,
        ),
    ] {
        assert_eq!(
            error_of(b"GET", wire),
            expected,
            "{:?}",
            String::from_utf8_lossy(wire)
        );
        // The same error when the head trickles in.
        let pieces: Vec<&[u8]> = wire.chunks(1).collect();
        let outcome = run(b"GET", ParserLimits::default(), &pieces, true);
        assert_eq!(
            outcome.error,
            Some(expected),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn head_limits() {
    let mut wire = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..10 {
        wire.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    wire.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let len = wire.len();
    let fits = ParserLimits {
        max_head_size: len,
        max_headers: 11,
    };
    for limits in [fits, ParserLimits::default()] {
        let outcome = run(b"GET", limits, &[&wire], false);
        assert_eq!(outcome.error, None);
        assert_eq!(outcome.events.len(), 2);
        let pieces: Vec<&[u8]> = wire.chunks(3).collect();
        assert_eq!(run(b"GET", limits, &pieces, false).events, outcome.events);
    }

    let too_small = ParserLimits {
        max_head_size: len - 1,
        ..fits
    };
    let too_few = ParserLimits {
        max_headers: 10,
        ..fits
    };
    for (limits, expected) in [
        (too_small, ParseError::HeadTooLarge),
        (too_few, ParseError::TooManyHeaders),
    ] {
        assert_eq!(
            run(b"GET", limits, &[&wire], false).error,
            Some(expected.clone())
        );
        let pieces: Vec<&[u8]> = wire.chunks(3).collect();
        assert_eq!(
            run(b"GET", limits, &pieces, false).error,
            Some(expected.clone())
        );
        let pieces: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(run(b"GET", limits, &pieces, false).error, Some(expected));
    }

    // A head that never ends is cut off at the limit.
    let small = ParserLimits {
        max_head_size: 100,
        max_headers: 128,
    };
    let endless = [b'x'; 40];
    let mut pieces: Vec<&[u8]> = vec![b"HTTP/1.1 200 OK\r\nX: "];
    pieces.extend(std::iter::repeat_n(&endless[..], 5));
    assert_eq!(
        run(b"GET", small, &pieces, false).error,
        Some(ParseError::HeadTooLarge)
    );
}

#[test]
fn content_length_body() {
    let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello worldHTTP/1.1 next";
    let expected = vec![
        head(200, &[("content-length", "11")], Some(11), false),
        body(b"hello world"),
        end(true),
    ];
    let outcome = whole(b"GET", wire);
    assert_eq!(outcome.events, expected);
    assert_eq!(outcome.rest, &b"HTTP/1.1 next"[..]);

    // Body slices are zero-copy slices of the input.
    let mut input = Bytes::from_static(wire);
    let range = input.as_ptr_range();
    let mut parser = ResponseParser::new(b"GET", ParserLimits::default());
    assert!(matches!(
        parser.parse(&mut input),
        Ok(Some(ResponseEvent::Head(_)))
    ));
    let Ok(Some(ResponseEvent::Body(data))) = parser.parse(&mut input) else {
        panic!("no body");
    };
    assert!(range.contains(&data.as_ptr()));
    assert_eq!(data, &b"hello world"[..]);
    assert_eq!(parser.parse(&mut input), Ok(Some(end(true))));
    assert_eq!(input, &b"HTTP/1.1 next"[..]);

    // Empty body: End right after Head, whatever follows.
    let outcome = whole(b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nXYZ");
    assert_eq!(
        outcome.events,
        vec![
            head(200, &[("content-length", "0")], Some(0), false),
            end(true)
        ]
    );
    assert_eq!(outcome.rest, &b"XYZ"[..]);

    // Equal values are one length; the field is passed on once, normalized.
    let outcome = whole(
        b"GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nX: y\r\ncontent-length:3\r\n\r\nabc",
    );
    assert_eq!(
        outcome.events,
        vec![
            head(200, &[("content-length", "3"), ("x", "y")], Some(3), false),
            body(b"abc"),
            end(true)
        ]
    );
    let outcome = whole(
        b"GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 007\r\n\r\n1234567",
    );
    assert_eq!(
        outcome.events[0],
        head(200, &[("content-length", "7")], Some(7), false)
    );
}

#[test]
fn bad_content_length() {
    for value in [
        "abc",
        "-1",
        "+5",
        "5 5",
        "0x10",
        "",
        "5,",
        "1.0",
        "18446744073709551616",
    ] {
        let wire = format!("HTTP/1.1 200 OK\r\nContent-Length: {value}\r\n\r\n");
        assert_eq!(
            error_of(b"GET", wire.as_bytes()),
            ParseError::InvalidContentLength,
            "{value:?}"
        );
    }
    for wire in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 10, 11\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Length: 11\r\n\r\n",
    ] {
        assert_eq!(error_of(b"GET", wire), ParseError::ConflictingContentLength);
    }
    let max = whole(
        b"GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n",
    );
    assert_eq!(max.error, None);
    assert_eq!(
        max.events,
        vec![head(
            200,
            &[("content-length", "18446744073709551615")],
            Some(u64::MAX),
            false
        )]
    );
}

#[test]
fn chunked_body() {
    let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: X-Hop\r\n\
        Trailer: expires\r\n\r\n\
        4;ext=1\r\nWiki\r\n5 ; a=\"b c\"\r\npedia\r\n0;done\r\n\
        Expires: never\r\nX-Hop: 1\r\nTE: trailers\r\nContent-Length: 9\r\nX-Sum: 9\r\n\r\nrest";
    let outcome = whole(b"GET", wire);
    assert_eq!(outcome.error, None);
    assert_eq!(
        outcome.events,
        vec![
            head(200, &[("trailer", "expires")], None, false),
            body(b"Wikipedia"),
            ResponseEvent::Trailers(fields(&[("expires", "never"), ("x-sum", "9")])),
            end(true),
        ]
    );
    assert_eq!(outcome.rest, &b"rest"[..]);

    // Without trailers (or only filtered ones), no Trailers event.
    for wire in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nTE: x\r\n\r\n",
    ] {
        let outcome = whole(b"GET", wire);
        assert_eq!(
            outcome.events,
            vec![head(200, &[], None, false), body(b"abc"), end(true)]
        );
        assert!(outcome.rest.is_empty());
    }

    // Chunked wins over content-length, but the connection is not reused.
    let outcome = whole(
        b"GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    assert_eq!(
        outcome.events,
        vec![head(200, &[], None, false), body(b"abc"), end(false)]
    );

    // Malformed chunked bodies.
    for (wire, expected) in [
        (
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
            ParseError::InvalidChunkSize,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd",
            ParseError::MissingChunkDataCrlf,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
            ParseError::ChunkSizeTooLarge,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            ParseError::InvalidTransferEncoding,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: ,\r\n\r\n",
            ParseError::InvalidTransferEncoding,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
            ParseError::IncompleteBody,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n",
            ParseError::IncompleteBody,
        ),
    ] {
        assert_eq!(
            error_of(b"GET", wire),
            expected,
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }

    // Trailer sections are bounded like heads.
    let limits = ParserLimits {
        max_head_size: 100,
        max_headers: 2,
    };
    let wire =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_eq!(
        run(b"GET", limits, &[wire], true).error,
        Some(ParseError::TooManyHeaders)
    );
    let mut wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: ".to_vec();
    wire.extend_from_slice(&[b'a'; 100]);
    wire.extend_from_slice(b"\r\n\r\n");
    assert_eq!(
        run(b"GET", limits, &[&wire], true).error,
        Some(ParseError::TrailersTooLarge)
    );
}

#[test]
fn close_delimited_body() {
    let wire = b"HTTP/1.1 200 OK\r\nServer: old\r\n\r\nsome data";
    let outcome = whole(b"GET", wire);
    assert_eq!(
        outcome.events,
        vec![
            head(200, &[("server", "old")], None, false),
            body(b"some data")
        ]
    );
    let outcome = run(b"GET", ParserLimits::default(), &[wire, b" and more"], true);
    assert_eq!(
        outcome.events,
        vec![
            head(200, &[("server", "old")], None, false),
            body(b"some data and more"),
            end(false)
        ]
    );

    // A transfer coding other than chunked last: read until close.
    let outcome = whole_eof(
        b"GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n\x1f\x8b",
    );
    assert_eq!(
        outcome.events,
        vec![head(200, &[], None, false), body(b"\x1f\x8b"), end(false)]
    );

    // Empty close-delimited body.
    let outcome = whole_eof(b"GET", b"HTTP/1.0 200 OK\r\n\r\n");
    assert_eq!(
        outcome.events,
        vec![head(200, &[], None, false), end(false)]
    );
}

#[test]
fn bodiless_responses() {
    // HEAD: content-length describes the GET response and is kept; nothing is read after.
    let outcome = whole(
        b"HEAD",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nETag: \"x\"\r\n\r\nHTTP/1.1 200 OK\r\n",
    );
    assert_eq!(
        outcome.events,
        vec![
            head(
                200,
                &[("content-length", "1234"), ("etag", "\"x\"")],
                None,
                true
            ),
            end(true)
        ]
    );
    assert_eq!(outcome.rest, &b"HTTP/1.1 200 OK\r\n"[..]);
    let outcome = whole(
        b"HEAD",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(outcome.events, vec![head(200, &[], None, true), end(true)]);

    // 204 never has a content-length; 304 keeps a valid one.
    let outcome = whole(
        b"GET",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\nrest",
    );
    assert_eq!(outcome.events, vec![head(204, &[], None, true), end(true)]);
    assert_eq!(outcome.rest, &b"rest"[..]);
    let outcome = whole(
        b"GET",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"e\"\r\n\r\n",
    );
    assert_eq!(
        outcome.events,
        vec![
            head(
                304,
                &[("content-length", "10"), ("etag", "\"e\"")],
                None,
                true
            ),
            end(true)
        ]
    );
    // An invalid content-length is irrelevant there, and dropped.
    let outcome = whole(
        b"GET",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: x\r\n\r\n",
    );
    assert_eq!(outcome.events, vec![head(304, &[], None, true), end(true)]);

    // HTTP/1.0 bodiless responses persist only with keep-alive.
    let outcome = whole(
        b"GET",
        b"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n",
    );
    assert_eq!(outcome.events, vec![head(204, &[], None, true), end(true)]);
    let outcome = whole(b"GET", b"HTTP/1.0 204 No Content\r\n\r\n");
    assert_eq!(outcome.events, vec![head(204, &[], None, true), end(false)]);
}

#[test]
fn interim_responses() {
    let wire = b"HTTP/1.1 100 Continue\r\n\r\n\
        HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nContent-Length: 5\r\n\r\n\
        HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let expected = vec![
        head(100, &[], None, true),
        head(103, &[("link", "</style.css>; rel=preload")], None, true),
        head(200, &[("content-length", "2")], Some(2), false),
        body(b"ok"),
        end(true),
    ];
    assert_eq!(whole(b"POST", wire).events, expected);
    let pieces: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(
        run(b"POST", ParserLimits::default(), &pieces, false).events,
        expected
    );

    // Closing after an interim response leaves the response incomplete.
    let outcome = whole_eof(b"POST", b"HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(outcome.events, vec![head(100, &[], None, true)]);
    assert_eq!(outcome.error, Some(ParseError::IncompleteHead));

    // 1xx responses to HEAD are interim too.
    let outcome = whole(
        b"HEAD",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
    );
    assert_eq!(
        outcome.events,
        vec![
            head(100, &[], None, true),
            head(200, &[], None, true),
            end(true)
        ]
    );
}

#[test]
fn connect_and_upgrade() {
    assert_eq!(
        error_of(b"CONNECT", b"HTTP/1.1 200 Connection Established\r\n\r\n"),
        ParseError::ConnectNotSupported
    );
    let outcome = whole(
        b"CONNECT",
        b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 1\r\n\r\nx",
    );
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.events.last(), Some(&end(true)));
    assert_eq!(
        error_of(b"GET", b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
        ParseError::SwitchingProtocols
    );
}

#[test]
fn connection_specific_fields_are_removed() {
    let wire = b"HTTP/1.1 200 OK\r\n\
        Connection: X-Private, , Keep-Alive\r\nconnection: x-other\r\n\
        Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nTE: trailers\r\n\
        X-Private: secret\r\nX-OTHER: also\r\nX-Public: shown\r\nContent-Type: text/plain\r\n\
        Content-Length: 0\r\n\r\n";
    let outcome = whole(b"GET", wire);
    assert_eq!(
        outcome.events,
        vec![
            head(
                200,
                &[
                    ("x-public", "shown"),
                    ("content-type", "text/plain"),
                    ("content-length", "0")
                ],
                Some(0),
                false
            ),
            end(true)
        ]
    );
}

#[test]
fn keep_alive_decisions() {
    let cases: [(&[u8], bool); 11] = [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", false),
        (b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\nContent-Length: 0\r\n\r\n", false),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", true),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", true),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n", true),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n", false),
        // HTTP/1.0 with a transfer coding: faulty framing, close afterwards.
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false),
        // Close-delimited bodies end the connection.
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", false),
        (b"HTTP/1.1 200 OK\r\n\r\n", false),
    ];
    for (wire, keep_alive) in cases {
        let outcome = whole_eof(b"GET", wire);
        assert_eq!(outcome.error, None, "{:?}", String::from_utf8_lossy(wire));
        assert_eq!(
            outcome.events.last(),
            Some(&end(keep_alive)),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn eof_handling() {
    assert_eq!(error_of(b"GET", b""), ParseError::ClosedBeforeResponse);
    assert_eq!(
        error_of(b"GET", b"HTTP/1.1 200 OK\r\nServer"),
        ParseError::IncompleteHead
    );
    assert_eq!(
        error_of(
            b"GET",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"
        ),
        ParseError::IncompleteBody
    );
    let outcome = whole_eof(
        b"GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    );
    assert_eq!(
        outcome.events,
        vec![
            head(200, &[("content-length", "10")], Some(10), false),
            body(b"short")
        ]
    );
    // A complete response whose End was not fetched yet still ends on EOF.
    let mut parser = ResponseParser::new(b"GET", ParserLimits::default());
    let mut input = Bytes::from_static(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert!(matches!(
        parser.parse(&mut input),
        Ok(Some(ResponseEvent::Head(_)))
    ));
    assert_eq!(parser.on_eof(), Ok(Some(end(false))));
    assert!(parser.is_done());
}

#[test]
fn empty_input_needs_more() {
    let mut parser = ResponseParser::new(b"GET", ParserLimits::default());
    let mut input = Bytes::new();
    assert_eq!(parser.parse(&mut input), Ok(None));
    assert!(!parser.is_done());
    assert_eq!(parser.on_eof(), Err(ParseError::ClosedBeforeResponse));
}

#[test]
fn leading_empty_lines_are_skipped() {
    let wire = b"\r\n\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let expected = vec![
        head(200, &[("content-length", "0")], Some(0), false),
        end(true),
    ];
    assert_eq!(whole(b"GET", wire).events, expected);
    let pieces: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(
        run(b"GET", ParserLimits::default(), &pieces, false).events,
        expected
    );

    // A lone CR waits, unconsumed, for what follows it.
    let mut parser = ResponseParser::new(b"GET", ParserLimits::default());
    let mut input = Bytes::from_static(b"\r\n\r");
    assert_eq!(parser.parse(&mut input), Ok(None));
    assert_eq!(input, &b"\r"[..]);
    assert_eq!(parser.on_eof(), Err(ParseError::IncompleteHead));

    assert_eq!(
        error_of(b"GET", b"\r\rHTTP/1.1 200 OK\r\n\r\n"),
        ParseError::InvalidLineEnding
    );
}

#[test]
fn consecutive_responses_on_one_connection() {
    let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n\
        HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnopHTTP/1.1 204 No Content\r\n\r\n";
    let mut input = Bytes::from_static(wire);
    let mut statuses = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let mut parser = ResponseParser::new(b"GET", ParserLimits::default());
        while let Some(event) = parser.parse(&mut input).unwrap() {
            match event {
                ResponseEvent::Head(h) => statuses.push(h.status),
                ResponseEvent::Body(b) => bodies.push(b),
                ResponseEvent::Trailers(_) => panic!("no trailers"),
                ResponseEvent::End { keep_alive } => assert!(keep_alive),
            }
        }
        assert!(parser.is_done());
    }
    assert_eq!(statuses, [200, 404, 204]);
    assert_eq!(bodies, [&b"ab"[..], b"nop"]);
    assert!(input.is_empty());
}

#[test]
fn error_messages() {
    assert_eq!(
        ParseError::InvalidStatus(42).to_string(),
        "invalid status code 42"
    );
    assert_eq!(
        ParseError::ConflictingContentLength.to_string(),
        "conflicting content-length values"
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests.

/// A valid response, described.
#[derive(Debug, Clone)]
struct Spec {
    method: &'static [u8],
    leading_empty_lines: usize,
    http10: bool,
    interim: Vec<u16>,
    status: u16,
    fields: Vec<(String, String)>,
    /// 0: content-length, 1: chunked, 2: close-delimited.
    framing: u8,
    body: Vec<u8>,
    chunk_sizes: Vec<usize>,
    extensions: bool,
    trailers: Vec<(String, String)>,
    rest: Vec<u8>,
}

impl Spec {
    fn no_body(&self) -> bool {
        self.method == b"HEAD" || self.status == 204 || self.status == 304
    }

    fn wire(&self) -> Vec<u8> {
        let mut w = b"\r\n".repeat(self.leading_empty_lines);
        for status in &self.interim {
            w.extend_from_slice(
                format!("HTTP/1.1 {status} Interim\r\nX-Interim: 1\r\n\r\n").as_bytes(),
            );
        }
        let version = if self.http10 { "1.0" } else { "1.1" };
        w.extend_from_slice(format!("HTTP/{version} {} Whatever\r\n", self.status).as_bytes());
        for (name, value) in &self.fields {
            w.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        match self.framing {
            0 => w.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes()),
            1 => w.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            _ => {}
        }
        w.extend_from_slice(b"\r\n");
        if self.no_body() {
            w.extend_from_slice(&self.rest);
            return w;
        }
        match self.framing {
            0 => {
                w.extend_from_slice(&self.body);
                w.extend_from_slice(&self.rest);
            }
            1 => {
                let mut body = &self.body[..];
                let mut sizes = self.chunk_sizes.iter().cycle();
                while !body.is_empty() {
                    let n = (*sizes.next().unwrap_or(&1)).clamp(1, body.len());
                    w.extend_from_slice(format!("{n:X}").as_bytes());
                    if self.extensions {
                        w.extend_from_slice(b" ;ext=\"v\";x");
                    }
                    w.extend_from_slice(b"\r\n");
                    w.extend_from_slice(&body[..n]);
                    w.extend_from_slice(b"\r\n");
                    body = &body[n..];
                }
                w.extend_from_slice(b"0\r\n");
                for (name, value) in &self.trailers {
                    w.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
                }
                w.extend_from_slice(b"\r\n");
                w.extend_from_slice(&self.rest);
            }
            _ => w.extend_from_slice(&self.body),
        }
        w
    }
}

fn field_strategy() -> impl Strategy<Value = (String, String)> {
    (
        "x-[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,12}",
        "[!-~]([ -~]{0,20}[!-~])?",
    )
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        (
            prop::sample::select(vec![&b"GET"[..], b"HEAD", b"POST"]),
            0usize..3,
        ),
        any::<bool>(),
        prop::collection::vec(prop::sample::select(vec![100u16, 102, 103]), 0..3),
        prop::sample::select(vec![200u16, 201, 204, 206, 304, 404, 500, 599]),
        prop::collection::vec(field_strategy(), 0..6),
        0u8..3,
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(1usize..80, 1..5),
        any::<bool>(),
        prop::collection::vec(field_strategy(), 0..3),
        prop::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(
            |(
                (method, leading_empty_lines),
                http10,
                interim,
                status,
                fields,
                framing,
                body,
                chunk_sizes,
                extensions,
                trailers,
                rest,
            )| {
                Spec {
                    method,
                    leading_empty_lines,
                    http10,
                    interim,
                    status,
                    fields,
                    framing,
                    body,
                    chunk_sizes,
                    extensions,
                    trailers,
                    rest,
                }
            },
        )
}

/// Concatenated body bytes of an outcome.
fn body_bytes(outcome: &Outcome) -> Vec<u8> {
    outcome
        .events
        .iter()
        .filter_map(|e| match e {
            ResponseEvent::Body(b) => Some(&b[..]),
            _ => None,
        })
        .flatten()
        .copied()
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(
        data in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        method in prop::sample::select(vec![&b"GET"[..], b"HEAD", b"CONNECT"]),
        max_head_size in 0usize..300,
        max_headers in 0usize..8,
    ) {
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        points.push(0);
        points.push(data.len());
        points.sort_unstable();
        let pieces: Vec<&[u8]> = points.windows(2).map(|w| &data[w[0]..w[1]]).collect();
        for limits in [ParserLimits::default(), ParserLimits { max_head_size, max_headers }] {
            run(method, limits, &pieces, true);
        }
    }

    #[test]
    fn mutated_responses_never_panic(
        spec in spec_strategy(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut data = spec.wire();
        for (at, byte) in &edits {
            if !data.is_empty() {
                let i = at.index(data.len());
                data[i] = *byte;
            }
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        points.push(0);
        points.push(data.len());
        points.sort_unstable();
        let pieces: Vec<&[u8]> = points.windows(2).map(|w| &data[w[0]..w[1]]).collect();
        run(spec.method, ParserLimits::default(), &pieces, true);
    }

    #[test]
    fn splitting_does_not_change_events(spec in spec_strategy(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10)) {
        let wire = spec.wire();
        let limits = ParserLimits::default();
        let reference = run(spec.method, limits, &[&wire], true);

        // The reference itself matches the description.
        prop_assert_eq!(&reference.error, &None);
        let heads = reference.events.iter().filter(|e| matches!(e, ResponseEvent::Head(_))).count();
        prop_assert_eq!(heads, spec.interim.len() + 1);
        if spec.no_body() {
            prop_assert!(body_bytes(&reference).is_empty());
        } else {
            prop_assert_eq!(body_bytes(&reference), spec.body.clone());
        }
        let close_delimited = !spec.no_body() && spec.framing == 2;
        let keep_alive = !spec.http10 && !close_delimited;
        prop_assert_eq!(reference.events.last(), Some(&end(keep_alive)));
        if !close_delimited {
            prop_assert_eq!(&reference.rest[..], &spec.rest[..]);
        }

        // Every single split point.
        for at in 0..=wire.len() {
            let outcome = run(spec.method, limits, &[&wire[..at], &wire[at..]], true);
            prop_assert_eq!(&outcome, &reference, "split at {}", at);
        }
        // Many random split points.
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        let pieces: Vec<&[u8]> = points.windows(2).map(|w| &wire[w[0]..w[1]]).collect();
        prop_assert_eq!(&run(spec.method, limits, &pieces, true), &reference);
        // Byte by byte.
        let pieces: Vec<&[u8]> = wire.chunks(1).collect();
        prop_assert_eq!(&run(spec.method, limits, &pieces, true), &reference);
    }
}
