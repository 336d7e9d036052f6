//! Edged: the node's side of the Kubernetes node lifecycle (§4.1 of the protocol spec).
//!
//! On every connect it registers the node (`insert null/node/<n>`, AlreadyExists is fine), then
//! keeps its lease (query, then insert or update every lease interval) and patches node status
//! every status interval, as upstream's kubelet does. [`NodeAgent`] is the sans-IO state
//! machine; [`run`] feeds it bus messages and clock ticks.
//!
//! With a CRI endpoint configured it also runs the pods MetaManager holds ([`pods`]): the
//! desired set arrives whole on the bus, a sync pass converges the runtime every
//! `pod_sync_period` and on every change, and changed pod statuses go to the cloud as
//! `podpatch` requests (all of them again after each reconnect). It works the same offline:
//! the desired set comes from the local store.

#![forbid(unsafe_code)]

pub mod node;
pub mod pods;
pub mod sysinfo;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use bus::{
    Bus, BusMessage, CloudRequest, Link, Mailbox, ModuleId, Outcome, Reply, RequestId, Shutdown,
    Wake,
};
use serde_json::Value;
use smol::future::FutureExt;
use smol::stream::StreamExt;

use crate::node::Condition;
use crate::sysinfo::{NodeFacts, Pressure};

/// Edged settings.
#[derive(Clone, Debug)]
pub struct EdgedConfig {
    pub node_name: String,
    /// Node status patch period (upstream 10 s).
    pub status_interval: Duration,
    /// Lease renewal period (upstream 10 s).
    pub lease_interval: Duration,
    /// Where edgecore keeps its data: the filesystem reported as ephemeral storage.
    pub data_dir: PathBuf,
    /// CRI endpoint (`unix:///…`); `None` runs no pods.
    pub cri_endpoint: Option<String>,
    /// First restart back-off of a crashed container (kubelet: 10 s), doubling to 5 min.
    pub crash_backoff: Duration,
    /// How often the runtime is compared with the desired pods.
    pub pod_sync_period: Duration,
}

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
    link: Option<IpAddr>,
    registered: bool,
    node_uid: Option<String>,
    lease: LeaseState,
    in_flight: Vec<(RequestId, Asked)>,
    next_id: u32,
    next_status: Instant,
    next_lease: Instant,
    status_interval: Duration,
    lease_interval: Duration,
    last_conditions: Option<[Condition; 4]>,
    transitions: [String; 4],
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
            link: None,
            registered: false,
            node_uid: None,
            lease: LeaseState::Unknown,
            in_flight: Vec::new(),
            next_id: 0,
            next_status: now,
            next_lease: now,
            status_interval,
            lease_interval,
            last_conditions: None,
            transitions: Default::default(),
        }
    }

    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// Records the container runtime's version for the node object.
    pub fn set_runtime_version(&mut self, v: String) {
        self.facts.runtime_version = v;
    }

    fn ask(&mut self, what: Asked, req: CloudRequest, out: &mut Vec<(RequestId, CloudRequest)>) {
        if self.in_flight.iter().any(|(_, a)| *a == what) || self.in_flight.len() >= MAX_IN_FLIGHT {
            return; // one of each at a time; the next tick asks again
        }
        self.next_id = self.next_id.wrapping_add(1);
        let id = RequestId(self.next_id);
        self.in_flight.push((id, what));
        out.push((id, req));
    }

    /// Conditions for `pressure`, updating transition times when a status flips.
    fn conditions(&mut self, pressure: &Pressure, now_rfc: &str) -> [Condition; 4] {
        let conds = node::conditions(pressure);
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
        let Some(ip) = self.link else { return };
        let now_rfc = rfc3339(wall);
        let conds = self.conditions(pressure, &now_rfc);
        let node = node::node_object(
            &self.name,
            &self.facts,
            ip,
            &conds,
            &self.transitions,
            &now_rfc,
        );
        self.ask(Asked::Register, CloudRequest::RegisterNode { node }, out);
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
        wall: SystemTime,
    ) -> Vec<(RequestId, CloudRequest)> {
        let mut out = Vec::new();
        let Some(pos) = self.in_flight.iter().position(|(i, _)| *i == id) else {
            return out; // from before a reconnect
        };
        let (_, asked) = self.in_flight.remove(pos);
        let reply = match outcome {
            Outcome::Answered { reply, .. } => reply,
            Outcome::NotConnected | Outcome::Lost => return out, // the next tick retries
        };
        match (asked, reply) {
            (Asked::Register, Reply::Object(node)) => {
                self.registered = true;
                self.node_uid = node["metadata"]["uid"].as_str().map(str::to_owned);
                log::info!("node {} registered", self.name);
                self.renew_lease(wall, &mut out);
            }
            (Asked::Register, Reply::Failed { reason, .. }) if reason == "AlreadyExists" => {
                self.registered = true;
                log::info!("node {} already registered", self.name);
                self.renew_lease(wall, &mut out);
            }
            (Asked::Register, r) => log::warn!("node registration refused: {r:?}; retrying"),
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
                log::debug!("lease request answered {r:?}; re-reading the lease");
                self.lease = LeaseState::Unknown;
            }
            (Asked::Status, Reply::Failed { message, .. }) => {
                log::warn!("node status patch refused: {message}")
            }
            (Asked::Status, _) => {}
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
            let now_rfc = rfc3339(wall);
            let conds = self.conditions(pressure, &now_rfc);
            let patch = node::status_patch(&conds, &self.transitions, &now_rfc);
            self.ask(
                Asked::Status,
                CloudRequest::PatchNodeStatus { patch },
                &mut out,
            );
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

/// Request ids of pod status patches: a range of their own so NodeAgent ignores their replies.
const POD_STATUS_IDS: u32 = 0x8000_0000;

/// What the node loop tells the pod loop.
enum PodEvent {
    Desired(std::rc::Rc<bus::DesiredPods>),
    /// Connected (with the node address) or disconnected.
    Link(Option<String>),
    /// A status report was not stored by the cloud: report everything again.
    Resend,
}

/// Events waiting for the pod loop at most; a full queue drops the event (the next sync pass,
/// at most `pod_sync_period` later, reads the latest state anyway) except desired-state
/// changes, which wait.
const POD_EVENTS: usize = 16;

/// Runs Edged until shutdown: the node lifecycle and the pods, as two loops of one task, so a
/// slow container runtime (an image pull) never delays the lease or node status.
pub async fn run(cfg: EdgedConfig, mailbox: Mailbox, bus: Bus, shutdown: Shutdown) {
    let facts = sysinfo::read_facts(&cfg.data_dir);
    let mut agent = NodeAgent::new(
        &cfg.node_name,
        facts,
        cfg.status_interval,
        cfg.lease_interval,
        Instant::now(),
    );
    let mut runtime = match &cfg.cri_endpoint {
        Some(ep) => match pods::PodRuntime::new(ep, cfg.data_dir.join("pods"), cfg.crash_backoff) {
            Ok(mut r) => {
                let cri = r.client();
                match cri.with(r.runtime_version()).await {
                    Ok(v) => {
                        log::info!("container runtime {v} at {ep}");
                        agent.set_runtime_version(v);
                    }
                    Err(e) => log::warn!("{e}; pods wait for the runtime"),
                }
                Some(r)
            }
            Err(e) => {
                log::error!("{e}; no pods will run");
                None
            }
        },
        None => None,
    };
    let (pod_tx, pod_rx) = smol::channel::bounded::<PodEvent>(POD_EVENTS);
    let node_loop = node_loop(
        &cfg,
        agent,
        &mailbox,
        &bus,
        &shutdown,
        runtime.is_some().then_some(pod_tx),
    );
    let pod_loop = async {
        if let Some(r) = runtime.as_mut() {
            let cri = r.client();
            cri.with(pod_loop(&cfg, r, pod_rx, &bus, &shutdown)).await;
        }
    };
    smol::future::zip(node_loop, pod_loop).await;
}

async fn node_loop(
    cfg: &EdgedConfig,
    mut agent: NodeAgent,
    mailbox: &Mailbox,
    bus: &Bus,
    shutdown: &Shutdown,
    pods: Option<smol::channel::Sender<PodEvent>>,
) {
    let period = (cfg.status_interval.min(cfg.lease_interval) / 4).max(Duration::from_millis(50));
    let mut ticker = smol::Timer::interval(period);
    let tell = |ev: PodEvent| {
        if let Some(tx) = &pods {
            let _ = tx.try_send(ev);
        }
    };
    loop {
        let wake = mailbox.next(&mut ticker, shutdown).await;
        let now = Instant::now();
        let wall = SystemTime::now();
        let requests = match wake {
            Wake::Stop => return,
            Wake::Mail(BusMessage::Link(link)) => {
                tell(PodEvent::Link(match link {
                    Link::Connected { local_ip } => Some(local_ip.to_string()),
                    Link::Disconnected => None,
                }));
                agent.on_link(link, now, wall, &sysinfo::read_pressure(&cfg.data_dir))
            }
            Wake::Mail(BusMessage::Reply { id, outcome }) if id.0 >= POD_STATUS_IDS => {
                if !matches!(
                    outcome,
                    Outcome::Answered {
                        reply: Reply::Object(_),
                        ..
                    }
                ) {
                    tell(PodEvent::Resend);
                }
                continue;
            }
            Wake::Mail(BusMessage::Reply { id, outcome }) => agent.on_reply(id, outcome, wall),
            Wake::Mail(BusMessage::Desired(d)) => {
                if let Some(tx) = &pods {
                    // Desired state must not be lost: wait for room.
                    let _ = tx.send(PodEvent::Desired(d)).await;
                }
                continue;
            }
            Wake::Mail(other) => {
                log::debug!("edged ignores {other:?}");
                continue;
            }
            Wake::Tick => agent.on_tick(now, wall, &sysinfo::read_pressure(&cfg.data_dir)),
        };
        for (id, request) in requests {
            let msg = BusMessage::ToCloud {
                from: ModuleId::Edged,
                id,
                request,
            };
            if !bus.send(ModuleId::EdgeHub, msg).await {
                return;
            }
        }
    }
}

async fn pod_loop(
    cfg: &EdgedConfig,
    runtime: &mut pods::PodRuntime,
    events: smol::channel::Receiver<PodEvent>,
    bus: &Bus,
    shutdown: &Shutdown,
) {
    let mut desired: std::rc::Rc<bus::DesiredPods> = Default::default();
    let mut node_ip: Option<String> = None;
    let mut last_ip = String::new();
    let mut next_id = POD_STATUS_IDS;
    let mut ticker = smol::Timer::interval(cfg.pod_sync_period.max(Duration::from_millis(100)));
    loop {
        enum Ev {
            Event(Option<PodEvent>),
            Tick,
            Stop,
        }
        let ev = async { Ev::Event(events.recv().await.ok()) }
            .or(async {
                ticker.next().await;
                Ev::Tick
            })
            .or(async {
                shutdown.wait().await;
                Ev::Stop
            })
            .await;
        match ev {
            Ev::Stop | Ev::Event(None) => return,
            Ev::Event(Some(PodEvent::Desired(d))) => desired = d,
            Ev::Event(Some(PodEvent::Link(ip))) => {
                if let Some(ip) = &ip {
                    last_ip = ip.clone();
                }
                node_ip = ip;
                runtime.resend_all();
            }
            Ev::Event(Some(PodEvent::Resend)) => runtime.resend_all(),
            Ev::Tick => {}
        }
        let patches = runtime.sync(&desired, &last_ip).await;
        if node_ip.is_none() {
            // Offline: nothing is sent, so everything is reported once the tunnel is back.
            runtime.resend_all();
            continue;
        }
        for (namespace, name, patch) in patches {
            next_id = next_id.wrapping_add(1) | POD_STATUS_IDS;
            let msg = BusMessage::ToCloud {
                from: ModuleId::Edged,
                id: RequestId(next_id),
                request: CloudRequest::PatchPodStatus {
                    namespace,
                    name,
                    patch,
                },
            };
            if !bus.send(ModuleId::EdgeHub, msg).await {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const S: Duration = Duration::from_secs(10);

    fn answered(reply: Reply) -> Outcome {
        Outcome::Answered {
            reply,
            resource_version: String::new(),
        }
    }

    fn up() -> Link {
        Link::Connected {
            local_ip: [10, 0, 0, 2].into(),
        }
    }

    #[test]
    fn registers_then_creates_lease_then_renews_and_patches() {
        let t0 = Instant::now();
        let w = SystemTime::now();
        let p = Pressure::default();
        let mut a = NodeAgent::new("edge0", NodeFacts::default(), S, S, t0);
        assert!(
            a.on_tick(t0, w, &p).is_empty(),
            "nothing while disconnected"
        );
        let reqs = a.on_link(up(), t0, w, &p);
        assert!(matches!(
            reqs.as_slice(),
            [(_, CloudRequest::RegisterNode { .. })]
        ));
        let reqs = a.on_reply(
            reqs[0].0,
            answered(Reply::Object(json!({"metadata":{"uid":"u1"}}))),
            w,
        );
        assert!(a.is_registered());
        assert!(matches!(reqs.as_slice(), [(_, CloudRequest::QueryLease)]));
        let nf = Reply::Failed {
            code: 404,
            reason: "NotFound".into(),
            message: String::new(),
        };
        let reqs = a.on_reply(reqs[0].0, answered(nf), w);
        let lease = match reqs.as_slice() {
            [(_, CloudRequest::CreateLease { lease })] => lease.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(lease["metadata"]["ownerReferences"][0]["uid"], "u1");
        let mut stored = lease.clone();
        stored["metadata"]["resourceVersion"] = json!("5");
        assert!(a
            .on_reply(reqs[0].0, answered(Reply::Object(stored)), w)
            .is_empty());
        // Before the interval nothing is due; at it, a status patch and a lease update.
        assert!(a.on_tick(t0 + S / 2, w, &p).is_empty());
        let reqs = a.on_tick(t0 + S, w, &p);
        assert!(matches!(reqs[0].1, CloudRequest::PatchNodeStatus { .. }));
        match &reqs[1].1 {
            CloudRequest::UpdateLease { lease } => {
                assert_eq!(lease["metadata"]["resourceVersion"], "5")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn already_exists_counts_as_registered_and_failures_retry() {
        let t0 = Instant::now();
        let w = SystemTime::now();
        let p = Pressure::default();
        let mut a = NodeAgent::new("edge0", NodeFacts::default(), S, S, t0);
        let reqs = a.on_link(up(), t0, w, &p);
        assert!(a.on_reply(reqs[0].0, Outcome::Lost, w).is_empty());
        assert!(!a.is_registered());
        let reqs = a.on_tick(t0 + S, w, &p);
        assert!(
            matches!(reqs.as_slice(), [(_, CloudRequest::RegisterNode { .. })]),
            "{reqs:?}"
        );
        let exists = Reply::Failed {
            code: 409,
            reason: "AlreadyExists".into(),
            message: String::new(),
        };
        a.on_reply(reqs[0].0, answered(exists), w);
        assert!(a.is_registered());
    }

    #[test]
    fn reconnect_registers_again_and_drops_stale_replies() {
        let t0 = Instant::now();
        let w = SystemTime::now();
        let p = Pressure::default();
        let mut a = NodeAgent::new("edge0", NodeFacts::default(), S, S, t0);
        let first = a.on_link(up(), t0, w, &p);
        a.on_link(Link::Disconnected, t0, w, &p);
        let again = a.on_link(up(), t0, w, &p);
        assert!(matches!(
            again.as_slice(),
            [(_, CloudRequest::RegisterNode { .. })]
        ));
        assert!(a
            .on_reply(first[0].0, answered(Reply::Object(json!({}))), w)
            .is_empty());
        assert!(
            !a.is_registered(),
            "a reply from the old session must not count"
        );
    }
}
