//! The admin API: HTTP on loopback, authenticated by a bearer credential kept in the data dir
//! (`admin.token`, owner-only). The CLI (`cloudcore get …`) and tests use it.
//!
//! `GET /healthz` (no auth), `GET /api/v1/nodes`, `GET /api/v1/nodes/<name>`.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use cloudhub::http::{read_request, write_response};
use cloudhub::Hub;
use smol::future::FutureExt;
use smol::{Async, LocalExecutor};

/// File holding the admin credential.
pub const TOKEN_FILE: &str = "admin.token";
/// File where a running cloudcore writes its listening addresses.
pub const ADDR_FILE: &str = "cloudcore.addr";

/// Reads the admin credential, creating it on first use.
pub fn load_or_create_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(TOKEN_FILE);
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_owned();
        if t.len() >= 32 {
            return Ok(t);
        }
    }
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("the OS random source failed"))?;
    let token = proto::token::hex(&bytes);
    crate::write_private(&path, token.as_bytes())?;
    Ok(token)
}

pub async fn serve(
    hub: Rc<Hub>,
    listener: Async<TcpListener>,
    token: Rc<String>,
    ex: Rc<LocalExecutor<'static>>,
) {
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            smol::Timer::after(Duration::from_millis(100)).await;
            continue;
        };
        let (hub, token) = (hub.clone(), token.clone());
        ex.spawn(async move {
            let work = async {
                let (status, body) = match read_request(&mut tcp, 64 << 10).await {
                    Ok(req) => route(&hub, &token, &req),
                    Err(e) => (400, serde_json::json!({ "error": e.to_string() })),
                };
                write_response(
                    &mut tcp,
                    status,
                    "application/json",
                    body.to_string().as_bytes(),
                )
                .await
            };
            let _ = work
                .or(async {
                    smol::Timer::after(Duration::from_secs(10)).await;
                    Ok(())
                })
                .await;
        })
        .detach();
    }
}

fn route(hub: &Hub, token: &str, req: &cloudhub::http::Request) -> (u16, serde_json::Value) {
    use serde_json::json;
    if req.path == "/healthz" {
        return (200, json!({ "status": "ok" }));
    }
    // Constant-time comparison: the credential guards the whole admin API.
    let given = req.bearer().unwrap_or("");
    let ok = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0;
    if !ok {
        return (
            401,
            json!({ "error": "missing or wrong admin credential (see <data-dir>/admin.token)" }),
        );
    }
    if req.method != "GET" {
        return (405, json!({ "error": "only GET is served" }));
    }
    let now = SystemTime::now();
    let grace = hub.cfg.node_grace;
    match req.path.strip_prefix("/api/v1/nodes") {
        Some("") | Some("/") => (200, hub.registry.borrow().list(now, grace)),
        Some(rest) => match hub
            .registry
            .borrow()
            .get(rest.trim_start_matches('/'), now, grace)
        {
            Some(n) => (200, n),
            None => (
                404,
                json!({ "error": format!("node {:?} not found", rest.trim_start_matches('/')) }),
            ),
        },
        None => (
            404,
            json!({ "error": format!("no such endpoint {}", req.path) }),
        ),
    }
}

/// Addresses a running cloudcore listens on, as written to [`ADDR_FILE`].
pub struct Addrs {
    pub ws: SocketAddr,
    pub cert: SocketAddr,
    pub admin: SocketAddr,
}

impl Addrs {
    pub fn write(&self, data_dir: &Path) -> anyhow::Result<()> {
        let v = serde_json::json!({ "ws": self.ws.to_string(), "cert": self.cert.to_string(), "admin": self.admin.to_string() });
        crate::write_private(&data_dir.join(ADDR_FILE), v.to_string().as_bytes())
    }

    pub fn read_admin(data_dir: &Path) -> anyhow::Result<SocketAddr> {
        let path = data_dir.join(ADDR_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (is cloudcore serve running with this --data-dir?)",
                path.display()
            )
        })?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is corrupt", path.display()))?;
        v["admin"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{} has no admin address", path.display()))
    }
}
