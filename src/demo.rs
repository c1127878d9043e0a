//! `spooky demo`: a balancer and three local backends in one process, no setup needed.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use spooky_core::TlsMaterials;
use spooky_core::config::{
    BackendConfig, BackendProtocol, Config, ListenConfig, ListenProtocol, ListenTls, RuntimeKind,
};
use spooky_core::quic::crypto::{ServerIdentity, UpstreamVerify};

use crate::backends::{self, Backend};
use crate::certs;
use crate::client::{H3Client, Trust};

/// What `spooky demo` was asked to do.
pub struct DemoOptions {
    /// UDP port for the balancer.
    pub port: u16,
    /// Send this many requests through it, report, and exit (None: serve until Ctrl-C).
    pub requests: Option<usize>,
    /// Requests in flight at once when sending.
    pub concurrency: usize,
    /// The event loop the balancer runs on (the backends and the client run on tokio).
    pub runtime: RuntimeKind,
}

/// The running balancer, on either runtime.
enum Balancer {
    Tokio(spooky_runtime_tokio::Handle),
    Mio(spooky_runtime_mio::Handle),
}

impl Balancer {
    async fn start(
        runtime: RuntimeKind,
        config: Arc<Config>,
        tls: TlsMaterials,
        seed: [u8; 32],
    ) -> std::io::Result<Balancer> {
        match runtime {
            RuntimeKind::Tokio => spooky_runtime_tokio::start(config, tls, seed)
                .await
                .map(Balancer::Tokio),
            // Binds the sockets and spawns the shard threads; returns at once.
            RuntimeKind::Mio => spooky_runtime_mio::start(config, tls, seed).map(Balancer::Mio),
        }
    }

    fn local_addr(&self) -> SocketAddr {
        match self {
            Balancer::Tokio(handle) => handle.local_addr(),
            Balancer::Mio(handle) => handle.local_addr(),
        }
    }

    /// "tokio runtime" or "mio runtime, N shards".
    fn describe(&self) -> String {
        match self {
            Balancer::Tokio(_) => "tokio runtime".into(),
            Balancer::Mio(handle) => match handle.shards() {
                1 => "mio runtime, 1 shard".into(),
                n => format!("mio runtime, {n} shards"),
            },
        }
    }

    fn drain(&self) {
        match self {
            Balancer::Tokio(handle) => handle.drain(),
            Balancer::Mio(handle) => handle.drain(),
        }
    }

    /// Waits for the balancer to end (after [`Balancer::drain`]).
    async fn join(self) -> anyhow::Result<()> {
        match self {
            Balancer::Tokio(handle) => handle.join().await?,
            Balancer::Mio(handle) => {
                // A thread of its own rather than `spawn_blocking`: if the caller gives up
                // waiting, tokio's shutdown does not wait for this thread.
                let (done, joined) = tokio::sync::oneshot::channel();
                std::thread::Builder::new()
                    .name("spooky-demo-join".into())
                    .spawn(move || {
                        let _ = done.send(handle.join());
                    })
                    .context("starting a thread to wait for the mio shards")?;
                joined.await.context("waiting for the mio shards")??;
            }
        }
        Ok(())
    }
}

/// Runs the demo.
pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let identity = certs::self_signed(&certs::LOCAL_NAMES)?;
    let backends: Vec<Backend> = vec![
        backends::start_h1("backend-1", 0).await?,
        backends::start_h1("backend-2", 0).await?,
        backends::start_h3(
            "backend-3",
            0,
            vec![identity.cert_der.clone()],
            identity.key_der.clone_key(),
        )
        .await?,
    ];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(identity.cert_der.clone())?;
    let roots = Arc::new(roots);

    let mut backend_configs = Vec::new();
    let mut verify = Vec::new();
    for b in &backends {
        let protocol = if b.name == "backend-3" {
            BackendProtocol::Http3
        } else {
            BackendProtocol::Http1
        };
        let mut config = BackendConfig::new(b.name.clone(), b.addr, protocol);
        if protocol == BackendProtocol::Http3 {
            config.tls.server_name = Some("localhost".into());
            verify.push(Some(UpstreamVerify::Roots(roots.clone())));
        } else {
            verify.push(None);
        }
        backend_configs.push(config);
    }
    let config = Config::with_backends(
        ListenConfig {
            protocol: ListenProtocol::Http3,
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: options.port,
            tls: ListenTls {
                cert: "(generated)".into(),
                key: "(generated)".into(),
            },
        },
        backend_configs,
    );
    let tls = TlsMaterials {
        server: ServerIdentity {
            chain: vec![identity.cert_der.clone()],
            key: identity.key_der.clone_key(),
        },
        backends: verify,
    };
    let seed = crate::os_seed();
    let handle = Balancer::start(options.runtime, Arc::new(config), tls, seed)
        .await
        .with_context(|| format!("starting the balancer on 127.0.0.1:{}", options.port))?;
    let addr = handle.local_addr();

    println!(
        "Spooky is balancing HTTP/3 on https://{addr}/ (round-robin, {}) across:",
        handle.describe()
    );
    for b in &backends {
        let protocol = if b.name == "backend-3" {
            "HTTP/3"
        } else {
            "HTTP/1.1"
        };
        println!("  {:<10} {:<8} {}", b.name, protocol, b.addr);
    }

    let Some(count) = options.requests else {
        println!();
        println!("Query it from another terminal (the certificate is self-signed):");
        println!("  cargo run --release -- client --insecure https://{addr}/ -n 6");
        println!("  cargo run --release -- client --insecure https://{addr}/bytes/1048576");
        println!("Press Ctrl-C to stop.");
        tokio::signal::ctrl_c().await?;
        println!("Draining…");
        handle.drain();
        return handle.join().await;
    };

    let client = H3Client::connect(
        addr,
        "localhost",
        &Trust::Roots(vec![identity.cert_der.clone()]),
    )
    .await?;
    let started = Instant::now();
    let (shares, failures) = send_requests(&client, count, options.concurrency.max(1)).await;
    let elapsed = started.elapsed();
    client.close().await;

    println!();
    println!(
        "{count} requests in {:.1} ms ({:.0} requests/s):",
        elapsed.as_secs_f64() * 1e3,
        count as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    for b in &backends {
        let n = shares.get(&b.name).copied().unwrap_or(0);
        println!(
            "  {:<10} answered {:>5}  ({:.1}%)",
            b.name,
            n,
            100.0 * n as f64 / count.max(1) as f64
        );
    }
    if failures > 0 {
        println!("  failed:    {failures}");
    }
    handle.drain();
    let _ = tokio::time::timeout(Duration::from_secs(5), handle.join()).await;
    if failures > 0 {
        anyhow::bail!("{failures} of {count} requests failed");
    }
    Ok(())
}

/// Sends `count` GETs, `concurrency` at a time; counts answers per backend and failures.
pub async fn send_requests(
    client: &H3Client,
    count: usize,
    concurrency: usize,
) -> (BTreeMap<String, usize>, usize) {
    let mut shares = BTreeMap::new();
    let mut failures = 0;
    let mut next = 0;
    let mut running = tokio::task::JoinSet::new();
    while next < count || !running.is_empty() {
        while next < count && running.len() < concurrency {
            let client = client.clone();
            let path = format!("/demo/{next}");
            running.spawn(async move { client.get(&path).await });
            next += 1;
        }
        match running.join_next().await {
            Some(Ok(Ok(response))) if response.status.is_success() => {
                let name = response.header("x-backend").unwrap_or("?").to_owned();
                *shares.entry(name).or_insert(0) += 1;
            }
            Some(Ok(Ok(response))) => {
                eprintln!("request failed: status {}", response.status);
                failures += 1;
            }
            Some(Ok(Err(error))) => {
                eprintln!("request failed: {error:#}");
                failures += 1;
            }
            Some(Err(_)) | None => failures += 1,
        }
    }
    (shares, failures)
}
