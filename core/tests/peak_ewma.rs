//! The latency estimate behind the `latency` strategy: up at once on a slower response,
//! down only as time shows the faster ones are the rule.

use std::time::{Duration, Instant};

use spooky_core::balance::PeakEwma;

#[test]
fn peak_ewma_jumps_up_and_decays() {
    // Any instant works as a base; only differences matter.
    let base = Instant::now();
    let mut ewma = PeakEwma::default();
    assert_eq!(ewma.value_us(), 0.0);

    ewma.observe(base, 1_000.0);
    assert_eq!(ewma.value_us(), 1_000.0, "the first sample is the estimate");

    ewma.observe(base + Duration::from_millis(1), 9_000.0);
    assert_eq!(
        ewma.value_us(),
        9_000.0,
        "a slower response counts in full at once"
    );

    ewma.observe(base + Duration::from_millis(1), 1_000.0);
    assert_eq!(
        ewma.value_us(),
        9_000.0,
        "no time passed: a faster one changes nothing"
    );

    // One time constant later, a faster sample pulls the estimate 1 - 1/e of the way down.
    let later = base + Duration::from_millis(1) + PeakEwma::TAU;
    ewma.observe(later, 1_000.0);
    let expected = 9_000.0 * (-1.0f64).exp() + 1_000.0 * (1.0 - (-1.0f64).exp());
    assert!(
        (ewma.value_us() - expected).abs() < 1e-6,
        "{}",
        ewma.value_us()
    );

    // Long after, the estimate has all but reached the faster responses.
    ewma.observe(later + PeakEwma::TAU * 10, 1_000.0);
    assert!(
        (ewma.value_us() - 1_000.0).abs() < 1.0,
        "{}",
        ewma.value_us()
    );
}
