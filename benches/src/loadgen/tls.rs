//! TLS for the HTTP/3 client: trust a CA file, or (benchmarks only) accept any certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// How the load generator checks the server's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Trust these certificates as roots.
    Roots(Vec<CertificateDer<'static>>),
    /// Check handshake signatures but accept any certificate chain and name.
    Insecure,
}

impl Trust {
    /// Roots read from a PEM file.
    pub fn from_pem_file(path: &Path) -> anyhow::Result<Trust> {
        let certs = CertificateDer::pem_file_iter(path)
            .with_context(|| format!("reading {}", path.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing {}", path.display()))?;
        anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
        Ok(Trust::Roots(certs))
    }
}

/// Accepts any certificate; still verifies that the handshake was signed by its key.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A quinn client configuration for HTTP/3 (ALPN `h3`, TLS 1.3) with the given trust.
pub fn client_config(trust: &Trust) -> anyhow::Result<quinn::ClientConfig> {
    // Long enough never to fire during a run; runs end with an explicit close, not a timeout.
    client_config_with_idle(trust, Duration::from_secs(30))
}

/// [`client_config`] with the given QUIC idle timeout.
pub fn client_config_with_idle(
    trust: &Trust,
    idle_timeout: Duration,
) -> anyhow::Result<quinn::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut tls = match trust {
        Trust::Roots(roots) => {
            let mut store = rustls::RootCertStore::empty();
            for cert in roots {
                store
                    .add(cert.clone())
                    .context("adding a root certificate")?;
            }
            builder.with_root_certificates(store).with_no_client_auth()
        }
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(idle_timeout.try_into()?));
    // Room for many concurrent streams with large responses.
    transport.stream_receive_window((4u32 << 20).into());
    transport.receive_window((32u32 << 20).into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}
