//! Arbitrary bytes from an HTTP/1.1 backend: the response parser never panics and never
//! returns more body than it was given.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use spooky_core::http1::{ParserLimits, ResponseEvent, ResponseParser};

fuzz_target!(|data: &[u8]| {
    let (method, data): (&[u8], &[u8]) = match data.first() {
        Some(b) if b % 3 == 0 => (b"HEAD", &data[1..]),
        Some(_) => (b"GET", &data[1..]),
        None => return,
    };
    let mut parser = ResponseParser::new(method, ParserLimits::default());
    let mut input = Bytes::copy_from_slice(data);
    let mut body = 0usize;
    for _ in 0..10_000 {
        match parser.parse(&mut input) {
            Ok(Some(ResponseEvent::Body(b))) => body += b.len(),
            Ok(Some(ResponseEvent::End { .. })) | Ok(None) | Err(_) => break,
            Ok(Some(_)) => {}
        }
    }
    assert!(body <= data.len());
    let _ = parser.on_eof();
});
