//! The `spooky` binary as an operator uses it: `gen-cert` writes a certificate, `check`
//! accepts the shipped configuration files and rejects broken ones naming the key at fault,
//! `demo` runs a balancer with three backends and reports an even split, and `run` serves
//! and drains on SIGTERM; `demo` and `run` on both runtimes (mio, the default, and tokio).
//!
//! Each command runs the built binary (`CARGO_BIN_EXE_spooky`) as a child process with a time
//! limit; it is killed if it overruns.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use spooky::client::{H3Client, Trust};
use support::{
    Finished, Runtime, free_udp_port, on_both_runtimes, run_with_limit, scratch_dir, spawn_child,
    within, workspace_root,
};

const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// Runs `spooky ARGS` in `dir` and returns what it did.
async fn spooky(dir: &Path, args: &[&str]) -> Finished {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spooky"));
    command.args(args).current_dir(dir).env_remove("RUST_LOG");
    run_with_limit(command, COMMAND_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("spooky {args:?}: {e}"))
}

/// A scratch directory with `certs/cert.pem` and `certs/key.pem` made by `spooky gen-cert`.
async fn dir_with_certs(label: &str) -> PathBuf {
    let dir = scratch_dir(label);
    let certs = dir.join("certs");
    let done = spooky(&dir, &["gen-cert", "--dir", certs.to_str().unwrap()]).await;
    assert!(
        done.status.success(),
        "gen-cert failed:\n{}",
        done.transcript()
    );
    for file in ["cert.pem", "key.pem"] {
        let path = certs.join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("gen-cert did not write {}: {e}", path.display()));
        assert!(
            text.contains("-----BEGIN "),
            "{} is not PEM",
            path.display()
        );
    }
    dir
}

fn shipped_config(name: &str) -> String {
    workspace_root()
        .join("config")
        .join(name)
        .to_str()
        .expect("UTF-8 path")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_accepts_the_shipped_configs() {
    within(async {
        let dir = dir_with_certs("check-shipped").await;
        for name in ["original.yaml", "spooky.yaml"] {
            let config = shipped_config(name);
            let done = spooky(&dir, &["check", "-c", &config]).await;
            assert!(
                done.status.success(),
                "spooky check -c {config} failed:\n{}",
                done.transcript()
            );
            assert!(
                done.stdout.contains("OK"),
                "spooky check -c {config} did not report OK:\n{}",
                done.transcript()
            );
        }
        // gen-cert refuses to overwrite what it wrote.
        let certs = dir.join("certs");
        let again = spooky(&dir, &["gen-cert", "--dir", certs.to_str().unwrap()]).await;
        assert!(!again.status.success(), "gen-cert overwrote existing files");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_rejects_a_zero_weight_naming_the_key() {
    within(async {
        let dir = dir_with_certs("check-weight").await;
        let config = dir.join("weight0.yaml");
        std::fs::write(
            &config,
            "listen: { address: \"127.0.0.1\", port: 9889, tls: { cert: certs/cert.pem, key: certs/key.pem } }\n\
             backends:\n  - { id: b1, address: \"127.0.0.1:8080\", weight: 0 }\n",
        )
        .expect("write config");
        let done = spooky(&dir, &["check", "-c", config.to_str().unwrap()]).await;
        assert!(
            !done.status.success(),
            "a zero weight was accepted:\n{}",
            done.transcript()
        );
        assert!(
            done.stderr.contains("backends[0].weight"),
            "stderr does not name backends[0].weight:\n{}",
            done.transcript()
        );
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_rejects_a_missing_certificate_naming_the_key() {
    within(async {
        // No gen-cert here: certs/cert.pem does not exist.
        let dir = scratch_dir("check-nocert");
        let done = spooky(&dir, &["check", "-c", &shipped_config("original.yaml")]).await;
        assert!(
            !done.status.success(),
            "a missing certificate was accepted:\n{}",
            done.transcript()
        );
        assert!(
            done.stderr.contains("listen.tls.cert"),
            "stderr does not name listen.tls.cert:\n{}",
            done.transcript()
        );
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

on_both_runtimes!(
    demo_splits_requests_evenly,
    run_serves_reloads_on_sighup_and_drains_on_sigterm
);

/// `spooky demo --requests 30`: an even split over the three backends. On mio the demo runs
/// without `--runtime`, so this also checks that mio is the default.
async fn demo_splits_requests_evenly(runtime: Runtime) {
    let dir = scratch_dir("demo");
    let port = free_udp_port().to_string();
    let mut args = vec!["demo", "--requests", "30", "--port", &port];
    if runtime != Runtime::Mio {
        args.extend(["--runtime", runtime.name()]);
    }
    let done = spooky(&dir, &args).await;
    assert!(
        done.status.success(),
        "spooky demo failed:\n{}",
        done.transcript()
    );
    let banner = format!("(round-robin, {runtime} runtime");
    assert!(
        done.stdout.contains(&banner),
        "the demo does not say it runs on {runtime} ({banner:?}):\n{}",
        done.transcript()
    );
    // Lines like "  backend-1  answered    10  (33.3%)".
    let shares: Vec<(String, u64)> = done
        .stdout
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [name, "answered", n, ..] => Some((name.to_string(), n.parse().ok()?)),
                _ => None,
            }
        })
        .collect();
    assert_eq!(
        shares,
        [
            ("backend-1".to_string(), 10),
            ("backend-2".to_string(), 10),
            ("backend-3".to_string(), 10)
        ],
        "uneven or missing split:\n{}",
        done.transcript()
    );
    assert!(
        done.stdout.contains("30 requests in"),
        "no summary line:\n{}",
        done.transcript()
    );
    eprintln!("spooky demo on {runtime} took {:?}", done.elapsed);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `spooky run` with a configuration naming one HTTP/1.1 backend (started here): it serves
/// requests; SIGHUP after the file changed moves traffic to the new backend on the same client
/// connection, and a broken file on SIGHUP changes nothing; SIGTERM makes it drain and exit 0. On mio the configuration has no `runtime`
/// section and no `--runtime` is given (mio is the default); on tokio `--runtime tokio`.
async fn run_serves_reloads_on_sighup_and_drains_on_sigterm(runtime: Runtime) {
    let dir = dir_with_certs("run").await;
    let backend = spooky::backends::start_h1("b1", 0)
        .await
        .expect("start a backend");
    let port = free_udp_port();
    let config = dir.join("run.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {{ address: \"127.0.0.1\", port: {port}, tls: {{ cert: certs/cert.pem, key: certs/key.pem }} }}\n\
             backends:\n  - {{ id: b1, address: \"{}\" }}\n\
             log: {{ level: info }}\n",
            backend.addr
        ),
    )
    .expect("write config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_spooky"));
    command
        .args(["run", "-c", config.to_str().unwrap()])
        .current_dir(&dir)
        .env_remove("RUST_LOG");
    if runtime != Runtime::Mio {
        command.args(["--runtime", runtime.name()]);
    }
    let running = spawn_child(command).unwrap_or_else(|e| panic!("spooky run: {e}"));

    // Listening once a plain bind of its port fails.
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::UdpSocket::bind(addr).is_ok() {
        assert!(Instant::now() < deadline, "spooky run never bound {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cert = std::fs::read(dir.join("certs").join("cert.pem")).expect("read cert.pem");
    let roots = spooky_core::quic::crypto::parse_certificates(&cert).expect("parse cert.pem");
    let client = H3Client::connect(addr, "localhost", &Trust::Roots(roots))
        .await
        .expect("connect to spooky run");
    for i in 0..3 {
        let response = client
            .get(&format!("/run/{i}"))
            .await
            .unwrap_or_else(|e| panic!("request {i} to spooky run failed: {e:#}"));
        assert_eq!(response.status, http::StatusCode::OK, "request {i}");
        assert_eq!(response.header("x-backend"), Some("b1"), "request {i}");
    }
    assert_eq!(backend.request_count(), 3);

    // Reload: the file now names another backend.
    let second = spooky::backends::start_h1("b2", 0)
        .await
        .expect("start a second backend");
    let reloaded = format!(
        "listen: {{ address: \"127.0.0.1\", port: {port}, tls: {{ cert: certs/cert.pem, key: certs/key.pem }} }}\n\
         backends:\n  - {{ id: b2, address: \"{}\" }}\n\
         log: {{ level: info }}\n",
        second.addr
    );
    std::fs::write(&config, &reloaded).expect("rewrite config");
    running.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = client
            .get("/after-reload")
            .await
            .expect("request after SIGHUP");
        if response.header("x-backend") == Some("b2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not move traffic to b2"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A broken file is refused; b2 keeps serving.
    std::fs::write(&config, "backends: [").expect("break config");
    running.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        let response = client
            .get(&format!("/still/{i}"))
            .await
            .expect("request after a bad SIGHUP");
        assert_eq!(response.header("x-backend"), Some("b2"), "request {i}");
    }
    client.close().await;
    second.stop();

    running.signal("TERM");
    let done = running
        .finish(COMMAND_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("spooky run after SIGTERM: {e}"));
    assert!(
        done.status.success(),
        "spooky run did not exit cleanly after SIGTERM:\n{}",
        done.transcript()
    );
    let output = format!("{}{}", done.stdout, done.stderr);
    let listening = match runtime {
        Runtime::Tokio => "spooky listening (HTTP/3 over UDP)",
        Runtime::Mio => "spooky listening (HTTP/3 over UDP, mio runtime)",
    };
    assert!(
        output.contains(listening),
        "spooky run did not log {listening:?}:\n{}",
        done.transcript()
    );
    assert!(
        output.contains("configuration reloaded") && output.contains("keeping the running one"),
        "spooky run did not log the reload and the refused reload:\n{}",
        done.transcript()
    );
    backend.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
