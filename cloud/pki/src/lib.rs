//! cloudcore's certificate authority (§3.3 of the protocol spec).
//!
//! - The CA (ECDSA P-256, `CN=KubeEdge`, 100 years) is made on first start and kept as PEM in
//!   the data dir; the key file is written owner-only.
//! - The server certificate is re-issued from the CA on every start for the configured SANs, so
//!   changing the advertised addresses needs no manual step.
//! - Node CSRs are signed only when their subject is `CN=system:node:<NodeName header>`.
//! - Edge certificates get a random 128-bit serial (rcgen's default derives it from the public
//!   key, so a reused key would repeat a serial, revoked or not).
//! - Enrollment tokens ([`token`]): `hex(sha256(CA DER)).<JWT HS256 keyed by the CA key DER>`.

#![forbid(unsafe_code)]

pub mod token;

pub use token::{TokenClaims, TokenRejected, DEFAULT_TOKEN_TTL_SECS};

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};

/// Lifetime of an edge certificate (upstream `edgeCertSigningDuration`, 365 days).
pub const EDGE_CERT_DAYS: i64 = 365;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a usable certificate or key: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the OS random source failed")]
    Random,
}

/// Why a CSR was not signed. Shown to the enrolling edge, so it says what to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    #[error("the request body is not a valid DER certificate signing request")]
    BadCsr,
    #[error("the CSR's common name is {found:?}, but node {node:?} may only request {expected:?}")]
    WrongNode {
        node: String,
        found: String,
        expected: String,
    },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// The cloud CA: certificate and signing key.
pub struct Ca {
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Write to a temporary name and rename, so a crash never leaves half a key behind.
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(contents.as_bytes()).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

impl Ca {
    /// Loads `ca.crt`/`ca.key` from `dir`, creating both on first use.
    pub fn load_or_create(dir: &Path) -> Result<Ca, PkiError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let crt = dir.join("ca.crt");
        let key = dir.join("ca.key");
        match (crt.exists(), key.exists()) {
            (true, true) => Self::load(&crt, &key),
            (false, false) => {
                let ca = Self::generate()?;
                write_private(&key, &ca.key_pem())?;
                write_private(&crt, &ca.cert_pem())?;
                Ok(ca)
            }
            _ => Err(PkiError::Corrupt {
                path: dir.to_owned(),
                reason: "only one of ca.crt and ca.key exists; restore the other or remove both to make a new CA (every edge must then re-join)".into(),
            }),
        }
    }

    fn generate() -> Result<Ca, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "KubeEdge");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(365 * 100);
        let cert = params.self_signed(&key)?;
        let cert_der = cert.der().clone();
        let key_der = key.serialize_der();
        let issuer = Issuer::new(params, key);
        Ok(Ca {
            cert_der,
            key_der,
            issuer,
        })
    }

    fn load(crt: &Path, key: &Path) -> Result<Ca, PkiError> {
        let corrupt = |path: &Path, reason: String| PkiError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let key_pem = fs::read_to_string(key).map_err(io_err(key))?;
        let key_pair = KeyPair::from_pem(&key_pem).map_err(|e| corrupt(key, e.to_string()))?;
        let crt_pem = fs::read_to_string(crt).map_err(io_err(crt))?;
        let cert_der = pem_to_der(&crt_pem, "CERTIFICATE")
            .ok_or_else(|| corrupt(crt, "no CERTIFICATE block".into()))?;
        let cert_der = CertificateDer::from(cert_der);
        let key_der = key_pair.serialize_der();
        let issuer = Issuer::from_ca_cert_der(&cert_der, key_pair)
            .map_err(|e| corrupt(crt, e.to_string()))?;
        Ok(Ca {
            cert_der,
            key_der,
            issuer,
        })
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn cert_pem(&self) -> String {
        der_to_pem(&self.cert_der, "CERTIFICATE")
    }

    fn key_pem(&self) -> String {
        der_to_pem(&self.key_der, "PRIVATE KEY")
    }

    /// SHA-256 of the CA certificate DER: the first part of every token.
    pub fn sha256(&self) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.cert_der);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    /// A server certificate (`CN=KubeEdge, O=KubeEdge`, EKU ServerAuth) for `names`: each an
    /// IP address or a DNS name. Returns the certificate chain (leaf, CA) and its key.
    pub fn issue_server_cert(
        &self,
        names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "KubeEdge");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "KubeEdge");
        for n in names {
            params.subject_alt_names.push(match n.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.clone().try_into()?),
            });
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(EDGE_CERT_DAYS);
        let cert = params.signed_by(&key, &self.issuer)?;
        let key_der =
            PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| PkiError::Corrupt {
                path: PathBuf::from("<generated server key>"),
                reason: e.to_string(),
            })?;
        Ok((vec![cert.der().clone(), self.cert_der.clone()], key_der))
    }

    /// A client certificate for a person or tool using the Kubernetes API: `CN=<name>` (the
    /// user), `O=<group>` (`system:masters` for the admin; one group, as rcgen's names hold
    /// one value per attribute), EKU ClientAuth, a random serial, valid for `validity`.
    /// Returns certificate and PKCS#8 key, both PEM.
    pub fn issue_client_cert(
        &self,
        name: &str,
        group: &str,
        validity: std::time::Duration,
    ) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, group);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(random_serial().map_err(|_| PkiError::Random)?);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::seconds(validity.as_secs().max(1) as i64);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Signs an edge's CSR (DER) for `node`, as upstream's `/edge.crt` does: the subject is
    /// copied from the CSR, EKU ClientAuth, valid for `validity` (upstream: 365 days,
    /// [`EDGE_CERT_DAYS`]) and back-dated a tenth of that, at most an hour, for clock skew
    /// (proportionally, so a short test validity still leaves edges most of it to renew in).
    pub fn sign_node_csr(
        &self,
        csr_der: &[u8],
        node: &str,
        validity: std::time::Duration,
    ) -> Result<Vec<u8>, SignError> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|_| SignError::BadCsr)?;
        let expected = proto::node_common_name(node);
        let found = csr_common_name(csr_der).unwrap_or_default();
        if found != expected {
            return Err(SignError::WrongNode {
                node: node.to_owned(),
                found,
                expected,
            });
        }
        let mut params = csr.params;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.subject_alt_names.clear();
        params.serial_number = Some(random_serial().map_err(SignError::Sign)?);
        let now = time::OffsetDateTime::now_utc();
        let secs = validity.as_secs().max(1) as i64;
        params.not_before = now - time::Duration::seconds((secs / 10).min(3600));
        params.not_after = now + time::Duration::seconds(secs);
        let signed = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(|e| SignError::Sign(e.to_string()))?;
        Ok(signed.der().to_vec())
    }

    /// A JWT with `claims`, signed ES256 with the CA key: service account tokens. Their
    /// verifiers hold the CA certificate (its public key), as a cluster's hold the
    /// service-account signing key.
    pub fn sign_es256(&self, claims: &serde_json::Value) -> Result<String, SignError> {
        use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &self.key_der, &rng)
            .map_err(|e| SignError::Sign(e.to_string()))?;
        let header = B64.encode(br#"{"alg":"ES256","typ":"JWT"}"#);
        let body = B64.encode(claims.to_string());
        let input = format!("{header}.{body}");
        let sig = key
            .sign(&rng, input.as_bytes())
            .map_err(|e| SignError::Sign(e.to_string()))?;
        Ok(format!("{input}.{}", B64.encode(sig.as_ref())))
    }

    /// Checks an ES256 JWT signed by this CA and returns its claims (expiry not checked).
    pub fn verify_es256(&self, jwt: &str) -> Result<serde_json::Value, TokenRejected> {
        use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
        let (input, sig) = jwt
            .trim()
            .rsplit_once('.')
            .ok_or(TokenRejected::Malformed)?;
        let sig = B64.decode(sig).map_err(|_| TokenRejected::Malformed)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&self.cert_der)
            .map_err(|_| TokenRejected::Malformed)?;
        let public = cert.public_key().subject_public_key.data.to_vec();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public)
            .verify(input.as_bytes(), &sig)
            .map_err(|_| TokenRejected::BadSignature)?;
        let body = input.split('.').nth(1).ok_or(TokenRejected::Malformed)?;
        let body = B64.decode(body).map_err(|_| TokenRejected::Malformed)?;
        serde_json::from_slice(&body).map_err(|_| TokenRejected::Malformed)
    }

    pub(crate) fn hmac_key(&self) -> ring::hmac::Key {
        // Upstream keys the HMAC with the CA private key's DER bytes (§3.3).
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.key_der)
    }
}

/// Bytes of the serials given to edge certificates.
pub const SERIAL_BYTES: usize = 16;

fn random_serial() -> Result<rcgen::SerialNumber, String> {
    let mut b = [0u8; SERIAL_BYTES];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| "the OS random source failed".to_owned())?;
    // Positive, and never with a leading zero byte, so every encoder writes the same bytes.
    b[0] = (b[0] & 0x7f) | 0x40;
    Ok(rcgen::SerialNumber::from_slice(&b))
}

/// What the cloud needs to know of a certificate it issued or is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    pub common_name: Option<String>,
    /// Lower-case hex of the serial's bytes as encoded.
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// The facts of a DER certificate, `None` if it does not parse.
pub fn cert_facts(cert_der: &[u8]) -> Option<CertFacts> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let v = cert.validity();
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    Some(CertFacts {
        common_name,
        serial: proto::token::hex(cert.raw_serial()),
        not_before: v.not_before.timestamp(),
        not_after: v.not_after.timestamp(),
    })
}

/// The subject of a DER certificate as kube-apiserver's x509 authenticator reads it: the
/// common name (the user) and every organization (the groups). `None` if it does not parse.
pub fn subject(cert_der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_owned();
    let orgs = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some((cn, orgs))
}

/// The subject common name of a DER certificate, if it has one.
pub fn common_name(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}

fn csr_common_name(csr_der: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer;
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(csr_der).ok()?;
    let cn = csr
        .certification_request_info
        .subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}

/// Encodes DER as PEM with the given label (LF line endings).
pub fn der_to_pem(der: &[u8], label: &str) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// The first PEM block with `label`, decoded.
pub fn pem_to_der(text: &str, label: &str) -> Option<Vec<u8>> {
    pem::parse_many(text)
        .ok()?
        .into_iter()
        .find(|p| p.tag() == label)
        .map(|p| p.into_contents())
}

#[cfg(test)]
mod tests {
    #[test]
    fn es256_tokens_verify_with_the_ca_and_not_with_another() {
        let dir = std::env::temp_dir().join(format!("pki-es256-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = Ca::load_or_create(&dir).unwrap();
        let jwt = ca
            .sign_es256(&serde_json::json!({"sub": "system:serviceaccount:default:default"}))
            .unwrap();
        assert_eq!(
            ca.verify_es256(&jwt).unwrap()["sub"],
            "system:serviceaccount:default:default"
        );
        let other = Ca::load_or_create(&dir.join("other")).unwrap();
        assert!(matches!(
            other.verify_es256(&jwt),
            Err(TokenRejected::BadSignature)
        ));
        let mut tampered = jwt.clone();
        tampered.insert(jwt.find('.').unwrap() + 2, 'x');
        assert!(ca.verify_es256(&tampered).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    use super::*;

    const YEAR: std::time::Duration = std::time::Duration::from_secs(EDGE_CERT_DAYS as u64 * 86400);

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pki-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn csr_for(cn: &str) -> Vec<u8> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name
            .push(DnType::OrganizationName, proto::NODE_ORGANIZATION);
        p.serialize_request(&key).unwrap().der().to_vec()
    }

    #[test]
    fn client_certificates_carry_user_and_groups_and_chain_to_the_ca() {
        let d = tmp("client");
        let ca = Ca::load_or_create(&d).unwrap();
        let (cert, key) = ca
            .issue_client_cert("admin", "system:masters", YEAR)
            .unwrap();
        let der = pem_to_der(&cert, "CERTIFICATE").unwrap();
        assert_eq!(
            subject(&der),
            Some(("admin".into(), vec!["system:masters".into()]))
        );
        assert!(pem_to_der(&key, "PRIVATE KEY").is_some());
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        assert!(parsed.verify_signature(Some(ca_cert.public_key())).is_ok());
        let other = Ca::load_or_create(&d.join("other")).unwrap();
        let (_, other_cert) = x509_parser::parse_x509_certificate(other.cert_der()).unwrap();
        assert!(parsed
            .verify_signature(Some(other_cert.public_key()))
            .is_err());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn ca_persists_and_reloads_identically() {
        let d = tmp("reload");
        let a = Ca::load_or_create(&d).unwrap();
        let b = Ca::load_or_create(&d).unwrap();
        assert_eq!(a.cert_der(), b.cert_der());
        assert_eq!(common_name(a.cert_der()).as_deref(), Some("KubeEdge"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(d.join("ca.key")).unwrap().permissions(),
        );
        assert_eq!(mode & 0o077, 0, "CA key must be owner-only");
        // A token from one load verifies on the other: the HMAC key survived the round trip.
        let t = a.issue_token(&TokenClaims::expiring(i64::MAX));
        assert!(b.verify_token(&t.jwt, 0).is_ok());
    }

    #[test]
    fn half_a_ca_is_refused_not_regenerated() {
        let d = tmp("half");
        Ca::load_or_create(&d).unwrap();
        fs::remove_file(d.join("ca.key")).unwrap();
        assert!(matches!(
            Ca::load_or_create(&d),
            Err(PkiError::Corrupt { .. })
        ));
    }

    #[test]
    fn signs_only_the_csr_of_the_named_node() {
        let ca = Ca::load_or_create(&tmp("sign")).unwrap();
        let der = ca
            .sign_node_csr(&csr_for("system:node:edge0"), "edge0", YEAR)
            .unwrap();
        assert_eq!(common_name(&der).as_deref(), Some("system:node:edge0"));
        assert!(matches!(
            ca.sign_node_csr(&csr_for("system:node:edge1"), "edge0", YEAR),
            Err(SignError::WrongNode { .. })
        ));
        assert_eq!(
            ca.sign_node_csr(b"not a csr", "edge0", YEAR),
            Err(SignError::BadCsr)
        );
    }

    #[test]
    fn serials_are_random_even_for_the_same_key() {
        let ca = Ca::load_or_create(&tmp("serial")).unwrap();
        let csr = csr_for("system:node:edge0");
        let a = cert_facts(&ca.sign_node_csr(&csr, "edge0", YEAR).unwrap()).unwrap();
        let b = cert_facts(&ca.sign_node_csr(&csr, "edge0", YEAR).unwrap()).unwrap();
        assert_ne!(a.serial, b.serial, "one CSR signed twice");
        assert_eq!(a.serial.len(), 2 * SERIAL_BYTES);
        assert_eq!(a.common_name.as_deref(), Some("system:node:edge0"));
        assert!(a.not_after - a.not_before > YEAR.as_secs() as i64);
    }

    #[test]
    fn edge_certificates_last_the_configured_validity() {
        let ca = Ca::load_or_create(&tmp("validity")).unwrap();
        let span = |der: &[u8]| {
            let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
            let v = c.validity();
            (
                v.not_before.timestamp(),
                v.not_after.timestamp() - v.not_before.timestamp(),
            )
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let (nb, len) = span(
            &ca.sign_node_csr(&csr_for("system:node:e"), "e", YEAR)
                .unwrap(),
        );
        assert_eq!(len, YEAR.as_secs() as i64 + 3600, "back-dated one hour");
        assert!((now - 3600 - nb).abs() <= 2);
        let short = std::time::Duration::from_secs(100);
        let (nb, len) = span(
            &ca.sign_node_csr(&csr_for("system:node:e"), "e", short)
                .unwrap(),
        );
        assert_eq!(len, 110, "back-dated a tenth");
        assert!((now - 10 - nb).abs() <= 2);
    }

    #[test]
    fn pem_round_trip() {
        let der = vec![1u8, 2, 3, 250, 251];
        assert_eq!(pem_to_der(&der_to_pem(&der, "X"), "X"), Some(der));
        assert_eq!(pem_to_der("nothing", "X"), None);
    }
}
