//! The admin API: HTTP on loopback, authenticated by a bearer credential kept in the data dir
//! (`admin.token`, owner-only). The CLI (`cloudcore get …`) and tests use it.
//!
//! - `GET /healthz` (no auth)
//! - `GET /api/v1/nodes[/<name>]`, `DELETE /api/v1/nodes/<name>` (revokes its certificates,
//!   closes its session, deletes its pods: `cloudhub::deletion`)
//! - `GET /api/v1/enrollments`: every name holding a `--node-limit` slot, with its certificates
//! - `POST /api/v1/apply` with a YAML/JSON manifest (all documents or none are stored)
//! - `GET /api/v1/<pods|configmaps|secrets>[?namespace=<ns>]`, `GET|DELETE /api/v1/<kind>/<ns>/<name>`
//!   (a running pod on a node is deleted gracefully: `?gracePeriodSeconds=N`, 0 at once)
//! - `GET /api/v1/events/<kind>/<ns>/<name>`: recent events of one object
//! - `GET /api/v1/sync/<node>`: what a node acknowledged (object, version)

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use cloudhub::http::{read_request_checked, write_response, RequestError};
use cloudhub::Hub;
use cloudstore::{Kind, ObjectKey};
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
                // The credential is checked on the head: an unauthenticated request costs its
                // head, never its body.
                let check = |req: &cloudhub::http::Request| {
                    if req.path == "/healthz" || authorized(req, &token) {
                        Ok(())
                    } else {
                        Err((401, UNAUTHORIZED.to_owned()))
                    }
                };
                let read =
                    read_request_checked(&mut tcp, crate::manifest::MAX_MANIFEST_BYTES, check);
                let (mut status, mut body) = match read.await {
                    Ok(req) => route(&hub, &token, &req),
                    Err(RequestError::Refused(code, why)) => {
                        (code, serde_json::json!({ "error": why }))
                    }
                    Err(e @ (RequestError::TooLarge(_) | RequestError::HeadTooLarge(_))) => {
                        (413, serde_json::json!({ "error": e.to_string() }))
                    }
                    Err(e) => (400, serde_json::json!({ "error": e.to_string() })),
                };
                // Answered only once what it wrote is durable (group commit).
                if status < 300 {
                    if let Err(e) = hub.durable().await {
                        (status, body) = (
                            500,
                            serde_json::json!({ "error": format!("not stored: {e}") }),
                        );
                    }
                }
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

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

const UNAUTHORIZED: &str = "missing or wrong admin credential (see <data-dir>/admin.token)";

/// Whether the request carries the admin credential (compared in constant time: the
/// credential guards the whole admin API).
fn authorized(req: &cloudhub::http::Request, token: &str) -> bool {
    let given = req.bearer().unwrap_or("");
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0
}

fn route(hub: &Hub, token: &str, req: &cloudhub::http::Request) -> (u16, serde_json::Value) {
    use serde_json::json;
    if req.path == "/healthz" {
        return (200, json!({ "status": "ok" }));
    }
    if !authorized(req, token) {
        return (401, json!({ "error": UNAUTHORIZED }));
    }
    let (path, query) = req.path.split_once('?').unwrap_or((req.path.as_str(), ""));
    let namespace = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("namespace="))
        .filter(|s| !s.is_empty());
    let parts: Vec<&str> = path
        .trim_start_matches("/api/v1/")
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    if !path.starts_with("/api/v1/") {
        return (404, json!({ "error": format!("no such endpoint {path}") }));
    }
    let not_found = |what: String| (404, json!({ "error": format!("{what} not found") }));
    match (req.method.as_str(), parts.as_slice()) {
        ("GET", ["nodes"]) => (
            200,
            hub.registry
                .borrow()
                .list(SystemTime::now(), hub.cfg.node_grace),
        ),
        ("GET", ["nodes", name]) => {
            match hub
                .registry
                .borrow()
                .get(name, SystemTime::now(), hub.cfg.node_grace)
            {
                Some(n) => (200, n),
                None => not_found(format!("node {name:?}")),
            }
        }
        ("DELETE", ["nodes", name]) => delete_node(hub, name),
        ("GET", ["enrollments"]) => (200, enrollments(hub)),
        ("POST", ["apply"]) => apply(hub, &req.body),
        ("GET", ["sync", node]) => {
            let items: Vec<_> = hub
                .store
                .borrow()
                .synced(node)
                .map(|(uid, e)| json!({ "uid": uid, "kind": e.kind.name(), "namespace": e.namespace, "name": e.name, "resourceVersion": e.rv.to_string() }))
                .collect();
            (200, json!({ "node": node, "items": items }))
        }
        ("GET", ["events", kind, ns, name]) => match Kind::from_cli(kind) {
            Some(k) => (
                200,
                json!({ "items": hub.events.borrow().for_object(&ObjectKey::new(k, ns, name)) }),
            ),
            None => unknown_kind(kind),
        },
        (method, [kind, rest @ ..]) => {
            let Some(k) = Kind::from_cli(kind) else {
                return unknown_kind(kind);
            };
            match (method, rest) {
                ("GET", []) => {
                    let store = hub.store.borrow();
                    let items: Vec<_> = store
                        .list(k, namespace)
                        .map(|(_, e)| e.object.clone())
                        .collect();
                    (
                        200,
                        json!({ "kind": format!("{}List", k.name()), "apiVersion": "v1", "metadata": { "resourceVersion": store.last_rv().to_string() }, "items": items }),
                    )
                }
                ("GET", [ns, name]) => match hub.store.borrow().get(&ObjectKey::new(k, ns, name)) {
                    Some(e) => (200, e.object.clone()),
                    None => not_found(format!("{} {ns}/{name}", k.name())),
                },
                ("DELETE", [ns, name]) => {
                    let key = ObjectKey::new(k, ns, name);
                    let param = |n: &str| {
                        query
                            .split('&')
                            .find_map(|kv| kv.strip_prefix(n)?.strip_prefix('='))
                    };
                    let grace = param("gracePeriodSeconds").and_then(|g| g.parse::<u64>().ok());
                    match crate::writes::delete(hub, &key, grace) {
                        Ok(kubeapi::Deleted::Terminating(obj)) => {
                            (200, json!({ "terminating": obj }))
                        }
                        Ok(kubeapi::Deleted::Gone(obj)) => {
                            // Who was deleted, not the object: an answer the size of the
                            // object is what made `delete` of a large one exit 1.
                            let meta = &obj["metadata"];
                            (
                                200,
                                json!({ "deleted": { "kind": k.name(), "namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"] } }),
                            )
                        }
                        Err(cloudstore::StoreError::NotFound(what)) => not_found(what),
                        Err(e) => (500, json!({ "error": e.to_string() })),
                    }
                }
                _ => (
                    405,
                    json!({ "error": format!("{method} {path} is not served") }),
                ),
            }
        }
        _ => (404, json!({ "error": format!("no such endpoint {path}") })),
    }
}

/// `cloudcore delete node`.
fn delete_node(hub: &Hub, name: &str) -> (u16, serde_json::Value) {
    use serde_json::json;
    match cloudhub::deletion::delete_node(hub, name, SystemTime::now()) {
        Ok(d) => (
            200,
            json!({ "deleted": name, "node": d.node, "revokedCertificates": d.revoked, "deletedPods": d.pods, "sessionClosed": d.session_closed }),
        ),
        Err(r) => (r.status, json!({ "error": r.message })),
    }
}

/// Names holding a `--node-limit` slot: registered nodes and names with certificates.
fn enrollments(hub: &Hub) -> serde_json::Value {
    use serde_json::json;
    let registry = hub.registry.borrow();
    let mut enrollment = hub.enrollment.borrow_mut();
    enrollment.prune(unix_now());
    let list = registry.list(SystemTime::now(), hub.cfg.node_grace);
    let registered: std::collections::BTreeSet<&str> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    let names: std::collections::BTreeSet<&str> = registered
        .iter()
        .copied()
        .chain(enrollment.names())
        .collect();
    let items: Vec<_> = names
        .into_iter()
        .map(|n| {
            let certs: Vec<_> = enrollment
                .certificates(n)
                .map(|(serial, not_after)| json!({ "serial": serial, "notAfter": proto::time::rfc3339(not_after) }))
                .collect();
            json!({ "name": n, "registered": registered.contains(n), "connected": hub.sessions.is_connected(n), "certificates": certs })
        })
        .collect();
    json!({ "items": items, "nodeLimit": hub.cfg.node_limit })
}

fn unknown_kind(kind: &str) -> (u16, serde_json::Value) {
    (
        404,
        serde_json::json!({ "error": format!("unknown kind {kind:?}; known: nodes, pods, configmaps, secrets") }),
    )
}

fn apply(hub: &Hub, body: &[u8]) -> (u16, serde_json::Value) {
    use serde_json::json;
    let Ok(text) = std::str::from_utf8(body) else {
        return (400, json!({ "error": "the manifest is not UTF-8 text" }));
    };
    let objs = match crate::manifest::parse(text) {
        Ok(o) => o,
        Err(e) => return (400, json!({ "error": e })),
    };
    let now = unix_now();
    let result = hub.store.borrow_mut().apply(&objs, now);
    if result.is_ok() {
        let namespaces: std::collections::BTreeSet<String> = objs
            .iter()
            .map(|(_, o)| {
                o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_owned()
            })
            .collect();
        hub.publish_root_ca(namespaces.iter().map(String::as_str));
    }
    match result {
        Ok(results) => {
            let mut events = hub.events.borrow_mut();
            let out: Vec<_> = results
                .iter()
                .map(|(key, change, rv)| {
                    if *change != cloudstore::Change::Unchanged {
                        events.record(key, SystemTime::now(), "Applied", format!("{} at version {rv}", change.as_str()));
                    }
                    json!({ "kind": key.kind.name(), "namespace": key.namespace, "name": key.name, "change": change.as_str(), "resourceVersion": rv.to_string() })
                })
                .collect();
            drop(events);
            hub.store_changed();
            (200, json!({ "results": out }))
        }
        Err(cloudstore::StoreError::Refused(r, key)) => (
            r.code,
            json!({ "error": format!("{key}: {}", r.full_message(key.kind.name(), key.kind.plural(), &key.name)) }),
        ),
        Err(e) => (500, json!({ "error": e.to_string() })),
    }
}

/// Addresses a running cloudcore listens on, as written to [`ADDR_FILE`].
pub struct Addrs {
    pub ws: SocketAddr,
    pub cert: SocketAddr,
    pub admin: SocketAddr,
    /// The Kubernetes API, and the addresses advertised (kubeconfigs name the first).
    pub api: SocketAddr,
    pub advertise: Vec<String>,
}

impl Addrs {
    pub fn write(&self, data_dir: &Path) -> anyhow::Result<()> {
        let v = serde_json::json!({ "ws": self.ws.to_string(), "cert": self.cert.to_string(), "admin": self.admin.to_string(), "api": self.api.to_string(), "advertise": self.advertise });
        crate::write_private(&data_dir.join(ADDR_FILE), v.to_string().as_bytes())
    }

    pub fn read_admin(data_dir: &Path) -> anyhow::Result<SocketAddr> {
        let (v, path) = Self::read(data_dir)?;
        v["admin"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{} has no admin address", path.display()))
    }

    /// The Kubernetes API's address and the first advertised address.
    pub fn read_api(data_dir: &Path) -> anyhow::Result<(SocketAddr, String)> {
        let (v, path) = Self::read(data_dir)?;
        let api: SocketAddr = v["api"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{} has no API address", path.display()))?;
        let advertise = v["advertise"][0]
            .as_str()
            .map_or_else(|| api.ip().to_string(), str::to_owned);
        Ok((api, advertise))
    }

    fn read(data_dir: &Path) -> anyhow::Result<(serde_json::Value, std::path::PathBuf)> {
        let path = data_dir.join(ADDR_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (is cloudcore serve running with this --data-dir?)",
                path.display()
            )
        })?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is corrupt", path.display()))?;
        Ok((v, path))
    }
}
