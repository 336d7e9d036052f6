//! CloudHub: cloudcore's side of the edge tunnel (§3 of the protocol spec).
//!
//! - [`server`]: WebSocket over mutual TLS on port 10000, one session per node.
//! - [`certserver`]: the enrollment endpoint on port 10002.
//! - [`dispatch`]: what each message from an edge does (sans-IO); [`admission`]: what a node
//!   may write.
//! - [`events`]: recent events per object, for `cloudcore describe`.
//! - Delivery of pods, configmaps, secrets, devices and models is `edgecontroller`'s plan,
//!   device membership `devicecontroller`'s, both driven per session.
//! - [`nodes`]: the registry of nodes and leases, and readiness (sans-IO).
//! - [`http`]: the little HTTP/1.1 both the certificate endpoint and the admin API need.
//!
//! Everything runs on one single-threaded smol executor; shared state is `Rc<RefCell<…>>`.
//!
//! Group commit: the store is in group mode. Sessions and the admin API write to it, then
//! wait on [`Hub::durable`] before answering; the committer task makes everything written in
//! one turn of the executor durable in one transaction. So a burst from many edges costs a
//! few fsyncs, not one per message, and no answer goes out for a write a crash could lose.

#![forbid(unsafe_code)]

pub mod admission;
pub mod certserver;
pub mod deletion;
pub mod dispatch;
pub mod enroll;
pub mod events;
pub mod http;
pub mod nodes;
pub mod server;

use std::cell::RefCell;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_rustls::rustls::crypto::ring;
use futures_rustls::rustls::server::WebPkiClientVerifier;
use futures_rustls::rustls::{RootCertStore, ServerConfig};
use futures_rustls::TlsAcceptor;
use smol::{Async, LocalExecutor};

pub use nodes::NodeRegistry;
pub use server::Sessions;

/// CloudHub settings.
#[derive(Clone, Debug)]
pub struct CloudHubConfig {
    /// Address both listeners bind to.
    pub bind: std::net::IpAddr,
    /// WebSocket port (upstream 10000); 0 picks a free one.
    pub ws_port: u16,
    /// Certificate port (upstream 10002); 0 picks a free one.
    pub cert_port: u16,
    /// IP addresses and DNS names put in the server certificate; edges dial one of these.
    pub advertise: Vec<String>,
    /// A session with no keepalive for this long is closed (upstream 30 s).
    pub keepalive_timeout: Duration,
    /// At most this many nodes registered and connected (upstream `NodeLimit`, 500).
    pub node_limit: usize,
    /// A node silent for this long reads NotReady (kube-controller-manager's 40 s).
    pub node_grace: Duration,
    /// How long the edge certificates `/edge.crt` issues are valid (upstream 365 days);
    /// edges renew theirs at 70–90 % of it.
    pub edge_cert_validity: Duration,
    /// What a node may change beyond its status (`--allow-node-labels`).
    pub node_writes: admission::NodeWrites,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("reading the saved nodes: {0}")]
    Store(String),
}

/// Shared state of a running CloudHub.
pub struct Hub {
    pub cfg: CloudHubConfig,
    durability: Durability,
    pub ca: pki::Ca,
    pub registry: RefCell<NodeRegistry>,
    pub store: RefCell<cloudstore::CloudStore>,
    pub controller: RefCell<edgecontroller::EdgeController>,
    pub devices: RefCell<devicecontroller::DeviceController>,
    pub events: RefCell<events::Events>,
    pub sessions: Sessions,
    /// Certificates issued per node, revocations, token uses (`enroll`).
    pub enrollment: RefCell<enroll::Enrollment>,
}

/// Callers waiting for their writes to be durable, and the committer's doorbell.
struct Durability {
    waiters: RefCell<Vec<smol::channel::Sender<Result<(), String>>>>,
    bell: (smol::channel::Sender<()>, smol::channel::Receiver<()>),
}

impl Default for Durability {
    fn default() -> Self {
        Durability {
            waiters: RefCell::new(Vec::new()),
            bell: smol::channel::bounded(1),
        }
    }
}

/// How often changed node records (one transaction for all) and events are saved.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(10);

/// The ConfigMap kube-controller-manager's root-ca-cert-publisher keeps in every namespace,
/// which every pod's `kube-api-access` volume projects.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

impl Hub {
    /// Makes sure `kube-root-ca.crt` holds the cloud CA in each namespace (as Kubernetes'
    /// publisher does), so pods with the standard API access volume can start on an edge.
    pub fn publish_root_ca<'a>(&self, namespaces: impl IntoIterator<Item = &'a str>) {
        let pem = self.ca.cert_pem();
        let mut wanted = Vec::new();
        {
            let store = self.store.borrow();
            for ns in namespaces {
                let key =
                    cloudstore::ObjectKey::new(cloudstore::Kind::ConfigMap, ns, ROOT_CA_CONFIGMAP);
                let current = store.get(&key).map(|e| e.object["data"]["ca.crt"].clone());
                if current.as_ref().and_then(|v| v.as_str()) != Some(pem.as_str())
                    && !wanted
                        .iter()
                        .any(|(_, o): &(cloudstore::Kind, serde_json::Value)| {
                            o["metadata"]["namespace"] == ns
                        })
                {
                    wanted.push((
                        cloudstore::Kind::ConfigMap,
                        serde_json::json!({
                            "apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": { "name": ROOT_CA_CONFIGMAP, "namespace": ns, "annotations": {
                                "kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."
                            } },
                            "data": { "ca.crt": pem },
                        }),
                    ));
                }
            }
        }
        if wanted.is_empty() {
            return;
        }
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if let Err(e) = self.store.borrow_mut().apply(&wanted, unix) {
            log::error!("cannot publish {ROOT_CA_CONFIGMAP}: {e}");
        }
    }

    /// Waits until every write made so far is durable: the next commit of the committer
    /// task, which takes everything written meanwhile too. An error means none of it was kept.
    pub async fn durable(&self) -> Result<(), String> {
        {
            let store = self.store.borrow();
            if store.durable_generation() >= store.generation() {
                return Ok(());
            }
        }
        let (tx, rx) = smol::channel::bounded(1);
        self.durability.waiters.borrow_mut().push(tx);
        let _ = self.durability.bell.0.try_send(());
        rx.recv()
            .await
            .unwrap_or_else(|_| Err("cloudcore is stopping".into()))
    }

    /// The committer: one durable transaction for whatever is written while it waits a turn.
    async fn commit_loop(&self) {
        loop {
            if self.durability.bell.1.recv().await.is_err() {
                return;
            }
            // Every task that is ready runs first: what they write goes into this commit too.
            smol::future::yield_now().await;
            let result = self.store.borrow_mut().commit().map_err(|e| e.to_string());
            if let Err(e) = &result {
                log::error!("cloud store commit failed, the last writes are lost and refused: {e}");
                self.reload_enrollment();
            }
            for w in self.durability.waiters.borrow_mut().drain(..) {
                let _ = w.try_send(result.clone());
            }
        }
    }

    /// After a failed commit: the enrollment state as the store has it, so certificates and
    /// uses that were not made durable are forgotten here too (`enroll`).
    fn reload_enrollment(&self) {
        match self.store.borrow().load_state(enroll::STATE_KEY) {
            Ok(Some(b)) => match enroll::Enrollment::decode(&b) {
                Ok(e) => *self.enrollment.borrow_mut() = e,
                Err(e) => log::error!("{e}"),
            },
            Ok(None) => *self.enrollment.borrow_mut() = enroll::Enrollment::default(),
            Err(e) => log::error!("cannot reload the enrollment state: {e}"),
        }
    }

    /// Tells every session the store changed, so each plans its node's deliveries again.
    pub fn store_changed(&self) {
        self.sessions.ring_all();
    }

    /// Saves the node records and the event ring changed since the last save, and commits
    /// them with anything else waiting; what fails is retried next time.
    pub fn save_state(&self) {
        let dirty = self.registry.borrow_mut().take_dirty();
        let events = self.events.borrow_mut().take_changed();
        let staged = {
            let mut store = self.store.borrow_mut();
            let nodes = if dirty.is_empty() {
                Ok(())
            } else {
                store.save_nodes(&dirty)
            };
            let ev = match &events {
                Some(e) => store.save_state("events", e),
                None => Ok(()),
            };
            nodes.and(ev).and_then(|()| store.commit())
        };
        match staged {
            Ok(()) if !dirty.is_empty() => log::debug!("saved {} node record(s)", dirty.len()),
            Ok(()) => {}
            Err(e) => {
                log::error!("cannot save node records and events: {e}");
                self.registry
                    .borrow_mut()
                    .mark_dirty(dirty.iter().map(|(n, _)| n.as_str()));
                if events.is_some() {
                    self.events.borrow_mut().mark_changed();
                }
            }
        }
    }
}

/// CloudHub with its listeners bound, ready to [`Bound::run`].
pub struct Bound {
    pub hub: Rc<Hub>,
    ws: Async<TcpListener>,
    cert: Async<TcpListener>,
    ws_tls: TlsAcceptor,
    cert_tls: TlsAcceptor,
}

fn listen(addr: SocketAddr) -> Result<Async<TcpListener>, HubError> {
    Async::<TcpListener>::bind(addr).map_err(|e| HubError::Bind(addr, e))
}

/// TLS for a cloud port: the server certificate issued from `ca` for `advertise`, client
/// certificates verified against `ca` (required, or optional when `client_cert_required` is
/// false: the certificate port enrolls edges without one, the Kubernetes API answers 401).
pub fn tls_acceptor(
    ca: &pki::Ca,
    advertise: &[String],
    client_cert_required: bool,
) -> Result<TlsAcceptor, HubError> {
    let provider = Arc::new(ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.cert_der().clone())
        .map_err(|e| HubError::Tls(e.to_string()))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let verifier = if client_cert_required {
        verifier
    } else {
        verifier.allow_unauthenticated()
    };
    let verifier = verifier.build().map_err(|e| HubError::Tls(e.to_string()))?;
    let (chain, key) = ca.issue_server_cert(advertise)?;
    let sc = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HubError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| HubError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(sc)))
}

/// Builds TLS from the CA and binds both listeners.
pub fn bind(
    cfg: CloudHubConfig,
    ca: pki::Ca,
    store: cloudstore::CloudStore,
) -> Result<Bound, HubError> {
    let ws_tls = tls_acceptor(&ca, &cfg.advertise, true)?;
    let cert_tls = tls_acceptor(&ca, &cfg.advertise, false)?;
    let ws = listen(SocketAddr::new(cfg.bind, cfg.ws_port))?;
    let cert = listen(SocketAddr::new(cfg.bind, cfg.cert_port))?;
    let mut registry = NodeRegistry::new(cfg.node_limit);
    registry.writes = cfg.node_writes;
    let saved = store
        .load_nodes()
        .map_err(|e| HubError::Store(e.to_string()))?;
    for (name, bytes) in &saved {
        if let Err(e) = registry.restore(name, bytes) {
            log::warn!("skipping a saved node: {e}");
        }
    }
    if !saved.is_empty() {
        log::info!("restored {} node(s) from the store", registry.len());
    }
    let mut events = events::Events::default();
    match store.load_state("events") {
        Ok(Some(bytes)) => match events.restore(&bytes) {
            Ok(n) => log::info!("restored {n} event(s) from the store"),
            Err(e) => log::warn!("skipping the saved events: {e}"),
        },
        Ok(None) => {}
        Err(e) => log::warn!("cannot read the saved events: {e}"),
    }
    // Revocations guard the tunnel: a state that cannot be read stops the start.
    let enrollment = match store.load_state(enroll::STATE_KEY) {
        Ok(Some(bytes)) => enroll::Enrollment::decode(&bytes).map_err(HubError::Store)?,
        Ok(None) => enroll::Enrollment::default(),
        Err(e) => return Err(HubError::Store(e.to_string())),
    };
    let namespaces: std::collections::BTreeSet<String> = std::iter::once("default".to_owned())
        .chain(
            store
                .list(cloudstore::Kind::Pod, None)
                .map(|(k, _)| k.namespace.clone()),
        )
        .collect();
    raise_fd_limit(cfg.node_limit);
    let mut store = store;
    store.set_group_commit(true);
    let hub = Rc::new(Hub {
        durability: Durability::default(),
        registry: RefCell::new(registry),
        store: RefCell::new(store),
        controller: RefCell::new(edgecontroller::EdgeController::new()),
        devices: RefCell::new(devicecontroller::DeviceController::new()),
        events: RefCell::new(events),
        sessions: Sessions::default(),
        enrollment: RefCell::new(enrollment),
        cfg,
        ca,
    });
    hub.publish_root_ca(namespaces.iter().map(String::as_str));
    hub.store
        .borrow_mut()
        .commit()
        .map_err(|e| HubError::Store(e.to_string()))?;
    Ok(Bound {
        hub,
        ws,
        cert,
        ws_tls,
        cert_tls,
    })
}

impl Bound {
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws
            .get_ref()
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn cert_addr(&self) -> SocketAddr {
        self.cert
            .get_ref()
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Accepts connections forever, each served by its own task on `ex`; runs the committer
    /// and the periodic saves.
    pub async fn run(self, ex: Rc<LocalExecutor<'static>>) {
        let Bound {
            hub,
            ws,
            cert,
            ws_tls,
            cert_tls,
        } = self;
        let committer = {
            let hub = hub.clone();
            async move { hub.commit_loop().await }
        };
        // Sockets per port: the nodes' sessions, plus room for handshakes in progress.
        let ws_cap = Cap::new(hub.cfg.node_limit + MAX_HANDSHAKES);
        let cert_cap = Cap::new(MAX_HANDSHAKES);
        let ws_loop = {
            let (hub, ex) = (hub.clone(), ex.clone());
            async move {
                loop {
                    match ws.accept().await {
                        Ok((tcp, peer)) => {
                            let Some(guard) = ws_cap.take(&peer, "tunnel") else {
                                continue; // dropping the socket closes it
                            };
                            let hub = hub.clone();
                            let tls = ws_tls.clone();
                            ex.spawn(async move {
                                capped(
                                    &guard,
                                    server::handle(hub, tls, tcp, || guard.established()),
                                )
                                .await;
                            })
                            .detach()
                        }
                        Err(e) => accept_error(e).await,
                    }
                }
            }
        };
        let cert_loop = {
            let hub = hub.clone();
            async move {
                loop {
                    match cert.accept().await {
                        Ok((tcp, peer)) => {
                            let Some(guard) = cert_cap.take(&peer, "certificate") else {
                                continue;
                            };
                            let hub = hub.clone();
                            let tls = cert_tls.clone();
                            ex.spawn(async move {
                                capped(&guard, certserver::handle(hub, tls, tcp)).await;
                            })
                            .detach()
                        }
                        Err(e) => accept_error(e).await,
                    }
                }
            }
        };
        let save_loop = {
            let hub = hub.clone();
            async move {
                loop {
                    smol::Timer::after(SAVE_INTERVAL).await;
                    hub.save_state();
                }
            }
        };
        smol::future::zip(
            smol::future::zip(ws_loop, cert_loop),
            smol::future::zip(save_loop, committer),
        )
        .await;
    }
}

/// Connections in the handshake (or serving a request) a port takes beyond its sessions.
/// Full: the oldest of them is closed to make room (so sockets held open in a handshake
/// cannot lock legitimate clients out); with only established sessions, the new one is closed.
pub const MAX_HANDSHAKES: usize = 128;

/// The open connections of one port, with its cap.
#[derive(Clone)]
pub struct Cap {
    inner: Rc<RefCell<CapInner>>,
}

struct CapInner {
    max: usize,
    next: u64,
    /// Open connections by id (ids grow with time): whether past the handshake, and the
    /// sender whose drop ends the connection's task.
    open: std::collections::BTreeMap<u64, (bool, smol::channel::Sender<()>)>,
    refused: u64,
    warned: Option<std::time::Instant>,
}

/// Holds one connection slot of a [`Cap`] until dropped.
pub struct CapGuard {
    cap: Cap,
    id: u64,
    /// Closed when the connection is evicted.
    pub evicted: smol::channel::Receiver<()>,
}

impl CapGuard {
    /// The connection is past its handshake (a session): never evicted for a newcomer.
    pub fn established(&self) {
        if let Some(e) = self.cap.inner.borrow_mut().open.get_mut(&self.id) {
            e.0 = true;
        }
    }
}

impl Drop for CapGuard {
    fn drop(&mut self) {
        self.cap.inner.borrow_mut().open.remove(&self.id);
    }
}

impl Cap {
    pub fn new(max: usize) -> Cap {
        Cap {
            inner: Rc::new(RefCell::new(CapInner {
                max,
                next: 0,
                open: Default::default(),
                refused: 0,
                warned: None,
            })),
        }
    }

    /// Connections open.
    pub fn open(&self) -> usize {
        self.inner.borrow().open.len()
    }

    /// A slot for a new connection from `peer`, evicting the oldest one still in its
    /// handshake when the port is full; `None` (counted, warned with the count) when every
    /// slot is an established session.
    pub fn take(&self, peer: &SocketAddr, port: &str) -> Option<CapGuard> {
        let mut c = self.inner.borrow_mut();
        if c.open.len() >= c.max {
            let oldest = c.open.iter().find(|(_, (est, _))| !est).map(|(id, _)| *id);
            match oldest {
                Some(id) => {
                    c.open.remove(&id); // dropping its sender ends that connection
                }
                None => {
                    c.refused += 1;
                    let now = std::time::Instant::now();
                    if c.warned
                        .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(10))
                    {
                        log::warn!(
                            "{port} port: {} sessions open, the most it takes; refusing {peer} ({} refused since the last warning)",
                            c.max,
                            c.refused
                        );
                        c.refused = 0;
                        c.warned = Some(now);
                    }
                    return None;
                }
            }
        }
        c.next += 1;
        let id = c.next;
        let (tx, rx) = smol::channel::bounded(1);
        c.open.insert(id, (false, tx));
        drop(c);
        Some(CapGuard {
            cap: self.clone(),
            id,
            evicted: rx,
        })
    }
}

/// Runs `task` until it ends or its connection is evicted from its port's [`Cap`].
pub async fn capped(guard: &CapGuard, task: impl std::future::Future<Output = ()>) {
    use smol::future::FutureExt;
    task.or(async {
        let _ = guard.evicted.recv().await;
    })
    .await
}

/// Raises the soft limit on open files to the hard one (each connection is a descriptor) and
/// says when it is still low for `node_limit` edges.
pub fn raise_fd_limit(node_limit: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let want = lim.maximum;
    if want.is_some() && lim.current < want {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: want,
                maximum: lim.maximum,
            },
        );
    }
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let need = (node_limit + 2 * MAX_HANDSHAKES + 64) as u64;
    if now < need {
        log::warn!(
            "the open file limit is {now}, fewer than the {need} descriptors {node_limit} edges may need: raise LimitNOFILE (the shipped unit sets 65536)"
        );
    } else {
        log::info!("open file limit {now}");
    }
}

/// Accept can fail transiently (out of file descriptors): log and back off a little instead
/// of spinning.
async fn accept_error(e: std::io::Error) {
    if e.raw_os_error() == Some(24) {
        log::warn!("accept failed: out of file descriptors (EMFILE): raise LimitNOFILE");
    } else {
        log::warn!("accept failed: {e}");
    }
    smol::Timer::after(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_port_evicts_its_oldest_handshake_never_a_session() {
        let cap = Cap::new(3);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let session = cap.take(&peer, "tunnel").unwrap();
        session.established();
        let old = cap.take(&peer, "tunnel").unwrap();
        let young = cap.take(&peer, "tunnel").unwrap();
        let newcomer = cap.take(&peer, "tunnel").unwrap();
        assert_eq!(cap.open(), 3);
        assert!(
            old.evicted.try_recv().is_err() && old.evicted.is_closed(),
            "the oldest handshake was told to end"
        );
        assert!(!young.evicted.is_closed());
        assert!(!session.evicted.is_closed(), "a session is never evicted");
        young.established();
        newcomer.established();
        assert!(
            cap.take(&peer, "tunnel").is_none(),
            "only sessions: the newcomer is refused"
        );
        drop(session);
        assert!(cap.take(&peer, "tunnel").is_some(), "a slot freed");
    }
}
