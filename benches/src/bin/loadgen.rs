//! `loadgen`: closed-loop (or, with `--rate`, open-loop) HTTP/3 and HTTP/1.1 load generator,
//! and an idle-connection holder (`--idle-connections`). See `loadgen --help`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use spooky_benches::loadgen::{Args, Protocol, run, run_idle};

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match args.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(options) = args.idle_options() {
        let result = runtime.block_on(run_idle(&config, &options));
        runtime.shutdown_timeout(Duration::from_millis(100));
        return match result {
            Ok(report) => {
                if args.json {
                    println!("{}", report.to_json());
                } else {
                    println!(
                        "{} idle connections to {} (HTTP/3, one {} request each)",
                        options.connections, config.target.uri, config.method
                    );
                    print!("{}", report.to_table());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("loadgen: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let result = runtime.block_on(run(&config));
    // Whatever is still scheduled (connection drivers) is abandoned, not waited for.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(report) => {
            if args.json {
                println!("{}", report.to_json());
            } else {
                let (c, s) = config.shape();
                let protocol = match config.target.protocol {
                    Protocol::Http3 => "HTTP/3",
                    Protocol::Http1 => "HTTP/1.1",
                };
                let mode = match config.rate {
                    Some(r) => format!(", open loop at {r:.1} req/s"),
                    None => String::new(),
                };
                println!(
                    "{} {} ({protocol}, {c} connections x {s} streams{mode}, warm-up {:.1} s)",
                    config.method,
                    config.target.uri,
                    config.warmup.as_secs_f64()
                );
                print!("{}", report.to_table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
