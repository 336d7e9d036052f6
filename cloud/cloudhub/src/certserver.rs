//! The certificate endpoint (§3.3): `GET /ca.crt`, `GET /edge.crt`, `GET /node/<name>`, over
//! TLS with an optional client certificate.
//!
//! `/edge.crt` signs the CSR in the body for the node named by the `NodeName` header when the
//! caller shows either a valid enrollment token (`Authorization: Bearer <jwt>`) or a client
//! certificate already issued to that node (rotation). Refusals say why, in the body.

use std::net::TcpStream;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use futures_rustls::TlsAcceptor;
use smol::future::FutureExt;
use smol::Async;

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
        let client_cn = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| pki::common_name(c));
        let (status, ctype, body) = match read_request(&mut tls, MAX_CSR_BYTES).await {
            Ok(req) => route(&hub, &req, client_cn.as_deref()),
            Err(e) => (400, "text/plain", e.to_string().into_bytes()),
        };
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

fn route(hub: &Hub, req: &Request, client_cn: Option<&str>) -> (u16, &'static str, Vec<u8>) {
    let path = req.path.split('?').next().unwrap_or("");
    if req.method != "GET" && req.method != "POST" {
        return text(405, "use GET");
    }
    if path == "/ca.crt" {
        return (200, "application/octet-stream", hub.ca.cert_der().to_vec());
    }
    if let Some(name) = path.strip_prefix("/node/") {
        return if hub.registry.borrow().contains(name) {
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
    let by_cert = client_cn == Some(proto::node_common_name(node).as_str());
    if !by_cert {
        let Some(jwt) = req.bearer() else {
            return text(
                401,
                "no enrollment token: send Authorization: Bearer <token>",
            );
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if let Err(e) = hub.ca.verify_jwt(jwt, now) {
            return text(401, format!("invalid enrollment token: {e}"));
        }
    }
    match hub
        .ca
        .sign_node_csr(&req.body, node, hub.cfg.edge_cert_validity)
    {
        Ok(der) => {
            log::info!(
                "issued a certificate for node {node} ({})",
                if by_cert { "renewal" } else { "enrollment" }
            );
            (200, "application/octet-stream", der)
        }
        Err(e @ pki::SignError::WrongNode { .. }) => text(403, e.to_string()),
        Err(e @ pki::SignError::BadCsr) => text(400, e.to_string()),
        Err(e) => text(500, e.to_string()),
    }
}
