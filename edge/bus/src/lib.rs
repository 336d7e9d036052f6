//! The contract between edgecore's modules (DESIGN.md §2).
//!
//! Modules never call each other: they exchange [`BusMessage`]s, typed values that EdgeHub
//! alone converts to and from wire messages. Each module owns one bounded mailbox; the table of
//! mailboxes is fixed at start-up ([`Bus::new`]) from the static module table in `edgecore`.
//!
//! What happens when a mailbox is full is part of the API:
//! - modules sending requests to EdgeHub wait ([`Bus::send`]: backpressure);
//! - EdgeHub delivering to a module never waits ([`Bus::deliver`]): a full mailbox drops the
//!   message with a warning and counts it, so a slow module can never stall the tunnel. Every
//!   module's requests are periodic or retried, so a dropped reply is recovered by the next one.

#![forbid(unsafe_code)]

use std::cell::Cell;
use std::fmt;

pub use proto::objresp::Reply;

/// Capacity of every module mailbox.
pub const MAILBOX_CAPACITY: usize = 64;

/// The modules edgecore can run. The order is the order of the static module table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModuleId {
    EdgeHub = 0,
    Edged = 1,
    MetaManager = 2,
    EventBus = 3,
    DeviceTwin = 4,
}

impl ModuleId {
    pub const ALL: [ModuleId; 5] = [
        ModuleId::EdgeHub,
        ModuleId::Edged,
        ModuleId::MetaManager,
        ModuleId::EventBus,
        ModuleId::DeviceTwin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ModuleId::EdgeHub => "edgehub",
            ModuleId::Edged => "edged",
            ModuleId::MetaManager => "metamanager",
            ModuleId::EventBus => "eventbus",
            ModuleId::DeviceTwin => "twin",
        }
    }
}

/// What the cloud did to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectOp {
    /// `insert` or `update`: upstream resyncs send `update` for objects the edge never had,
    /// so both mean "this is the object now".
    Upsert,
    Delete,
}

/// Object kinds MetaManager keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Pod,
    ConfigMap,
    Secret,
    /// Routed to DeviceTwin, which stores it.
    Device,
    DeviceModel,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 3] = [ObjectKind::Pod, ObjectKind::ConfigMap, ObjectKind::Secret];

    /// The resource type token of the wire path (§2.2).
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Pod => "pod",
            ObjectKind::ConfigMap => "configmap",
            ObjectKind::Secret => "secret",
            ObjectKind::Device => "device",
            ObjectKind::DeviceModel => "devicemodel",
        }
    }

    pub fn from_resource(kind: &proto::ResourceKind) -> Option<Self> {
        match kind {
            proto::ResourceKind::Pod => Some(ObjectKind::Pod),
            proto::ResourceKind::ConfigMap => Some(ObjectKind::ConfigMap),
            proto::ResourceKind::Secret => Some(ObjectKind::Secret),
            proto::ResourceKind::Device => Some(ObjectKind::Device),
            proto::ResourceKind::DeviceModel => Some(ObjectKind::DeviceModel),
            _ => None,
        }
    }
}

impl std::str::FromStr for ObjectKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "pod" | "pods" | "po" => Ok(ObjectKind::Pod),
            "configmap" | "configmaps" | "cm" => Ok(ObjectKind::ConfigMap),
            "secret" | "secrets" => Ok(ObjectKind::Secret),
            other => Err(format!(
                "unknown kind {other:?}; known: pods, configmaps, secrets"
            )),
        }
    }
}

/// Everything EdgeHub needs to acknowledge a cloud message later. Opaque to modules: they
/// hand it back untouched once the object is persisted.
#[derive(Clone, Debug, PartialEq)]
pub struct AckHandle {
    pub msg_id: String,
    pub route: proto::Route,
}

/// An object pushed by the cloud, parsed once by EdgeHub.
#[derive(Clone, Debug, PartialEq)]
pub struct CloudObject {
    pub op: ObjectOp,
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
    /// The message's `resourceversion` header (or the object's, if the header is empty).
    pub resource_version: String,
    /// The object as the cloud sent it; for deletes often only `metadata`.
    pub object: serde_json::Value,
    pub ack: AckHandle,
}

impl fmt::Display for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A module's own number for one of its requests, echoed in the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(pub u32);

/// What a module can ask of the cloud. EdgeHub maps each to exactly one wire message (route and
/// resource path per the protocol spec §4.1); module code never sees a route string.
#[derive(Clone, Debug, PartialEq)]
pub enum CloudRequest {
    /// `insert null/node/<node>` with a `v1.Node`.
    RegisterNode { node: serde_json::Value },
    /// `patch null/nodepatch/<node>` with a strategic-merge patch (sent as a JSON string).
    PatchNodeStatus { patch: String },
    /// `query kube-node-lease/lease/<node>`.
    QueryLease,
    /// `insert kube-node-lease/lease/<node>` with a `coordination.k8s.io/v1 Lease`.
    CreateLease { lease: serde_json::Value },
    /// `update kube-node-lease/lease/<node>`.
    UpdateLease { lease: serde_json::Value },
    /// `patch <ns>/podpatch/<name>` with a strategic-merge patch (sent as a JSON string).
    PatchPodStatus {
        namespace: String,
        name: String,
        patch: String,
    },
    /// `update device/<ns>/<name>/twin/edge_updated` with a `DeviceTwinResult` (§5.3).
    TwinReported {
        namespace: String,
        name: String,
        content: serde_json::Value,
    },
    /// `update device/<ns>/<name>/state/update` with a `DeviceMsg` as a JSON string (§5.3).
    DeviceState {
        namespace: String,
        name: String,
        content: String,
    },
    /// `query <ns>/configmap|secret/<name>` (§4.5): an object a pod needs that the cloud has
    /// not pushed. The answer must be acknowledged once stored ([`Outcome::Answered::ack`]).
    QueryObject {
        kind: ObjectKind,
        namespace: String,
        name: String,
    },
    /// `query <ns>/serviceaccounttoken/<account>` with an `authentication.k8s.io/v1
    /// TokenRequest` bound to a pod (§4.5); answered with the TokenRequest and its token.
    QueryToken {
        namespace: String,
        service_account: String,
        request: serde_json::Value,
    },
    /// `delete <ns>/pod/<name>` with `DeleteOptions{gracePeriodSeconds: 0, preconditions:
    /// {uid}}`: the pod's containers are stopped, the cloud may remove it (§4.3).
    DeletePod {
        namespace: String,
        name: String,
        uid: String,
    },
}

/// Everything Edged must run, as MetaManager holds it: the pods bound to this node, the
/// configmaps and secrets they may use, keyed by `(namespace, name)`, their service account
/// tokens, and what the cloud said is missing. Sent whole (it is small on a gateway) at start
/// and after every change, so Edged never reads the store itself.
#[derive(Debug, Default, PartialEq)]
pub struct DesiredPods {
    pub pods: Vec<serde_json::Value>,
    pub configmaps: std::collections::BTreeMap<(String, String), serde_json::Value>,
    pub secrets: std::collections::BTreeMap<(String, String), serde_json::Value>,
    /// Tokens for projected `serviceAccountToken` sources, by [`TokenKey`].
    pub tokens: std::collections::BTreeMap<TokenKey, Token>,
    /// Objects pods reference that the cloud answered NotFound (or refused) for, with the
    /// cloud's message (`configmaps "x" not found`): Edged says so in the pod's status.
    pub missing: std::collections::BTreeMap<(ObjectKind, String, String), String>,
}

/// Which token a projected volume source wants: one per pod, account, audience and lifetime
/// (upstream's `KeyFunc` keys the same fields).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenKey {
    pub pod_uid: String,
    pub service_account: String,
    /// Empty: the cloud's default audience.
    pub audience: String,
    pub expiration_secs: u64,
}

/// A service account token and when it expires (Unix seconds).
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub token: String,
    pub expires_unix: i64,
}

/// State of the cloud tunnel, announced by EdgeHub to every module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Up; `local_ip` is this gateway's address on the path to the cloud (the node's InternalIP).
    Connected {
        local_ip: std::net::IpAddr,
    },
    Disconnected,
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The cloud answered.
    Answered {
        reply: Reply,
        /// The `resourceversion` header of the answer, if any.
        resource_version: String,
        /// For answers that must be acknowledged once stored (object queries): hand it back
        /// as [`BusMessage::Persisted`] after the commit. Other answers EdgeHub acknowledges
        /// itself, as upstream's edge acknowledges every answer.
        ack: Option<Box<AckHandle>>,
    },
    /// No tunnel: nothing was sent (upstream metamanager fails fast the same way).
    NotConnected,
    /// Sent, but no answer arrived in time, or the tunnel dropped first.
    Lost,
}

/// Everything that travels on the bus.
#[derive(Clone, Debug, PartialEq)]
pub enum BusMessage {
    /// To EdgeHub: send `request` on behalf of `from`.
    ToCloud {
        from: ModuleId,
        id: RequestId,
        request: CloudRequest,
    },
    /// From EdgeHub: the tunnel went up or down.
    Link(Link),
    /// From EdgeHub: request `id` of the receiving module ended.
    Reply { id: RequestId, outcome: Outcome },
    /// From EdgeHub to MetaManager: the cloud pushed an object.
    FromCloud(Box<CloudObject>),
    /// To EdgeHub: the object behind this handle is durably stored; acknowledge it.
    Persisted(AckHandle),
    /// From MetaManager to Edged: the current desired state (shared, not copied per reader).
    Desired(std::rc::Rc<DesiredPods>),
    /// From EventBus to DeviceTwin: a message published on a device or node topic.
    Mqtt { topic: String, payload: Vec<u8> },
    /// From DeviceTwin to EventBus: publish this.
    MqttPublish { topic: String, payload: Vec<u8> },
    /// From EdgeHub to DeviceTwin: a device membership change pushed by the cloud (§5.3).
    Membership(serde_json::Value),
    /// From EventBus to EdgeHub: an application message on an upload topic, for the cloud
    /// (§5.1: `upload`, group `user`, resource = the topic). Fire and forget.
    Upload { topic: String, payload: Vec<u8> },
}

/// What woke a module's loop ([`Mailbox::next`]).
#[derive(Debug)]
pub enum Wake {
    Mail(BusMessage),
    Tick,
    /// Shutdown was triggered, or every sender is gone.
    Stop,
}

/// A module's receiving end.
pub struct Mailbox {
    pub id: ModuleId,
    rx: smol::channel::Receiver<BusMessage>,
}

impl Mailbox {
    /// The next message; `None` once every sender is gone (edgecore is stopping).
    pub async fn recv(&self) -> Option<BusMessage> {
        self.rx.recv().await.ok()
    }

    /// The next message if one is already waiting.
    pub fn try_recv(&self) -> Option<BusMessage> {
        self.rx.try_recv().ok()
    }

    /// The next message, tick of `ticker`, or shutdown, whichever comes first: the wait at
    /// the top of a module's loop.
    pub async fn next(&self, ticker: &mut smol::Timer, shutdown: &Shutdown) -> Wake {
        use smol::future::FutureExt;
        use smol::stream::StreamExt;
        async {
            match self.recv().await {
                Some(m) => Wake::Mail(m),
                None => Wake::Stop,
            }
        }
        .or(async {
            ticker.next().await;
            Wake::Tick
        })
        .or(async {
            shutdown.wait().await;
            Wake::Stop
        })
        .await
    }
}

/// The senders of every enabled module's mailbox. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    senders: Vec<Option<smol::channel::Sender<BusMessage>>>,
    dropped: std::rc::Rc<Cell<u64>>,
}

impl Bus {
    /// Makes a mailbox for each enabled module.
    pub fn new(enabled: &[ModuleId]) -> (Bus, Vec<Mailbox>) {
        let mut senders = vec![None; ModuleId::ALL.len()];
        let mut boxes = Vec::new();
        for &id in enabled {
            let (tx, rx) = smol::channel::bounded(MAILBOX_CAPACITY);
            senders[id as usize] = Some(tx);
            boxes.push(Mailbox { id, rx });
        }
        (
            Bus {
                senders,
                dropped: Default::default(),
            },
            boxes,
        )
    }

    pub fn is_enabled(&self, id: ModuleId) -> bool {
        self.senders[id as usize].is_some()
    }

    /// Sends, waiting while the mailbox is full. Returns false if `to` is disabled or stopped.
    pub async fn send(&self, to: ModuleId, msg: BusMessage) -> bool {
        match &self.senders[to as usize] {
            Some(tx) => tx.send(msg).await.is_ok(),
            None => false,
        }
    }

    /// Delivers without waiting; a full mailbox drops the message (counted, logged at warn).
    pub fn deliver(&self, to: ModuleId, msg: BusMessage) {
        if let Some(tx) = &self.senders[to as usize] {
            if let Err(smol::channel::TrySendError::Full(m)) = tx.try_send(msg) {
                self.dropped.set(self.dropped.get() + 1);
                log::warn!("{to} mailbox full; dropped {m:?}");
            }
        }
    }

    /// Delivers to every enabled module except `from`.
    pub fn broadcast(&self, from: ModuleId, msg: BusMessage) {
        for id in ModuleId::ALL {
            if id != from {
                self.deliver(id, msg.clone());
            }
        }
    }

    /// Messages dropped by [`Bus::deliver`] so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }
}

/// A latest-value cell (embassy's `Watch`): writing replaces the value, never queues it, so
/// state (the link, the desired pods) can never be dropped or stall its writer; a reader
/// waits for a value newer than the one it saw. Single-threaded, for tasks of one executor.
pub struct Watch<T> {
    value: std::cell::RefCell<T>,
    version: Cell<u64>,
    bell: (smol::channel::Sender<()>, smol::channel::Receiver<()>),
}

impl<T: Clone> Watch<T> {
    pub fn new(initial: T) -> Self {
        Watch {
            value: std::cell::RefCell::new(initial),
            version: Cell::new(0),
            bell: smol::channel::bounded(1),
        }
    }

    /// Replaces the value and wakes the reader.
    pub fn set(&self, v: T) {
        *self.value.borrow_mut() = v;
        self.version.set(self.version.get() + 1);
        let _ = self.bell.0.try_send(()); // a full bell already means "look again"
    }

    /// The current value.
    pub fn get(&self) -> T {
        self.value.borrow().clone()
    }

    /// The version of the current value (bumped by every [`Watch::set`]).
    pub fn version(&self) -> u64 {
        self.version.get()
    }

    /// Waits until the value is newer than `seen`, then returns it and records its version.
    pub async fn changed(&self, seen: &mut u64) -> T {
        while self.version.get() == *seen {
            let _ = self.bell.1.recv().await;
        }
        *seen = self.version.get();
        self.get()
    }
}

/// Shutdown signal every task selects on. Triggered once, observed by all clones.
#[derive(Clone)]
pub struct Shutdown {
    rx: smol::channel::Receiver<()>,
}

/// Triggers [`Shutdown`] when [`ShutdownTrigger::trigger`] is called or it is dropped.
pub struct ShutdownTrigger {
    tx: Option<smol::channel::Sender<()>>,
}

impl Shutdown {
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = smol::channel::bounded(1);
        (ShutdownTrigger { tx: Some(tx) }, Shutdown { rx })
    }

    /// Resolves once shutdown has been triggered.
    pub async fn wait(&self) {
        // Nothing is ever sent: the channel closing is the signal.
        let _ = self.rx.recv().await;
    }

    pub fn is_triggered(&self) -> bool {
        self.rx.is_closed()
    }
}

impl ShutdownTrigger {
    pub fn trigger(&mut self) {
        self.tx.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_wakes_for_mail_tick_and_stop() {
        smol::block_on(async {
            let (bus, mut boxes) = Bus::new(&[ModuleId::Edged]);
            let mailbox = boxes.remove(0);
            let (mut trigger, shutdown) = Shutdown::new();
            let mut ticker = smol::Timer::interval(std::time::Duration::from_millis(10));
            bus.deliver(ModuleId::Edged, BusMessage::Link(Link::Disconnected));
            assert!(matches!(
                mailbox.next(&mut ticker, &shutdown).await,
                Wake::Mail(BusMessage::Link(Link::Disconnected))
            ));
            assert!(matches!(
                mailbox.next(&mut ticker, &shutdown).await,
                Wake::Tick
            ));
            trigger.trigger();
            assert!(matches!(
                mailbox.next(&mut ticker, &shutdown).await,
                Wake::Stop
            ));
            // Every sender gone reads as shutdown too.
            let (_t, idle) = Shutdown::new();
            drop(bus);
            let mut never = smol::Timer::never();
            assert!(matches!(mailbox.next(&mut never, &idle).await, Wake::Stop));
        });
    }

    #[test]
    fn deliver_drops_and_counts_when_full_send_waits() {
        smol::block_on(async {
            let (bus, boxes) = Bus::new(&[ModuleId::EdgeHub, ModuleId::Edged]);
            for _ in 0..MAILBOX_CAPACITY + 3 {
                bus.deliver(
                    ModuleId::Edged,
                    BusMessage::Link(Link::Connected {
                        local_ip: [127, 0, 0, 1].into(),
                    }),
                );
            }
            assert_eq!(bus.dropped(), 3);
            let edged = boxes.iter().find(|b| b.id == ModuleId::Edged).unwrap();
            assert_eq!(
                edged.recv().await,
                Some(BusMessage::Link(Link::Connected {
                    local_ip: [127, 0, 0, 1].into()
                }))
            );
            // One slot is free again, so a waiting send completes at once.
            assert!(
                bus.send(ModuleId::Edged, BusMessage::Link(Link::Disconnected))
                    .await
            );
        });
    }

    #[test]
    fn disabled_modules_receive_nothing() {
        smol::block_on(async {
            let (bus, boxes) = Bus::new(&[ModuleId::EdgeHub]);
            assert!(!bus.is_enabled(ModuleId::Edged));
            assert!(
                !bus.send(
                    ModuleId::Edged,
                    BusMessage::Link(Link::Connected {
                        local_ip: [127, 0, 0, 1].into()
                    })
                )
                .await
            );
            bus.broadcast(
                ModuleId::Edged,
                BusMessage::Link(Link::Connected {
                    local_ip: [127, 0, 0, 1].into(),
                }),
            );
            assert_eq!(boxes.len(), 1);
            assert_eq!(
                boxes[0].recv().await,
                Some(BusMessage::Link(Link::Connected {
                    local_ip: [127, 0, 0, 1].into()
                }))
            );
        });
    }

    #[test]
    fn watch_keeps_the_latest_value_and_never_blocks_the_writer() {
        smol::block_on(async {
            let w = Watch::new(0u32);
            let mut seen = w.version();
            for i in 1..=100 {
                w.set(i); // never waits, whatever the reader does
            }
            assert_eq!(w.changed(&mut seen).await, 100, "only the latest counts");
            assert_eq!(seen, w.version());
            assert_eq!(
                smol::future::poll_once(w.changed(&mut seen)).await,
                None,
                "no newer value: the reader waits"
            );
            w.set(7);
            assert_eq!(w.changed(&mut seen).await, 7);
        });
    }

    #[test]
    fn shutdown_reaches_every_clone() {
        smol::block_on(async {
            let (mut trigger, s) = Shutdown::new();
            let s2 = s.clone();
            assert!(!s2.is_triggered());
            trigger.trigger();
            s.wait().await;
            s2.wait().await;
            assert!(s2.is_triggered());
        });
    }
}
