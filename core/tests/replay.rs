//! A recorded run replays exactly: the same inputs through a core built from the capture's
//! header produce the same outputs, byte for byte.

use std::time::{Duration, Instant};

use spooky_core::Core;
use spooky_core::capture::Capture;
use spooky_core::sim::{Sim, SimConfig, SimRequest};

fn recorded_run(seed: u64) -> (Sim, Vec<u8>) {
    let mut s = Sim::new(
        Instant::now(),
        SimConfig {
            seed,
            loss_ppm: 20_000,
            jitter: Duration::from_millis(4),
            ..SimConfig::default()
        },
    );
    s.record();
    let c = s.add_client();
    for i in 0..12 {
        let body: Vec<u8> = (0..i * 5000).map(|b| b as u8).collect();
        let mut r = SimRequest::new("POST", &format!("/{i}"))
            .field("content-length", &body.len().to_string());
        if !body.is_empty() {
            r = r.body(body);
        }
        s.request(c, r);
    }
    assert!(s.run_until_done(Duration::from_secs(60)));
    let capture = s.finish_recording().expect("recording");
    (s, capture)
}

#[test]
fn a_capture_replays_to_the_same_outputs() {
    let (s, bytes) = recorded_run(5);
    let epoch = Instant::now();
    let capture = Capture::decode(&bytes, epoch).expect("capture decodes");
    assert!(capture.digest.is_some());
    let mut core = Core::new(s.core_params(epoch)).expect("core from the capture's parameters");
    let report = capture.replay(&mut core);
    assert!(report.inputs > 100, "{report:?}");
    assert!(report.identical(), "replay diverged: {report:?}");
}

#[test]
fn a_different_core_does_not_replay() {
    let (s, bytes) = recorded_run(6);
    let epoch = Instant::now();
    let capture = Capture::decode(&bytes, epoch).expect("capture decodes");
    let mut params = s.core_params(epoch);
    params.seed[0] ^= 1;
    let mut core = Core::new(params).expect("core");
    let report = capture.replay(&mut core);
    assert!(
        !report.identical(),
        "a core with another seed replayed identically: {report:?}"
    );
}

#[test]
fn truncated_captures_are_errors_not_panics() {
    let (_, bytes) = recorded_run(7);
    for cut in [0, 5, 40, bytes.len() / 3, bytes.len() - 10] {
        let _ = Capture::decode(&bytes[..cut], Instant::now());
    }
    assert!(Capture::decode(b"not a capture at all", Instant::now()).is_err());
}
