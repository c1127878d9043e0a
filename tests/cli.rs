//! The `spooky` binary as an operator uses it: `gen-cert` writes a certificate, `check`
//! accepts the shipped configuration files and rejects broken ones naming the key at fault,
//! and `demo` runs a balancer with three backends and reports an even split.
//!
//! Each command runs the built binary (`CARGO_BIN_EXE_spooky`) as a child process with a time
//! limit; it is killed if it overruns.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{Finished, free_udp_port, run_with_limit, scratch_dir, within, workspace_root};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_splits_requests_evenly() {
    within(async {
        let dir = scratch_dir("demo");
        let port = free_udp_port().to_string();
        let done = spooky(&dir, &["demo", "--requests", "30", "--port", &port]).await;
        assert!(
            done.status.success(),
            "spooky demo failed:\n{}",
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
        eprintln!("spooky demo took {:?}", done.elapsed);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
