//! TLS to an MQTT broker (rustls, ring provider): the broker's certificate verified against a
//! given CA, host name included, with a client certificate when one is given. Shared by
//! EventBus and the `edge-mqtt` client.

use std::path::Path;
use std::sync::Arc;

use futures_rustls::rustls::crypto::ring;
use futures_rustls::rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Client TLS settings from PEM files; errors name the file and what is wrong with it.
pub fn client_config(
    ca: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Arc<ClientConfig>, String> {
    let ca_der = CertificateDer::from_pem_file(ca)
        .map_err(|e| format!("reading the MQTT broker CA {}: {e}", ca.display()))?;
    let mut roots = RootCertStore::empty();
    roots
        .add(ca_der)
        .map_err(|e| format!("{} is not usable as a trust anchor: {e}", ca.display()))?;
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let cfg = match (cert, key) {
        (Some(cert), Some(key)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("reading {}: {e}", cert.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{} is not a PEM certificate: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("reading key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("the MQTT client certificate and key do not match: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("a client certificate needs both cert and key, or neither".into()),
    };
    Ok(Arc::new(cfg))
}
