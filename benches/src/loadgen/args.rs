//! The command line of the `loadgen` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::{Config, IdleOptions, Protocol, Target, Trust};

/// Closed-loop HTTP/3 (quinn + h3) and HTTP/1.1 (hyper) load generator.
///
/// Runs CONNECTIONS connections with STREAMS concurrent request loops each (HTTP/1.1:
/// CONNECTIONS × STREAMS connections, one loop each) and counts the 2xx responses completed
/// inside the measured window, which follows the warm-up.
///
/// With --rate R it is open-loop: requests are scheduled R per second whatever the responses
/// do, the loops serve as the pool that sends them, and latency counts from the scheduled
/// start. With --idle-connections N it opens N connections, completes one request on each,
/// holds them open and closes them (for measuring a server's memory per connection).
#[derive(Debug, Clone, Parser)]
#[command(name = "loadgen", version)]
pub struct Args {
    /// https://HOST:PORT/PATH for HTTP/3, http://HOST:PORT/PATH for HTTP/1.1.
    pub url: String,
    /// Connections to open.
    #[arg(short, long, default_value_t = 1)]
    pub connections: usize,
    /// Concurrent request loops per connection.
    #[arg(short, long, default_value_t = 1)]
    pub streams: usize,
    /// Length of the measured window (e.g. 10s, 500ms, 2m); default 10s, or no limit with
    /// --requests.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Time to run before the measured window starts.
    #[arg(short, long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// Stop after this many requests (issued after the warm-up).
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// Speak HTTP/1.1 (implied by an http:// URL).
    #[arg(long)]
    pub http1: bool,
    /// Accept any server certificate (HTTP/3).
    #[arg(short = 'k', long, conflicts_with = "ca")]
    pub insecure: bool,
    /// Trust the certificates in this PEM file (HTTP/3).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Request method.
    #[arg(short, long, default_value = "GET")]
    pub method: String,
    /// Send a request body of this many bytes with every request.
    #[arg(short, long, default_value_t = 0)]
    pub body_size: usize,
    /// Extra request header, "name: value" (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Connect to this address instead of the URL's host (which still names the server).
    #[arg(long)]
    pub connect_to: Option<SocketAddr>,
    /// Tokio worker threads (1 lets taskset pin the generator to one core).
    #[arg(short, long, default_value_t = 1)]
    pub threads: usize,
    /// How long requests in flight at the end may still take.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub grace: Duration,
    /// How long one connection attempt may take.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub connect_timeout: Duration,
    /// Open loop: start this many requests per second on a fixed schedule, regardless of
    /// completions; latency is measured from each request's scheduled start. The
    /// CONNECTIONS × STREAMS loops are the pool of senders: make it large enough.
    #[arg(long, conflicts_with = "idle_connections")]
    pub rate: Option<f64>,
    /// Report this process's CPU seconds over the measured window, its RSS and its peak RSS
    /// (Linux /proc; repeatable).
    #[arg(long = "watch-pid", value_name = "PID")]
    pub watch_pids: Vec<u32>,
    /// Idle mode: open N HTTP/3 connections, complete one request on each, hold them open for
    /// --hold, report (with the memory of --watch-pid processes while all are open), close.
    #[arg(long, value_name = "N")]
    pub idle_connections: Option<usize>,
    /// Idle mode: how long to hold the connections once all are open.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub hold: Duration,
    /// Idle mode: connections per client UDP socket.
    #[arg(long, default_value_t = 100)]
    pub conns_per_socket: usize,
    /// Idle mode: handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub handshake_concurrency: usize,
}

impl Args {
    /// The run these arguments describe.
    pub fn to_config(&self) -> anyhow::Result<Config> {
        let target = Target::parse(&self.url, self.connect_to)?;
        if self.http1 && target.protocol != Protocol::Http1 {
            bail!("--http1 speaks plain-text HTTP/1.1: use an http:// URL");
        }
        let trust = match (&self.ca, self.insecure) {
            (Some(path), _) => Trust::from_pem_file(path)?,
            (None, true) => Trust::Insecure,
            (None, false) if target.protocol == Protocol::Http3 => {
                bail!("HTTP/3 needs --ca FILE or --insecure")
            }
            (None, false) => Trust::Insecure, // unused for HTTP/1.1
        };
        let mut config = Config::new(target, trust);
        config.connections = self.connections.max(1);
        config.streams = self.streams.max(1);
        config.requests = self.requests;
        config.duration = match (self.duration, self.requests) {
            (Some(d), _) => d,
            (None, Some(_)) => Duration::from_secs(24 * 3600),
            (None, None) => Duration::from_secs(10),
        };
        config.warmup = self.warmup;
        config.grace = self.grace;
        config.connect_timeout = self.connect_timeout;
        config.method = Method::from_bytes(self.method.as_bytes())
            .with_context(|| format!("bad method {:?}", self.method))?;
        config.body = Bytes::from(vec![b'x'; self.body_size]);
        let mut headers = HeaderMap::new();
        for h in &self.headers {
            let (name, value) = h
                .split_once(':')
                .with_context(|| format!("header {h:?} is not \"name: value\""))?;
            headers.append(
                HeaderName::from_bytes(name.trim().as_bytes())
                    .with_context(|| format!("bad header name in {h:?}"))?,
                HeaderValue::from_str(value.trim())
                    .with_context(|| format!("bad header value in {h:?}"))?,
            );
        }
        config.headers = headers;
        config.rate = self.rate;
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                bail!("--rate must be a positive number of requests per second");
            }
        }
        config.watch_pids = self.watch_pids.clone();
        Ok(config)
    }

    /// The idle-connection run these arguments ask for, if any.
    pub fn idle_options(&self) -> Option<IdleOptions> {
        self.idle_connections.map(|connections| IdleOptions {
            connections,
            hold: self.hold,
            per_socket: self.conns_per_socket,
            concurrency: self.handshake_concurrency,
        })
    }
}

/// Parses a duration: a number with an optional unit `ns`, `us`, `ms`, `s` (the default),
/// `m` or `h`, e.g. `10s`, `1.5s`, `250ms`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    let scale = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit {other:?} in {text:?}")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("bad duration {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 fortnights").is_err());
    }

    #[test]
    fn args_to_config() {
        let args = Args::try_parse_from([
            "loadgen",
            "https://localhost:9889/x?y=1",
            "--connections",
            "4",
            "--streams",
            "8",
            "--duration",
            "2s",
            "--insecure",
            "--connect-to",
            "127.0.0.1:9889",
            "-H",
            "x-test: 1",
            "--method",
            "POST",
            "--body-size",
            "10",
        ])
        .unwrap();
        let c = args.to_config().unwrap();
        assert_eq!(c.target.protocol, Protocol::Http3);
        assert_eq!(c.target.host, "localhost");
        assert_eq!(c.target.addr, "127.0.0.1:9889".parse().unwrap());
        assert_eq!(c.shape(), (4, 8));
        assert_eq!(c.duration, Duration::from_secs(2));
        assert_eq!(c.method, Method::POST);
        assert_eq!(c.body.len(), 10);
        assert_eq!(c.headers["x-test"], "1");

        let args = Args::try_parse_from([
            "loadgen",
            "http://127.0.0.1:8080",
            "--http1",
            "-c",
            "2",
            "-s",
            "3",
            "-n",
            "100",
        ])
        .unwrap();
        let c = args.to_config().unwrap();
        assert_eq!(c.target.protocol, Protocol::Http1);
        assert_eq!(c.target.uri.path(), "/");
        assert_eq!(c.shape(), (6, 1));
        assert_eq!(c.requests, Some(100));

        let open_loop = Args::try_parse_from([
            "loadgen",
            "http://127.0.0.1:8080",
            "--rate",
            "2500.5",
            "--watch-pid",
            "1",
            "--watch-pid",
            "2",
        ])
        .unwrap();
        let c = open_loop.to_config().unwrap();
        assert_eq!(c.rate, Some(2500.5));
        assert_eq!(c.watch_pids, vec![1, 2]);
        assert!(open_loop.idle_options().is_none());
        let bad_rate = Args::try_parse_from(["loadgen", "http://127.0.0.1:1", "--rate", "0"]);
        assert!(bad_rate.unwrap().to_config().is_err());

        let idle = Args::try_parse_from([
            "loadgen",
            "https://127.0.0.1:1/",
            "-k",
            "--idle-connections",
            "10000",
            "--hold",
            "3s",
        ])
        .unwrap();
        let o = idle.idle_options().unwrap();
        assert_eq!((o.connections, o.hold), (10_000, Duration::from_secs(3)));

        let no_trust = Args::try_parse_from(["loadgen", "https://127.0.0.1:1/"]).unwrap();
        assert!(no_trust.to_config().is_err());
        let h1_tls = Args::try_parse_from(["loadgen", "https://127.0.0.1:1/", "--http1", "-k"]);
        assert!(h1_tls.unwrap().to_config().is_err());
    }
}
