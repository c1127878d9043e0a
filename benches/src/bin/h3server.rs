//! `h3server`: a tiny static HTTP/3 server (quinn + h3) for the end-to-end benchmark, where it
//! plays the HTTP/3 backend (nginx has no QUIC here) and the "direct HTTP/3" reference.
//!
//! Serves fixed bodies from memory:
//!
//! | path    | body                              |
//! |---------|-----------------------------------|
//! | `/`     | `hello world!\n` (13 bytes)       |
//! | `/16k`  | 16 KiB of `x`                     |
//! | `/100m` | 100 MiB of `x`                    |
//!
//! Anything else gets 404. Request bodies are read and discarded.
//!
//! ```text
//! h3server --port 19461 --cert cert.pem --key key.pem [--address 127.0.0.1] [--threads N]
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::{Buf, Bytes};
use clap::Parser;
use http::{Response, StatusCode};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A static HTTP/3 server: `/` (13 bytes), `/16k`, `/100m`, from memory.
#[derive(Debug, Parser)]
#[command(name = "h3server", version)]
struct Args {
    /// UDP port to listen on.
    #[arg(long)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    address: IpAddr,
    /// Certificate chain (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// Tokio worker threads (default: the CPUs this process may run on).
    #[arg(long)]
    threads: Option<usize>,
}

const HELLO: &[u8] = b"hello world!\n";
const SIXTEEN_K: usize = 16 * 1024;
const HUNDRED_M: usize = 100 * 1024 * 1024;
/// Large bodies go out as DATA frames of this size, all slices of one shared buffer.
const CHUNK: usize = 256 * 1024;

/// The bodies, built once.
struct Bodies {
    hello: Bytes,
    sixteen_k: Bytes,
    chunk: Bytes,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("h3server: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("h3server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn server_config(args: &Args) -> anyhow::Result<quinn::ServerConfig> {
    let chain = CertificateDer::pem_file_iter(&args.cert)
        .with_context(|| format!("reading {}", args.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", args.cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "no certificate in {}",
        args.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&args.key)
        .with_context(|| format!("reading the key {}", args.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("certificate and key")?;
    tls.alpn_protocols = vec![b"h3".to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(1024u32.into());
    transport.max_idle_timeout(Some(Duration::from_secs(60).try_into()?));
    transport.send_window(64 << 20);
    config.transport_config(Arc::new(transport));
    Ok(config)
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let config = server_config(&args)?;
    let addr = SocketAddr::new(args.address, args.port);
    let endpoint =
        quinn::Endpoint::server(config, addr).with_context(|| format!("binding udp/{addr}"))?;
    eprintln!("h3server: listening on udp/{}", endpoint.local_addr()?);
    let bodies = Arc::new(Bodies {
        hello: Bytes::from_static(HELLO),
        sixteen_k: Bytes::from(vec![b'x'; SIXTEEN_K]),
        chunk: Bytes::from(vec![b'x'; CHUNK]),
    });
    while let Some(incoming) = endpoint.accept().await {
        let bodies = bodies.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            let Ok(mut h3) =
                h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn)).await
            else {
                return;
            };
            while let Ok(Some(resolver)) = h3.accept().await {
                let bodies = bodies.clone();
                tokio::spawn(async move {
                    let Ok((request, mut stream)) = resolver.resolve_request().await else {
                        return;
                    };
                    while let Ok(Some(mut chunk)) = stream.recv_data().await {
                        chunk.advance(chunk.remaining());
                    }
                    let (status, length, body): (StatusCode, usize, Body) =
                        match request.uri().path() {
                            "/" => (StatusCode::OK, HELLO.len(), Body::One(bodies.hello.clone())),
                            "/16k" => (
                                StatusCode::OK,
                                SIXTEEN_K,
                                Body::One(bodies.sixteen_k.clone()),
                            ),
                            "/100m" => (
                                StatusCode::OK,
                                HUNDRED_M,
                                Body::Repeat(bodies.chunk.clone(), HUNDRED_M / CHUNK),
                            ),
                            _ => (
                                StatusCode::NOT_FOUND,
                                10,
                                Body::One(Bytes::from_static(b"not found\n")),
                            ),
                        };
                    let head = Response::builder()
                        .status(status)
                        .header("content-type", "text/plain")
                        .header("content-length", length)
                        .body(())
                        .expect("valid response head");
                    if stream.send_response(head).await.is_err() {
                        return;
                    }
                    let sent = match body {
                        Body::One(b) => stream.send_data(b).await.is_ok(),
                        Body::Repeat(chunk, times) => {
                            let mut ok = true;
                            for _ in 0..times {
                                if stream.send_data(chunk.clone()).await.is_err() {
                                    ok = false;
                                    break;
                                }
                            }
                            ok
                        }
                    };
                    if sent {
                        let _ = stream.finish().await;
                    }
                });
            }
        });
    }
    Ok(())
}

/// A response body: one buffer, or one buffer sent several times.
enum Body {
    One(Bytes),
    Repeat(Bytes, usize),
}
