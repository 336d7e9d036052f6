//! The certificate endpoint (§3.3): `GET /ca.crt`, `GET /edge.crt`, `GET /node/<name>`, over
//! TLS with an optional client certificate.
//!
//! `/edge.crt` signs the CSR in the body for the node named by the `NodeName` header when the
//! caller shows a current client certificate of that node (renewal, as upstream's edge
//! rotates: mutual TLS, no token), or a valid enrollment token for a name nobody holds
//! ([`crate::enroll`] has the rules: `409` for a taken name, use counts, bindings, the node
//! limit). The certificate is recorded, with the token's use, durably before it is sent.
//! Refusals say why, in the body.

use std::net::TcpStream;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use futures_rustls::TlsAcceptor;
use smol::future::FutureExt;
use smol::Async;

use crate::enroll::{self, Credential, Refusal};
use crate::http::{read_request, write_response, Request};
use crate::Hub;

/// Upstream's limit on certificate request bodies.
pub const MAX_CSR_BYTES: usize = 1 << 20;
const CONN_TIMEOUT: Duration = Duration::from_secs(15);

/// Serves one connection.
pub async fn handle(hub: Rc<Hub>, acceptor: TlsAcceptor, tcp: Async<TcpStream>) {
    let peer = tcp.get_ref().peer_addr().ok();
    let work = async {
        let mut tls = acceptor.accept(tcp).await?;
        let client_cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        let (mut status, mut ctype, mut body) = match read_request(&mut tls, MAX_CSR_BYTES).await {
            Ok(req) => route(&hub, &req, client_cert.as_deref()),
            Err(e) => (400, "text/plain", e.to_string().into_bytes()),
        };
        // A certificate leaves only once it is on record, with the token use it took (group
        // commit). A failed commit forgets the record (`Hub` reloads the enrollment state).
        if status == 200 {
            if let Err(e) = hub.durable().await {
                (status, ctype, body) = text(500, format!("cannot record the certificate: {e}"));
            }
        }
        if status != 200 {
            log::info!(
                "certificate request from {peer:?} refused ({status}): {}",
                String::from_utf8_lossy(&body)
            );
        }
        write_response(&mut tls, status, ctype, &body).await
    };
    let timed = work.or(async {
        smol::Timer::after(CONN_TIMEOUT).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "certificate request timed out",
        ))
    });
    if let Err(e) = timed.await {
        log::debug!("certificate connection from {peer:?}: {e}");
    }
}

fn text(status: u16, msg: impl Into<String>) -> (u16, &'static str, Vec<u8>) {
    (status, "text/plain", msg.into().into_bytes())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn route(hub: &Hub, req: &Request, client_cert: Option<&[u8]>) -> (u16, &'static str, Vec<u8>) {
    let path = req.path.split('?').next().unwrap_or("");
    if req.method != "GET" && req.method != "POST" {
        return text(405, "use GET");
    }
    if path == "/ca.crt" {
        return (200, "application/octet-stream", hub.ca.cert_der().to_vec());
    }
    if let Some(name) = path.strip_prefix("/node/") {
        let known =
            hub.registry.borrow().contains(name) || hub.enrollment.borrow().holds_certificate(name);
        return if known {
            text(200, "Node found")
        } else {
            text(404, "Node not found")
        };
    }
    if path != "/edge.crt" {
        return text(404, format!("no such endpoint {path}"));
    }
    let Some(node) = req.header("nodename") else {
        return text(400, "missing NodeName header");
    };
    if let Err(e) = proto::validate_node_name(node) {
        return text(400, e);
    }
    match issue(hub, req, node, client_cert, unix_now()) {
        Ok(der) => (200, "application/octet-stream", der),
        Err(r) => text(r.status, r.message),
    }
}

/// Decides, signs and records the certificate (its commit is awaited by [`handle`] before the
/// answer). Synchronous from the first check to the recorded state, so on the one executor no
/// other request interleaves: a token's last use goes to exactly one request.
fn issue(
    hub: &Hub,
    req: &Request,
    node: &str,
    client_cert: Option<&[u8]>,
    now: i64,
) -> Result<Vec<u8>, Refusal> {
    let fail = |status: u16, m: String| Refusal { status, message: m };
    let expected_cn = proto::node_common_name(node);
    // A client certificate for this node (TLS checked that it chains to the CA and is
    // unexpired); one for another node is no credential here.
    let own_cert = client_cert
        .and_then(pki::cert_facts)
        .filter(|f| f.common_name.as_deref() == Some(expected_cn.as_str()));
    let mut enrollment = hub.enrollment.borrow_mut();
    enrollment.prune(now);
    let renewal = match &own_cert {
        Some(f) => match enrollment.check_cert(f, node) {
            Ok(()) => true,
            // A revoked certificate with a token: a re-join after `delete node`.
            Err(_) if req.bearer().is_some() => false,
            Err(r) => return Err(r),
        },
        None => false,
    };
    let claims;
    let cred = if renewal {
        Credential::Renewal(own_cert.as_ref().expect("renewal has a certificate"))
    } else {
        let Some(jwt) = req.bearer() else {
            return Err(fail(
                401,
                "no enrollment token: send Authorization: Bearer <token>".into(),
            ));
        };
        claims = hub
            .ca
            .verify_token(jwt, now)
            .map_err(|e| fail(401, format!("invalid enrollment token: {e}")))?;
        Credential::Token(&claims)
    };
    let registry = hub.registry.borrow();
    let registered = registry.contains(node);
    let slots_used = registry.len() + enrollment.names().filter(|n| !registry.contains(n)).count();
    drop(registry);
    enrollment.may_issue(node, cred, registered, slots_used, hub.cfg.node_limit)?;
    let der = hub
        .ca
        .sign_node_csr(&req.body, node, hub.cfg.edge_cert_validity)
        .map_err(|e| match e {
            pki::SignError::WrongNode { .. } => fail(403, e.to_string()),
            pki::SignError::BadCsr => fail(400, e.to_string()),
            pki::SignError::Sign(_) => fail(500, e.to_string()),
        })?;
    let facts = pki::cert_facts(&der)
        .ok_or_else(|| fail(500, "the issued certificate does not parse".into()))?;
    let mut next = enrollment.clone();
    next.record(node, &facts, cred);
    // Recorded with the token use it took, in the write the answer waits for ([`handle`]).
    hub.store
        .borrow_mut()
        .save_state(enroll::STATE_KEY, &next.encode())
        .map_err(|e| fail(500, format!("cannot record the certificate: {e}")))?;
    *enrollment = next;
    drop(enrollment);
    if !renewal {
        hub.registry.borrow_mut().readmit(node);
    }
    log::info!(
        "issued a certificate for node {node} ({}), serial {}",
        if renewal { "renewal" } else { "enrollment" },
        facts.serial
    );
    Ok(der)
}
