//! Self-signed certificates for development, the demo and tests.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A freshly generated certificate and its key, in both encodings.
pub struct SelfSigned {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
    /// The certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// The private key, DER.
    pub key_der: PrivateKeyDer<'static>,
}

/// The names a local Spooky answers to.
pub const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Generates a self-signed certificate (ECDSA P-256) for `names`.
pub fn self_signed(names: &[&str]) -> anyhow::Result<SelfSigned> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let certified = rcgen::generate_simple_self_signed(names).context("generating certificate")?;
    let key_der = certified.signing_key.serialize_der();
    Ok(SelfSigned {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
        cert_der: certified.cert.der().clone(),
        key_der: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
    })
}

/// Writes `cert.pem` and `key.pem` for localhost, 127.0.0.1 and ::1 into `dir`. Refuses to
/// overwrite existing files unless `force`.
pub fn write_self_signed(dir: &Path, force: bool) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    for path in [&cert_path, &key_path] {
        if path.exists() && !force {
            anyhow::bail!("{} exists; pass --force to replace it", path.display());
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let generated = self_signed(&LOCAL_NAMES)?;
    std::fs::write(&cert_path, generated.cert_pem)
        .with_context(|| format!("writing {}", cert_path.display()))?;
    write_private(&key_path, generated.key_pem.as_bytes())?;
    Ok((cert_path, key_path))
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
