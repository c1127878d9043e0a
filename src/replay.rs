//! `spooky replay`: rebuilds the core a capture was recorded from and feeds it the recorded
//! inputs, to reproduce exactly what a production shard did (for debugging a report, or for
//! checking that a change to the core leaves recorded behaviour alone).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use spooky_core::capture::{Capture, ReplayReport};
use spooky_core::{Config, Core, CoreParams, CryptoMode, TlsMaterials};

/// What a replay found, with what was needed to run it.
pub struct Replayed {
    /// The capture's shard.
    pub shard: u16,
    /// Inputs, outputs and digests.
    pub report: ReplayReport,
}

/// Reads the capture at `path` and replays it. Backend CA files named by the recorded
/// configuration are read from disk (relative to the current directory), as `spooky run` did.
pub fn replay_file(path: &Path) -> anyhow::Result<Replayed> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let epoch = Instant::now();
    let capture = Capture::decode(&bytes, epoch)
        .with_context(|| format!("{} is not a usable capture", path.display()))?;
    let header = capture.header.clone();
    let config = Config::from_yaml(&header.config_yaml)
        .context("the capture's configuration no longer parses")?;
    let tls = recorded_tls(&config, &header.cert_chain, &header.key)?;
    let mut core = Core::new(CoreParams {
        config: Arc::new(config),
        tls,
        seed: header.seed,
        shard: header.shard,
        crypto: CryptoMode::Deterministic {
            seed: header.crypto_seed,
            unix_time: header.unix_time,
        },
        max_gso_segments: usize::from(header.max_gso_segments).max(1),
        now: epoch,
    })
    .context("building the recorded core")?;
    Ok(Replayed {
        shard: header.shard,
        report: capture.replay(&mut core),
    })
}

/// TLS materials as the recorded run had them: the listener's identity from the capture, the
/// backends' trust from the files the configuration names.
fn recorded_tls(config: &Config, chain: &[Vec<u8>], key: &[u8]) -> anyhow::Result<TlsMaterials> {
    let leaf = chain
        .first()
        .context("the capture holds no listener certificate")?;
    let (cert_path, key_path) = (&config.listen.tls.cert, &config.listen.tls.key);
    let mut tls = TlsMaterials::load(config, |p| {
        if p == cert_path {
            Ok(leaf.clone())
        } else if p == key_path {
            Ok(key.to_vec())
        } else {
            std::fs::read(p)
        }
    })
    .context("rebuilding the recorded TLS setup")?;
    tls.server.chain = chain
        .iter()
        .map(|c| rustls_pki_types::CertificateDer::from(c.clone()))
        .collect();
    Ok(tls)
}
