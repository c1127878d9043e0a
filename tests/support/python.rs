//! HTTP/3 clients from other implementations, in Python, installed from PyPI into a virtualenv
//! at `<workspace>/target/peers-venv` on first use.
//!
//! Provisioning is guarded by an exclusive lock on `target/peers-venv.lock`, so test binaries
//! (or test runners) working in parallel create and fill the virtualenv once. When the install
//! fails (typically: no network), the test fails with a message saying so, unless
//! `SPOOKY_SKIP_PYTHON_PEERS=1` is set, in which case it prints a loud notice and passes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{Harness, JsonObject, run_with_limit, scratch_dir, workspace_root};

/// The environment variable that turns an install failure into a skip.
pub const SKIP_VAR: &str = "SPOOKY_SKIP_PYTHON_PEERS";

/// Upper bound for creating the virtualenv and installing one package into it.
pub const PROVISION_LIMIT: Duration = Duration::from_secs(300);

/// The virtualenv's directory.
pub fn venv_dir() -> PathBuf {
    workspace_root().join("target").join("peers-venv")
}

/// A script under `tests/peers/`.
pub fn peer_script(name: &str) -> PathBuf {
    workspace_root().join("tests").join("peers").join(name)
}

/// Makes sure the virtualenv exists and `module` imports in it, installing `requirement`
/// with pip if not. Returns the virtualenv's python, or `None` when provisioning failed and
/// [`SKIP_VAR`] is set (the notice is printed). Panics when provisioning failed otherwise.
pub async fn python_with(module: &str, requirement: &str) -> Option<PathBuf> {
    let result = tokio::time::timeout(PROVISION_LIMIT, provision(module, requirement)).await;
    let error = match result {
        Ok(Ok(python)) => return Some(python),
        Ok(Err(error)) => error,
        Err(_) => format!("provisioning did not finish within {PROVISION_LIMIT:?}"),
    };
    if std::env::var(SKIP_VAR).as_deref() == Ok("1") {
        eprintln!(
            "\n\
             ************************************************************************\n\
             * SKIPPED: the independent Python peer '{module}' is not available,\n\
             * and {SKIP_VAR}=1 is set, so this test passes without running.\n\
             * Cause: {}\n\
             ************************************************************************\n",
            error.lines().next().unwrap_or("unknown")
        );
        eprintln!("{error}");
        return None;
    }
    panic!(
        "cannot provide the independent HTTP/3 client '{module}': {error}\n\n\
         This test installs `{requirement}` from PyPI into {} on first use, which needs \
         python3 (with venv) and network access to PyPI. Without network, set {SKIP_VAR}=1 to \
         skip it (with a notice) instead of failing.",
        venv_dir().display()
    );
}

// `File::lock` is stable since Rust 1.89, later than the workspace's declared MSRV (1.85);
// only these tests need it.
#[allow(clippy::incompatible_msrv)]
async fn provision(module: &str, requirement: &str) -> Result<PathBuf, String> {
    let venv = venv_dir();
    let parent = venv.parent().expect("the venv has a parent").to_path_buf();
    std::fs::create_dir_all(&parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    let lock_path = parent.join("peers-venv.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("opening {}: {e}", lock_path.display()))?;
    // Blocks until no other test process is provisioning; released when `lock` is dropped.
    let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
        .await
        .map_err(|e| format!("waiting for the venv lock: {e}"))?
        .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;

    let python = venv.join("bin").join("python");
    if !python.exists() {
        let mut command = Command::new("python3");
        command.args(["-m", "venv"]).arg(&venv);
        let done = run_with_limit(command, Duration::from_secs(120))
            .await
            .map_err(|e| format!("creating the virtualenv failed: {e}"))?;
        if !done.status.success() || !python.exists() {
            let _ = std::fs::remove_dir_all(&venv);
            return Err(format!(
                "`python3 -m venv {}` failed:\n{}",
                venv.display(),
                done.transcript()
            ));
        }
    }
    if !imports(&python, module).await {
        let mut command = Command::new(&python);
        command.args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--timeout",
            "20",
            "--retries",
            "1",
            requirement,
        ]);
        let done = run_with_limit(command, Duration::from_secs(240))
            .await
            .map_err(|e| format!("`pip install {requirement}` failed: {e}"))?;
        if !done.status.success() {
            return Err(format!(
                "`pip install {requirement}` failed (no network?):\n{}",
                done.transcript()
            ));
        }
        if !imports(&python, module).await {
            return Err(format!(
                "`{requirement}` installed but `import {module}` fails"
            ));
        }
    }
    drop(lock);
    Ok(python)
}

async fn imports(python: &Path, module: &str) -> bool {
    let mut command = Command::new(python);
    command.args(["-c", &format!("import {module}")]);
    run_with_limit(command, Duration::from_secs(60))
        .await
        .is_ok_and(|done| done.status.success())
}

/// One request for a peer script: `GET:/path` or `POST:/path:LENGTH`.
pub fn get(path: &str) -> String {
    format!("GET:{path}")
}

/// A POST of `len` bytes of `support::request_body`.
pub fn post(path: &str, len: usize) -> String {
    format!("POST:{path}:{len}")
}

/// Runs `script` with `python` against the harness's Spooky (the CA written to a file) and
/// returns one parsed JSON object per request.
pub async fn run_peer(
    python: &Path,
    script: &str,
    harness: &Harness,
    requests: &[String],
) -> Vec<JsonObject> {
    let dir = scratch_dir("peer");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &harness.identity.cert_pem).expect("write the CA file");
    let mut command = Command::new(python);
    command
        .arg(peer_script(script))
        .arg(harness.addr.port().to_string())
        .arg(&ca)
        .args(requests)
        .env("PYTHONUNBUFFERED", "1");
    let done = run_with_limit(command, Duration::from_secs(45))
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        done.status.success(),
        "{script} failed against Spooky at {}:\n{}",
        harness.addr,
        done.transcript()
    );
    let results: Vec<JsonObject> = done
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| JsonObject::parse(l).unwrap_or_else(|e| panic!("{script} printed {l:?}: {e}")))
        .collect();
    assert_eq!(
        results.len(),
        requests.len(),
        "{script} answered {} of {} requests:\n{}",
        results.len(),
        requests.len(),
        done.transcript()
    );
    results
}

/// Checks what a peer printed: every request answered 200 over HTTP/3 (curl's
/// `CURL_HTTP_VERSION_3` = 30) with the right body (`/bytes/N` → `backends::pattern(N)`, a
/// POST → its own body echoed), and round-robin spread over `backends` in order.
pub fn check_results(requests: &[String], results: &[JsonObject], backends: &[String]) {
    for (i, (request, result)) in requests.iter().zip(results).enumerate() {
        let mut parts = request.split(':');
        let method = parts.next().unwrap_or_default();
        let path = parts.next().unwrap_or_default();
        let expected_body = if method == "POST" {
            let len: usize = parts
                .next()
                .and_then(|n| n.parse().ok())
                .expect("POST length");
            super::request_body(len)
        } else {
            let len: usize = path
                .strip_prefix("/bytes/")
                .and_then(|n| n.parse().ok())
                .expect("GET requests here are /bytes/N");
            spooky::backends::pattern(len)
        };
        assert_eq!(result.int("status"), Some(200), "{request}: {result:?}");
        assert_eq!(
            result.int("http_version"),
            Some(30),
            "{request}: {result:?}"
        );
        assert_eq!(
            result.int("length"),
            Some(expected_body.len() as i64),
            "{request}: {result:?}"
        );
        assert_eq!(
            result.str("sha256"),
            Some(super::sha256_hex(&expected_body).as_str()),
            "{request}: {result:?}"
        );
        assert_eq!(
            result.str("x_backend"),
            Some(backends[i % backends.len()].as_str()),
            "{request} (request {i}) should go to backend {} by round-robin: {result:?}",
            i % backends.len()
        );
    }
}
