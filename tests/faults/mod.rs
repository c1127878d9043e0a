//! Shared setup for the fault tests: HTTP/1.1 backends that can be killed, made silent or
//! made to fail, Spooky on real loopback sockets in front of them, and the project's load
//! generator (quinn + h3) as the client.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spooky::backends::{self, Backend};
use spooky_benches::loadgen;
use spooky_core::config::{
    BackendConfig, BackendProtocol, Config, HealthCheck, InitialHealth, ListenConfig,
    ListenProtocol, ListenTls,
};
use spooky_core::quic::crypto::ServerIdentity;
use spooky_core::{BackendStatus, TlsMaterials};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A health check every `interval`, failing after one bad probe and recovering after one good.
pub fn quick_health_check(interval: Duration) -> HealthCheck {
    HealthCheck {
        path: "/health".into(),
        interval,
        timeout: interval / 2,
        healthy_threshold: 1,
        unhealthy_threshold: 1,
        expected_status: (200, 399),
        initial: InitialHealth::Healthy,
    }
}

pub struct Fault {
    pub backends: Vec<Backend>,
    pub spooky: spooky_runtime_tokio::Handle,
    pub addr: SocketAddr,
    cert: rustls_pki_types::CertificateDer<'static>,
}

impl Fault {
    /// `n` HTTP/1.1 backends behind a Spooky whose configuration `tweak` adjusts.
    pub async fn start(n: usize, tweak: impl FnOnce(&mut Config)) -> Fault {
        init_tracing();
        let identity =
            spooky::certs::self_signed(&spooky::certs::LOCAL_NAMES).expect("certificate");
        let mut backends = Vec::new();
        for i in 0..n {
            backends.push(
                backends::start_h1(&format!("b{i}"), 0)
                    .await
                    .expect("backend starts"),
            );
        }
        let mut config = Config::with_backends(
            ListenConfig {
                protocol: ListenProtocol::Http3,
                address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: 0,
                tls: ListenTls {
                    cert: "(memory)".into(),
                    key: "(memory)".into(),
                },
            },
            backends
                .iter()
                .map(|b| BackendConfig::new(b.name.clone(), b.addr, BackendProtocol::Http1))
                .collect(),
        );
        tweak(&mut config);
        let tls = TlsMaterials {
            server: ServerIdentity {
                chain: vec![identity.cert_der.clone()],
                key: identity.key_der.clone_key(),
            },
            backends: vec![None; n],
        };
        let spooky = spooky_runtime_tokio::start(Arc::new(config), tls, [7; 32])
            .await
            .expect("spooky starts");
        let addr = spooky.local_addr();
        Fault {
            backends,
            spooky,
            addr,
            cert: identity.cert_der,
        }
    }

    /// A load generator configuration aimed at Spooky.
    pub fn load(&self, path: &str) -> loadgen::Config {
        let url = format!("https://localhost:{}{path}", self.addr.port());
        let target = loadgen::Target::parse(&url, Some(self.addr)).expect("target");
        loadgen::Config::new(target, loadgen::Trust::Roots(vec![self.cert.clone()]))
    }

    pub async fn backend_status(&self) -> Vec<BackendStatus> {
        self.spooky.backends().await
    }

    pub async fn shutdown(self) {
        self.spooky.drain();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.spooky.join()).await;
    }
}

/// Polls Spooky until `check` holds for backend `b`, up to `limit`; returns how long it took.
pub async fn time_until(
    fault: &Fault,
    b: usize,
    limit: Duration,
    check: impl Fn(&BackendStatus) -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if fault.backend_status().await.get(b).is_some_and(&check) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Resident set size of this process in KiB (Linux).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
