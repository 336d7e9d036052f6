//! The Kubernetes API's runner (the sans-IO core is the `kubeapi` crate): TLS with the cloud
//! CA's server certificate on `--api-port`, client certificates from the CA as identities,
//! one request per connection over cloudhub's HTTP/1.1, the objects read from the same store
//! and registry the admin API reads.

use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use cloudhub::http::{read_request, write_response};
use cloudhub::{Cap, Hub};
use cloudstore::{Kind, ObjectKey};
use futures_rustls::TlsAcceptor;
use kubeapi::{Objects, Resource, User};
use serde_json::{json, Value};
use smol::future::FutureExt;
use smol::{Async, LocalExecutor};

/// Bodies accepted: the API serves reads, so a request carries none worth more.
pub const MAX_BODY_BYTES: usize = 64 << 10;
/// A connection (handshake, request and answer) that takes longer is closed.
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
        ex.spawn(async move {
            let work = connection(&hub, &tls, &server, tcp).or(async {
                smol::Timer::after(CONN_TIMEOUT).await;
                Ok(())
            });
            cloudhub::capped(&guard, async {
                if let Err(e) = work.await {
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
    tcp: Async<TcpStream>,
) -> std::io::Result<()> {
    let mut tls = tls.accept(tcp).await?;
    let user = user_of(
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref()),
    );
    let response = match read_request(&mut tls, MAX_BODY_BYTES).await {
        Ok(req) => {
            let r = kubeapi::Request {
                method: &req.method,
                target: &req.path,
                accept: req.header("accept"),
            };
            kubeapi::handle(&r, &user, &HubObjects(hub), server, unix_now())
        }
        Err(e) => kubeapi::status(400, "BadRequest", &e.to_string(), Value::Null),
    };
    // Health checks answer plain `ok`, as kube-apiserver's do.
    let (ctype, body) = match &response.body {
        Value::String(s) => ("text/plain; charset=utf-8", s.clone().into_bytes()),
        other => ("application/json", other.to_string().into_bytes()),
    };
    write_response(&mut tls, response.status, ctype, &body).await
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The hub's objects as the API serves them.
struct HubObjects<'a>(&'a Hub);

fn stored_kind(r: Resource) -> Option<Kind> {
    match r {
        Resource::Pods => Some(Kind::Pod),
        Resource::ConfigMaps => Some(Kind::ConfigMap),
        Resource::Secrets => Some(Kind::Secret),
        Resource::Devices => Some(Kind::Device),
        Resource::DeviceModels => Some(Kind::DeviceModel),
        Resource::Nodes | Resource::Namespaces | Resource::Events | Resource::Leases => None,
    }
}

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
                let kind = stored_kind(r).expect("every other resource is stored");
                store
                    .list(kind, namespace)
                    .map(|(_, e)| e.object.clone())
                    .collect()
            }
        };
        (items, rv)
    }

    fn get(&self, r: Resource, namespace: Option<&str>, name: &str) -> Option<Value> {
        match (stored_kind(r), r) {
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
