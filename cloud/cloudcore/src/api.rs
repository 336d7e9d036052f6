//! The Kubernetes API's runner (the sans-IO core is the `kubeapi` crate): TLS with the cloud
//! CA's server certificate on `--api-port`, client certificates from the CA and bearer tokens
//! (`apitokens`) as identities,
//! one request per connection over cloudhub's HTTP/1.1, the objects read from the same store
//! and registry the admin API reads, and written through the same functions its writes use
//! (`writes`), answered once durable.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use cloudhub::http::{read_request, write_response, RequestError};
use cloudhub::{Cap, Hub};
use cloudstore::{Kind, ObjectKey};
use futures_rustls::TlsAcceptor;
use kubeapi::{Objects, Resource, User};
use serde_json::{json, Value};
use smol::future::FutureExt;
use smol::io::{AsyncWrite, AsyncWriteExt};
use smol::{Async, LocalExecutor};

/// Bodies accepted: kube-apiserver's `MaxRequestBodyBytes` (3 MiB), twice an object at the
/// store's limit, so an oversized object is refused by the store with the limit named.
pub const MAX_BODY_BYTES: usize = 3 << 20;
/// A handshake with its request, or an answer, that takes longer ends its connection.
const CONN_TIMEOUT: Duration = Duration::from_secs(30);
/// The namespaces every cluster has, listed even when nothing is stored in them.
const BUILTIN_NAMESPACES: [&str; 4] = ["default", "kube-node-lease", "kube-public", "kube-system"];
/// Where node leases live.
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Accepts API connections forever, each served by its own task.
pub async fn serve(
    hub: Rc<Hub>,
    listener: Async<TcpListener>,
    tls: TlsAcceptor,
    server: Rc<kubeapi::Server>,
    data_dir: Rc<PathBuf>,
    ex: Rc<LocalExecutor<'static>>,
) {
    let cap = Cap::new(cloudhub::MAX_HANDSHAKES);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                log::warn!("API accept failed: {e}");
                smol::Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(guard) = cap.take(&peer, "API") else {
            continue;
        };
        let (hub, tls, server) = (hub.clone(), tls.clone(), server.clone());
        let data_dir = data_dir.clone();
        ex.spawn(async move {
            cloudhub::capped(&guard, async {
                if let Err(e) = connection(&hub, &tls, &server, &data_dir, tcp).await {
                    log::debug!("API connection from {peer}: {e}");
                }
            })
            .await;
        })
        .detach();
    }
}

/// The user a verified client certificate names (`CN` the name, `O` the groups).
fn user_of(cert: Option<&[u8]>) -> User {
    match cert.and_then(pki::subject) {
        Some((name, groups)) => User::Cert { name, groups },
        None => User::Anonymous,
    }
}

async fn connection(
    hub: &Hub,
    tls: &TlsAcceptor,
    server: &kubeapi::Server,
    data_dir: &Path,
    tcp: Async<TcpStream>,
) -> std::io::Result<()> {
    // The handshake and the request within the connection timeout; a watch then runs for
    // its own (`timeoutSeconds`), an answer within another.
    let read = async {
        let mut tls = tls.accept(tcp).await?;
        let user = user_of(
            tls.get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref()),
        );
        let req = read_request(&mut tls, MAX_BODY_BYTES).await;
        Ok((tls, user, req))
    };
    let (mut tls, user, req) = read.or(timeout(CONN_TIMEOUT)).await?;
    let outcome = match req {
        Ok(req) => match bearer(&req, user, data_dir) {
            Err(refused) => refused.into(),
            Ok(user) => {
                let r = kubeapi::Request {
                    method: &req.method,
                    target: &req.path,
                    accept: req.header("accept"),
                    content_type: req.header("content-type"),
                    body: &req.body,
                };
                let outcome = kubeapi::handle(&r, &user, &HubObjects(hub), server, unix_now());
                // A write is answered only once it is durable (the store's group commit).
                match outcome {
                    kubeapi::Outcome::Response(resp)
                        if req.method != "GET" && resp.status < 300 =>
                    {
                        match hub.durable().await {
                            Ok(()) => resp.into(),
                            Err(e) => kubeapi::status(
                                500,
                                "InternalError",
                                &format!("not stored: {e}"),
                                Value::Null,
                            )
                            .into(),
                        }
                    }
                    other => other,
                }
            }
        },
        Err(e @ RequestError::TooLarge(_)) => kubeapi::status(
            413,
            "RequestEntityTooLarge",
            &format!("Request entity too large: {e} (MAX_BODY_BYTES)"),
            Value::Null,
        )
        .into(),
        Err(e) => kubeapi::status(400, "BadRequest", &e.to_string(), Value::Null).into(),
    };
    let response = match outcome {
        kubeapi::Outcome::Response(r) => r,
        kubeapi::Outcome::Watch(w) => {
            let secs = w.timeout_secs;
            return stream(hub, &mut tls, *w)
                .or(async {
                    smol::Timer::after(Duration::from_secs(secs)).await;
                    Ok(())
                })
                .await;
        }
    };
    // Health checks answer plain `ok`, as kube-apiserver's do.
    let (ctype, body) = match &response.body {
        Value::String(s) => ("text/plain; charset=utf-8", s.clone().into_bytes()),
        other => ("application/json", other.to_string().into_bytes()),
    };
    write_response(&mut tls, response.status, ctype, &body)
        .or(timeout(CONN_TIMEOUT))
        .await
}

/// The user a request's bearer token names, when it brings one and no client certificate
/// (kube-apiserver tries its authenticators in turn): a token that names nobody (unknown or
/// revoked) is 401, as there.
fn bearer(
    req: &cloudhub::http::Request,
    user: User,
    data_dir: &Path,
) -> Result<User, kubeapi::Response> {
    let token = req
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::trim);
    let (Some(token), User::Anonymous) = (token, &user) else {
        return Ok(user);
    };
    let records = crate::apitokens::load(data_dir).unwrap_or_else(|e| {
        log::warn!("API tokens unreadable, none accepted: {e:#}");
        Vec::new()
    });
    match crate::apitokens::lookup(&records, token) {
        Some((name, groups)) => Ok(User::Token { name, groups }),
        None => Err(kubeapi::status(
            401,
            "Unauthorized",
            "Unauthorized",
            Value::Null,
        )),
    }
}

async fn timeout<T>(d: Duration) -> std::io::Result<T> {
    smol::Timer::after(d).await;
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "API connection timed out",
    ))
}

/// How often a watch looks for changes: in the store's history for the stored kinds, in
/// the list for the rest (bounded by `MAX_WATCHED_OBJECTS` objects and the port's
/// connection cap).
const WATCH_POLL: Duration = Duration::from_millis(500);

/// Streams a watch's events as chunked newline-separated JSON until it ends, its time is up
/// (the caller's timer) or a write fails (the client went away).
async fn stream<S: AsyncWrite + Unpin>(
    hub: &Hub,
    s: &mut S,
    mut w: kubeapi::watch::Watch,
) -> std::io::Result<()> {
    s.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .await?;
    s.flush().await?;
    loop {
        let (events, end) = match w.poll(&HubObjects(hub), unix_now()) {
            Ok(events) => (events, false),
            Err(status) => (vec![json!({ "type": "ERROR", "object": status })], true),
        };
        if !events.is_empty() {
            let mut chunk = Vec::new();
            for e in &events {
                chunk.extend_from_slice(e.to_string().as_bytes());
                chunk.push(b'\n');
            }
            s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            s.write_all(&chunk).await?;
            s.write_all(b"\r\n").await?;
            s.flush().await?;
        }
        if end {
            s.write_all(b"0\r\n\r\n").await?;
            return s.close().await;
        }
        smol::Timer::after(WATCH_POLL).await;
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The hub's objects as the API serves them.
struct HubObjects<'a>(&'a Hub);

impl HubObjects<'_> {
    fn nodes(&self) -> Value {
        self.0
            .registry
            .borrow()
            .list(SystemTime::now(), self.0.cfg.node_grace)
    }

    fn namespace(name: &str) -> Value {
        json!({
            "metadata": { "name": name, "labels": { "kubernetes.io/metadata.name": name } },
            "spec": { "finalizers": ["kubernetes"] },
            "status": { "phase": "Active" },
        })
    }

    /// cloudcore's recorded events as core/v1 Events (named as the apiserver names them,
    /// `<object>.<hex time>`), from the component `cloudcore`.
    fn events(&self, namespace: Option<&str>) -> Vec<Value> {
        let events = self.0.events.borrow();
        let store = self.0.store.borrow();
        events
            .iter()
            .filter(|e| namespace.is_none_or(|ns| ns == e.key.namespace))
            .enumerate()
            .map(|(i, e)| {
                let at = proto::time::rfc3339(e.unix_ms / 1000);
                // `kubectl describe` selects an object's events by its uid too.
                let uid = store.get(&e.key).map(|o| o.uid().to_owned());
                json!({
                    "metadata": {
                        "name": format!("{}.{:x}{:04x}", e.key.name, e.unix_ms, i % 0x10000),
                        "namespace": e.key.namespace,
                        "creationTimestamp": at,
                    },
                    "involvedObject": {
                        "kind": e.key.kind.name(), "namespace": e.key.namespace,
                        "name": e.key.name, "apiVersion": e.key.kind.api_version(),
                        "uid": uid,
                    },
                    "reason": e.reason, "message": e.message, "type": "Normal", "count": 1,
                    "firstTimestamp": at, "lastTimestamp": at,
                    "source": { "component": "cloudcore" },
                })
            })
            .collect()
    }
}

impl Objects for HubObjects<'_> {
    fn changes(
        &self,
        r: Resource,
        since: Option<u64>,
    ) -> Option<Result<(Vec<cloudstore::history::Event>, u64), cloudstore::history::TooOld>> {
        let kind = r.kind()?;
        let store = self.0.store.borrow();
        let last = store.last_rv();
        let events = match since {
            None => Vec::new(),
            Some(rv) => match store.history().since(rv) {
                Ok(events) => events.filter(|e| e.key.kind == kind).cloned().collect(),
                Err(too_old) => return Some(Err(too_old)),
            },
        };
        Some(Ok((events, last)))
    }

    fn put_status(
        &self,
        r: Resource,
        namespace: Option<&str>,
        name: &str,
        status: &Value,
        expect_rv: Option<&str>,
        dry_run: bool,
    ) -> Result<Value, cloudstore::StoreError> {
        let kind = r.kind().expect("kubeapi writes only stored kinds");
        let key = ObjectKey::new(kind, namespace.unwrap_or(""), name);
        // Watchers see it on their next poll; edges are not sent statuses.
        self.0
            .store
            .borrow_mut()
            .put_status(&key, status, expect_rv, dry_run)
    }

    fn put(
        &self,
        r: Resource,
        obj: &Value,
        expect: cloudstore::Put,
        dry_run: bool,
    ) -> Result<Value, cloudstore::StoreError> {
        let kind = r.kind().expect("kubeapi writes only stored kinds");
        crate::writes::put(self.0, kind, obj, expect, dry_run).map(|(_, o)| o)
    }

    fn delete(
        &self,
        r: Resource,
        namespace: Option<&str>,
        name: &str,
        grace: Option<u64>,
    ) -> Result<kubeapi::Deleted, cloudstore::StoreError> {
        let kind = r.kind().expect("kubeapi writes only stored kinds");
        let key = ObjectKey::new(kind, namespace.unwrap_or(""), name);
        crate::writes::delete(self.0, &key, grace)
    }

    fn list(&self, r: Resource, namespace: Option<&str>) -> (Vec<Value>, String) {
        let store = self.0.store.borrow();
        let rv = store.last_rv().to_string();
        let items = match r {
            Resource::Nodes => {
                let list = self.nodes();
                let rv = list["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                let items = list["items"].as_array().cloned().unwrap_or_default();
                return (items, rv);
            }
            Resource::Leases => {
                if namespace.is_some_and(|ns| ns != LEASE_NAMESPACE) {
                    Vec::new()
                } else {
                    let registry = self.0.registry.borrow();
                    let list = self.nodes();
                    list["items"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|n| registry.lease(n["metadata"]["name"].as_str()?).ok())
                        .collect()
                }
            }
            Resource::Namespaces => {
                let mut names: std::collections::BTreeSet<String> =
                    BUILTIN_NAMESPACES.iter().map(|s| s.to_string()).collect();
                for kind in Kind::ALL {
                    names.extend(store.list(kind, None).map(|(k, _)| k.namespace.clone()));
                }
                names.iter().map(|n| Self::namespace(n)).collect()
            }
            Resource::Events => self.events(namespace),
            _ => {
                let kind = r.kind().expect("every other resource is stored");
                store
                    .list(kind, namespace)
                    .map(|(_, e)| e.object.clone())
                    .collect()
            }
        };
        (items, rv)
    }

    fn get(&self, r: Resource, namespace: Option<&str>, name: &str) -> Option<Value> {
        match (r.kind(), r) {
            (Some(kind), _) => {
                let key = ObjectKey::new(kind, namespace.unwrap_or(""), name);
                self.0.store.borrow().get(&key).map(|e| e.object.clone())
            }
            (None, Resource::Nodes) => {
                self.0
                    .registry
                    .borrow()
                    .get(name, SystemTime::now(), self.0.cfg.node_grace)
            }
            (None, _) => self
                .list(r, namespace)
                .0
                .into_iter()
                .find(|o| o["metadata"]["name"] == name),
        }
    }
}
