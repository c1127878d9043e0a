//! Idle-connection mode: open many HTTP/3 connections, complete one request on each, hold them
//! all open for a while (when the server's memory is read), then close them.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::h3::{H3Parts, H3Requester, RequestTemplate, handshake};
use super::procfs::ProcReport;
use super::tls::client_config_with_idle;
use super::{Config, Outcome, Protocol};

/// How many idle connections to hold, and how.
#[derive(Debug, Clone)]
pub struct IdleOptions {
    /// Connections to open.
    pub connections: usize,
    /// How long to hold them once all are open.
    pub hold: Duration,
    /// Connections sharing one client UDP socket (one quinn endpoint).
    pub per_socket: usize,
    /// Handshakes in flight at once.
    pub concurrency: usize,
}

/// What an idle run saw.
#[derive(Debug, Clone)]
pub struct IdleReport {
    /// Connections asked for.
    pub requested: usize,
    /// Connections whose QUIC and HTTP/3 handshakes completed.
    pub established: usize,
    /// Connections that could not be established.
    pub connect_errors: usize,
    /// Requests (one per established connection) answered with 2xx.
    pub requests_ok: usize,
    /// Requests that failed or got another status.
    pub request_errors: usize,
    /// Client UDP sockets used.
    pub sockets: usize,
    /// Time to open every connection and complete its request, seconds.
    pub connect_s: f64,
    /// How long the connections were held, seconds.
    pub hold_s: f64,
    /// Connections still open at the end of the hold.
    pub alive_after_hold: usize,
    /// Memory of the watched processes at the end of the hold (all connections open).
    pub proc: ProcReport,
}

impl IdleReport {
    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "{{\"mode\":\"idle\",\"requested\":{},\"established\":{},\"connect_errors\":{},\
             \"requests_ok\":{},\"request_errors\":{},\"sockets\":{},\"connect_s\":{:.3},\
             \"hold_s\":{:.3},\"alive_after_hold\":{},{}}}",
            self.requested,
            self.established,
            self.connect_errors,
            self.requests_ok,
            self.request_errors,
            self.sockets,
            self.connect_s,
            self.hold_s,
            self.alive_after_hold,
            self.proc.json_members()
        );
        s
    }

    /// A human-readable summary.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "  established {:>8} of {} ({} connect errors) over {} sockets in {:.2} s",
            self.established, self.requested, self.connect_errors, self.sockets, self.connect_s
        );
        let _ = writeln!(
            s,
            "  requests    {:>8} ok, {} failed",
            self.requests_ok, self.request_errors
        );
        let _ = writeln!(
            s,
            "  held        {:>8} connections for {:.2} s; {} still open at the end",
            self.established, self.hold_s, self.alive_after_hold
        );
        s.push_str(&self.proc.to_table());
        s
    }
}

/// Opens `options.connections` HTTP/3 connections to `config.target` (at most
/// `options.concurrency` handshakes at a time, `options.per_socket` connections per client UDP
/// socket), sends the configured request once on each, holds them open for `options.hold`,
/// reads the memory of `config.watch_pids`, and closes everything.
pub async fn run_idle(config: &Config, options: &IdleOptions) -> anyhow::Result<IdleReport> {
    if config.target.protocol != Protocol::Http3 {
        bail!("--idle-connections needs an https:// (HTTP/3) URL");
    }
    let n = options.connections.max(1);
    let per_socket = options.per_socket.max(1);
    // The QUIC idle timeout must outlast opening everything and the hold.
    let idle_timeout = options.hold + Duration::from_secs(120);
    let client_config = client_config_with_idle(&config.trust, idle_timeout)?;
    let bind: SocketAddr = if config.target.addr.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let sockets = n.div_ceil(per_socket);
    let mut endpoints = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let mut endpoint = quinn::Endpoint::client(bind).context("binding a UDP socket")?;
        endpoint.set_default_client_config(client_config.clone());
        endpoints.push(endpoint);
    }
    let template = Arc::new(RequestTemplate::new(
        &config.target,
        config.method.clone(),
        config.headers.clone(),
        config.body.clone(),
    ));

    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let endpoint = endpoints[i % sockets].clone();
        let gate = gate.clone();
        let template = template.clone();
        let addr = config.target.addr;
        let server_name = config.target.host.clone();
        let timeout = config.connect_timeout;
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("never closed");
            let parts: H3Parts =
                match tokio::time::timeout(timeout, handshake(&endpoint, addr, &server_name)).await
                {
                    Ok(Ok(parts)) => parts,
                    Ok(Err(_)) | Err(_) => return (None, false),
                };
            let (connection, send, driver) = parts;
            let mut requester = H3Requester::new(send, connection.clone(), template);
            let ok = match tokio::time::timeout(timeout, requester.request()).await {
                Ok(Outcome::Response { status, .. }) => (200..300).contains(&status),
                _ => false,
            };
            (Some((connection, requester, driver)), ok)
        });
    }
    let mut held = Vec::with_capacity(n);
    let (mut connect_errors, mut requests_ok, mut request_errors) = (0, 0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (conn, ok) = joined.expect("connect task panicked");
        match conn {
            Some(c) => {
                held.push(c);
                if ok {
                    requests_ok += 1;
                } else {
                    request_errors += 1;
                }
            }
            None => connect_errors += 1,
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    eprintln!(
        "loadgen: {} of {n} connections open after {connect_s:.2} s; holding them for {:.1} s",
        held.len(),
        options.hold.as_secs_f64()
    );

    let hold_start = Instant::now();
    tokio::time::sleep(options.hold).await;
    let proc = ProcReport::memory(&config.watch_pids);
    let hold_s = hold_start.elapsed().as_secs_f64();
    let alive_after_hold = held
        .iter()
        .filter(|(c, _, _)| c.close_reason().is_none())
        .count();
    let established = held.len();

    for (connection, requester, driver) in held {
        connection.close(0u32.into(), b"done");
        drop(requester);
        driver.abort();
    }
    let mut closing = JoinSet::new();
    for endpoint in endpoints {
        endpoint.close(0u32.into(), b"done");
        closing.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        });
    }
    while closing.join_next().await.is_some() {}

    Ok(IdleReport {
        requested: n,
        established,
        connect_errors,
        requests_ok,
        request_errors,
        sockets,
        connect_s,
        hold_s,
        alive_after_hold,
        proc,
    })
}
