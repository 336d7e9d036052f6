//! The contract between edgecore's modules (DESIGN.md §2).
//!
//! Modules never call each other: they exchange [`BusMessage`]s, typed values that EdgeHub
//! alone converts to and from wire messages. Each module owns one mailbox; the table of
//! mailboxes is fixed at start-up ([`Bus::new`]) from the static module table in `edgecore`.
//!
//! # What is queued, what is a cell
//!
//! State is never queued: the tunnel's [`Link`] ([`Bus::set_link`]) and the pods Edged must
//! run ([`Bus::set_desired`]) are latest-value cells. A mailbox shows a changed cell once,
//! as one `Link`/`Desired` message with the newest value, before its queued mail; writing a
//! cell never waits and is never refused, so state can be neither lost nor stale.
//!
//! Everything else is queued, bounded in count and in bytes ([`BusMessage::weight`]):
//! - mail: [`MAILBOX_CAPACITY`] messages and [`MAILBOX_BYTES`];
//! - replies ([`BusMessage::Reply`]) apart, in room reserved per module
//!   ([`ModuleId::reply_room`]: twice its request limit [`ModuleId::in_flight`], so the
//!   `Lost` replies of a dropped link fit beside the new requests) and [`REPLY_BYTES`]:
//!   requests and pushes can never take a reply's place.
//!
//! [`Bus::send`] waits for room; [`Bus::deliver`] never waits and hands a message back
//! ([`Full`]) when there is none, for the caller to keep and retry after [`Bus::room`].
//! Nothing is dropped by the bus.
//!
//! # Waits (the deadlock rule)
//!
//! A module may wait only on a module that never waits on it, directly or through others,
//! and a module that holds a refused message keeps reading its own mailbox. So:
//! - **EdgeHub waits on nobody.** It delivers replies and pushes with `deliver`; a refused
//!   one is kept (one at a time) and the tunnel is not read until it is delivered (back-
//!   pressure to the cloud, which resends what it has not seen acknowledged), while EdgeHub
//!   keeps reading its own mailbox, so modules waiting on it always move on.
//! - **Edged, MetaManager and DeviceTwin may wait on EdgeHub** (`send` of `ToCloud`,
//!   `Persisted`), and on nothing else. MetaManager tells Edged through the desired cell.
//! - **EventBus may wait on DeviceTwin and EdgeHub** (`send` of `Mqtt`, `Upload`), but must
//!   keep reading its own mailbox while it does.
//! - **DeviceTwin never waits on EventBus**: its MQTT results go out with `deliver`; what is
//!   refused stays in its bounded outbox (`devicetwin::OUTBOX_BYTES`) and goes out when
//!   [`Bus::room`] fires.
//! - Inside a module, a loop that reads the mailbox never waits on a loop that needs the
//!   mailbox read (Edged's node loop hands pod replies on without waiting).
//!
//! Repeated warnings go through a [`Throttle`] (one line per minute with a count), and no
//! log line prints a message body: objects, payloads and tokens stay out of the log.

#![forbid(unsafe_code)]

use std::fmt;

pub use proto::objresp::Reply;

mod mailbox;
mod throttle;

pub use mailbox::{
    Bus, Full, Mailbox, Shutdown, ShutdownTrigger, Wake, Watch, MAILBOX_BYTES, MAILBOX_CAPACITY,
    REPLY_BYTES,
};
pub use throttle::{Suppressed, Throttle, LOG_EVERY};

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

    /// Requests to the cloud this module has unanswered at most: its part of the contract,
    /// which sizes its reply room. Modules take their limits from here.
    pub const fn in_flight(self) -> usize {
        match self {
            ModuleId::EdgeHub | ModuleId::EventBus => 0,
            // NodeAgent (registration, status, lease: a handful) and the pod reporter (16).
            ModuleId::Edged => 24,
            ModuleId::MetaManager => 8,
            // Twin reports: a window wide enough for thousands of updates a second when
            // the cloud answers in a millisecond.
            ModuleId::DeviceTwin => 64,
        }
    }

    /// Replies this module's mailbox has room for: twice [`ModuleId::in_flight`], since a
    /// module forgets its requests when the link drops and may send new ones before the old
    /// ones' `Lost` replies are read.
    pub const fn reply_room(self) -> usize {
        2 * self.in_flight()
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
/// tokens, and what the cloud said is missing. Set whole in the bus's desired cell at start
/// and after every change, so Edged never reads the store itself. Objects are shared
/// (`Rc`) with MetaManager's parsed view and between versions: a new `DesiredPods` copies
/// no object, so ten 3.5 MiB configmaps are in memory once, not once per version.
#[derive(Debug, Default, PartialEq)]
pub struct DesiredPods {
    pub pods: Vec<std::rc::Rc<serde_json::Value>>,
    pub configmaps: std::collections::BTreeMap<(String, String), std::rc::Rc<serde_json::Value>>,
    pub secrets: std::collections::BTreeMap<(String, String), std::rc::Rc<serde_json::Value>>,
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
    /// The tunnel went up or down: a cell ([`Bus::set_link`]), never queued.
    Link(Link),
    /// From EdgeHub: request `id` of the receiving module ended.
    Reply { id: RequestId, outcome: Outcome },
    /// From EdgeHub to MetaManager: the cloud pushed an object.
    FromCloud(Box<CloudObject>),
    /// To EdgeHub: the object behind this handle is durably stored; acknowledge it.
    Persisted(Box<AckHandle>),
    /// The current desired state for Edged: a cell ([`Bus::set_desired`]), never queued.
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

/// Bytes a JSON value holds in memory, estimated (strings and keys by length, each node by
/// the size of `serde_json`'s value and map entries): what the byte bounds count.
pub fn json_weight(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    const NODE: usize = std::mem::size_of::<Value>();
    NODE + match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(json_weight).sum(),
        // A map entry: the key string and its bookkeeping beside the value.
        Value::Object(m) => m.iter().map(|(k, v)| k.len() + 40 + json_weight(v)).sum(),
        _ => 0,
    }
}

impl CloudRequest {
    fn weight(&self) -> usize {
        match self {
            CloudRequest::RegisterNode { node: v }
            | CloudRequest::CreateLease { lease: v }
            | CloudRequest::UpdateLease { lease: v } => json_weight(v),
            CloudRequest::QueryLease => 0,
            CloudRequest::PatchNodeStatus { patch } => patch.len(),
            CloudRequest::PatchPodStatus {
                namespace,
                name,
                patch: s,
            }
            | CloudRequest::DeviceState {
                namespace,
                name,
                content: s,
            }
            | CloudRequest::DeletePod {
                namespace,
                name,
                uid: s,
            } => namespace.len() + name.len() + s.len(),
            CloudRequest::TwinReported {
                namespace,
                name,
                content,
            } => namespace.len() + name.len() + json_weight(content),
            CloudRequest::QueryObject {
                namespace, name, ..
            } => namespace.len() + name.len(),
            CloudRequest::QueryToken {
                namespace,
                service_account,
                request,
            } => namespace.len() + service_account.len() + json_weight(request),
        }
    }
}

impl Outcome {
    /// How the request ended, for logs: the failure's code, reason and (shortened) message,
    /// never a returned object.
    pub fn summary(&self) -> String {
        match self {
            Outcome::Answered { reply, .. } => reply_summary(reply),
            Outcome::NotConnected => "not connected".into(),
            Outcome::Lost => "no answer".into(),
        }
    }
}

/// A reply for logs: never the object it carries, and at most 200 bytes of text.
pub fn reply_summary(r: &Reply) -> String {
    let short = |t: &str| {
        let mut end = t.len().min(200);
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        if end < t.len() {
            format!("{}…", &t[..end])
        } else {
            t.to_owned()
        }
    };
    match r {
        Reply::Object(v) if v.is_null() => "answered with nothing".into(),
        Reply::Object(_) => "answered with an object".into(),
        Reply::Failed {
            code,
            reason,
            message,
        } => format!("failed: {code} {reason}: {}", short(message)),
        Reply::Ok => "OK".into(),
        Reply::Text(t) => format!("answered {:?}", short(t)),
    }
}

impl BusMessage {
    /// What this message costs a mailbox, in bytes: its own size plus what it holds on the
    /// heap (payloads, object JSON). Cells (`Link`, `Desired`) are never queued.
    pub fn weight(&self) -> usize {
        let heap = match self {
            BusMessage::ToCloud { request, .. } => request.weight(),
            BusMessage::Link(_) | BusMessage::Desired(_) => 0,
            BusMessage::Reply { outcome, .. } => match outcome {
                Outcome::Answered { reply, ack, .. } => {
                    let r = match reply {
                        Reply::Object(v) => json_weight(v),
                        Reply::Failed {
                            reason, message, ..
                        } => reason.len() + message.len(),
                        Reply::Ok => 0,
                        Reply::Text(t) => t.len(),
                    };
                    r + ack.as_ref().map_or(0, |a| a.msg_id.len() + 64)
                }
                Outcome::NotConnected | Outcome::Lost => 0,
            },
            BusMessage::FromCloud(o) => {
                std::mem::size_of::<CloudObject>()
                    + o.namespace.len()
                    + o.name.len()
                    + o.resource_version.len()
                    + o.ack.msg_id.len()
                    + json_weight(&o.object)
            }
            BusMessage::Persisted(a) => std::mem::size_of::<AckHandle>() + a.msg_id.len() + 64,
            BusMessage::Mqtt { topic, payload }
            | BusMessage::MqttPublish { topic, payload }
            | BusMessage::Upload { topic, payload } => topic.len() + payload.len(),
            BusMessage::Membership(v) => json_weight(v),
        };
        std::mem::size_of::<BusMessage>() + heap
    }

    /// What the message is, for logs: its kind and the object it names, never its body.
    pub fn summary(&self) -> String {
        match self {
            BusMessage::ToCloud { from, id, .. } => format!("request {} of {from}", id.0),
            BusMessage::Link(l) => format!("link {l:?}"),
            BusMessage::Reply { id, .. } => format!("reply to request {}", id.0),
            BusMessage::FromCloud(o) => {
                format!("{} {}/{}", o.kind.as_str(), o.namespace, o.name)
            }
            BusMessage::Persisted(a) => format!("acknowledgement of {}", a.msg_id),
            BusMessage::Desired(d) => format!("desired state ({} pods)", d.pods.len()),
            BusMessage::Mqtt { topic, .. } => format!("MQTT message on {topic}"),
            BusMessage::MqttPublish { topic, .. } => format!("MQTT publish to {topic}"),
            BusMessage::Membership(_) => "membership update".into(),
            BusMessage::Upload { topic, .. } => format!("upload from {topic}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn up() -> Link {
        Link::Connected {
            local_ip: [127, 0, 0, 1].into(),
        }
    }

    fn mqtt(n: usize) -> BusMessage {
        BusMessage::Mqtt {
            topic: format!("t/{n}"),
            payload: vec![0; 10],
        }
    }

    fn reply(n: u32) -> BusMessage {
        BusMessage::Reply {
            id: RequestId(n),
            outcome: Outcome::Lost,
        }
    }

    fn object(bytes: usize) -> BusMessage {
        BusMessage::FromCloud(Box::new(CloudObject {
            op: ObjectOp::Upsert,
            kind: ObjectKind::ConfigMap,
            namespace: "default".into(),
            name: "big".into(),
            resource_version: "1".into(),
            object: serde_json::json!({"data": {"k": "x".repeat(bytes)}}),
            ack: AckHandle {
                msg_id: "m".into(),
                route: proto::Route::default(),
            },
        }))
    }

    fn mailbox(boxes: &[Mailbox], id: ModuleId) -> &Mailbox {
        boxes.iter().find(|b| b.id == id).unwrap()
    }

    #[test]
    fn next_wakes_for_mail_tick_and_stop() {
        smol::block_on(async {
            let (bus, mut boxes) = Bus::new(&[ModuleId::Edged]);
            let mailbox = boxes.remove(0);
            let (mut trigger, shutdown) = Shutdown::new();
            let mut ticker = smol::Timer::interval(std::time::Duration::from_millis(10));
            bus.deliver(ModuleId::Edged, mqtt(1)).unwrap();
            assert!(matches!(
                mailbox.next(&mut ticker, &shutdown).await,
                Wake::Mail(BusMessage::Mqtt { .. })
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
    fn deliver_hands_a_message_back_when_full_and_room_says_when_to_retry() {
        smol::block_on(async {
            let (bus, boxes) = Bus::new(&[ModuleId::EdgeHub, ModuleId::DeviceTwin]);
            for n in 0..MAILBOX_CAPACITY {
                bus.deliver(ModuleId::DeviceTwin, mqtt(n)).unwrap();
            }
            let Err(Full(back)) = bus.deliver(ModuleId::DeviceTwin, mqtt(999)) else {
                panic!("a full mailbox must refuse");
            };
            assert_eq!(back, mqtt(999), "the very message comes back, nothing lost");
            let twin = mailbox(&boxes, ModuleId::DeviceTwin);
            let room = bus.room(ModuleId::DeviceTwin);
            let mut room = std::pin::pin!(room);
            assert!(smol::future::poll_once(room.as_mut()).await.is_none());
            assert_eq!(twin.recv().await, Some(mqtt(0)));
            room.await;
            bus.deliver(ModuleId::DeviceTwin, back).unwrap();
            for n in 1..MAILBOX_CAPACITY {
                assert_eq!(twin.try_recv(), Some(mqtt(n)));
            }
            assert_eq!(twin.try_recv(), Some(mqtt(999)));
        });
    }

    #[test]
    fn replies_have_room_of_their_own_that_mail_cannot_take() {
        smol::block_on(async {
            let (bus, boxes) = Bus::new(&[ModuleId::EdgeHub, ModuleId::DeviceTwin]);
            for n in 0..MAILBOX_CAPACITY {
                bus.deliver(ModuleId::DeviceTwin, mqtt(n)).unwrap();
            }
            assert!(bus.deliver(ModuleId::DeviceTwin, mqtt(64)).is_err());
            let room = ModuleId::DeviceTwin.reply_room();
            assert!(room >= ModuleId::DeviceTwin.in_flight());
            for n in 0..room as u32 {
                bus.deliver(ModuleId::DeviceTwin, reply(n))
                    .expect("a reply within the module's limit is never refused");
            }
            // Beyond its limit the reply is handed back, not dropped.
            assert_eq!(
                bus.deliver(ModuleId::DeviceTwin, reply(1000)),
                Err(Full(reply(1000)))
            );
            let twin = mailbox(&boxes, ModuleId::DeviceTwin);
            let mut replies = 0;
            while let Some(m) = twin.try_recv() {
                replies += matches!(m, BusMessage::Reply { .. }) as usize;
            }
            assert_eq!(replies, room);
        });
    }

    #[test]
    fn mailboxes_are_bounded_in_bytes_and_a_large_message_goes_alone() {
        smol::block_on(async {
            let (bus, boxes) = Bus::new(&[ModuleId::EdgeHub, ModuleId::MetaManager]);
            let big = object(3_500_000);
            assert!(big.weight() > 3_500_000 && big.weight() < 3_600_000);
            bus.deliver(ModuleId::MetaManager, big.clone())
                .expect("an empty mailbox takes even a large message");
            assert!(
                bus.deliver(ModuleId::MetaManager, object(3_500_000))
                    .is_err(),
                "a second one waits: the box is over its bytes"
            );
            assert!(bus.deliver(ModuleId::MetaManager, object(10)).is_err());
            assert_eq!(bus.queued(ModuleId::MetaManager).0, 1);
            let meta = mailbox(&boxes, ModuleId::MetaManager);
            assert!(
                meta.try_recv_within(1000).is_none(),
                "a batch with 1000 bytes left does not take it"
            );
            assert_eq!(meta.try_recv(), Some(big));
            // Small messages fill the box up to its byte bound, not only its count.
            let each = object(100_000);
            let mut n = 0;
            while bus.deliver(ModuleId::MetaManager, each.clone()).is_ok() {
                n += 1;
            }
            assert_eq!(n, MAILBOX_BYTES / each.weight());
            assert!(bus.queued(ModuleId::MetaManager).1 <= MAILBOX_BYTES);
        });
    }

    #[test]
    fn the_link_is_a_cell_every_mailbox_sees_once_even_when_full() {
        smol::block_on(async {
            let (bus, boxes) =
                Bus::new(&[ModuleId::EdgeHub, ModuleId::Edged, ModuleId::DeviceTwin]);
            for n in 0..MAILBOX_CAPACITY {
                bus.deliver(ModuleId::DeviceTwin, mqtt(n)).unwrap();
            }
            for _ in 0..100 {
                bus.set_link(up());
                bus.set_link(Link::Disconnected);
            }
            bus.set_link(up());
            assert_eq!(bus.link(), up());
            for id in [ModuleId::Edged, ModuleId::DeviceTwin] {
                let b = mailbox(&boxes, id);
                assert_eq!(
                    b.recv().await,
                    Some(BusMessage::Link(up())),
                    "{id}: latest first"
                );
                assert!(
                    !matches!(b.try_recv(), Some(BusMessage::Link(_))),
                    "{id}: shown once"
                );
            }
            // A waiting reader is woken by a change.
            let edged = mailbox(&boxes, ModuleId::Edged);
            let mut wait = std::pin::pin!(edged.recv());
            assert!(smol::future::poll_once(wait.as_mut()).await.is_none());
            bus.set_link(Link::Disconnected);
            assert_eq!(wait.await, Some(BusMessage::Link(Link::Disconnected)));
        });
    }

    #[test]
    fn desired_pods_are_a_cell_for_edged() {
        smol::block_on(async {
            let (bus, boxes) = Bus::new(&[ModuleId::Edged, ModuleId::MetaManager]);
            for n in 0..3 {
                bus.set_desired(Rc::new(DesiredPods {
                    pods: vec![Rc::new(serde_json::json!({ "n": n }))],
                    ..Default::default()
                }));
            }
            let edged = mailbox(&boxes, ModuleId::Edged);
            match edged.try_recv() {
                Some(BusMessage::Desired(d)) => assert_eq!(d.pods[0]["n"], 2),
                other => panic!("{other:?}"),
            }
            assert_eq!(edged.try_recv(), None, "once");
            assert_eq!(mailbox(&boxes, ModuleId::MetaManager).try_recv(), None);
        });
    }

    #[test]
    fn send_waits_for_room() {
        smol::block_on(async {
            let (bus, boxes) = Bus::new(&[ModuleId::EdgeHub, ModuleId::Edged]);
            for n in 0..MAILBOX_CAPACITY {
                assert!(bus.send(ModuleId::Edged, mqtt(n)).await);
            }
            let edged = mailbox(&boxes, ModuleId::Edged);
            let mut send = std::pin::pin!(bus.send(ModuleId::Edged, mqtt(64)));
            assert!(smol::future::poll_once(send.as_mut()).await.is_none());
            assert_eq!(edged.recv().await, Some(mqtt(0)));
            assert!(send.await);
        });
    }

    #[test]
    fn disabled_modules_receive_nothing() {
        smol::block_on(async {
            let (bus, boxes) = Bus::new(&[ModuleId::EdgeHub]);
            assert!(!bus.is_enabled(ModuleId::Edged));
            assert!(!bus.send(ModuleId::Edged, mqtt(1)).await);
            assert_eq!(bus.deliver(ModuleId::Edged, mqtt(1)), Ok(()));
            assert_eq!(boxes.len(), 1);
            assert_eq!(boxes[0].try_recv(), None);
        });
    }

    #[test]
    fn summaries_name_the_object_never_its_body() {
        let m = object(1000);
        let s = m.summary();
        assert_eq!(s, "configmap default/big");
        assert!(!s.contains("xxxx"));
        let BusMessage::FromCloud(o) = m else {
            unreachable!()
        };
        let answered = Outcome::Answered {
            reply: Reply::Object(o.object),
            resource_version: String::new(),
            ack: None,
        };
        assert_eq!(answered.summary(), "answered with an object");
        let long = Reply::Text("e".repeat(10_000));
        assert!(reply_summary(&long).len() < 220);
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
