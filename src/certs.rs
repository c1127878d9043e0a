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

/// The signature algorithm of a generated certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyKind {
    /// ECDSA P-256: what browsers and most clients expect.
    #[default]
    EcdsaP256,
    /// Ed25519: deterministic signatures, which `spooky run --record` needs for captures that
    /// replay exactly (ECDSA signatures are randomised, so a replayed handshake would differ).
    Ed25519,
}

/// True if `key` is an Ed25519 key (whose signatures are deterministic).
pub fn is_ed25519(key: &PrivateKeyDer<'_>) -> bool {
    rustls::crypto::ring::sign::any_supported_type(key)
        .is_ok_and(|k| k.algorithm() == rustls::SignatureAlgorithm::ED25519)
}

/// Generates a self-signed ECDSA P-256 certificate for `names`.
pub fn self_signed(names: &[&str]) -> anyhow::Result<SelfSigned> {
    self_signed_with(names, KeyKind::EcdsaP256)
}

/// Generates a self-signed certificate for `names` with a `kind` key.
pub fn self_signed_with(names: &[&str], kind: KeyKind) -> anyhow::Result<SelfSigned> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let algorithm = match kind {
        KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
    };
    let signing_key = rcgen::KeyPair::generate_for(algorithm).context("generating a key")?;
    let params = rcgen::CertificateParams::new(names).context("certificate names")?;
    let cert = params
        .self_signed(&signing_key)
        .context("signing the certificate")?;
    let key_der = signing_key.serialize_der();
    Ok(SelfSigned {
        cert_pem: cert.pem(),
        key_pem: signing_key.serialize_pem(),
        cert_der: cert.der().clone(),
        key_der: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
    })
}

/// Writes `cert.pem` and `key.pem` for localhost, 127.0.0.1 and ::1 into `dir`. Refuses to
/// overwrite existing files unless `force`.
pub fn write_self_signed(
    dir: &Path,
    force: bool,
    kind: KeyKind,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    for path in [&cert_path, &key_path] {
        if path.exists() && !force {
            anyhow::bail!("{} exists; pass --force to replace it", path.display());
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let generated = self_signed_with(&LOCAL_NAMES, kind)?;
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
