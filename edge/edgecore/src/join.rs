//! `edgecore join`: enrollment with a cloud (§3.3 of the protocol spec).
//!
//! 1. Fetch `GET /ca.crt` (raw DER) without trusting the server yet.
//! 2. Check its SHA-256 against the token's first part: a wrong token or an impostor stops here.
//! 3. Make an ECDSA P-256 key and a CSR for `CN=system:node:<node>, O=system:nodes`.
//! 4. `GET /edge.crt` with the CSR as body, `Authorization: Bearer <jwt>` and `NodeName`, this
//!    time verifying the server against the CA.
//! 5. Write CA, certificate, key (owner-only) and config. Nothing is written before every step
//!    has succeeded, so a failed join leaves a previous enrollment intact.
//! 6. Remove the store of an earlier enrollment: a new certificate means a new identity (a
//!    name freed by `cloudcore delete node`, or another cloud), and the objects stored for the
//!    old one are tracked by no cloud; kept, they would run forever. The cloud sends the new
//!    node everything it must hold.
//!
//! A cloud answers `409 Conflict` for a name another node holds; join says the name is taken
//! and exits 1.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_rustls::rustls::{ClientConfig, ClientConnection, StreamOwned};
use proto::token::{hex, EnrollToken};
use rustls_pki_types::{CertificateDer, ServerName};

use crate::config::{Config, Pki, CONFIG_FILE};

const IO_TIMEOUT: Duration = Duration::from_secs(15);

pub struct JoinArgs {
    pub cloud: String,
    pub token: String,
    pub node_name: String,
    pub data_dir: PathBuf,
    pub ws_port: u16,
    pub cert_port: u16,
    pub project_id: Option<String>,
    pub cri_endpoint: Option<String>,
    /// `cri` or `direct`, and the OCI runtime of `direct`.
    pub runtime: Option<String>,
    pub oci_runtime: Option<PathBuf>,
}

pub(crate) fn https_get(
    tls: Arc<ClientConfig>,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<support::http::Response> {
    let addr = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .with_context(|| format!("cannot connect to {addr}"))?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    let name = ServerName::try_from(host.to_owned())
        .with_context(|| format!("{host} is not a valid server name"))?;
    let conn = ClientConnection::new(tls, name)?;
    let mut stream = StreamOwned::new(conn, tcp);
    support::http::exchange(
        &mut stream,
        "GET",
        &format!("{host}:{port}"),
        path,
        headers,
        body,
    )
    .with_context(|| format!("https://{host}:{port}{path}"))
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Removes the metadata store files of an earlier enrollment (either backend), saying so.
fn discard_old_store(data_dir: &std::path::Path) -> anyhow::Result<()> {
    for backend in [store::Backend::Redb, store::Backend::Sled] {
        let path = data_dir.join(store::file_name(backend));
        let removed = match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => Err(e),
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
        };
        removed.with_context(|| {
            format!(
                "joined, but the store of the earlier enrollment {} could not be removed; remove it before `edgecore run`",
                path.display()
            )
        })?;
        eprintln!(
            "removed {} of the earlier enrollment: the cloud sends this node what it must hold",
            path.display()
        );
    }
    Ok(())
}

pub fn join(args: JoinArgs) -> anyhow::Result<()> {
    proto::validate_node_name(&args.node_name).map_err(anyhow::Error::msg)?;
    if let Some(ep) = args.cri_endpoint.as_deref().filter(|e| !e.is_empty()) {
        cri::socket_path(ep)?;
    }
    match args.runtime.as_deref() {
        None | Some(crate::config::RUNTIME_CRI) => {}
        Some(crate::config::RUNTIME_DIRECT) => {
            // A gateway that cannot run its pods is better told now than at the first pod.
            let bin = args.oci_runtime.clone().unwrap_or_else(|| {
                Config::new("x", &args.data_dir, String::new(), String::new()).oci_runtime
            });
            #[cfg(feature = "direct")]
            oci::OciRuntime::check(&bin).map_err(anyhow::Error::msg)?;
            #[cfg(not(feature = "direct"))]
            bail!("this edgecore was built without the direct runtime (feature `direct`); {} is not used", bin.display());
        }
        Some(other) => bail!("--runtime {other:?} must be cri or direct"),
    }
    let token =
        EnrollToken::parse(&args.token).context("the token is not a cloudcore enrollment token")?;
    let host = args.cloud.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("--cloud needs the cloud's address");
    }
    if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
        bail!("--cloud takes a host name or address without a port; use --ws-port and --cert-port for ports");
    }

    eprintln!(
        "fetching the cloud CA from https://{}/ca.crt",
        host_port(host, args.cert_port)
    );
    let resp = https_get(
        crate::tls::fetch_ca_config()?,
        host,
        args.cert_port,
        "/ca.crt",
        &[],
        b"",
    )?;
    if resp.status != 200 {
        bail!(
            "the cloud answered /ca.crt with HTTP {}: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        );
    }
    let ca_der = resp.body;
    let got = ring::digest::digest(&ring::digest::SHA256, &ca_der);
    if got.as_ref() != token.ca_sha256 {
        bail!(
            "the cloud's CA does not match the token: token expects sha256 {}, the server at {host} sent {}. \
             Check the token was made by this cloud (`cloudcore token`) and that --cloud points at it",
            hex(&token.ca_sha256),
            hex(got.as_ref())
        );
    }
    eprintln!(
        "CA verified against the token (sha256 {})",
        hex(&token.ca_sha256[..8])
    );

    let (key, csr) = crate::certs::key_and_csr(&args.node_name)?;

    eprintln!("requesting a certificate for node {}", args.node_name);
    let ca_cert = CertificateDer::from(ca_der.clone());
    let bearer = format!("Bearer {}", token.jwt);
    let resp = https_get(
        crate::tls::enroll_config(ca_cert)?,
        host,
        args.cert_port,
        "/edge.crt",
        &[("Authorization", &bearer), ("NodeName", &args.node_name)],
        &csr,
    )?;
    let why = || String::from_utf8_lossy(&resp.body).trim().to_owned();
    match resp.status {
        200 => {}
        // The cloud gives a name to the node holding it only (renewal), or after an admin
        // deleted the node: never silently to a second gateway.
        409 => bail!("node name {:?} is taken: {}", args.node_name, why()),
        401 | 403 | 429 => bail!("the cloud refused enrollment: {}", why()),
        s => bail!("the cloud answered /edge.crt with HTTP {s}: {}", why()),
    }
    let cert_der = resp.body;

    let data_dir = if args.data_dir.is_absolute() {
        args.data_dir.clone()
    } else {
        std::env::current_dir()?.join(&args.data_dir)
    };
    let pki = Pki::in_dir(&data_dir);
    std::fs::create_dir_all(pki.ca.parent().expect("pki dir has a parent"))
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    crate::certs::discard_pending(&pki);
    crate::write_atomic(&pki.key, key.serialize_pem().as_bytes(), 0o600)?;
    crate::write_atomic(
        &pki.cert,
        crate::certs::pem("CERTIFICATE", &cert_der).as_bytes(),
        0o644,
    )?;
    crate::write_atomic(
        &pki.ca,
        crate::certs::pem("CERTIFICATE", &ca_der).as_bytes(),
        0o644,
    )?;
    let mut cfg = Config::new(
        &args.node_name,
        &data_dir,
        host_port(host, args.ws_port),
        host_port(host, args.cert_port),
    );
    if let Some(p) = args.project_id {
        cfg.cloud.project_id = p;
    }
    if let Some(ep) = args.cri_endpoint {
        cfg.cri_endpoint = ep;
    }
    if let Some(r) = args.runtime {
        cfg.runtime = r;
    }
    if let Some(b) = args.oci_runtime {
        cfg.oci_runtime = b;
    }
    let path = data_dir.join(CONFIG_FILE);
    cfg.save(&path)?;
    discard_old_store(&data_dir)?;
    eprintln!(
        "joined: node {} enrolled; config written to {}",
        args.node_name,
        path.display()
    );
    eprintln!(
        "start it with: edgecore run --data-dir {}",
        data_dir.display()
    );
    Ok(())
}
