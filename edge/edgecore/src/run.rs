//! `edgecore run`: the static module table on one single-threaded executor (DESIGN.md §2).
//!
//! Each entry names a module, whether the config enables it, and how to start it. Optional
//! modules are compiled out with their cargo feature; nothing registers itself at start-up.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use anyhow::Context;
use bus::{Bus, Mailbox, ModuleId, Shutdown, Watch};
use smol::future::FutureExt;
use smol::stream::StreamExt;
use smol::LocalExecutor;

use crate::config::Config;

/// How long modules get to finish after SIGTERM before edgecore exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

type ModuleFuture = Pin<Box<dyn Future<Output = ()>>>;

/// An unwritable store is tried again this often (a probe is one small write; only while
/// the store cannot write).
const STORE_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// What modules share: the one store file (MetaManager's objects, DeviceTwin's devices), its
/// identity and its write health.
struct Shared {
    store: Rc<dyn store::KvStore>,
    epoch: String,
    #[cfg(feature = "edged")]
    store_health: edged::StoreWatch,
}

/// The store, counting its transactions: how well group commit works (commits and flash
/// bytes per message) is logged when edgecore stops, for the benchmarks.
struct Counted {
    inner: Rc<store::Store>,
    commits: std::cell::Cell<u64>,
}

impl store::KvStore for Counted {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, store::StoreError> {
        self.inner.get(key)
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Result<store::Pairs, store::StoreError> {
        self.inner.scan_prefix(prefix)
    }
    fn apply(&self, ops: &[store::Op]) -> Result<(), store::StoreError> {
        self.commits.set(self.commits.get() + 1);
        self.inner.apply(ops)
    }
    fn bytes_written(&self) -> u64 {
        self.inner.bytes_written()
    }
}

/// One row of the module table.
struct ModuleSpec {
    id: ModuleId,
    enabled: fn(&Config) -> bool,
    start: fn(&Config, &Shared, Mailbox, Bus, Shutdown) -> anyhow::Result<ModuleFuture>,
}

const MODULES: &[ModuleSpec] = &[
    ModuleSpec {
        id: ModuleId::EdgeHub,
        enabled: |_| true,
        start: start_edgehub,
    },
    #[cfg(feature = "metamanager")]
    ModuleSpec {
        id: ModuleId::MetaManager,
        enabled: |c| c.modules.metamanager,
        start: start_metamanager,
    },
    #[cfg(feature = "edged")]
    ModuleSpec {
        id: ModuleId::Edged,
        enabled: |c| c.modules.edged,
        start: start_edged,
    },
    #[cfg(feature = "devicetwin")]
    ModuleSpec {
        id: ModuleId::DeviceTwin,
        enabled: |c| c.modules.devicetwin,
        start: start_devicetwin,
    },
    #[cfg(feature = "eventbus")]
    ModuleSpec {
        id: ModuleId::EventBus,
        enabled: |c| c.modules.eventbus,
        start: start_eventbus,
    },
];

#[cfg(feature = "devicetwin")]
fn start_devicetwin(
    cfg: &Config,
    shared: &Shared,
    mailbox: Mailbox,
    bus: Bus,
    shutdown: Shutdown,
) -> anyhow::Result<ModuleFuture> {
    let core = devicetwin::TwinCore::new(&cfg.node_name, shared.store.clone())?;
    Ok(Box::pin(devicetwin::run(core, mailbox, bus, shutdown)))
}

#[cfg(feature = "eventbus")]
fn start_eventbus(
    cfg: &Config,
    _: &Shared,
    mailbox: Mailbox,
    bus: Bus,
    shutdown: Shutdown,
) -> anyhow::Result<ModuleFuture> {
    let e = &cfg.eventbus;
    let client_id = format!("edgecore-{}", cfg.node_name);
    // With the embedded broker, EventBus's client id is reserved for it by a secret made at
    // start: no local client can take its session over or lock it out.
    let secret = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let credentials = if e.embedded {
        let user = if e.username.is_empty() {
            "edgecore"
        } else {
            &e.username
        };
        Some((user.to_owned(), secret.clone()))
    } else {
        (!e.username.is_empty()).then(|| (e.username.clone(), e.password.clone()))
    };
    let ebc = eventbus::EventBusConfig {
        broker: e.broker.clone(),
        client_id: client_id.clone(),
        credentials,
        max_packet: e.max_packet_bytes,
        keepalive: Duration::from_secs(30),
        tls: match &e.tls {
            Some(t) => Some(
                eventbus::tls::client_config(&t.ca, t.cert.as_deref(), t.key.as_deref())
                    .map_err(|e| anyhow::anyhow!("eventbus.tls: {e}"))?,
            ),
            None => None,
        },
    };
    let client = eventbus::run(ebc, mailbox, bus, shutdown.clone());
    if !e.embedded {
        return Ok(Box::pin(client));
    }
    let listen: std::net::SocketAddr = e.broker.parse().with_context(|| {
        format!(
            "eventbus.broker {:?} must be an IP:port for the embedded broker",
            e.broker
        )
    })?;
    let mut bc = broker::BrokerConfig::new(listen);
    bc.limits.max_packet = e.max_packet_bytes;
    bc.limits.max_clients = e.max_clients;
    for f in &e.deny_subscribe {
        broker::check_filter(f).map_err(|rule| {
            anyhow::anyhow!("eventbus.deny_subscribe: {f:?} is not a topic filter [{rule}]")
        })?;
    }
    bc.deny_subscribe = e.deny_subscribe.clone();
    bc.credentials = (!e.username.is_empty()).then(|| (e.username.clone(), e.password.clone()));
    bc.reserved = Some((client_id, secret));
    let listener = broker::bind(&bc).with_context(|| {
        format!("cannot listen on {listen} for the embedded MQTT broker (another broker running? set eventbus.embedded to false to use it)")
    })?;
    Ok(Box::pin(async move {
        smol::future::zip(broker::serve(bc, listener, shutdown), client).await;
    }))
}

#[cfg(feature = "metamanager")]
fn start_metamanager(
    _: &Config,
    shared: &Shared,
    mailbox: Mailbox,
    bus: Bus,
    shutdown: Shutdown,
) -> anyhow::Result<ModuleFuture> {
    Ok(Box::pin(metamanager::run(
        metamanager::MetaCore::new(shared.store.clone()),
        mailbox,
        bus,
        shutdown,
    )))
}

fn start_edgehub(
    cfg: &Config,
    shared: &Shared,
    mailbox: Mailbox,
    bus: Bus,
    shutdown: Shutdown,
) -> anyhow::Result<ModuleFuture> {
    let pki = cfg.pki();
    // Loaded for every dial, so a renewed certificate is picked up; checked once here so a
    // broken enrollment stops edgecore at start-up with the reason.
    crate::tls::tunnel_config(&pki)?;
    let tls: edgehub::TlsSource =
        std::rc::Rc::new(move || crate::tls::tunnel_config(&pki).map_err(|e| format!("{e:#}")));
    let (renewed_tx, renewed_rx) = smol::channel::bounded(1);
    let hub = edgehub::EdgeHubConfig {
        node_name: cfg.node_name.clone(),
        project_id: cfg.cloud.project_id.clone(),
        server: cfg.cloud.server.clone(),
        tls,
        renewed: cfg.rotate_certificates.then_some(renewed_rx),
        heartbeat: cfg.heartbeat,
        connect_timeout: Duration::from_secs(10).max(cfg.heartbeat),
        backoff_base: Duration::from_millis(500),
        backoff_max: Duration::from_secs(30),
        store_epoch: Some(shared.epoch.clone()),
    };
    let hub = edgehub::run(hub, mailbox, bus, shutdown);
    if !cfg.rotate_certificates {
        return Ok(Box::pin(hub));
    }
    // Rotation never ends on its own; the pair ends when EdgeHub does (shutdown).
    let rotation = crate::certs::rotate(
        cfg.pki(),
        cfg.node_name.clone(),
        cfg.cloud.cert_server.clone(),
        renewed_tx,
    );
    Ok(Box::pin(hub.or(rotation)))
}

#[cfg(feature = "edged")]
fn start_edged(
    cfg: &Config,
    shared: &Shared,
    mailbox: Mailbox,
    bus: Bus,
    shutdown: Shutdown,
) -> anyhow::Result<ModuleFuture> {
    let edged = edged::EdgedConfig {
        node_name: cfg.node_name.clone(),
        status_interval: cfg.status_interval,
        lease_interval: cfg.lease_interval,
        data_dir: cfg.data_dir.clone(),
        cri_endpoint: (cfg.runtime == crate::config::RUNTIME_CRI && !cfg.cri_endpoint.is_empty())
            .then(|| cfg.cri_endpoint.clone()),
        direct: (cfg.runtime == crate::config::RUNTIME_DIRECT).then(|| edged::pods::DirectConfig {
            data_dir: cfg.data_dir.clone(),
            oci_runtime: cfg.oci_runtime.clone(),
        }),
        crash_backoff: cfg.crash_backoff,
        pod_sync_period: cfg.pod_sync_period,
        reservations: {
            let r = cfg.reserved.resolve()?;
            edged::node::Reservations {
                cpu_millis: r.cpu_millis,
                memory_bytes: r.memory_bytes,
                ephemeral_bytes: r.ephemeral_bytes,
                eviction_memory_bytes: r.eviction_memory_bytes,
                eviction_nodefs_percent: r.eviction_nodefs_percent,
            }
        },
        store: shared.store_health.clone(),
    };
    Ok(Box::pin(edged::run(edged, mailbox, bus, shutdown)))
}

pub fn run(cfg: Config) -> anyhow::Result<()> {
    support::init_logger(support::parse_level(&cfg.log_level).map_err(anyhow::Error::msg)?);
    let enabled: Vec<&ModuleSpec> = MODULES.iter().filter(|m| (m.enabled)(&cfg)).collect();
    let ids: Vec<ModuleId> = enabled.iter().map(|m| m.id).collect();
    let (bus, mailboxes) = Bus::new(&ids);
    let (mut trigger, shutdown) = Shutdown::new();
    if crate::certs::recover(&cfg.pki())? {
        log::info!("finished a certificate renewal that was interrupted");
    }
    let path = cfg.store_path()?;
    let store = Rc::new(
        store::Store::open(&path, cfg.store_backend()?)
            .with_context(|| format!("cannot open the store {}", path.display()))?,
    );
    let health = Rc::new(Watch::new(store.health()));
    let counted = Rc::new(Counted {
        inner: store.clone(),
        commits: Default::default(),
    });
    let shared = Shared {
        store: counted.clone(),
        epoch: store.epoch().to_owned(),
        #[cfg(feature = "edged")]
        store_health: edged::StoreWatch::default(),
    };
    {
        let health = health.clone();
        #[cfg(feature = "edged")]
        let for_edged = shared.store_health.clone();
        let path = path.clone();
        store.on_health(move |h| {
            match h {
                store::Health::Unwritable(f) => log::error!(
                    "store {} cannot write: {f}; the node reports NotReady until it can (tried again every {STORE_PROBE_INTERVAL:?})",
                    path.display()
                ),
                store::Health::Writable => log::info!("store {} writes again", path.display()),
            }
            #[cfg(feature = "edged")]
            for_edged.0.set(match h {
                store::Health::Writable => None,
                store::Health::Unwritable(f) => Some(edged::node::StoreFault {
                    message: f.message.clone(),
                    no_space: f.no_space,
                }),
            });
            health.set(h.clone());
        });
    }
    let mut futures = Vec::new();
    for (spec, mailbox) in enabled.iter().zip(mailboxes) {
        let fut = (spec.start)(&cfg, &shared, mailbox, bus.clone(), shutdown.clone())
            .with_context(|| format!("cannot start module {}", spec.id))?;
        futures.push((spec.id, fut));
    }
    drop(bus);
    let mut signals =
        async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])
            .context("cannot install signal handlers")?;
    log::info!(
        "edgecore {} starting node {} with modules: {}",
        env!("CARGO_PKG_VERSION"),
        cfg.node_name,
        ids.iter().map(|i| i.name()).collect::<Vec<_>>().join(", ")
    );

    let ex = LocalExecutor::new();
    smol::block_on(ex.run(async {
        let tasks: Vec<_> = futures
            .into_iter()
            .map(|(id, f)| (id, ex.spawn(f)))
            .collect();
        let _prober = ex.spawn(probe_store(store.clone(), health, shutdown.clone()));
        if let Some(Ok(sig)) = signals.next().await {
            log::info!("received {sig:?}; shutting down");
        }
        trigger.trigger();
        let all = async {
            for (_, t) in tasks {
                t.await;
            }
            true
        };
        let done = all
            .or(async {
                smol::Timer::after(SHUTDOWN_GRACE).await;
                false
            })
            .await;
        if !done {
            log::warn!("modules did not stop within {SHUTDOWN_GRACE:?}; exiting anyway");
        }
    }));
    log::info!(
        "store: {} commits, {} bytes written since start",
        counted.commits.get(),
        store::KvStore::bytes_written(counted.as_ref())
    );
    Ok(())
}

/// While the store cannot write, tries it every [`STORE_PROBE_INTERVAL`], so it reads as
/// writable again (and the node as Ready) soon after space returns, even if no module has
/// anything to write. Sleeps on the health cell otherwise.
async fn probe_store(
    store: Rc<store::Store>,
    health: Rc<Watch<store::Health>>,
    shutdown: Shutdown,
) {
    let mut seen = health.version();
    loop {
        while matches!(store.health(), store::Health::Unwritable(_)) {
            let stop = async {
                smol::Timer::after(STORE_PROBE_INTERVAL).await;
                false
            }
            .or(async {
                shutdown.wait().await;
                true
            })
            .await;
            if stop {
                return;
            }
            let _ = store.probe();
        }
        let stop = async {
            health.changed(&mut seen).await;
            false
        }
        .or(async {
            shutdown.wait().await;
            true
        })
        .await;
        if stop {
            return;
        }
    }
}
