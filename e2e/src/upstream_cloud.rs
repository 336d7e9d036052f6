//! An upstream-shaped test cloud: a WebSocket peer that answers the edge as upstream's
//! cloudcore (KubeEdge v1.23 EdgeController on a kube-apiserver) does, where that differs
//! from our cloudcore. It stands for `cloud/pkg/edgecontroller/controller/{upstream,
//! downstream}.go` and the apiserver behind them, written from upstream's source (read,
//! not copied):
//!
//! - ConfigMaps and Secrets are pushed only when the test changes them
//!   ([`UpstreamCloud::put_configmap`] with `push`); one that existed before its pod is only
//!   ever sent as the answer to the edge's query (`query <ns>/configmap/<name>`), which must
//!   be acknowledged; NotFound is answered with upstream's lower-case singular message.
//! - Node registration of an existing node answers AlreadyExists; node and pod status
//!   patches are strategic merges on the status; answers are `ObjectResp`.
//! - The edge's `delete <ns>/pod/<name>` (graceful deletion's last step) is checked against
//!   its uid precondition, answered `"OK"`, and followed by a `delete` push carrying the
//!   whole pod, as the apiserver's watch delivers it.
//! - `query <ns>/serviceaccounttoken/<sa>` is answered with a TokenRequest.
//!
//! It uses the CA of a real cloudcore the edge joined, so the edge's certificates work.
//! Every frame the edge sends is kept for assertions.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_tungstenite::tungstenite::Message as Ws;
use futures_rustls::rustls::server::WebPkiClientVerifier;
use futures_rustls::rustls::{RootCertStore, ServerConfig};
use proto::{objresp, Group, Message, ModuleName, Operation, ResourcePath};
use serde_json::{json, Value};
use smol::future::FutureExt;
use smol::stream::StreamExt;

/// How the test cloud answers pod status patches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchAnswer {
    /// Merged into the pod, answered with it.
    Accept,
    /// `ObjectResp` with a 500 error.
    Fail,
    /// `ObjectResp` with NotFound.
    NotFound,
}

/// Everything the test cloud holds and saw.
#[derive(Default)]
pub struct State {
    pub node: Option<Value>,
    pub lease: Option<Value>,
    pub pods: BTreeMap<(String, String), Value>,
    pub configmaps: BTreeMap<(String, String), Value>,
    pub secrets: BTreeMap<(String, String), Value>,
    /// Every frame the edge sent, in order.
    pub frames: Vec<Message>,
    /// Ids of the cloud messages the edge acknowledged.
    pub acked: Vec<String>,
    /// Answers to object queries that need the edge's acknowledgement: (resource, msg id).
    pub answers: Vec<(String, String)>,
    pub patch_answer: Option<PatchAnswer>,
    /// Answer device reports (`…/twin/edge_updated`, `…/state/update`) with `"OK"` as our
    /// cloud's DeviceController does (benchmarks: an edge-only sink); off, they are kept
    /// unanswered, as upstream's cloud leaves them.
    pub confirm_device_reports: bool,
    /// Device reports received: when, the resource, the content.
    pub device_reports: Vec<(std::time::Instant, String, Value)>,
    rv: u64,
    tokens: u64,
}

impl State {
    fn next_rv(&mut self) -> String {
        self.rv += 1;
        (1000 + self.rv).to_string()
    }

    /// Frames from the edge with this operation and a resource starting with `prefix`.
    pub fn sent(&self, op: &str, prefix: &str) -> Vec<Message> {
        self.frames
            .iter()
            .filter(|m| m.route.operation.as_str() == op && m.route.resource.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// The running test cloud. Stopped when dropped.
pub struct UpstreamCloud {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    outbox: smol::channel::Sender<Message>,
    _stop: smol::channel::Sender<()>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn reply(req: &Message, content: Value, rv: &str) -> Message {
    let mut m = req.response_to(content, now_ms());
    m.route.source = ModuleName::EdgeController;
    m.route.group = Group::Resource;
    m.header.resourceversion = rv.to_owned();
    m
}

fn status_error(code: u16, reason: &str, message: &str, kind: &str, name: &str) -> Value {
    objresp::status(code, reason, message, json!({ "name": name, "kind": kind }))
}

impl UpstreamCloud {
    /// Starts on a free loopback port with the CA in `ca_dir` (a cloudcore's `<data>/pki`).
    pub fn start(ca_dir: &Path) -> UpstreamCloud {
        let ca = pki::Ca::load_or_create(ca_dir).expect("the cloud CA");
        let provider = Arc::new(futures_rustls::rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let (chain, key) = ca.issue_server_cert(&["127.0.0.1".to_owned()]).unwrap();
        let tls = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = futures_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            patch_answer: Some(PatchAnswer::Accept),
            ..Default::default()
        }));
        let (outbox, inbox) = smol::channel::unbounded::<Message>();
        let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
        let st = state.clone();
        std::thread::spawn(move || {
            smol::block_on(async move {
                let listener = smol::Async::new(listener).unwrap();
                loop {
                    let accepted = async { listener.accept().await.ok() }
                        .or(async {
                            let _ = stop_rx.recv().await;
                            None
                        })
                        .await;
                    let Some((tcp, _)) = accepted else { return };
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        continue;
                    };
                    let Ok(ws) = async_tungstenite::accept_async(tls).await else {
                        continue;
                    };
                    // One edge at a time; a reconnect replaces the session.
                    serve(ws, &st, &inbox, &stop_rx).await;
                }
            })
        });
        UpstreamCloud {
            addr,
            state,
            outbox,
            _stop: stop_tx,
        }
    }

    /// Sends a push (`insert`/`update`/`delete`) of `obj` at `resource`, as EdgeController
    /// (or DeviceController for devices) does; returns its message id.
    pub fn push(&self, op: Operation, resource: &str, obj: Value) -> String {
        let source = if resource.contains("/device") {
            ModuleName::DeviceController
        } else {
            ModuleName::EdgeController
        };
        let mut m = Message::new(source, Group::Resource, op, resource, obj.clone(), now_ms());
        m.header.resourceversion = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let id = m.header.msg_id.clone();
        let _ = self.outbox.try_send(m);
        id
    }

    /// Stores a pod as the apiserver would (uid, resourceVersion) and pushes it.
    pub fn put_pod(&self, mut pod: Value) -> Value {
        let (ns, name, op) = {
            let mut s = self.state.lock().unwrap();
            let ns = pod["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned();
            let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
            let existing = s.pods.get(&(ns.clone(), name.clone())).cloned();
            let op = if existing.is_some() {
                Operation::Update
            } else {
                Operation::Insert
            };
            let uid = existing
                .as_ref()
                .map(|p| p["metadata"]["uid"].clone())
                .unwrap_or_else(|| json!(proto::message::new_msg_id()));
            pod["kind"] = json!("Pod");
            pod["apiVersion"] = json!("v1");
            pod["metadata"]["namespace"] = json!(ns);
            pod["metadata"]["uid"] = uid;
            pod["metadata"]["resourceVersion"] = json!(s.next_rv());
            if let Some(st) = existing.as_ref().and_then(|p| p.get("status")) {
                pod["status"] = st.clone();
            }
            s.pods.insert((ns.clone(), name.clone()), pod.clone());
            (ns, name, op)
        };
        self.push(op, &format!("{ns}/pod/{name}"), pod.clone());
        pod
    }

    /// Marks a pod deleted with `grace` seconds, as `kubectl delete` makes the apiserver do,
    /// and pushes the update.
    pub fn delete_pod(&self, ns: &str, name: &str, grace: u64) {
        let pod = {
            let mut s = self.state.lock().unwrap();
            let rv = s.next_rv();
            let Some(p) = s.pods.get_mut(&(ns.to_owned(), name.to_owned())) else {
                return;
            };
            p["metadata"]["deletionTimestamp"] =
                json!(proto::time::rfc3339(now_ms() / 1000 + grace as i64));
            p["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            p["metadata"]["resourceVersion"] = json!(rv);
            p.clone()
        };
        self.push(Operation::Update, &format!("{ns}/pod/{name}"), pod);
    }

    /// Stores a ConfigMap; pushes it only if `push` (upstream pushes changes, never what
    /// existed before a pod was bound).
    pub fn put_configmap(&self, mut cm: Value, push: bool) -> Value {
        let (ns, name) = {
            let mut s = self.state.lock().unwrap();
            let ns = cm["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned();
            let name = cm["metadata"]["name"].as_str().unwrap().to_owned();
            cm["kind"] = json!("ConfigMap");
            cm["apiVersion"] = json!("v1");
            cm["metadata"]["namespace"] = json!(ns);
            cm["metadata"]["uid"] = json!(proto::message::new_msg_id());
            cm["metadata"]["resourceVersion"] = json!(s.next_rv());
            s.configmaps.insert((ns.clone(), name.clone()), cm.clone());
            (ns, name)
        };
        if push {
            self.push(
                Operation::Update,
                &format!("{ns}/configmap/{name}"),
                cm.clone(),
            );
        }
        cm
    }

    pub fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .pods
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    pub fn set_patch_answer(&self, a: PatchAnswer) {
        self.state.lock().unwrap().patch_answer = Some(a);
    }

    /// Frames from the edge with this operation and resource prefix.
    pub fn sent(&self, op: &str, prefix: &str) -> Vec<Message> {
        self.state.lock().unwrap().sent(op, prefix)
    }

    /// Puts a node object in place, as if the node had registered before.
    pub fn put_node(&self, node: Value) {
        self.state.lock().unwrap().node = Some(node);
    }

    pub fn acked(&self, msg_id: &str) -> bool {
        self.state.lock().unwrap().acked.iter().any(|a| a == msg_id)
    }
}

type Tunnel = async_tungstenite::WebSocketStream<
    futures_rustls::server::TlsStream<smol::Async<std::net::TcpStream>>,
>;

async fn serve(
    mut ws: Tunnel,
    st: &Mutex<State>,
    inbox: &smol::channel::Receiver<Message>,
    stop: &smol::channel::Receiver<()>,
) {
    loop {
        enum Ev {
            Frame(Option<Message>),
            Push(Message),
            Stop,
        }
        let ev = async {
            loop {
                match ws.next().await {
                    Some(Ok(Ws::Text(t))) => {
                        return Ev::Frame(Message::decode(t.as_bytes(), 16 << 20).ok())
                    }
                    Some(Ok(Ws::Close(_))) | None | Some(Err(_)) => return Ev::Frame(None),
                    Some(Ok(_)) => continue,
                }
            }
        }
        .or(async {
            match inbox.recv().await {
                Ok(m) => Ev::Push(m),
                Err(_) => Ev::Stop,
            }
        })
        .or(async {
            let _ = stop.recv().await;
            Ev::Stop
        })
        .await;
        let out = match ev {
            Ev::Stop | Ev::Frame(None) => return,
            Ev::Push(m) => vec![m],
            Ev::Frame(Some(m)) => handle(st, m),
        };
        for m in out {
            if ws.send(Ws::text(m.encode())).await.is_err() {
                return;
            }
        }
    }
}

/// Upstream's handling of one edge frame.
fn handle(st: &Mutex<State>, m: Message) -> Vec<Message> {
    let mut s = st.lock().unwrap();
    s.frames.push(m.clone());
    let op = m.route.operation.as_str().to_owned();
    if op == "keepalive" {
        return vec![];
    }
    if op == "response" {
        s.acked.push(m.header.parent_msg_id.clone());
        return vec![];
    }
    let Ok(path) = ResourcePath::parse(&m.route.resource) else {
        return vec![];
    };
    if let ResourcePath::Device { .. } = &path {
        s.frames.pop(); // kept apart, so a flood of reports does not grow the frame log
        s.device_reports.push((
            std::time::Instant::now(),
            m.route.resource.clone(),
            m.content.clone(),
        ));
        if s.confirm_device_reports {
            let mut ok = m.response_to(json!("OK"), now_ms());
            ok.route.source = ModuleName::DeviceController;
            ok.route.group = Group::Twin;
            ok.route.resource = ResourcePath::Twin.to_string();
            return vec![ok];
        }
        return vec![];
    }
    let (ns, kind, name) = match &path {
        ResourcePath::Object {
            namespace,
            kind,
            name: Some(name),
        } => (namespace.clone(), kind.as_str().to_owned(), name.clone()),
        _ => return vec![],
    };
    match (op.as_str(), kind.as_str()) {
        ("insert", "node") => {
            if s.node.is_some() {
                let e = status_error(
                    409,
                    "AlreadyExists",
                    &format!("nodes \"{name}\" already exists"),
                    "nodes",
                    &name,
                );
                return vec![reply(&m, objresp::err(e), "")];
            }
            let mut n = m.content.clone();
            n["metadata"]["uid"] = json!(proto::message::new_msg_id());
            n["metadata"]["resourceVersion"] = json!(s.next_rv());
            s.node = Some(n.clone());
            let rv = n["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            vec![reply(&m, objresp::ok(n), &rv)]
        }
        ("patch", "nodepatch") => {
            let patch: Value = serde_json::from_slice(&m.content_bytes()).unwrap_or(json!({}));
            let Some(node) = s.node.clone() else {
                let e = status_error(
                    404,
                    "NotFound",
                    &format!("nodes \"{name}\" not found"),
                    "nodes",
                    &name,
                );
                return vec![reply(&m, objresp::err(e), "")];
            };
            match cloudstore::smp::apply(&node, &patch, &cloudstore::smp::schema::NODE) {
                Ok(mut n) => {
                    n["metadata"]["resourceVersion"] = json!(s.next_rv());
                    s.node = Some(n.clone());
                    vec![reply(&m, objresp::ok(n), "")]
                }
                Err(e) => vec![reply(
                    &m,
                    objresp::err(status_error(
                        e.code,
                        "BadRequest",
                        &e.message,
                        "nodes",
                        &name,
                    )),
                    "",
                )],
            }
        }
        (_, "lease") => match op.as_str() {
            "query" => match s.lease.clone() {
                Some(l) => vec![reply(&m, objresp::ok(l), "")],
                None => vec![reply(
                    &m,
                    objresp::err(objresp::not_found("leases", "coordination.k8s.io", &name)),
                    "",
                )],
            },
            _ => {
                let mut l = m.content.clone();
                l["metadata"]["resourceVersion"] = json!(s.next_rv());
                s.lease = Some(l.clone());
                vec![reply(&m, objresp::ok(l), "")]
            }
        },
        ("patch", "podpatch") => {
            let key = (ns.clone(), name.clone());
            let answer = s.patch_answer.unwrap_or(PatchAnswer::Accept);
            match (answer, s.pods.get(&key).cloned()) {
                (PatchAnswer::Fail, _) => {
                    let e = status_error(500, "InternalError", "etcd is unhappy", "pods", &name);
                    vec![reply(&m, objresp::err(e), "")]
                }
                (PatchAnswer::NotFound, _) | (_, None) => {
                    let e = status_error(
                        404,
                        "NotFound",
                        &format!("pods \"{name}\" not found"),
                        "pods",
                        &name,
                    );
                    vec![reply(&m, objresp::err(e), "")]
                }
                (PatchAnswer::Accept, Some(pod)) => {
                    let patch: Value =
                        serde_json::from_slice(&m.content_bytes()).unwrap_or(json!({}));
                    let status_only = json!({ "status": patch["status"] });
                    match cloudstore::smp::apply(&pod, &status_only, &cloudstore::smp::schema::POD)
                    {
                        Ok(mut p) => {
                            let rv = s.next_rv();
                            p["metadata"]["resourceVersion"] = json!(rv);
                            s.pods.insert(key, p.clone());
                            vec![reply(&m, objresp::ok(p), &rv)]
                        }
                        Err(e) => vec![reply(
                            &m,
                            objresp::err(status_error(
                                e.code,
                                "BadRequest",
                                &e.message,
                                "pods",
                                &name,
                            )),
                            "",
                        )],
                    }
                }
            }
        }
        ("delete", "pod") => {
            let key = (ns.clone(), name.clone());
            let want = m.content["preconditions"]["uid"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            match s.pods.get(&key).cloned() {
                Some(pod) if want.is_empty() || pod["metadata"]["uid"] == want.as_str() => {
                    s.pods.remove(&key);
                    let mut gone = Message::new(
                        ModuleName::EdgeController,
                        Group::Resource,
                        Operation::Delete,
                        format!("{ns}/pod/{name}"),
                        pod.clone(),
                        now_ms(),
                    );
                    gone.header.resourceversion = pod["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                    vec![reply(&m, json!("OK"), ""), gone]
                }
                // Upstream answers "OK" for NotFound too.
                None => vec![reply(&m, json!("OK"), "")],
                Some(_) => {
                    let e = status_error(
                        409,
                        "Conflict",
                        "Precondition failed: UID in precondition does not match",
                        "pods",
                        &name,
                    );
                    vec![reply(&m, json!({ "ErrStatus": e }), "")]
                }
            }
        }
        ("query", "configmap") | ("query", "secret") => {
            let key = (ns.clone(), name.clone());
            let found = if kind == "configmap" {
                s.configmaps.get(&key).cloned()
            } else {
                s.secrets.get(&key).cloned()
            };
            match found {
                Some(o) => {
                    let rv = o["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                    let r = reply(&m, o, &rv);
                    s.answers
                        .push((m.route.resource.clone(), r.header.msg_id.clone()));
                    vec![r]
                }
                None => {
                    let e = status_error(
                        404,
                        "NotFound",
                        &format!("{kind} \"{name}\" not found"),
                        &kind,
                        &name,
                    );
                    vec![reply(&m, json!({ "ErrStatus": e }), "")]
                }
            }
        }
        ("query", "serviceaccounttoken") => {
            s.tokens += 1;
            let secs = m.content["spec"]["expirationSeconds"]
                .as_i64()
                .unwrap_or(3600);
            let mut tr = m.content.clone();
            tr["kind"] = json!("TokenRequest");
            tr["apiVersion"] = json!("authentication.k8s.io/v1");
            tr["status"] = json!({
                "token": format!("test-token-{}", s.tokens),
                "expirationTimestamp": proto::time::rfc3339(now_ms() / 1000 + secs),
            });
            vec![reply(&m, tr, "")]
        }
        _ => vec![],
    }
}
