//! TLS settings for the tunnel and for enrollment (rustls with the ring provider).

use std::sync::Arc;

use anyhow::Context;
use futures_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use futures_rustls::rustls::crypto::{
    ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider,
};
use futures_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use futures_rustls::rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use crate::config::Pki;

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Trust exactly the cloud CA.
pub fn roots(ca_der: CertificateDer<'static>) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca_der)
        .context("the cloud CA certificate is not usable as a trust anchor")?;
    Ok(roots)
}

/// The tunnel's TLS: server verified against the cloud CA (host name included), our
/// certificate presented. No ALPN: upstream's server would pick h2, which WebSocket can't use.
pub fn tunnel_config(pki: &Pki) -> anyhow::Result<Arc<ClientConfig>> {
    let ca = CertificateDer::from_pem_file(&pki.ca)
        .with_context(|| format!("reading cloud CA {}", pki.ca.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.cert)
        .with_context(|| format!("reading {}", pki.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate", pki.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&pki.key)
        .with_context(|| format!("reading key {}", pki.key.display()))?;
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(certs, key)
        .context("the edge certificate and key do not match")?;
    Ok(Arc::new(cfg))
}

/// Enrollment's second step: verify the server against the CA just checked against the token.
pub fn enroll_config(ca_der: CertificateDer<'static>) -> anyhow::Result<Arc<ClientConfig>> {
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_der)?)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Enrollment's first step only: fetch `/ca.crt` from a server not yet trusted. Safe because
/// the CA received is then checked against the hash inside the token (§3.3), and nothing
/// secret is sent on this connection.
pub fn fetch_ca_config() -> anyhow::Result<Arc<ClientConfig>> {
    let provider = provider();
    let cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustOnFirstFetch(provider)))
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct TrustOnFirstFetch(Arc<CryptoProvider>);

impl ServerCertVerifier for TrustOnFirstFetch {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, futures_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, futures_rustls::rustls::Error> {
        verify_tls12_signature(
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
    ) -> Result<HandshakeSignatureValid, futures_rustls::rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
