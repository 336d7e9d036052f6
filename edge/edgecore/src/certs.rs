//! The edge certificate: its key and CSR (for `join` and for renewal), and rotation (protocol
//! spec §3.3 step 5): at a random point in 70–90 % of the certificate's lifetime a new key and
//! certificate are requested from the cloud's `/edge.crt`, presenting the current certificate
//! instead of a token. The new pair replaces the old one on disk and EdgeHub redials with it.
//!
//! Replacing two files cannot be one rename, so it is a small journal: both new files are
//! written as `<file>.next`, then the key is renamed into place, then the certificate.
//! [`recover`] (run at start-up) finishes an interrupted replacement, so a power cut never
//! leaves a key that does not match its certificate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::config::Pki;

/// Renewal retries back off from this to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(30);
const RETRY_MAX: Duration = Duration::from_secs(3600);

/// A fresh ECDSA P-256 key and a CSR for `CN=system:node:<node>, O=system:nodes`.
pub fn key_and_csr(node: &str) -> anyhow::Result<(KeyPair, Vec<u8>)> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, proto::node_common_name(node));
    params
        .distinguished_name
        .push(DnType::OrganizationName, proto::NODE_ORGANIZATION);
    let csr = params.serialize_request(&key)?;
    Ok((key, csr.der().to_vec()))
}

pub fn pem(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// One DER element at the front of `b`: tag, contents, and what follows.
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let len = b[..n].iter().fold(0usize, |acc, x| acc << 8 | *x as usize);
        b = &b[n..];
        len
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as unix seconds.
fn der_time(tag: u8, v: &[u8]) -> Option<i64> {
    let digits = v.strip_suffix(b"Z")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let s = std::str::from_utf8(digits).ok()?;
    let full = match (tag, s.len()) {
        // RFC 5280: two-digit years 50–99 are 19xx, 00–49 are 20xx.
        (0x17, 12) => format!("{}{s}", if &s[..2] >= "50" { "19" } else { "20" }),
        (0x18, 14) => s.to_owned(),
        _ => return None,
    };
    proto::time::parse_rfc3339(&format!(
        "{}-{}-{}T{}:{}:{}Z",
        &full[..4],
        &full[4..6],
        &full[6..8],
        &full[8..10],
        &full[10..12],
        &full[12..14]
    ))
}

/// `(notBefore, notAfter)` of an X.509 certificate (DER), as unix seconds. A small walk of
/// the TBSCertificate instead of a full X.509 parser: this is all the edge needs to know.
pub fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    let (0x30, cert, _) = tlv(cert)? else {
        return None;
    };
    let (0x30, tbs, _) = tlv(cert)? else {
        return None;
    };
    let (tag, _, after_version) = tlv(tbs)?;
    let rest = if tag == 0xA0 { after_version } else { tbs };
    let (0x02, _, rest) = tlv(rest)? else {
        return None; // serial number
    };
    let (0x30, _, rest) = tlv(rest)? else {
        return None; // signature algorithm
    };
    let (0x30, _, rest) = tlv(rest)? else {
        return None; // issuer
    };
    let (0x30, validity, _) = tlv(rest)? else {
        return None;
    };
    let (t1, not_before, rest) = tlv(validity)?;
    let (t2, not_after, _) = tlv(rest)?;
    Some((der_time(t1, not_before)?, der_time(t2, not_after)?))
}

/// When to renew a certificate valid from `not_before` to `not_after`: at 70–90 % of its
/// lifetime, `jitter` in [0, 1) picking the point so a fleet enrolled together does not
/// renew together.
pub fn renew_at(not_before: i64, not_after: i64, jitter: f64) -> i64 {
    let life = (not_after - not_before).max(0);
    let permille = 700 + (200.0 * jitter.clamp(0.0, 0.999_999)) as i64;
    not_before + life * permille / 1000
}

fn next(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".next");
    PathBuf::from(s)
}

fn sync_dir(file: &Path) -> std::io::Result<()> {
    match file.parent() {
        Some(d) => std::fs::File::open(d)?.sync_all(),
        None => Ok(()),
    }
}

/// Finishes or discards an interrupted replacement of the certificate and key. Returns true
/// when a renewed pair was completed.
pub fn recover(pki: &Pki) -> anyhow::Result<bool> {
    let (cert_next, key_next) = (next(&pki.cert), next(&pki.key));
    let context = || format!("finishing the renewal of {}", pki.cert.display());
    if cert_next.exists() {
        // Both .next files were complete before the first rename: finish the replacement.
        if key_next.exists() {
            std::fs::rename(&key_next, &pki.key).with_context(context)?;
        }
        std::fs::rename(&cert_next, &pki.cert).with_context(context)?;
        sync_dir(&pki.cert).with_context(context)?;
        return Ok(true);
    }
    if key_next.exists() {
        // The new certificate was never written: the old pair is intact.
        std::fs::remove_file(&key_next).with_context(context)?;
    }
    Ok(false)
}

/// Removes leftovers of a renewal (a new enrollment supersedes them).
pub fn discard_pending(pki: &Pki) {
    let _ = std::fs::remove_file(next(&pki.cert));
    let _ = std::fs::remove_file(next(&pki.key));
}

/// Installs a new key and certificate through the journal described above.
pub fn install(pki: &Pki, key_pem: &str, cert_der: &[u8]) -> anyhow::Result<()> {
    let (cert_next, key_next) = (next(&pki.cert), next(&pki.key));
    crate::write_atomic(&key_next, key_pem.as_bytes(), 0o600)?;
    crate::write_atomic(&cert_next, pem("CERTIFICATE", cert_der).as_bytes(), 0o644)?;
    // Refuse a pair the tunnel could not use before it replaces one that works.
    let staged = Pki {
        cert: cert_next.clone(),
        key: key_next.clone(),
        ..pki.clone()
    };
    if let Err(e) = crate::tls::tunnel_config(&staged) {
        discard_pending(pki);
        return Err(e.context("the renewed certificate is not usable"));
    }
    sync_dir(&pki.cert)?;
    recover(pki)?;
    Ok(())
}

/// The `(notBefore, notAfter)` of the certificate file at `path`.
fn file_validity(path: &Path) -> anyhow::Result<(i64, i64)> {
    let der = CertificateDer::from_pem_file(path)
        .with_context(|| format!("reading {}", path.display()))?;
    validity(&der).with_context(|| format!("{} has no readable validity", path.display()))
}

/// One renewal (blocking IO): new key and CSR, `/edge.crt` with the current certificate,
/// then [`install`]. Returns the new certificate's notAfter.
pub fn renew(pki: &Pki, node: &str, cert_server: &str) -> anyhow::Result<i64> {
    let (host, port) = cert_server
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse().ok()?,
            ))
        })
        .with_context(|| format!("cert server {cert_server:?} is not host:port"))?;
    let (key, csr) = key_and_csr(node)?;
    let resp = crate::join::https_get(
        crate::tls::tunnel_config(pki)?,
        host,
        port,
        "/edge.crt",
        &[("NodeName", node)],
        &csr,
    )?;
    if resp.status != 200 {
        bail!(
            "the cloud refused the renewal with HTTP {}: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body).trim()
        );
    }
    let (_, not_after) =
        validity(&resp.body).context("the cloud sent a certificate without a readable validity")?;
    install(pki, &key.serialize_pem(), &resp.body)?;
    Ok(not_after)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Keeps the edge certificate renewed, forever. After each renewal one message on `renewed`
/// makes EdgeHub redial with the new certificate. The HTTPS exchange runs on a short-lived
/// blocking thread (once in months) so a slow cloud never stalls the executor.
pub async fn rotate(
    pki: Pki,
    node: String,
    cert_server: String,
    renewed: smol::channel::Sender<()>,
) {
    let mut jitter = fastrand::f64();
    let mut retry = RETRY_MIN;
    loop {
        let due = match file_validity(&pki.cert) {
            Ok((not_before, not_after)) => renew_at(not_before, not_after, jitter),
            Err(e) => {
                log::warn!("certificate rotation: {e:#}");
                smol::Timer::after(RETRY_MAX).await;
                continue;
            }
        };
        let now = unix_now();
        if due > now {
            log::debug!(
                "edge certificate renewal due at {}",
                proto::time::rfc3339(due)
            );
            // An hour at most at a time: the wall clock may jump (NTP after boot, suspend).
            smol::Timer::after(Duration::from_secs((due - now).min(3600) as u64)).await;
            continue;
        }
        let (paths, node2, server) = (pki.clone(), node.clone(), cert_server.clone());
        match smol::unblock(move || renew(&paths, &node2, &server)).await {
            Ok(not_after) => {
                log::info!(
                    "renewed the edge certificate; valid until {}",
                    proto::time::rfc3339(not_after)
                );
                jitter = fastrand::f64();
                retry = RETRY_MIN;
                let _ = renewed.try_send(());
            }
            Err(e) => {
                log::warn!(
                    "certificate renewal failed, retrying in {} s: {e:#}",
                    retry.as_secs()
                );
                smol::Timer::after(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(nb: (i32, u8, u8), na: (i32, u8, u8)) -> Vec<u8> {
        let mut p = CertificateParams::new(vec!["x".into()]).unwrap();
        p.not_before = rcgen::date_time_ymd(nb.0, nb.1, nb.2);
        p.not_after = rcgen::date_time_ymd(na.0, na.1, na.2);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn validity_reads_utc_and_generalized_times() {
        let t = |s: &str| proto::time::parse_rfc3339(s).unwrap();
        // Before 2050 rcgen writes UTCTime, from 2050 GeneralizedTime.
        let der = cert((2026, 1, 2), (2051, 3, 4));
        assert_eq!(
            validity(&der),
            Some((t("2026-01-02T00:00:00Z"), t("2051-03-04T00:00:00Z")))
        );
        let der = cert((1999, 12, 31), (2000, 1, 1));
        assert_eq!(
            validity(&der),
            Some((t("1999-12-31T00:00:00Z"), t("2000-01-01T00:00:00Z")))
        );
        // Truncated or corrupted input is None, never a panic.
        for n in 0..der.len() {
            let _ = validity(&der[..n]);
            let mut bad = der.clone();
            bad[n] ^= 0xff;
            let _ = validity(&bad);
        }
        assert_eq!(validity(b"\x30\x84\xff\xff\xff\xff"), None);
        assert_eq!(der_time(0x17, "26é102000000Z".as_bytes()), None);
    }

    #[test]
    fn renewal_falls_in_70_to_90_percent_of_the_lifetime() {
        assert_eq!(renew_at(1000, 2000, 0.0), 1700);
        assert_eq!(renew_at(1000, 2000, 0.5), 1800);
        assert_eq!(renew_at(1000, 2000, 0.999_999), 1899);
        assert_eq!(
            renew_at(1000, 500, 0.5),
            1000,
            "expired or inverted: due now"
        );
    }

    fn pki(tag: &str) -> (PathBuf, Pki) {
        let d = std::env::temp_dir().join(format!("certs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let p = Pki {
            ca: d.join("ca.crt"),
            cert: d.join("edge.crt"),
            key: d.join("edge.key"),
        };
        std::fs::write(&p.cert, "old cert").unwrap();
        std::fs::write(&p.key, "old key").unwrap();
        (d, p)
    }

    #[test]
    fn an_interrupted_replacement_is_finished_or_discarded_never_mixed() {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        // Cut after writing only the new key: the old pair stays.
        let (d, p) = pki("key-only");
        std::fs::write(next(&p.key), "new key").unwrap();
        assert!(!recover(&p).unwrap());
        assert_eq!(
            (read(&p.cert), read(&p.key)),
            ("old cert".into(), "old key".into())
        );
        assert!(!next(&p.key).exists());
        std::fs::remove_dir_all(d).unwrap();
        // Cut after writing both: the new pair goes in.
        let (d, p) = pki("both");
        std::fs::write(next(&p.key), "new key").unwrap();
        std::fs::write(next(&p.cert), "new cert").unwrap();
        assert!(recover(&p).unwrap());
        assert_eq!(
            (read(&p.cert), read(&p.key)),
            ("new cert".into(), "new key".into())
        );
        std::fs::remove_dir_all(d).unwrap();
        // Cut after renaming the key: the certificate follows.
        let (d, p) = pki("key-renamed");
        std::fs::write(&p.key, "new key").unwrap();
        std::fs::write(next(&p.cert), "new cert").unwrap();
        assert!(recover(&p).unwrap());
        assert_eq!(
            (read(&p.cert), read(&p.key)),
            ("new cert".into(), "new key".into())
        );
        // Nothing pending: nothing changes.
        assert!(!recover(&p).unwrap());
        assert_eq!(read(&p.cert), "new cert");
        std::fs::remove_dir_all(d).unwrap();
    }
}
