//! Counting what a run did and reporting it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::procfs::ProcReport;

/// Why a request (or a connection attempt) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// A connection (TCP, QUIC or HTTP/3 setup) could not be established.
    Connect,
    /// A response arrived with a status outside 2xx.
    Status,
    /// The request failed on its own (stream reset, malformed response) and the connection
    /// stayed usable.
    Stream,
    /// The request failed because its connection failed.
    Connection,
}

impl ErrorKind {
    /// All kinds, in report order.
    pub const ALL: [ErrorKind; 4] = [
        ErrorKind::Connect,
        ErrorKind::Status,
        ErrorKind::Stream,
        ErrorKind::Connection,
    ];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Status => "status",
            ErrorKind::Stream => "stream",
            ErrorKind::Connection => "connection",
        }
    }
}

/// Counters of one request loop (or one connection task); merged into a [`Report`] at the end.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of counted 2xx responses, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Counted 2xx responses.
    pub ok: u64,
    /// Body bytes of counted responses (any status).
    pub body_bytes: u64,
    /// Counted failures by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Counted non-2xx responses by status code.
    pub non_2xx: BTreeMap<u16, u64>,
    /// Requests abandoned at the end of the run (still in flight after the grace period).
    pub cancelled: u64,
    /// Connections established (including reconnects).
    pub connects: u64,
    /// Time from the start of the measured window to the last counted completion.
    pub last_completion: Duration,
    /// Open loop: counted requests that started more than 1 ms after their scheduled time.
    pub late: u64,
}

/// Highest latency the histograms track; longer ones are clamped to it.
const MAX_LATENCY_US: u64 = 3_600_000_000;

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("valid histogram bounds"),
            ok: 0,
            body_bytes: 0,
            errors: BTreeMap::new(),
            non_2xx: BTreeMap::new(),
            cancelled: 0,
            connects: 0,
            last_completion: Duration::ZERO,
            late: 0,
        }
    }
}

impl Stats {
    /// Records a 2xx response that took `latency`.
    pub fn record_ok(&mut self, latency: Duration, body_bytes: u64) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        self.latency_us.record(us).expect("clamped into range");
        self.ok += 1;
        self.body_bytes += body_bytes;
    }

    /// Records a response with a status outside 2xx.
    pub fn record_status(&mut self, status: u16, body_bytes: u64) {
        *self.non_2xx.entry(status).or_default() += 1;
        self.body_bytes += body_bytes;
        self.record_error(ErrorKind::Status);
    }

    /// Records a failure.
    pub fn record_error(&mut self, kind: ErrorKind) {
        *self.errors.entry(kind).or_default() += 1;
    }

    /// Notes that a counted completion happened `at` after the window began.
    pub fn completed_at(&mut self, at: Duration) {
        self.last_completion = self.last_completion.max(at);
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Stats) {
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms share bounds");
        self.ok += other.ok;
        self.body_bytes += other.body_bytes;
        for (k, v) in &other.errors {
            *self.errors.entry(*k).or_default() += v;
        }
        for (k, v) in &other.non_2xx {
            *self.non_2xx.entry(*k).or_default() += v;
        }
        self.cancelled += other.cancelled;
        self.connects += other.connects;
        self.last_completion = self.last_completion.max(other.last_completion);
        self.late += other.late;
    }

    /// Total failures of every kind.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The report for a measured window of `duration`.
    pub fn report(&self, duration: Duration) -> Report {
        let secs = duration.as_secs_f64();
        let per_sec = |n: f64| if secs > 0.0 { n / secs } else { 0.0 };
        let h = &self.latency_us;
        let q = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        Report {
            requests: self.ok,
            duration_s: secs,
            rps: per_sec(self.ok as f64),
            mbps: per_sec(self.body_bytes as f64) / 1e6,
            body_bytes: self.body_bytes,
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if h.is_empty() { 0 } else { h.max() },
            mean_us: if h.is_empty() { 0.0 } else { h.mean() },
            errors: self.error_total(),
            errors_by_kind: ErrorKind::ALL
                .iter()
                .map(|k| (*k, self.errors.get(k).copied().unwrap_or(0)))
                .collect(),
            non_2xx: self.non_2xx.values().sum(),
            status_codes: self.non_2xx.clone(),
            cancelled: self.cancelled,
            connects: self.connects,
            late: self.late,
            target_rps: None,
            proc: ProcReport::default(),
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// 2xx responses completed inside the measured window.
    pub requests: u64,
    /// Length of the measured window in seconds.
    pub duration_s: f64,
    /// `requests / duration_s`.
    pub rps: f64,
    /// Body megabytes (10^6 bytes) per second, of responses counted in the window.
    pub mbps: f64,
    /// Body bytes of responses counted in the window.
    pub body_bytes: u64,
    /// Median latency of counted 2xx responses, microseconds.
    pub p50_us: u64,
    /// 90th percentile latency, microseconds.
    pub p90_us: u64,
    /// 99th percentile latency, microseconds.
    pub p99_us: u64,
    /// 99.9th percentile latency, microseconds.
    pub p999_us: u64,
    /// Highest latency, microseconds.
    pub max_us: u64,
    /// Mean latency, microseconds.
    pub mean_us: f64,
    /// Failures of every kind (non-2xx responses included).
    pub errors: u64,
    /// Failures by kind.
    pub errors_by_kind: Vec<(ErrorKind, u64)>,
    /// Responses with a status outside 2xx.
    pub non_2xx: u64,
    /// Those responses by status code.
    pub status_codes: BTreeMap<u16, u64>,
    /// Requests still in flight when the grace period ended (not errors, not counted).
    pub cancelled: u64,
    /// Connections established (including reconnects).
    pub connects: u64,
    /// Open loop: counted requests that started more than 1 ms behind their schedule.
    pub late: u64,
    /// Open loop: the requested rate (requests per second).
    pub target_rps: Option<f64>,
    /// CPU time and memory of watched processes, core utilisation, the generator's CPU time.
    pub proc: ProcReport,
}

impl Report {
    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        let mut s = String::from("{");
        let _ = write!(
            s,
            "\"requests\":{},\"duration_s\":{:.6},\"rps\":{:.3},\"mbps\":{:.6},\"body_bytes\":{},\
             \"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"mean_us\":{:.3},\
             \"errors\":{},\"non_2xx\":{},\"cancelled\":{},\"connects\":{}",
            self.requests,
            self.duration_s,
            self.rps,
            self.mbps,
            self.body_bytes,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.mean_us,
            self.errors,
            self.non_2xx,
            self.cancelled,
            self.connects,
        );
        s.push_str(",\"errors_by_kind\":{");
        for (i, (kind, n)) in self.errors_by_kind.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(s, "{sep}\"{}\":{n}", kind.name());
        }
        s.push_str("},\"status_codes\":{");
        for (i, (code, n)) in self.status_codes.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(s, "{sep}\"{code}\":{n}");
        }
        s.push('}');
        let _ = write!(s, ",\"late\":{}", self.late);
        match self.target_rps {
            Some(r) => {
                let _ = write!(s, ",\"target_rps\":{r:.3}");
            }
            None => s.push_str(",\"target_rps\":null"),
        }
        s.push(',');
        s.push_str(&self.proc.json_members());
        s.push('}');
        s
    }

    /// A human-readable table (several lines, ending in a newline).
    pub fn to_table(&self) -> String {
        let ms = |us: u64| format!("{:.3} ms", us as f64 / 1000.0);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "  {:<12}{:>14}",
            "duration",
            format!("{:.3} s", self.duration_s)
        );
        let _ = writeln!(
            s,
            "  {:<12}{:>14}   {:.1} req/s",
            "requests", self.requests, self.rps
        );
        let _ = writeln!(
            s,
            "  {:<12}{:>14}   {:.3} MB/s",
            "body bytes", self.body_bytes, self.mbps
        );
        let _ = writeln!(s, "  latency");
        for (name, v) in [
            ("p50", self.p50_us),
            ("p90", self.p90_us),
            ("p99", self.p99_us),
            ("p99.9", self.p999_us),
            ("max", self.max_us),
        ] {
            let _ = writeln!(s, "    {:<10}{:>14}", name, ms(v));
        }
        let _ = writeln!(
            s,
            "    {:<10}{:>14}",
            "mean",
            format!("{:.3} ms", self.mean_us / 1000.0)
        );
        let kinds: Vec<String> = self
            .errors_by_kind
            .iter()
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect();
        let _ = writeln!(
            s,
            "  {:<12}{:>14}   ({})",
            "errors",
            self.errors,
            kinds.join(", ")
        );
        let codes: Vec<String> = self
            .status_codes
            .iter()
            .map(|(c, n)| format!("{c}: {n}"))
            .collect();
        let _ = write!(s, "  {:<12}{:>14}", "non-2xx", self.non_2xx);
        if !codes.is_empty() {
            let _ = write!(s, "   ({})", codes.join(", "));
        }
        s.push('\n');
        let _ = writeln!(s, "  {:<12}{:>14}", "cancelled", self.cancelled);
        let _ = writeln!(s, "  {:<12}{:>14}", "connects", self.connects);
        if let Some(rate) = self.target_rps {
            let _ = writeln!(
                s,
                "  {:<12}{:>14}   ({} started more than 1 ms late)",
                "target rate",
                format!("{rate:.1}/s"),
                self.late
            );
        }
        s.push_str(&self.proc.to_table());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_report() {
        let mut a = Stats::default();
        for ms in 1..=100u64 {
            a.record_ok(Duration::from_millis(ms), 10);
        }
        let mut b = Stats::default();
        b.record_status(503, 5);
        b.record_error(ErrorKind::Stream);
        b.cancelled = 2;
        a.merge(&b);
        let r = a.report(Duration::from_secs(2));
        assert_eq!(r.requests, 100);
        assert_eq!(r.rps, 50.0);
        assert_eq!(r.body_bytes, 1005);
        assert_eq!(r.errors, 2);
        assert_eq!(r.non_2xx, 1);
        assert_eq!(r.cancelled, 2);
        assert!((49_000..=51_000).contains(&r.p50_us), "{}", r.p50_us);
        assert!((99_000..=101_000).contains(&r.max_us), "{}", r.max_us);
        let json = r.to_json();
        assert!(json.starts_with("{\"requests\":100,"), "{json}");
        assert!(json.contains("\"status_codes\":{\"503\":1}"), "{json}");
        assert!(
            json.contains(
                "\"errors_by_kind\":{\"connect\":0,\"status\":1,\"stream\":1,\"connection\":0}"
            ),
            "{json}"
        );
        assert!(r.to_table().contains("503: 1"));
    }

    #[test]
    fn empty_report_has_zeroes() {
        let r = Stats::default().report(Duration::ZERO);
        assert_eq!((r.requests, r.rps, r.p50_us, r.max_us), (0, 0.0, 0, 0));
    }
}
