//! Durations as written in the configuration: a number and a unit, such as `250ms`, `5s`, `1m`,
//! `2h` or `1.5s`.
//!
//! Parsing is exact: the number is read as a decimal with integer arithmetic (no floating point),
//! so `0.1s` is exactly 100 milliseconds. [`format_duration`] prints the form [`parse_duration`]
//! reads back to the same value.

use std::time::Duration;

const NANOS_PER_MILLI: u128 = 1_000_000;
const NANOS_PER_SEC: u128 = 1_000 * NANOS_PER_MILLI;
const NANOS_PER_MIN: u128 = 60 * NANOS_PER_SEC;
const NANOS_PER_HOUR: u128 = 60 * NANOS_PER_MIN;

/// Units from the largest to the smallest, as `format_duration` tries them.
const UNITS: [(&str, u128); 4] = [
    ("h", NANOS_PER_HOUR),
    ("m", NANOS_PER_MIN),
    ("s", NANOS_PER_SEC),
    ("ms", NANOS_PER_MILLI),
];

/// The sentence every "missing unit" error carries.
const NEED_UNIT: &str = "durations need a unit: ms, s, m or h";

/// Parses a duration: a non-negative decimal number followed directly by a unit.
///
/// Units are `ms` (milliseconds), `s` (seconds), `m` (minutes) and `h` (hours); the number may
/// have a fraction (`1.5s`, `0.25h`) as long as the result is a whole number of nanoseconds.
/// Surrounding whitespace is ignored. Zero (`0s`) parses; callers that need a positive duration
/// check for it themselves.
///
/// On failure the error is a sentence that quotes the input and says what is allowed, such as
/// `"5" is not a duration: durations need a unit: ms, s, m or h (for example 5s)`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let fail = |why: String| format!("{text:?} is not a duration: {why}");
    if trimmed.is_empty() {
        return Err(fail(format!(
            "expected a number and a unit such as 250ms, 5s, 1m or 2h; {NEED_UNIT}"
        )));
    }
    if trimmed.starts_with('-') {
        return Err(fail("durations cannot be negative".to_string()));
    }
    let trimmed = trimmed.strip_prefix('+').unwrap_or(trimmed);
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() {
        return Err(fail(
            "expected a number before the unit, such as 250ms, 5s, 1m or 2h".to_string(),
        ));
    }
    let unit_nanos = match unit {
        "ms" => NANOS_PER_MILLI,
        "s" => NANOS_PER_SEC,
        "m" => NANOS_PER_MIN,
        "h" => NANOS_PER_HOUR,
        "" => return Err(fail(format!("{NEED_UNIT} (for example {number}s)"))),
        spaced if spaced.starts_with(char::is_whitespace) => {
            return Err(fail(format!(
                "write the unit right after the number, such as {number}{}",
                spaced.trim_start()
            )));
        }
        other => {
            return Err(fail(format!(
                "unknown unit {:?}; {NEED_UNIT}",
                other.trim_start()
            )));
        }
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    if whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty()) {
        return Err(fail(format!(
            "{number:?} is not a number; write digits with an optional fraction, such as 1.5s"
        )));
    }
    let too_large = || fail("the value is too large".to_string());
    let whole_digits = whole.trim_start_matches('0');
    // More than 30 digits exceed any Duration in every unit (and could overflow u128).
    if whole_digits.len() > 30 {
        return Err(too_large());
    }
    let whole: u128 = if whole_digits.is_empty() {
        0
    } else {
        whole_digits.parse().map_err(|_| too_large())?
    };
    let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(too_large)?;
    let fraction = fraction.trim_end_matches('0');
    if !fraction.is_empty() {
        // unit_nanos is at most 3.6e12, so more than 13 significant fraction digits can never
        // give a whole number of nanoseconds.
        if fraction.len() > 13 {
            return Err(fail("finer than a nanosecond".to_string()));
        }
        let scale = 10u128.pow(fraction.len() as u32);
        let digits: u128 = fraction.parse().map_err(|_| too_large())?;
        let part = digits * unit_nanos;
        if part % scale != 0 {
            return Err(fail("finer than a nanosecond".to_string()));
        }
        nanos = nanos.checked_add(part / scale).ok_or_else(too_large)?;
    }
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| too_large())?;
    Ok(Duration::new(secs, (nanos % NANOS_PER_SEC) as u32))
}

/// Formats a duration in the shortest exact form [`parse_duration`] reads back.
///
/// The largest unit that divides the duration exactly is used: 5000ms prints as `5s`, 60s as
/// `1m`, 1500ms as `1500ms`, zero as `0s`. A duration with a sub-millisecond part prints as
/// fractional milliseconds (`0.5ms`).
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    for (unit, size) in UNITS {
        if nanos % size == 0 {
            return format!("{}{unit}", nanos / size);
        }
    }
    let millis = nanos / NANOS_PER_MILLI;
    let rest = format!("{:06}", nanos % NANOS_PER_MILLI);
    format!("{millis}.{}ms", rest.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration("250ms"), Ok(ms(250)));
        assert_eq!(parse_duration("5s"), Ok(ms(5_000)));
        assert_eq!(parse_duration("1m"), Ok(ms(60_000)));
        assert_eq!(parse_duration("2h"), Ok(ms(7_200_000)));
        assert_eq!(parse_duration(" 5s "), Ok(ms(5_000)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("007s"), Ok(ms(7_000)));
    }

    #[test]
    fn parses_fractions_exactly() {
        assert_eq!(parse_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_duration("0.1s"), Ok(ms(100)));
        assert_eq!(parse_duration("0.25h"), Ok(ms(900_000)));
        assert_eq!(parse_duration("1.50s"), Ok(ms(1_500)));
        assert_eq!(parse_duration("2.0m"), Ok(ms(120_000)));
        assert_eq!(parse_duration("0.5ms"), Ok(Duration::from_micros(500)));
        assert_eq!(
            parse_duration("1.000001ms"),
            Ok(Duration::new(0, 1_000_001))
        );
    }

    #[test]
    fn bare_numbers_need_a_unit() {
        let err = parse_duration("5").unwrap_err();
        assert!(
            err.contains("durations need a unit: ms, s, m or h"),
            "{err}"
        );
        assert!(err.starts_with("\"5\" is not a duration"), "{err}");
        assert!(parse_duration("1.5").unwrap_err().contains("need a unit"));
    }

    #[test]
    fn rejects_malformed_input() {
        for bad in [
            "", "s", "ms", "-5s", "5 s", "5sec", "5d", "5us", "1.s", ".5s", "1.2.3s", "five", "5S",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(
                err.starts_with(&format!("{bad:?} is not a duration")),
                "{err}"
            );
        }
        assert!(
            parse_duration("5d")
                .unwrap_err()
                .contains("unknown unit \"d\"")
        );
        assert!(parse_duration("-5s").unwrap_err().contains("negative"));
    }

    #[test]
    fn rejects_too_precise_and_too_large() {
        assert!(
            parse_duration("0.0000000001s")
                .unwrap_err()
                .contains("nanosecond")
        );
        assert!(
            parse_duration("99999999999999999999999h")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse_duration("18446744073709551616s")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn formats_the_shortest_exact_form() {
        assert_eq!(format_duration(ms(1_500)), "1500ms");
        assert_eq!(format_duration(ms(5_000)), "5s");
        assert_eq!(format_duration(ms(60_000)), "1m");
        assert_eq!(format_duration(ms(90_000)), "90s");
        assert_eq!(format_duration(ms(7_200_000)), "2h");
        assert_eq!(format_duration(ms(250)), "250ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_micros(500)), "0.5ms");
        assert_eq!(format_duration(Duration::new(1, 1)), "1000.000001ms");
    }

    #[test]
    fn format_and_parse_round_trip() {
        for d in [
            ms(1),
            ms(999),
            ms(1_000),
            ms(61_000),
            ms(3_600_000),
            ms(86_400_000),
            Duration::from_micros(1_250),
            Duration::new(7, 3),
            Duration::new(u64::MAX, 999_999_999),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
    }
}
