//! Edged: the node's side of the Kubernetes node lifecycle (§4.1 of the protocol spec) and
//! its pods.
//!
//! On every connect it registers the node (`insert null/node/<n>`; AlreadyExists is fine)
//! and reports its whole status; then it keeps its lease (query, then insert or update every
//! lease interval) and checks the status every status interval, reporting it whole when
//! anything but the heartbeat changed, or every [`STATUS_REPORT_INTERVAL`] at least, as
//! kubelet does. [`NodeAgent`] is the sans-IO state machine; [`run`] feeds it bus messages
//! and clock ticks.
//!
//! The pods ([`pods`]) run in a second loop of the same task: the desired set and the link
//! reach it through latest-value cells (the node loop never waits on it), and it tells the
//! node loop the container runtime's health through another. It works the same offline: the
//! desired set comes from the local store.

#![forbid(unsafe_code)]

pub mod node;
pub mod pods;
pub mod sysinfo;

use std::net::IpAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use bus::{
    Bus, BusMessage, CloudRequest, Link, Mailbox, ModuleId, Outcome, Reply, RequestId, Shutdown,
    Wake, Watch,
};
use serde_json::Value;

use crate::node::{Condition, Reservations};
use crate::pods::RuntimeHealth;
use crate::sysinfo::{NodeFacts, Pressure};

/// Edged settings.
#[derive(Clone, Debug)]
pub struct EdgedConfig {
    pub node_name: String,
    /// How often the node status is checked (upstream 10 s).
    pub status_interval: Duration,
    /// Lease renewal period (upstream 10 s).
    pub lease_interval: Duration,
    /// Where edgecore keeps its data: the filesystem reported as ephemeral storage.
    pub data_dir: PathBuf,
    /// CRI endpoint (`unix:///…`); `None` runs no pods (unless `direct` is set).
    pub cri_endpoint: Option<String>,
    /// The daemonless runtime (OCI bundles run by crun), used instead of CRI when set.
    pub direct: Option<pods::DirectConfig>,
    /// First restart back-off of a crashed container (kubelet: 10 s), doubling to 5 min.
    pub crash_backoff: Duration,
    /// How often the runtime is compared with the desired pods.
    pub pod_sync_period: Duration,
    /// Resources held back from allocatable.
    pub reservations: Reservations,
    /// Whether edgecore's store can write; the node is not Ready while it cannot.
    pub store: StoreWatch,
}

/// edgecore's store write health as a latest-value cell: `None` while it writes. Set by
/// whoever owns the store (`edgecore run`); Edged only reads it.
#[derive(Clone)]
pub struct StoreWatch(pub Rc<Watch<Option<node::StoreFault>>>);

impl Default for StoreWatch {
    fn default() -> Self {
        StoreWatch(Rc::new(Watch::new(None)))
    }
}

impl std::fmt::Debug for StoreWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StoreWatch").field(&self.0.get()).finish()
    }
}

/// An unchanged node status is reported again after this long (kubelet's
/// `nodeStatusReportFrequency`).
pub const STATUS_REPORT_INTERVAL: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Asked {
    Register,
    Status,
    LeaseQuery,
    LeaseWrite,
}

#[derive(Clone, Debug, PartialEq)]
enum LeaseState {
    Unknown,
    Missing,
    Held(Value),
}

/// Requests in flight at most: one of each kind is all the agent ever needs.
const MAX_IN_FLIGHT: usize = 8;

/// The node lifecycle state machine. Times are passed in; nothing here does IO.
pub struct NodeAgent {
    name: String,
    facts: NodeFacts,
    reservations: Reservations,
    runtime_down: Option<String>,
    store_fault: Option<node::StoreFault>,
    link: Option<IpAddr>,
    registered: bool,
    node_uid: Option<String>,
    lease: LeaseState,
    in_flight: Vec<(RequestId, Asked)>,
    next_id: u32,
    /// Refusals repeat with every retry: one line a minute.
    refused_log: bus::Throttle,
    next_status: Instant,
    next_lease: Instant,
    status_interval: Duration,
    lease_interval: Duration,
    last_conditions: Option<[Condition; 4]>,
    transitions: [String; 4],
    /// The status last accepted by the cloud (without heartbeats) and when it was sent.
    reported: Option<(String, Instant)>,
    /// The status being sent, until answered.
    reporting: Option<(String, Instant)>,
}

impl NodeAgent {
    pub fn new(
        name: &str,
        facts: NodeFacts,
        status_interval: Duration,
        lease_interval: Duration,
        now: Instant,
    ) -> Self {
        NodeAgent {
            name: name.to_owned(),
            facts,
            reservations: Reservations::default(),
            runtime_down: None,
            store_fault: None,
            link: None,
            registered: false,
            node_uid: None,
            lease: LeaseState::Unknown,
            in_flight: Vec::new(),
            refused_log: bus::Throttle::default(),
            next_id: 0,
            next_status: now,
            next_lease: now,
            status_interval,
            lease_interval,
            last_conditions: None,
            transitions: Default::default(),
            reported: None,
            reporting: None,
        }
    }

    pub fn is_registered(&self) -> bool {
        self.registered
    }

    pub fn set_reservations(&mut self, r: Reservations) {
        self.reservations = r;
    }

    /// The container runtime's health: its version goes into `nodeInfo`, a runtime that
    /// does not answer makes the node not Ready. The next status check reports the change.
    pub fn set_runtime(&mut self, h: &RuntimeHealth) {
        match h {
            RuntimeHealth::Up(v) => {
                self.facts.runtime_version = v.clone();
                self.runtime_down = None;
            }
            RuntimeHealth::Down(e) => self.runtime_down = Some(e.clone()),
            RuntimeHealth::None | RuntimeHealth::Unknown => self.runtime_down = None,
        }
    }

    /// The store's write health: a store that cannot write makes the node not Ready (and a
    /// full disk DiskPressure) from the next status check on.
    pub fn set_store(&mut self, fault: Option<node::StoreFault>) {
        self.store_fault = fault;
    }

    fn ask(&mut self, what: Asked, req: CloudRequest, out: &mut Vec<(RequestId, CloudRequest)>) {
        if self.in_flight.iter().any(|(_, a)| *a == what) || self.in_flight.len() >= MAX_IN_FLIGHT {
            return; // one of each at a time; the next tick asks again
        }
        self.next_id = self.next_id.wrapping_add(1) % pods::report::FIRST_ID;
        let id = RequestId(self.next_id);
        self.in_flight.push((id, what));
        out.push((id, req));
    }

    /// Conditions for `pressure`, updating transition times when a status flips.
    fn conditions(&mut self, pressure: &Pressure, now_rfc: &str) -> [Condition; 4] {
        let mut conds = node::conditions(pressure, self.runtime_down.as_deref());
        if let Some(f) = &self.store_fault {
            node::with_store_fault(&mut conds, f);
        }
        for (i, c) in conds.iter().enumerate() {
            let changed = self
                .last_conditions
                .as_ref()
                .is_none_or(|old| old[i].status != c.status);
            if changed {
                self.transitions[i] = now_rfc.to_owned();
            }
        }
        self.last_conditions = Some(conds.clone());
        conds
    }

    fn status(&mut self, wall: SystemTime, pressure: &Pressure) -> Option<Value> {
        let ip = self.link?;
        let now_rfc = rfc3339(wall);
        let conds = self.conditions(pressure, &now_rfc);
        Some(node::status(
            &self.name,
            &self.facts,
            &self.reservations,
            ip,
            &conds,
            &self.transitions,
            &now_rfc,
        ))
    }

    /// The tunnel went up or down.
    pub fn on_link(
        &mut self,
        link: Link,
        now: Instant,
        wall: SystemTime,
        pressure: &Pressure,
    ) -> Vec<(RequestId, CloudRequest)> {
        let mut out = Vec::new();
        match link {
            Link::Connected { local_ip } => {
                self.link = Some(local_ip);
                self.registered = false;
                self.lease = LeaseState::Unknown;
                self.in_flight.clear();
                // The whole status goes again on this connection.
                self.reported = None;
                self.reporting = None;
                self.register(wall, pressure, &mut out);
                self.next_status = now + self.status_interval;
                self.next_lease = now + self.lease_interval;
            }
            Link::Disconnected => {
                self.link = None;
                self.in_flight.clear();
            }
        }
        out
    }

    fn register(
        &mut self,
        wall: SystemTime,
        pressure: &Pressure,
        out: &mut Vec<(RequestId, CloudRequest)>,
    ) {
        let Some(status) = self.status(wall, pressure) else {
            return;
        };
        let node = node::node_object(&self.name, &self.facts, status);
        self.ask(Asked::Register, CloudRequest::RegisterNode { node }, out);
    }

    /// Reports the whole status if it changed since the last accepted report, or the last
    /// one is older than [`STATUS_REPORT_INTERVAL`], or `force`.
    fn report_status(
        &mut self,
        now: Instant,
        wall: SystemTime,
        pressure: &Pressure,
        force: bool,
        out: &mut Vec<(RequestId, CloudRequest)>,
    ) {
        let Some(status) = self.status(wall, pressure) else {
            return;
        };
        let key = node::status_key(&status);
        let due = force
            || self.reported.as_ref().is_none_or(|(k, at)| {
                *k != key || now.saturating_duration_since(*at) >= STATUS_REPORT_INTERVAL
            });
        if !due || self.in_flight.iter().any(|(_, a)| *a == Asked::Status) {
            return;
        }
        self.reporting = Some((key, now));
        let patch = node::status_patch(&status);
        self.ask(Asked::Status, CloudRequest::PatchNodeStatus { patch }, out);
    }

    fn renew_lease(&mut self, wall: SystemTime, out: &mut Vec<(RequestId, CloudRequest)>) {
        let renew = proto::time::rfc3339_micros(unix_micros(wall));
        match &self.lease {
            LeaseState::Unknown => self.ask(Asked::LeaseQuery, CloudRequest::QueryLease, out),
            LeaseState::Missing => {
                let lease = node::lease(&self.name, self.node_uid.as_deref(), None, &renew);
                self.ask(Asked::LeaseWrite, CloudRequest::CreateLease { lease }, out)
            }
            LeaseState::Held(prev) => {
                let lease = node::lease(&self.name, self.node_uid.as_deref(), Some(prev), &renew);
                self.ask(Asked::LeaseWrite, CloudRequest::UpdateLease { lease }, out)
            }
        }
    }

    /// A request ended.
    pub fn on_reply(
        &mut self,
        id: RequestId,
        outcome: Outcome,
        now: Instant,
        wall: SystemTime,
        pressure: &Pressure,
    ) -> Vec<(RequestId, CloudRequest)> {
        let mut out = Vec::new();
        let Some(pos) = self.in_flight.iter().position(|(i, _)| *i == id) else {
            return out; // from before a reconnect
        };
        let (_, asked) = self.in_flight.remove(pos);
        let reply = match outcome {
            Outcome::Answered { reply, .. } => reply,
            Outcome::NotConnected | Outcome::Lost => {
                if asked == Asked::Status {
                    self.reporting = None;
                }
                return out; // the next tick retries
            }
        };
        match (asked, reply) {
            (Asked::Register, Reply::Object(node)) => {
                self.registered = true;
                self.node_uid = node["metadata"]["uid"].as_str().map(str::to_owned);
                log::info!("node {} registered", self.name);
                self.renew_lease(wall, &mut out);
                // What registration sent may not be what the cloud kept: report it all.
                self.report_status(now, wall, pressure, true, &mut out);
            }
            (Asked::Register, Reply::Failed { reason, .. }) if reason == "AlreadyExists" => {
                self.registered = true;
                log::info!("node {} already registered", self.name);
                self.renew_lease(wall, &mut out);
                // The existing object holds an older status: refresh all of it.
                self.report_status(now, wall, pressure, true, &mut out);
            }
            (Asked::Register, r) => {
                if let Some(n) = self.refused_log.allow(now) {
                    log::warn!(
                        "node registration refused: {}; retrying{n}",
                        bus::reply_summary(&r)
                    );
                }
            }
            (Asked::LeaseQuery | Asked::LeaseWrite, r) if r.is_not_found() => {
                self.lease = LeaseState::Missing;
                self.renew_lease(wall, &mut out);
            }
            (Asked::LeaseQuery | Asked::LeaseWrite, Reply::Object(lease)) if lease.is_object() => {
                let first = matches!(asked, Asked::LeaseQuery);
                self.lease = LeaseState::Held(lease);
                if first {
                    self.renew_lease(wall, &mut out);
                }
            }
            (Asked::LeaseQuery | Asked::LeaseWrite, r) => {
                // A conflict or anything unexpected: read the lease again before the next write.
                log::debug!(
                    "lease request answered {}; re-reading the lease",
                    bus::reply_summary(&r)
                );
                self.lease = LeaseState::Unknown;
            }
            (Asked::Status, Reply::Failed { message, .. }) => {
                self.reporting = None;
                if let Some(n) = self.refused_log.allow(now) {
                    log::warn!("node status patch refused: {message}{n}");
                }
            }
            (Asked::Status, _) => self.reported = self.reporting.take(),
        }
        out
    }

    /// Periodic work due at `now`.
    pub fn on_tick(
        &mut self,
        now: Instant,
        wall: SystemTime,
        pressure: &Pressure,
    ) -> Vec<(RequestId, CloudRequest)> {
        let mut out = Vec::new();
        if self.link.is_none() {
            return out;
        }
        if !self.registered {
            if now >= self.next_status {
                self.next_status = now + self.status_interval;
                self.register(wall, pressure, &mut out);
            }
            return out;
        }
        if now >= self.next_status {
            self.next_status = now + self.status_interval;
            self.report_status(now, wall, pressure, false, &mut out);
        }
        if now >= self.next_lease {
            self.next_lease = now + self.lease_interval;
            self.renew_lease(wall, &mut out);
        }
        out
    }
}

fn unix_micros(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn rfc3339(t: SystemTime) -> String {
    proto::time::rfc3339(unix_micros(t) / 1_000_000)
}

/// Runs Edged until shutdown: the node lifecycle and the pods, as two loops of one task, so a
/// slow container runtime (an image pull) never delays the lease or node status.
pub async fn run(cfg: EdgedConfig, mailbox: Mailbox, bus: Bus, shutdown: Shutdown) {
    #[cfg(not(feature = "direct"))]
    if cfg.direct.is_some() {
        log::error!("this edgecore was built without the direct runtime (feature `direct`); no pods will run");
        let loops = Loops::new(&cfg);
        return loops
            .run::<pods::cri_runtime::CriRuntime>(None, &mailbox, &bus, &shutdown)
            .await;
    }
    #[cfg(feature = "direct")]
    if let Some(d) = &cfg.direct {
        let loops = Loops::new(&cfg);
        return match pods::direct::DirectRuntime::new(d) {
            Ok(r) => r.with(loops.run(Some(&r), &mailbox, &bus, &shutdown)).await,
            Err(e) => {
                log::error!("the direct runtime cannot start: {e}; no pods will run");
                loops
                    .run::<pods::direct::DirectRuntime>(None, &mailbox, &bus, &shutdown)
                    .await
            }
        };
    }
    let runtime = match &cfg.cri_endpoint {
        Some(ep) => match pods::cri_runtime::CriRuntime::new(ep) {
            Ok(r) => Some(r),
            Err(e) => {
                log::error!("{e}; no pods will run");
                None
            }
        },
        None => None,
    };
    let loops = Loops::new(&cfg);
    match &runtime {
        Some(r) => {
            let cri = r.client();
            cri.with(loops.run(Some(r), &mailbox, &bus, &shutdown))
                .await
        }
        None => {
            loops
                .run::<pods::cri_runtime::CriRuntime>(None, &mailbox, &bus, &shutdown)
                .await
        }
    }
}

/// Edged's two loops, ready to run on a runtime.
struct Loops<'a> {
    cfg: &'a EdgedConfig,
    agent: NodeAgent,
    pod_cfg: pods::PodConfig,
    inputs: pods::Inputs,
    links: NodeLinks,
}

impl<'a> Loops<'a> {
    fn new(cfg: &'a EdgedConfig) -> Self {
        let facts = sysinfo::read_facts(&cfg.data_dir);
        let node_resources = {
            let (_, alloc) = node::resources(&facts, &cfg.reservations);
            pods::volumes::NodeResources {
                cpu_millis: u64::from(facts.cpus) * 1000
                    - cfg
                        .reservations
                        .cpu_millis
                        .min(u64::from(facts.cpus) * 1000),
                memory_bytes: alloc["memory"]
                    .as_str()
                    .and_then(|m| proto::quantity::units(m, false))
                    .unwrap_or(0),
                ephemeral_bytes: alloc["ephemeral-storage"]
                    .as_str()
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(0),
            }
        };
        let mut agent = NodeAgent::new(
            &cfg.node_name,
            facts,
            cfg.status_interval,
            cfg.lease_interval,
            Instant::now(),
        );
        agent.set_reservations(cfg.reservations.clone());
        let desired: Rc<Watch<Rc<bus::DesiredPods>>> = Rc::new(Watch::new(Default::default()));
        let link: Rc<Watch<(bool, Option<String>)>> = Rc::new(Watch::new((false, None)));
        let health: Rc<Watch<RuntimeHealth>> = Rc::new(Watch::new(RuntimeHealth::Unknown));
        // Every reply answers one of Edged's requests, which the bus bounds to
        // `ModuleId::Edged.in_flight()`: a channel that size never refuses one.
        let (reply_tx, reply_rx) = smol::channel::bounded(ModuleId::Edged.in_flight());
        let inputs = pods::Inputs {
            desired: desired.clone(),
            link: link.clone(),
            replies: reply_rx,
            health: health.clone(),
        };
        let pod_cfg = pods::PodConfig {
            root: cfg.data_dir.join("pods"),
            sync_period: cfg.pod_sync_period,
            reconciler: pods::plan::ReconcilerConfig {
                root: cfg.data_dir.join("pods"),
                crash_backoff: cfg.crash_backoff,
                node: node_resources,
            },
        };
        Loops {
            cfg,
            agent,
            pod_cfg,
            inputs,
            links: NodeLinks {
                desired,
                link,
                health,
                replies: reply_tx,
            },
        }
    }
}

impl Loops<'_> {
    /// The node loop and the pod loop side by side: the node loop only reads the mailbox
    /// and hands the pod loop its inputs through cells and a reply channel bounded by Edged's
    /// in-flight limit, never waiting on it, so a runtime call that takes
    /// minutes (an image pull) never delays the lease or node status.
    async fn run<R: pods::runtime::Runtime>(
        self,
        rt: Option<&R>,
        mailbox: &Mailbox,
        bus: &Bus,
        shutdown: &Shutdown,
    ) {
        let node = node_loop(self.cfg, self.agent, mailbox, bus, shutdown, self.links);
        let pods = pods::run(rt, self.pod_cfg, self.inputs, bus, shutdown);
        smol::future::zip(node, pods).await;
    }
}

/// What the node loop shares with the pod loop.
struct NodeLinks {
    desired: Rc<Watch<Rc<bus::DesiredPods>>>,
    link: Rc<Watch<(bool, Option<String>)>>,
    health: Rc<Watch<RuntimeHealth>>,
    replies: smol::channel::Sender<(RequestId, Outcome)>,
}

async fn node_loop(
    cfg: &EdgedConfig,
    mut agent: NodeAgent,
    mailbox: &Mailbox,
    bus: &Bus,
    shutdown: &Shutdown,
    links: NodeLinks,
) {
    let period = (cfg.status_interval.min(cfg.lease_interval) / 4).max(Duration::from_millis(50));
    let mut ticker = smol::Timer::interval(period);
    let mut health_seen = 0;
    let mut store_seen = 0;
    loop {
        let wake = mailbox.next(&mut ticker, shutdown).await;
        let now = Instant::now();
        let wall = SystemTime::now();
        if links.health.version() != health_seen {
            health_seen = links.health.version();
            agent.set_runtime(&links.health.get());
        }
        if cfg.store.0.version() != store_seen {
            store_seen = cfg.store.0.version();
            agent.set_store(cfg.store.0.get());
        }
        let pressure = || sysinfo::read_pressure(&cfg.data_dir);
        let requests = match wake {
            Wake::Stop => return,
            Wake::Mail(BusMessage::Link(link)) => {
                let last_ip = links.link.get().1;
                links.link.set(match link {
                    Link::Connected { local_ip } => (true, Some(local_ip.to_string())),
                    Link::Disconnected => (false, last_ip),
                });
                agent.on_link(link, now, wall, &pressure())
            }
            Wake::Mail(BusMessage::Reply { id, outcome }) if id.0 >= pods::report::FIRST_ID => {
                // Never full: the channel holds as many as Edged may have in flight.
                let _ = links.replies.try_send((id, outcome));
                continue;
            }
            Wake::Mail(BusMessage::Reply { id, outcome }) => {
                agent.on_reply(id, outcome, now, wall, &pressure())
            }
            Wake::Mail(BusMessage::Desired(d)) => {
                links.desired.set(d);
                continue;
            }
            Wake::Mail(other) => {
                log::debug!("edged ignores {}", other.summary());
                continue;
            }
            Wake::Tick => agent.on_tick(now, wall, &pressure()),
        };
        if !to_cloud(bus, requests).await {
            return;
        }
    }
}

/// Hands Edged's requests to EdgeHub, waiting for room. False when edgecore is stopping.
pub(crate) async fn to_cloud(
    bus: &Bus,
    requests: impl IntoIterator<Item = (RequestId, CloudRequest)>,
) -> bool {
    for (id, request) in requests {
        let msg = BusMessage::ToCloud {
            from: ModuleId::Edged,
            id,
            request,
        };
        if !bus.send(ModuleId::EdgeHub, msg).await {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests;
