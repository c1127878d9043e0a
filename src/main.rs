//! `spooky`: the HTTP/3 load balancer's command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use spooky::client::{H3Client, Trust};
use spooky_core::config::RuntimeKind;

#[derive(Parser)]
#[command(
    name = "spooky",
    version,
    about = "An HTTP/3 load balancer with a deterministic core"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the balancer with a configuration file.
    Run {
        /// The YAML configuration.
        #[arg(short, long, default_value = "config/spooky.yaml")]
        config: PathBuf,
        /// Event loop (overrides `runtime.kind` in the configuration, whose default is mio).
        #[arg(long)]
        runtime: Option<RuntimeArg>,
        /// Record every shard's inputs into DIR/shard-N.spkcap for `spooky replay` (mio
        /// runtime). Switches TLS to seeded, deterministic randomness; the capture holds the
        /// listener's private key. Replays are exact with an Ed25519 certificate
        /// (`spooky gen-cert --ed25519`).
        #[arg(long, value_name = "DIR")]
        record: Option<PathBuf>,
    },
    /// Replay a capture made with `spooky run --record` through a fresh core and check that
    /// it produces exactly the recorded outputs (exit status 1 if not).
    Replay {
        /// Capture files (shard-N.spkcap).
        #[arg(required = true)]
        captures: Vec<PathBuf>,
    },
    /// Validate a configuration file and the files it names, then exit.
    Check {
        /// The YAML configuration.
        #[arg(short, long, default_value = "config/spooky.yaml")]
        config: PathBuf,
    },
    /// Write a self-signed certificate for localhost, 127.0.0.1 and ::1.
    GenCert {
        /// Directory for cert.pem and key.pem.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
        /// An Ed25519 key instead of ECDSA P-256 (for recordings that replay exactly).
        #[arg(long)]
        ed25519: bool,
    },
    /// Start a balancer with three local backends (two HTTP/1.1, one HTTP/3); no setup needed.
    Demo {
        /// Send this many requests through it, print which backend answered, and exit.
        #[arg(long)]
        requests: Option<usize>,
        /// UDP port to listen on.
        #[arg(long, default_value_t = 9889)]
        port: u16,
        /// Requests in flight at once with --requests.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Event loop for the balancer (the demo's backends and client always run on tokio).
        #[arg(long, value_enum, default_value_t = RuntimeArg::Mio)]
        runtime: RuntimeArg,
    },
    /// Send HTTP/3 requests (quinn + h3) and print the responses.
    Client {
        /// https://HOST:PORT/PATH (HOST must be an IP address or localhost).
        url: String,
        /// Number of requests.
        #[arg(short = 'n', long, default_value_t = 1)]
        requests: usize,
        /// Method.
        #[arg(short = 'X', long, default_value = "GET")]
        method: String,
        /// Request body.
        #[arg(short = 'd', long)]
        data: Option<String>,
        /// Accept any server certificate (development only).
        #[arg(long, conflicts_with = "ca")]
        insecure: bool,
        /// CA certificate (PEM or DER) to verify the server with.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RuntimeArg {
    /// One tokio task owns the core.
    Tokio,
    /// Sharded: one thread, one core and one SO_REUSEPORT socket per shard.
    Mio,
}

impl From<RuntimeArg> for RuntimeKind {
    fn from(arg: RuntimeArg) -> RuntimeKind {
        match arg {
            RuntimeArg::Tokio => RuntimeKind::Tokio,
            RuntimeArg::Mio => RuntimeKind::Mio,
        }
    }
}

// A proxy allocates and frees many small buffers per request; mimalloc's thread-local free
// lists cost a fraction of glibc malloc's on that pattern (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            config: path,
            runtime,
            record,
        } => {
            let (config, tls) = spooky::load::load(&path)?;
            init_logging(config.log.level.as_str());
            let kind = runtime.map_or(config.runtime.kind, RuntimeKind::from);
            let options = match record {
                None => spooky_runtime_mio::StartOptions::default(),
                Some(_) if kind != RuntimeKind::Mio => {
                    anyhow::bail!("--record needs the mio runtime")
                }
                Some(dir) => {
                    if !spooky::certs::is_ed25519(&tls.server.key) {
                        tracing::warn!(
                            "recording with a non-Ed25519 key: its signatures are randomised, so \
                             replays of this capture will diverge at the first handshake \
                             (`spooky gen-cert --ed25519` makes a suitable certificate)"
                        );
                    }
                    spooky_runtime_mio::StartOptions {
                        record: Some(spooky_runtime_mio::Recording {
                            dir,
                            // Read again: a capture must hold the text that was validated.
                            config_yaml: std::fs::read_to_string(&path)
                                .with_context(|| format!("reading {}", path.display()))?,
                        }),
                    }
                }
            };
            let seed = spooky::os_seed();
            // SIGHUP re-reads and validates the file; a bad file leaves the running one.
            let reload_path = path.clone();
            let reload = move || {
                spooky::load::load(&reload_path)
                    .map(|(config, tls)| spooky_core::Reload { config, tls })
                    .map_err(|e| e.to_string())
            };
            match kind {
                // Blocking; drains on SIGINT/SIGTERM itself and logs the seed at debug level.
                RuntimeKind::Mio => spooky_runtime_mio::run_with(
                    config,
                    tls,
                    seed,
                    Some(Box::new(reload)),
                    options,
                )?,
                RuntimeKind::Tokio => {
                    tracing::debug!(seed = %spooky::hex(&seed), "core seed");
                    tokio_runtime()?.block_on(spooky_runtime_tokio::run_with(
                        config,
                        tls,
                        seed,
                        Some(Box::new(reload)),
                    ))?;
                }
            }
            Ok(())
        }
        Command::Check { config: path } => {
            let (config, _tls) = spooky::load::load(&path)?;
            println!(
                "{}: OK: listening on udp/{} with {} backend(s), {:?} balancing",
                path.display(),
                config.listen.socket_addr(),
                config.backends.len(),
                config.load_balancing
            );
            Ok(())
        }
        Command::Replay { captures } => {
            let mut diverged = 0;
            for path in &captures {
                let replayed = spooky::replay::replay_file(path)?;
                let report = &replayed.report;
                let verdict = match report.recorded {
                    None => "the recording did not end cleanly (no digest to compare)",
                    Some(_) if report.identical() => "identical",
                    Some(_) => "DIVERGED",
                };
                println!(
                    "{}: shard {}: {} inputs, {} outputs, digest {}: {verdict}",
                    path.display(),
                    replayed.shard,
                    report.inputs,
                    report.outputs,
                    spooky::hex(&report.replayed),
                );
                if !report.identical() {
                    diverged += 1;
                }
            }
            if diverged > 0 {
                anyhow::bail!(
                    "{diverged} of {} capture(s) did not replay exactly",
                    captures.len()
                );
            }
            Ok(())
        }
        Command::GenCert {
            dir,
            force,
            ed25519,
        } => {
            let kind = if ed25519 {
                spooky::certs::KeyKind::Ed25519
            } else {
                spooky::certs::KeyKind::EcdsaP256
            };
            let (cert, key) = spooky::certs::write_self_signed(&dir, force, kind)?;
            println!("wrote {} and {}", cert.display(), key.display());
            Ok(())
        }
        Command::Demo {
            requests,
            port,
            concurrency,
            runtime,
        } => {
            init_logging("warn");
            tokio_runtime()?.block_on(spooky::demo::run(spooky::demo::DemoOptions {
                port,
                requests,
                concurrency,
                runtime: runtime.into(),
            }))
        }
        Command::Client {
            url,
            requests,
            method,
            data,
            insecure,
            ca,
        } => {
            init_logging("warn");
            let trust = match (insecure, ca) {
                (true, _) => Trust::Insecure,
                (false, Some(path)) => {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let certs = spooky_core::quic::crypto::parse_certificates(&bytes)
                        .map_err(|e| anyhow::anyhow!(e))?;
                    Trust::Roots(certs)
                }
                (false, None) => {
                    anyhow::bail!("pass --ca FILE, or --insecure for a self-signed server")
                }
            };
            tokio_runtime()?.block_on(client(url, requests, method, data, trust))
        }
    }
}

async fn client(
    url: String,
    requests: usize,
    method: String,
    data: Option<String>,
    trust: Trust,
) -> anyhow::Result<()> {
    let uri: http::Uri = url.parse().context("parsing the URL")?;
    let host = uri
        .host()
        .context("the URL needs a host")?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(443);
    let ip: std::net::IpAddr = if host == "localhost" {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        host.parse()
            .context("the URL's host must be an IP address or localhost")?
    };
    let server_name = if host == "localhost" {
        "localhost".to_owned()
    } else {
        ip.to_string()
    };
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let method: http::Method = method.parse().context("parsing the method")?;
    let body = Bytes::from(data.unwrap_or_default());
    let client = Arc::new(H3Client::connect((ip, port).into(), &server_name, &trust).await?);
    for _ in 0..requests {
        let response = client
            .request(method.clone(), &path, &[], body.clone())
            .await?;
        // A closed stdout (`spooky client ... | head`) ends the run instead of panicking.
        if print_response(&response, requests == 1).is_err() {
            break;
        }
    }
    if let Ok(client) = Arc::try_unwrap(client) {
        client.close().await;
    }
    Ok(())
}

/// Prints the status and backend of `response`, and with `full` its fields and body.
fn print_response(response: &spooky::client::Response, full: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} {:?}",
        response.status,
        response.header("x-backend").unwrap_or("-")
    )?;
    if full {
        for (name, value) in &response.headers {
            writeln!(out, "{name}: {}", value.to_str().unwrap_or("<binary>"))?;
        }
        writeln!(out)?;
        if response.body.len() <= 4096 {
            out.write_all(&response.body)?;
        } else {
            writeln!(out, "<{} bytes>", response.body.len())?;
        }
    }
    out.flush()
}
