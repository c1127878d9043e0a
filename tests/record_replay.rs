//! Recording and replaying a production run: `spooky run --record DIR` (mio runtime, two
//! shards) serves real clients over UDP with an HTTP/1.1 and an HTTP/3 backend, and after a
//! SIGTERM `spooky replay` rebuilds each shard's core from its capture and reproduces every
//! datagram and TCP write it made, byte for byte. A capture whose recorded outputs were
//! altered is reported as diverged, with a failing exit status.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use spooky::client::{H3Client, Trust};
use support::{Finished, free_udp_port, run_with_limit, scratch_dir, spawn_child, within};

const COMMAND_LIMIT: Duration = Duration::from_secs(60);

async fn spooky(dir: &Path, args: &[&str]) -> Finished {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spooky"));
    command.args(args).current_dir(dir).env_remove("RUST_LOG");
    run_with_limit(command, COMMAND_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("spooky {args:?}: {e}"))
}

fn captures_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("no capture directory {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "spkcap"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_run_replays_byte_for_byte() {
    within(async {
        let dir = scratch_dir("record");
        let made = spooky(&dir, &["gen-cert", "--ed25519", "--dir", "certs"]).await;
        assert!(made.status.success(), "gen-cert --ed25519:\n{}", made.transcript());

        // Backends: HTTP/1.1, and HTTP/3 verified against a CA file (so the replay re-runs the
        // certificate check, at the recorded wall clock).
        let h1 = spooky::backends::start_h1("h1", 0).await.expect("h1 backend");
        let identity = spooky::certs::self_signed(&["localhost", "127.0.0.1"]).expect("cert");
        std::fs::write(dir.join("backend-ca.pem"), &identity.cert_pem).expect("write CA");
        let h3 = spooky::backends::start_h3("h3", 0, vec![identity.cert_der], identity.key_der)
            .await
            .expect("h3 backend");

        let port = free_udp_port();
        let config = format!(
            "listen: {{ address: \"127.0.0.1\", port: {port}, tls: {{ cert: certs/cert.pem, key: certs/key.pem }} }}\n\
             runtime: {{ kind: mio, shards: 2 }}\n\
             backends:\n\
             \x20 - {{ id: h1, address: \"{}\", health_check: {{ path: /health, interval: 200ms }} }}\n\
             \x20 - {{ id: h3, address: \"{}\", protocol: http3, tls: {{ ca: backend-ca.pem }} }}\n",
            h1.addr, h3.addr
        );
        std::fs::write(dir.join("spooky.yaml"), config).expect("write config");
        let mut command = Command::new(env!("CARGO_BIN_EXE_spooky"));
        command
            .args(["run", "-c", "spooky.yaml", "--record", "captures"])
            .current_dir(&dir)
            .env_remove("RUST_LOG");
        let running = spawn_child(command).unwrap_or_else(|e| panic!("spooky run: {e}"));

        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::UdpSocket::bind(addr).is_ok() {
            assert!(Instant::now() < deadline, "spooky run never bound {addr}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cert = std::fs::read(dir.join("certs/cert.pem")).expect("read cert.pem");
        let roots = spooky_core::quic::crypto::parse_certificates(&cert).expect("parse cert");
        // Several connections, so that both shards (and steering between them) are recorded.
        let mut answered = Vec::new();
        for c in 0..4 {
            let client = H3Client::connect(addr, "localhost", &Trust::Roots(roots.clone()))
                .await
                .expect("connect");
            for i in 0..6 {
                let response = if i % 3 == 2 {
                    let body = vec![b'x'; 70_000];
                    client
                        .request(http::Method::POST, "/upload", &[], body.into())
                        .await
                } else {
                    client.get(&format!("/bytes/{}", 1000 * (c * 6 + i))).await
                }
                .unwrap_or_else(|e| panic!("request {c}/{i}: {e:#}"));
                assert_eq!(response.status, http::StatusCode::OK, "request {c}/{i}");
                answered.push(response.header("x-backend").unwrap_or("-").to_owned());
            }
            client.close().await;
        }
        assert!(answered.iter().any(|b| b == "h1") && answered.iter().any(|b| b == "h3"));

        running.signal("TERM");
        let done = running
            .finish(COMMAND_LIMIT)
            .await
            .unwrap_or_else(|e| panic!("spooky run after SIGTERM: {e}"));
        assert!(done.status.success(), "spooky run:\n{}", done.transcript());
        h1.stop();
        h3.stop();

        let captures = captures_in(&dir.join("captures"));
        assert_eq!(captures.len(), 2, "one capture per shard: {captures:?}");
        let names: Vec<&str> = captures.iter().map(|p| p.to_str().unwrap()).collect();
        let mut args = vec!["replay"];
        args.extend(&names);
        let replay = spooky(&dir, &args).await;
        assert!(replay.status.success(), "replay:\n{}", replay.transcript());
        assert_eq!(
            replay.stdout.matches(": identical").count(),
            2,
            "both shards replay identically:\n{}",
            replay.transcript()
        );

        // The same inputs against an altered footer: the replay must notice.
        let mut bytes = std::fs::read(&captures[0]).expect("read capture");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(dir.join("altered.spkcap"), bytes).expect("write altered capture");
        let altered = spooky(&dir, &["replay", "altered.spkcap"]).await;
        assert!(
            !altered.status.success() && altered.stdout.contains("DIVERGED"),
            "an altered capture replayed as identical:\n{}",
            altered.transcript()
        );
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
