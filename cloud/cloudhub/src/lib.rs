//! CloudHub: cloudcore's side of the edge tunnel (§3 of the protocol spec).
//!
//! - [`server`]: WebSocket over mutual TLS on port 10000, one session per node.
//! - [`certserver`]: the enrollment endpoint on port 10002.
//! - [`dispatch`]: what each message from an edge does (sans-IO).
//! - [`events`]: recent events per object, for `cloudcore describe`.
//! - Delivery of pods, configmaps, secrets, devices and models is `edgecontroller`'s plan,
//!   device membership `devicecontroller`'s, both driven per session.
//! - [`nodes`]: the registry of nodes and leases, and readiness (sans-IO).
//! - [`http`]: the little HTTP/1.1 both the certificate endpoint and the admin API need.
//!
//! Everything runs on one single-threaded smol executor; shared state is `Rc<RefCell<…>>`.

#![forbid(unsafe_code)]

pub mod certserver;
pub mod dispatch;
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
    pub ca: pki::Ca,
    pub registry: RefCell<NodeRegistry>,
    pub store: RefCell<cloudstore::CloudStore>,
    pub controller: RefCell<edgecontroller::EdgeController>,
    pub devices: RefCell<devicecontroller::DeviceController>,
    pub events: RefCell<events::Events>,
    pub sessions: Sessions,
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

    /// Tells every session the store changed, so each plans its node's deliveries again.
    pub fn store_changed(&self) {
        self.sessions.ring_all();
    }

    /// Saves the node records and the event ring changed since the last save; what fails is
    /// retried next time.
    pub fn save_state(&self) {
        self.save_nodes();
        let Some(events) = self.events.borrow_mut().take_changed() else {
            return;
        };
        if let Err(e) = self.store.borrow_mut().save_state("events", &events) {
            log::error!("cannot save events: {e}");
            self.events.borrow_mut().mark_changed();
        }
    }

    fn save_nodes(&self) {
        let dirty = self.registry.borrow_mut().take_dirty();
        if dirty.is_empty() {
            return;
        }
        match self.store.borrow_mut().save_nodes(&dirty) {
            Ok(()) => log::debug!("saved {} node record(s)", dirty.len()),
            Err(e) => {
                log::error!("cannot save node records: {e}");
                self.registry
                    .borrow_mut()
                    .mark_dirty(dirty.iter().map(|(n, _)| n.as_str()));
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

/// Builds TLS from the CA and binds both listeners.
pub fn bind(
    cfg: CloudHubConfig,
    ca: pki::Ca,
    store: cloudstore::CloudStore,
) -> Result<Bound, HubError> {
    let provider = Arc::new(ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.cert_der().clone())
        .map_err(|e| HubError::Tls(e.to_string()))?;
    let roots = Arc::new(roots);
    let tls = |client_cert_required: bool| -> Result<TlsAcceptor, HubError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
        let verifier = if client_cert_required {
            verifier
        } else {
            verifier.allow_unauthenticated()
        };
        let verifier = verifier.build().map_err(|e| HubError::Tls(e.to_string()))?;
        let (chain, key) = ca.issue_server_cert(&cfg.advertise)?;
        let sc = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| HubError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| HubError::Tls(e.to_string()))?;
        Ok(TlsAcceptor::from(Arc::new(sc)))
    };
    let ws_tls = tls(true)?;
    let cert_tls = tls(false)?;
    let ws = listen(SocketAddr::new(cfg.bind, cfg.ws_port))?;
    let cert = listen(SocketAddr::new(cfg.bind, cfg.cert_port))?;
    let mut registry = NodeRegistry::new(cfg.node_limit);
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
    let namespaces: std::collections::BTreeSet<String> = std::iter::once("default".to_owned())
        .chain(
            store
                .list(cloudstore::Kind::Pod, None)
                .map(|(k, _)| k.namespace.clone()),
        )
        .collect();
    let hub = Rc::new(Hub {
        registry: RefCell::new(registry),
        store: RefCell::new(store),
        controller: RefCell::new(edgecontroller::EdgeController::new()),
        devices: RefCell::new(devicecontroller::DeviceController::new()),
        events: RefCell::new(events),
        sessions: Sessions::default(),
        cfg,
        ca,
    });
    hub.publish_root_ca(namespaces.iter().map(String::as_str));
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

    /// Accepts connections forever, each served by its own task on `ex`.
    pub async fn run(self, ex: Rc<LocalExecutor<'static>>) {
        let Bound {
            hub,
            ws,
            cert,
            ws_tls,
            cert_tls,
        } = self;
        let hub_for_saves = hub.clone();
        let ws_loop = {
            let (hub, ex) = (hub.clone(), ex.clone());
            async move {
                loop {
                    match ws.accept().await {
                        Ok((tcp, _)) => ex
                            .spawn(server::handle(hub.clone(), ws_tls.clone(), tcp))
                            .detach(),
                        Err(e) => accept_error(e).await,
                    }
                }
            }
        };
        let cert_loop = async move {
            loop {
                match cert.accept().await {
                    Ok((tcp, _)) => ex
                        .spawn(certserver::handle(hub.clone(), cert_tls.clone(), tcp))
                        .detach(),
                    Err(e) => accept_error(e).await,
                }
            }
        };
        let save_loop = {
            let hub = hub_for_saves;
            async move {
                loop {
                    smol::Timer::after(SAVE_INTERVAL).await;
                    hub.save_state();
                }
            }
        };
        smol::future::zip(smol::future::zip(ws_loop, cert_loop), save_loop).await;
    }
}

/// Accept can fail transiently (out of file descriptors): log and back off a little instead
/// of spinning.
async fn accept_error(e: std::io::Error) {
    log::warn!("accept failed: {e}");
    smol::Timer::after(Duration::from_millis(100)).await;
}
