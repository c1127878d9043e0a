//! TLS for both QUIC endpoints: certificates and keys, rustls configs, and the deterministic
//! crypto provider that makes simulated and replayed runs reproducible.
//!
//! In [`CryptoMode::System`] rustls uses ring's system randomness and the wall clock. In
//! [`CryptoMode::Deterministic`] every random byte rustls asks for comes from a seeded RNG,
//! key exchange is X25519 with secrets from that RNG, and the clock is fixed; with an Ed25519
//! server certificate (whose signatures are deterministic) the whole handshake then depends
//! only on the seed.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, GetRandomFailed, SecureRandom, SharedSecret,
    SupportedKxGroup, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, NamedGroup, RootCertStore, SignatureScheme};

use crate::config::{BackendProtocol, Config, ConfigError};
use crate::rng::Rng;

/// How TLS gets its randomness and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoMode {
    /// ring's system randomness and the wall clock: production.
    System,
    /// Seeded randomness and a fixed clock (`unix_time` seconds): simulation and replay.
    Deterministic {
        /// Seed for every random byte TLS uses.
        seed: [u8; 32],
        /// The wall-clock time certificates are checked against.
        unix_time: u64,
    },
}

/// The certificate chain and key Spooky presents to clients.
#[derive(Debug)]
pub struct ServerIdentity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for ServerIdentity {
    fn clone(&self) -> Self {
        ServerIdentity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// How an HTTP/3 backend's certificate is checked.
#[derive(Debug, Clone)]
pub enum UpstreamVerify {
    /// Chains must lead to one of these roots.
    Roots(Arc<RootCertStore>),
    /// Anything goes (signatures are still checked against the presented certificate).
    InsecureSkipVerify,
}

/// Everything TLS needs, read from the files the configuration names.
#[derive(Debug, Clone)]
pub struct TlsMaterials {
    /// The listener's identity.
    pub server: ServerIdentity,
    /// Per backend (in `Config::all_backends` order): how to verify it; `None` for HTTP/1.1.
    pub backends: Vec<Option<UpstreamVerify>>,
}

impl TlsMaterials {
    /// Reads and parses the certificate, key and CA files named by `config`, through `read`
    /// (so the core itself touches no files). Errors name the key path and the file.
    pub fn load(
        config: &Config,
        mut read: impl FnMut(&Path) -> std::io::Result<Vec<u8>>,
    ) -> Result<TlsMaterials, ConfigError> {
        let mut read_file = |key: &str, path: &Path| {
            read(path).map_err(|e| {
                ConfigError::new(
                    key,
                    format!("cannot read {:?}: {e}", path.display().to_string()),
                )
            })
        };
        let cert_bytes = read_file("listen.tls.cert", &config.listen.tls.cert)?;
        let chain =
            parse_certificates(&cert_bytes).map_err(|e| ConfigError::new("listen.tls.cert", e))?;
        let key_bytes = read_file("listen.tls.key", &config.listen.tls.key)?;
        let key =
            parse_private_key(&key_bytes).map_err(|e| ConfigError::new("listen.tls.key", e))?;
        let server = ServerIdentity { chain, key };
        // Fail at load time, not at the first handshake, if the key does not fit the chain.
        server_crypto(&server, CryptoMode::System)
            .map_err(|e| ConfigError::new("listen.tls", e))?;

        // Key paths of every backend, in `Config::all_backends` order.
        let paths = (0..config.backends.len())
            .map(|i| format!("backends[{i}]"))
            .chain(config.pools.iter().enumerate().flat_map(|(p, pool)| {
                (0..pool.backends.len()).map(move |i| format!("pools[{p}].backends[{i}]"))
            }));
        let mut backends = Vec::new();
        for (b, path) in config.all_backends().zip(paths) {
            if b.protocol != BackendProtocol::Http3 {
                backends.push(None);
                continue;
            }
            let verify = if let Some(ca) = &b.tls.ca {
                let key = format!("{path}.tls.ca");
                let bytes = read_file(&key, ca)?;
                let certs = parse_certificates(&bytes).map_err(|e| ConfigError::new(&key, e))?;
                let mut roots = RootCertStore::empty();
                for cert in certs {
                    roots.add(cert).map_err(|e| {
                        ConfigError::new(&key, format!("unusable CA certificate: {e}"))
                    })?;
                }
                UpstreamVerify::Roots(Arc::new(roots))
            } else if b.tls.insecure_skip_verify {
                UpstreamVerify::InsecureSkipVerify
            } else {
                return Err(ConfigError::new(
                    format!("{path}.tls"),
                    "an http3 backend needs tls.ca or tls.insecure_skip_verify: true",
                ));
            };
            backends.push(Some(verify));
        }
        Ok(TlsMaterials { server, backends })
    }
}

/// Parses a certificate chain: PEM with one or more CERTIFICATE blocks, or one DER certificate.
pub fn parse_certificates(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    if looks_like_pem(bytes) {
        let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(bytes).collect();
        let certs = certs.map_err(|e| format!("invalid PEM certificate: {e}"))?;
        if certs.is_empty() {
            return Err("no CERTIFICATE block in PEM file".into());
        }
        Ok(certs)
    } else if bytes.first() == Some(&0x30) {
        Ok(vec![CertificateDer::from(bytes.to_vec())])
    } else {
        Err("neither PEM nor DER certificate data".into())
    }
}

/// Parses a private key: PEM (PKCS#8, PKCS#1 or SEC1), or DER PKCS#8.
pub fn parse_private_key(bytes: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    use rustls::pki_types::pem::PemObject;
    if looks_like_pem(bytes) {
        PrivateKeyDer::from_pem_slice(bytes).map_err(|e| format!("invalid PEM private key: {e}"))
    } else if bytes.first() == Some(&0x30) {
        PrivateKeyDer::try_from(bytes.to_vec()).map_err(|e| format!("invalid DER private key: {e}"))
    } else {
        Err("neither PEM nor DER private key data".into())
    }
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// ALPN for HTTP/3.
pub const ALPN_H3: &[u8] = b"h3";

/// The rustls provider for `mode`.
pub fn provider(mode: CryptoMode) -> Arc<CryptoProvider> {
    let ring = rustls::crypto::ring::default_provider();
    match mode {
        CryptoMode::System => Arc::new(ring),
        CryptoMode::Deterministic { seed, .. } => {
            // rustls wants 'static randomness and groups; deterministic mode is for tests and
            // replay, where leaking two small objects per configuration is harmless.
            let random: &'static SeededRandom =
                Box::leak(Box::new(SeededRandom(Mutex::new(Rng::from_seed(seed)))));
            let x25519: &'static SeededX25519 = Box::leak(Box::new(SeededX25519 { random }));
            Arc::new(CryptoProvider {
                cipher_suites: ring.cipher_suites,
                kx_groups: vec![x25519],
                signature_verification_algorithms: ring.signature_verification_algorithms,
                secure_random: random,
                key_provider: ring.key_provider,
            })
        }
    }
}

fn time_provider(mode: CryptoMode) -> Arc<dyn rustls::time_provider::TimeProvider> {
    match mode {
        CryptoMode::System => Arc::new(rustls::time_provider::DefaultTimeProvider),
        CryptoMode::Deterministic { unix_time, .. } => Arc::new(FixedTime(
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(unix_time)),
        )),
    }
}

/// The QUIC server crypto config for the listener.
pub fn server_crypto(
    identity: &ServerIdentity,
    mode: CryptoMode,
) -> Result<Arc<quinn_proto::crypto::rustls::QuicServerConfig>, String> {
    let mut tls = rustls::ServerConfig::builder_with_details(provider(mode), time_provider(mode))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| format!("certificate and key do not work together: {e}"))?;
    tls.alpn_protocols = vec![ALPN_H3.to_vec()];
    tls.max_early_data_size = 0;
    if matches!(mode, CryptoMode::Deterministic { .. }) {
        // Session tickets are encrypted with a key rustls draws on its own; none are needed.
        tls.send_tls13_tickets = 0;
    }
    quinn_proto::crypto::rustls::QuicServerConfig::try_from(tls)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// The QUIC client crypto config for connections to one HTTP/3 backend.
pub fn client_crypto(
    verify: &UpstreamVerify,
    mode: CryptoMode,
) -> Result<Arc<quinn_proto::crypto::rustls::QuicClientConfig>, String> {
    let provider = provider(mode);
    let builder = rustls::ClientConfig::builder_with_details(provider.clone(), time_provider(mode))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?;
    let mut tls = match verify {
        UpstreamVerify::Roots(roots) => builder
            .with_root_certificates(roots.clone())
            .with_no_client_auth(),
        UpstreamVerify::InsecureSkipVerify => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN_H3.to_vec()];
    tls.enable_early_data = false;
    if matches!(mode, CryptoMode::Deterministic { .. }) {
        tls.resumption = rustls::client::Resumption::disabled();
    }
    quinn_proto::crypto::rustls::QuicClientConfig::try_from(tls)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// The TLS server name for a backend: the configured name, or its IP address.
pub fn backend_server_name(server_name: Option<&str>, ip: std::net::IpAddr) -> String {
    server_name
        .map(str::to_owned)
        .unwrap_or_else(|| ip.to_string())
}

/// Checks that `name` is usable as a TLS server name.
pub fn check_server_name(name: &str) -> Result<(), String> {
    ServerName::try_from(name.to_owned())
        .map(|_| ())
        .map_err(|e| format!("invalid server name {name:?}: {e}"))
}

#[derive(Debug)]
struct FixedTime(UnixTime);

impl rustls::time_provider::TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(self.0)
    }
}

#[derive(Debug)]
struct SeededRandom(Mutex<Rng>);

impl SecureRandom for SeededRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        self.0.lock().map_err(|_| GetRandomFailed)?.fill(buf);
        Ok(())
    }
}

/// X25519 whose secrets come from the seeded RNG.
#[derive(Debug)]
struct SeededX25519 {
    random: &'static SeededRandom,
}

impl SupportedKxGroup for SeededX25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let mut secret = [0u8; 32];
        self.random
            .fill(&mut secret)
            .map_err(|_| rustls::Error::FailedToGetRandomBytes)?;
        let secret = x25519_dalek::StaticSecret::from(secret);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Ok(Box::new(ActiveX25519 { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

struct ActiveX25519 {
    secret: x25519_dalek::StaticSecret,
    public: [u8; 32],
}

impl ActiveKeyExchange for ActiveX25519 {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, rustls::Error> {
        let peer: [u8; 32] = peer_pub_key
            .try_into()
            .map_err(|_| rustls::Error::from(rustls::PeerMisbehaved::InvalidKeyShare))?;
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        if !shared.was_contributory() {
            return Err(rustls::PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared.as_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// Accepts any backend certificate, still checking that the handshake was signed by it.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
