//! One arbitrary HTTP/3 request through the whole core, in the simulator: a client, Spooky's
//! core and an HTTP/1.1 backend in memory. Whatever the client sends, nothing panics, the
//! request ends (answered, reset or closed), and the backend never sees more than the one
//! request the client made, nor bytes that do not frame as a request (no request smuggling),
//! and a field section that request validation rejects sends the backend nothing.
//!
//! Input: the field section, the body pieces and raw stream bytes sent before the HEADERS
//! frame, separated by 0xfd; fields by 0xff, name and value by 0xfe; body pieces by 0xff.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use spooky_core::fields::FieldSection;
use spooky_core::h3::message::validate_request;
use spooky_core::sim::{Sim, SimConfig, SimRequest};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0xfd);
    let fields = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let prefix = parts.next().unwrap_or_default();
    let request = SimRequest {
        fields: fields
            .split(|&b| b == 0xff)
            .filter(|f| !f.is_empty())
            .map(|field| {
                let mut nv = field.splitn(2, |&b| b == 0xfe);
                let name = nv.next().unwrap_or_default().to_vec();
                let value = nv.next().unwrap_or_default().to_vec();
                (name, value)
            })
            .collect(),
        body: if body.is_empty() {
            Vec::new()
        } else {
            body.split(|&b| b == 0xff).map(<[u8]>::to_vec).collect()
        },
        prefix: prefix.to_vec(),
    };

    let mut section = FieldSection::new();
    for (name, value) in &request.fields {
        section.push(name, value);
    }
    // Raw bytes before HEADERS may hold a HEADERS frame of their own, which then is the
    // request: only judge the fields when nothing comes before them.
    let rejected = prefix.is_empty() && validate_request(section).is_err();

    let mut sim = Sim::new(
        Instant::now(),
        SimConfig {
            h1_backends: 1,
            h3_backends: 0,
            ..SimConfig::default()
        },
    );
    let client = sim.add_client();
    sim.request(client, request);
    let done = sim.run_until_done(Duration::from_secs(120));
    // Let whatever the core still writes or closes upstream arrive.
    sim.run_for(Duration::from_secs(1));

    assert!(done, "the request neither finished nor failed");
    let backend = &sim.h1_backends[0];
    assert!(
        backend.complete_requests_seen <= 1,
        "one HTTP/3 request became {} HTTP/1.1 requests",
        backend.complete_requests_seen
    );
    assert_eq!(
        backend.unparsed_input(),
        0,
        "the backend holds bytes that frame as no request"
    );
    if rejected {
        assert_eq!(
            backend.bytes_received, 0,
            "a rejected request reached the backend"
        );
    }
});
