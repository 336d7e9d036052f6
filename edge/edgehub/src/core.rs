//! EdgeHub's sans-IO core: typed requests to wire messages, wire messages to typed bus
//! deliveries, the bounded table of requests awaiting an answer, and link liveness.
//!
//! The runner in `lib.rs` owns the socket and the clock and feeds this core; everything here
//! is tested on virtual time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bus::{
    AckHandle, CloudObject, CloudRequest, ModuleId, ObjectKind, ObjectOp, Outcome, Reply, RequestId,
};
use proto::{Group, Message, ModuleName, Operation, ResourceKind, ResourcePath};

/// Requests awaiting an answer at most. When full, the oldest is given up as [`Outcome::Lost`]:
/// every request edgecore makes is periodic or retried, so losing the oldest is recoverable,
/// while an unbounded table is not.
pub const PENDING_CAPACITY: usize = 128;
// Every module within its request limit fits the table together: nothing is evicted.
const _: () = assert!(
    ModuleId::Edged.in_flight()
        + ModuleId::MetaManager.in_flight()
        + ModuleId::DeviceTwin.in_flight()
        <= PENDING_CAPACITY
);

/// How long an answer may take (upstream metamanager's remote query timeout, §3.4).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

struct Pending {
    msg_id: String,
    from: ModuleId,
    id: RequestId,
    deadline: Instant,
    /// An object query: the answer is acknowledged by the module once it is stored.
    ack_when_stored: bool,
}

enum ReqKind {
    Edged,
    Twin,
}

/// What to do with a frame from the cloud.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    /// Deliver the answer to the module that asked, and send `ack` (upstream's edge
    /// acknowledges every answer; object answers are acknowledged by the module once stored).
    Reply {
        to: ModuleId,
        id: RequestId,
        outcome: Outcome,
        ack: Option<Message>,
    },
    /// Send this acknowledgement back to the cloud and do nothing else.
    Ack(Message),
    /// Hand this object to MetaManager (DeviceTwin for devices), which acknowledges once it
    /// is persisted.
    Store(Box<CloudObject>),
    /// A device membership change for DeviceTwin (§5.3; needs no ACK).
    Membership(serde_json::Value),
    /// Nothing to do; the reason is logged at debug.
    Ignore(&'static str),
}

/// The protocol state of one edge node's tunnel.
pub struct HubCore {
    node: String,
    pending: VecDeque<Pending>,
}

impl HubCore {
    pub fn new(node: &str) -> Self {
        HubCore {
            node: node.to_owned(),
            pending: VecDeque::with_capacity(PENDING_CAPACITY),
        }
    }

    /// The upstream keepalive (§1.3 a).
    pub fn keepalive(now_ms: i64) -> Message {
        Message::new(
            ModuleName::WebSocket,
            Group::Resource,
            Operation::Keepalive,
            ResourcePath::KeepaliveNode.to_string(),
            serde_json::Value::String("ping".into()),
            now_ms,
        )
    }

    /// Turns a module's request into its wire message and remembers it until answered.
    /// Returns the message and, if the table was full, the request given up to make room.
    pub fn request(
        &mut self,
        from: ModuleId,
        id: RequestId,
        req: CloudRequest,
        now_ms: i64,
        now: Instant,
    ) -> (Message, Option<(ModuleId, RequestId)>) {
        let node = &self.node;
        let node_path = |kind| ResourcePath::object(proto::NULL_NAMESPACE, kind, node).to_string();
        let lease_path =
            ResourcePath::object(proto::LEASE_NAMESPACE, ResourceKind::Lease, node).to_string();
        // Node, lease and pod traffic is edged's, through metamanager: source `edged`, group
        // `meta` (§1.3 b, c; golden frames). Twin reports are the twin module's (§5.3).
        let req_kind = match &req {
            CloudRequest::TwinReported { .. } | CloudRequest::DeviceState { .. } => ReqKind::Twin,
            _ => ReqKind::Edged,
        };
        let ack_when_stored = matches!(req, CloudRequest::QueryObject { .. });
        let (op, resource, content) = match req {
            CloudRequest::RegisterNode { node } => {
                (Operation::Insert, node_path(ResourceKind::Node), node)
            }
            CloudRequest::PatchNodeStatus { patch } => (
                Operation::Patch,
                node_path(ResourceKind::NodePatch),
                serde_json::Value::String(patch),
            ),
            CloudRequest::QueryLease => (Operation::Query, lease_path, serde_json::Value::Null),
            CloudRequest::CreateLease { lease } => (Operation::Insert, lease_path, lease),
            CloudRequest::UpdateLease { lease } => (Operation::Update, lease_path, lease),
            CloudRequest::TwinReported {
                namespace,
                name,
                content,
            } => (
                Operation::Update,
                ResourcePath::Device {
                    namespace,
                    name,
                    suffix: "twin/edge_updated".into(),
                }
                .to_string(),
                content,
            ),
            CloudRequest::DeviceState {
                namespace,
                name,
                content,
            } => (
                Operation::Update,
                ResourcePath::Device {
                    namespace,
                    name,
                    suffix: "state/update".into(),
                }
                .to_string(),
                serde_json::Value::String(content),
            ),
            CloudRequest::PatchPodStatus {
                namespace,
                name,
                patch,
            } => (
                Operation::Patch,
                ResourcePath::object(&namespace, ResourceKind::PodPatch, &name).to_string(),
                serde_json::Value::String(patch),
            ),
            CloudRequest::QueryObject {
                kind,
                namespace,
                name,
            } => {
                let kind = match kind {
                    ObjectKind::Secret => ResourceKind::Secret,
                    _ => ResourceKind::ConfigMap,
                };
                (
                    Operation::Query,
                    ResourcePath::object(&namespace, kind, &name).to_string(),
                    serde_json::Value::Null,
                )
            }
            CloudRequest::QueryToken {
                namespace,
                service_account,
                request,
            } => (
                Operation::Query,
                ResourcePath::object(
                    &namespace,
                    ResourceKind::ServiceAccountToken,
                    &service_account,
                )
                .to_string(),
                request,
            ),
            // kubelet's `Pods().Delete(name, {GracePeriodSeconds: 0, Preconditions: {UID}})`.
            CloudRequest::DeletePod {
                namespace,
                name,
                uid,
            } => (
                Operation::Delete,
                ResourcePath::object(&namespace, ResourceKind::Pod, &name).to_string(),
                serde_json::json!({ "gracePeriodSeconds": 0, "preconditions": { "uid": uid } }),
            ),
        };
        let (source, group) = match req_kind {
            ReqKind::Twin => (ModuleName::Twin, Group::Resource),
            ReqKind::Edged => (ModuleName::Edged, Group::Meta),
        };
        let msg = Message::new(source, group, op, resource, content, now_ms);
        let evicted = if self.pending.len() >= PENDING_CAPACITY {
            self.pending.pop_front().map(|p| (p.from, p.id))
        } else {
            None
        };
        self.pending.push_back(Pending {
            msg_id: msg.header.msg_id.clone(),
            from,
            id,
            deadline: now + REPLY_TIMEOUT,
            ack_when_stored,
        });
        (msg, evicted)
    }

    /// Classifies a message from the cloud (§2.6).
    pub fn inbound(&mut self, msg: Message, now_ms: i64) -> Inbound {
        if let Some(parent) = msg.parent_id() {
            if let Some(pos) = self.pending.iter().position(|p| p.msg_id == parent) {
                let p = self.pending.remove(pos).expect("position is in range");
                let reply = Reply::from_content(&msg.content);
                let stored_later = p.ack_when_stored && matches!(reply, Reply::Object(_));
                let (ack, handle) = if stored_later {
                    let handle = Box::new(AckHandle {
                        msg_id: msg.header.msg_id.clone(),
                        route: msg.route.clone(),
                    });
                    (None, Some(handle))
                } else {
                    (Some(msg.ack(now_ms)), None)
                };
                return Inbound::Reply {
                    to: p.from,
                    id: p.id,
                    outcome: Outcome::Answered {
                        reply,
                        resource_version: msg.header.resourceversion,
                        ack: handle,
                    },
                    ack,
                };
            }
            return Inbound::Ignore("answer to a request no longer waiting");
        }
        match (&msg.route.group, &msg.route.operation) {
            (
                Group::Resource | Group::Func,
                Operation::Insert | Operation::Update | Operation::Delete,
            ) => {
                match ResourcePath::parse(&msg.route.resource) {
                    // v1.23+ cloudcore pushes every Node change back to the node and needs an ACK
                    // or its ACK queue stalls (§3.6, §4.1 step 6). edgecore keeps its own node
                    // object, so the push is only acknowledged.
                    Ok(ResourcePath::Object {
                        kind: ResourceKind::Node,
                        name: Some(name),
                        ..
                    }) if name == self.node => Inbound::Ack(msg.ack(now_ms)),
                    Ok(ResourcePath::Object {
                        namespace,
                        kind,
                        name: Some(name),
                    }) => match ObjectKind::from_resource(&kind) {
                        Some(kind) => {
                            Inbound::Store(Box::new(cloud_object(msg, kind, namespace, name)))
                        }
                        None => Inbound::Ignore("no module for this resource type"),
                    },
                    Ok(_) => Inbound::Ignore("no module for this resource"),
                    Err(_) => Inbound::Ignore("malformed resource path"),
                }
            }
            (Group::Twin, Operation::Update) if msg.route.resource == "membership" => {
                Inbound::Membership(msg.content)
            }
            _ => Inbound::Ignore("no module for this group"),
        }
    }

    /// An MQTT message on an upload topic, as upstream's eventbus sends it up (§5.1).
    pub fn upload(topic: &str, payload: &[u8], now_ms: i64) -> Message {
        Message::new(
            ModuleName::Bus,
            Group::User,
            Operation::Upload,
            topic,
            serde_json::Value::String(String::from_utf8_lossy(payload).into_owned()),
            now_ms,
        )
    }

    /// The acknowledgement for a message MetaManager has persisted.
    pub fn ack_persisted(handle: AckHandle, now_ms: i64) -> Message {
        let req = Message {
            header: proto::Header {
                msg_id: handle.msg_id,
                ..proto::Header::default()
            },
            route: handle.route,
            content: serde_json::Value::Null,
        };
        req.ack(now_ms)
    }

    /// Requests whose answer is overdue, removed from the table.
    pub fn expire(&mut self, now: Instant) -> Vec<(ModuleId, RequestId)> {
        let mut out = Vec::new();
        self.pending.retain(|p| {
            let live = p.deadline > now;
            if !live {
                out.push((p.from, p.id));
            }
            live
        });
        out
    }

    /// Every request still waiting: the tunnel dropped, so none will be answered.
    pub fn drain(&mut self) -> Vec<(ModuleId, RequestId)> {
        self.pending.drain(..).map(|p| (p.from, p.id)).collect()
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

fn cloud_object(msg: Message, kind: ObjectKind, namespace: String, name: String) -> CloudObject {
    let op = if msg.route.operation == Operation::Delete {
        ObjectOp::Delete
    } else {
        ObjectOp::Upsert
    };
    let resource_version = if msg.header.resourceversion.is_empty() {
        msg.content["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    } else {
        msg.header.resourceversion
    };
    CloudObject {
        op,
        kind,
        namespace,
        name,
        resource_version,
        object: msg.content,
        ack: AckHandle {
            msg_id: msg.header.msg_id,
            route: msg.route,
        },
    }
}

/// Decides when a link is dead: nothing at all (message, pong) received for `2 × heartbeat`.
/// Upstream never applies a read deadline and can sit on a half-open socket for minutes.
#[derive(Debug)]
pub struct Liveness {
    last_rx: Instant,
    limit: Duration,
}

impl Liveness {
    pub fn new(heartbeat: Duration, now: Instant) -> Self {
        Liveness {
            last_rx: now,
            limit: heartbeat * 2,
        }
    }

    pub fn received(&mut self, now: Instant) {
        self.last_rx = now;
    }

    /// `Some(silence)` once the link has been silent past the limit.
    pub fn dead(&self, now: Instant) -> Option<Duration> {
        let silent = now.saturating_duration_since(self.last_rx);
        (silent > self.limit).then_some(silent)
    }
}

/// Frames the tunnel loop reads in a row before it lets every other task run: one busy
/// cloud (or a resend storm) never holds edgecore's only thread.
pub const FRAME_BUDGET: u32 = 32;
/// Bytes the tunnel loop reads in a row before it yields, whatever the frame count.
pub const FRAME_BUDGET_BYTES: usize = 1 << 20;

/// What the tunnel loop may still read before yielding. Spent by frames, refilled when the
/// loop yields or handles anything else.
#[derive(Debug)]
pub struct ReadBudget {
    frames: u32,
    bytes: usize,
}

impl Default for ReadBudget {
    fn default() -> Self {
        ReadBudget {
            frames: FRAME_BUDGET,
            bytes: FRAME_BUDGET_BYTES,
        }
    }
}

impl ReadBudget {
    /// Counts one frame of `len` bytes; true when the budget is spent: yield now (and the
    /// budget is full again).
    pub fn spend(&mut self, len: usize) -> bool {
        self.frames = self.frames.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(len);
        let spent = self.frames == 0 || self.bytes == 0;
        if spent {
            self.refill();
        }
        spent
    }

    pub fn refill(&mut self) {
        *self = ReadBudget::default();
    }
}

/// Deliveries a module's mailbox refused, kept in order until it has room: EdgeHub never
/// waits on a module and never drops what it owes one. While anything is held the tunnel is
/// not read, so at most one frame's delivery plus the replies EdgeHub makes itself (`Lost`,
/// `NotConnected`: one per request taken, so bounded by [`PENDING_CAPACITY`] and the
/// modules' in-flight limits) can be held.
#[derive(Default)]
pub struct Held {
    queue: VecDeque<(ModuleId, bus::BusMessage)>,
}

impl Held {
    /// Delivers `msg` to `to` with `deliver`, or keeps it if `to` already has held messages
    /// (order per module is kept) or refuses it.
    pub fn hand(
        &mut self,
        to: ModuleId,
        msg: bus::BusMessage,
        mut deliver: impl FnMut(ModuleId, bus::BusMessage) -> Result<(), bus::BusMessage>,
    ) {
        if self.queue.iter().any(|(t, _)| *t == to) {
            self.queue.push_back((to, msg));
        } else if let Err(m) = deliver(to, msg) {
            self.queue.push_back((to, m));
        }
    }

    /// Retries everything held, in order; a module that refuses one gets nothing after it.
    pub fn flush(
        &mut self,
        mut deliver: impl FnMut(ModuleId, bus::BusMessage) -> Result<(), bus::BusMessage>,
    ) {
        let mut refused: Vec<ModuleId> = Vec::new();
        for (to, msg) in std::mem::take(&mut self.queue) {
            if refused.contains(&to) {
                self.queue.push_back((to, msg));
                continue;
            }
            if let Err(m) = deliver(to, msg) {
                refused.push(to);
                self.queue.push_back((to, m));
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// The module the oldest held message waits for.
    pub fn first_target(&self) -> Option<ModuleId> {
        self.queue.front().map(|(t, _)| *t)
    }
}

/// Reconnect delays: exponential from `base` to `max`, each drawn uniformly from its upper
/// half ("equal jitter"), so a fleet that lost its cloud together does not return in lockstep.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = exp / 2;
        half + half.mul_f64(self.rng.f64())
    }

    /// A connection worked: start again from `base`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(parent: &str, content: serde_json::Value) -> Message {
        let mut m = Message::new(
            ModuleName::EdgeController,
            Group::Resource,
            Operation::Response,
            "null/node/edge0",
            content,
            0,
        );
        m.header.parent_msg_id = parent.into();
        m.header.resourceversion = "101".into();
        m
    }

    #[test]
    fn requests_use_upstream_routes() {
        let mut core = HubCore::new("edge0");
        let now = Instant::now();
        let (m, _) = core.request(
            ModuleId::Edged,
            RequestId(1),
            CloudRequest::RegisterNode { node: json!({}) },
            5,
            now,
        );
        assert_eq!(
            (
                m.route.source.as_str(),
                m.route.group.as_str(),
                m.route.operation.as_str(),
                m.route.resource.as_str()
            ),
            ("edged", "meta", "insert", "null/node/edge0")
        );
        let (m, _) = core.request(
            ModuleId::Edged,
            RequestId(2),
            CloudRequest::PatchNodeStatus { patch: "{}".into() },
            5,
            now,
        );
        assert_eq!(m.route.resource, "null/nodepatch/edge0");
        assert_eq!(m.content, json!("{}"));
        let (m, _) = core.request(
            ModuleId::Edged,
            RequestId(3),
            CloudRequest::QueryLease,
            5,
            now,
        );
        assert_eq!(
            (m.route.operation.as_str(), m.route.resource.as_str()),
            ("query", "kube-node-lease/lease/edge0")
        );
        assert!(m.content.is_null());
        assert_eq!(core.pending_len(), 3);
    }

    #[test]
    fn answers_reach_the_requester_once() {
        let mut core = HubCore::new("edge0");
        let (m, _) = core.request(
            ModuleId::Edged,
            RequestId(7),
            CloudRequest::QueryLease,
            0,
            Instant::now(),
        );
        let a = answer(
            &m.header.msg_id,
            proto::objresp::ok(json!({"kind":"Lease"})),
        );
        match core.inbound(a.clone(), 0) {
            Inbound::Reply {
                to,
                id,
                outcome:
                    Outcome::Answered {
                        reply,
                        resource_version,
                        ack: None,
                    },
                ack: Some(ack),
            } => {
                assert_eq!((to, id), (ModuleId::Edged, RequestId(7)));
                assert_eq!(reply, Reply::Object(json!({"kind":"Lease"})));
                assert_eq!(resource_version, "101");
                assert_eq!(
                    ack.header.parent_msg_id, a.header.msg_id,
                    "answers are acknowledged"
                );
                assert!(ack.is_ok_content());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            core.inbound(a, 0),
            Inbound::Ignore("answer to a request no longer waiting")
        );
    }

    #[test]
    fn queries_tokens_and_pod_deletes_use_upstream_shapes() {
        let mut core = HubCore::new("edge0");
        let now = Instant::now();
        let q = CloudRequest::QueryObject {
            kind: ObjectKind::ConfigMap,
            namespace: "default".into(),
            name: "cfg".into(),
        };
        let (m, _) = core.request(ModuleId::MetaManager, RequestId(1), q, 0, now);
        assert_eq!(
            (
                m.route.source.as_str(),
                m.route.group.as_str(),
                m.route.operation.as_str(),
                m.route.resource.as_str()
            ),
            ("edged", "meta", "query", "default/configmap/cfg")
        );
        assert!(m.content.is_null());
        // The answer is acknowledged by MetaManager once stored, not here.
        let mut a = answer(
            &m.header.msg_id,
            json!({"kind": "ConfigMap", "metadata": {"name": "cfg"}}),
        );
        a.route.resource = "default/configmap/cfg".into();
        match core.inbound(a.clone(), 0) {
            Inbound::Reply {
                to: ModuleId::MetaManager,
                outcome: Outcome::Answered { ack: Some(h), .. },
                ack: None,
                ..
            } => {
                let ack = HubCore::ack_persisted(*h, 1);
                assert_eq!(ack.header.parent_msg_id, a.header.msg_id);
                assert_eq!(ack.route.resource, "default/configmap/cfg");
            }
            other => panic!("{other:?}"),
        }
        // A NotFound answer to a query needs no stored ACK.
        let q = CloudRequest::QueryObject {
            kind: ObjectKind::Secret,
            namespace: "default".into(),
            name: "s".into(),
        };
        let (m, _) = core.request(ModuleId::MetaManager, RequestId(2), q, 0, now);
        assert_eq!(m.route.resource, "default/secret/s");
        let nf = answer(
            &m.header.msg_id,
            json!({"ErrStatus": proto::objresp::not_found("secrets", "", "s")}),
        );
        assert!(matches!(
            core.inbound(nf, 0),
            Inbound::Reply {
                outcome: Outcome::Answered { ack: None, .. },
                ..
            }
        ));
        let t = CloudRequest::QueryToken {
            namespace: "default".into(),
            service_account: "default".into(),
            request: json!({"spec": {"expirationSeconds": 3607}}),
        };
        let (m, _) = core.request(ModuleId::MetaManager, RequestId(3), t, 0, now);
        assert_eq!(
            (m.route.operation.as_str(), m.route.resource.as_str()),
            ("query", "default/serviceaccounttoken/default")
        );
        assert_eq!(m.content["spec"]["expirationSeconds"], 3607);
        let d = CloudRequest::DeletePod {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
        };
        let (m, _) = core.request(ModuleId::Edged, RequestId(4), d, 0, now);
        assert_eq!(
            (
                m.route.source.as_str(),
                m.route.group.as_str(),
                m.route.operation.as_str(),
                m.route.resource.as_str()
            ),
            ("edged", "meta", "delete", "default/pod/web")
        );
        assert_eq!(
            m.content,
            json!({"gracePeriodSeconds": 0, "preconditions": {"uid": "u1"}})
        );
    }

    /// A frame of `proto/tests/golden/upstream-shapes.jsonl`, written from upstream's source.
    fn golden(name: &str) -> Message {
        const SHAPES: &str = include_str!("../../../proto/tests/golden/upstream-shapes.jsonl");
        let line = SHAPES
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no golden shape {name}"));
        serde_json::from_value(line["frame"].clone()).unwrap()
    }

    fn same_shape(ours: &Message, want: &Message) {
        assert_eq!(ours.route, want.route);
        assert_eq!(ours.content, want.content);
    }

    #[test]
    fn new_requests_match_upstreams_golden_shapes() {
        let mut core = HubCore::new("edge0");
        let now = Instant::now();
        let want = golden("pod-delete-confirmation");
        let d = CloudRequest::DeletePod {
            namespace: "default".into(),
            name: "web".into(),
            uid: want.content["preconditions"]["uid"]
                .as_str()
                .unwrap()
                .into(),
        };
        same_shape(
            &core.request(ModuleId::Edged, RequestId(1), d, 0, now).0,
            &want,
        );
        for (kind, name, shape) in [
            (ObjectKind::ConfigMap, "app-config", "configmap-query"),
            (ObjectKind::Secret, "app-secret", "secret-query"),
        ] {
            let q = CloudRequest::QueryObject {
                kind,
                namespace: "default".into(),
                name: name.into(),
            };
            same_shape(
                &core
                    .request(ModuleId::MetaManager, RequestId(2), q, 0, now)
                    .0,
                &golden(shape),
            );
        }
        let want = golden("serviceaccount-token-query");
        let t = CloudRequest::QueryToken {
            namespace: "default".into(),
            service_account: "default".into(),
            request: want.content.clone(),
        };
        same_shape(
            &core
                .request(ModuleId::MetaManager, RequestId(3), t, 0, now)
                .0,
            &want,
        );
        // Upstream's NotFound answer to a query is a failure, not an object to store.
        let mut nf = golden("configmap-query-not-found");
        let (q, _) = core.request(
            ModuleId::MetaManager,
            RequestId(4),
            CloudRequest::QueryObject {
                kind: ObjectKind::ConfigMap,
                namespace: "default".into(),
                name: "app-config".into(),
            },
            0,
            now,
        );
        nf.header.parent_msg_id = q.header.msg_id;
        match core.inbound(nf, 0) {
            Inbound::Reply {
                outcome:
                    Outcome::Answered {
                        reply, ack: None, ..
                    },
                ..
            } => assert!(
                matches!(&reply, Reply::Failed { code: 404, message, .. } if message == "configmap \"app-config\" not found"),
                "{reply:?}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn node_pushes_are_acked_and_other_pushes_ignored() {
        let mut core = HubCore::new("edge0");
        let push = Message::new(
            ModuleName::EdgeController,
            Group::Resource,
            Operation::Update,
            "null/node/edge0",
            json!({}),
            0,
        );
        match core.inbound(push.clone(), 9) {
            Inbound::Ack(ack) => {
                assert_eq!(ack.header.parent_msg_id, push.header.msg_id);
                assert!(ack.is_ok_content());
            }
            other => panic!("{other:?}"),
        }
        let other = Message::new(
            ModuleName::EdgeController,
            Group::Resource,
            Operation::Update,
            "null/node/edge9",
            json!({}),
            0,
        );
        assert!(matches!(core.inbound(other, 0), Inbound::Ignore(_)));
        let bad = Message::new(
            ModuleName::EdgeController,
            Group::Resource,
            Operation::Insert,
            "a//b",
            json!({}),
            0,
        );
        assert_eq!(
            core.inbound(bad, 0),
            Inbound::Ignore("malformed resource path")
        );
    }

    #[test]
    fn object_pushes_go_to_metamanager_and_are_acked_from_the_handle() {
        let mut core = HubCore::new("edge0");
        let mut push = Message::new(
            ModuleName::EdgeController,
            Group::Resource,
            Operation::Update,
            "default/pod/nginx",
            json!({"metadata":{"name":"nginx","resourceVersion":"7"}}),
            0,
        );
        push.header.resourceversion = "8".into();
        let obj = match core.inbound(push.clone(), 0) {
            Inbound::Store(o) => o,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (obj.op, obj.kind, obj.namespace.as_str(), obj.name.as_str()),
            (ObjectOp::Upsert, ObjectKind::Pod, "default", "nginx")
        );
        assert_eq!(obj.resource_version, "8", "the header wins over the body");
        let ack = HubCore::ack_persisted(obj.ack.clone(), 3);
        assert_eq!(ack.header.parent_msg_id, push.header.msg_id);
        assert_eq!(
            (
                ack.route.source.as_str(),
                ack.route.group.as_str(),
                ack.route.resource.as_str()
            ),
            ("edgecontroller", "resource", "default/pod/nginx")
        );
        assert!(ack.is_ok_content());
        let mut del = Message::new(
            ModuleName::EdgeController,
            Group::Resource,
            Operation::Delete,
            "default/secret/s",
            json!({"metadata":{"name":"s"}}),
            0,
        );
        del.header.resourceversion.clear();
        match core.inbound(del, 0) {
            Inbound::Store(o) => assert_eq!((o.op, o.kind), (ObjectOp::Delete, ObjectKind::Secret)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn twin_reports_and_membership_use_upstream_routes() {
        let mut core = HubCore::new("edge0");
        let req = CloudRequest::TwinReported {
            namespace: "default".into(),
            name: "t".into(),
            content: json!({"twin": {}}),
        };
        let (m, _) = core.request(ModuleId::DeviceTwin, RequestId(1), req, 0, Instant::now());
        assert_eq!(
            (
                m.route.source.as_str(),
                m.route.group.as_str(),
                m.route.operation.as_str(),
                m.route.resource.as_str()
            ),
            (
                "twin",
                "resource",
                "update",
                "device/default/t/twin/edge_updated"
            )
        );
        let req = CloudRequest::DeviceState {
            namespace: "default".into(),
            name: "t".into(),
            content: "{}".into(),
        };
        let (m, _) = core.request(ModuleId::DeviceTwin, RequestId(2), req, 0, Instant::now());
        assert_eq!(m.route.resource, "device/default/t/state/update");
        assert!(m.content.is_string());
        let push = Message::new(
            ModuleName::DeviceController,
            Group::Twin,
            Operation::Update,
            "membership",
            json!({"added_devices": []}),
            0,
        );
        assert!(matches!(core.inbound(push, 0), Inbound::Membership(_)));
        let dev = Message::new(
            ModuleName::DeviceController,
            Group::Resource,
            Operation::Insert,
            "default/device/t",
            json!({}),
            0,
        );
        assert!(matches!(core.inbound(dev, 0), Inbound::Store(o) if o.kind == ObjectKind::Device));
    }

    #[test]
    fn uploads_use_upstream_route() {
        let m = HubCore::upload("$hw/events/upload/line1", b"{\"t\":1}", 0);
        assert_eq!(
            (
                m.route.source.as_str(),
                m.route.group.as_str(),
                m.route.operation.as_str(),
                m.route.resource.as_str()
            ),
            ("bus", "user", "upload", "$hw/events/upload/line1")
        );
        assert_eq!(m.content, json!("{\"t\":1}"));
    }

    #[test]
    fn pending_table_is_bounded_and_expires() {
        let mut core = HubCore::new("edge0");
        let t0 = Instant::now();
        let mut evicted = Vec::new();
        for i in 0..(PENDING_CAPACITY as u32 + 2) {
            let (_, e) = core.request(
                ModuleId::Edged,
                RequestId(i),
                CloudRequest::QueryLease,
                0,
                t0,
            );
            evicted.extend(e);
        }
        assert_eq!(core.pending_len(), PENDING_CAPACITY);
        assert_eq!(
            evicted,
            vec![
                (ModuleId::Edged, RequestId(0)),
                (ModuleId::Edged, RequestId(1))
            ]
        );
        assert!(core
            .expire(t0 + REPLY_TIMEOUT - Duration::from_millis(1))
            .is_empty());
        assert_eq!(core.expire(t0 + REPLY_TIMEOUT).len(), PENDING_CAPACITY);
        assert_eq!(core.pending_len(), 0);
    }

    #[test]
    fn liveness_trips_after_two_heartbeats_of_silence() {
        let t0 = Instant::now();
        let mut l = Liveness::new(Duration::from_secs(15), t0);
        assert_eq!(l.dead(t0 + Duration::from_secs(30)), None);
        assert!(l.dead(t0 + Duration::from_secs(31)).is_some());
        l.received(t0 + Duration::from_secs(29));
        assert_eq!(l.dead(t0 + Duration::from_secs(45)), None);
    }

    #[test]
    fn backoff_grows_caps_jitters_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30), 7);
        let d: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        for (i, d) in d.iter().enumerate() {
            let cap = Duration::from_millis(500)
                .saturating_mul(1 << i)
                .min(Duration::from_secs(30));
            assert!(
                *d >= cap / 2 && *d <= cap,
                "attempt {i}: {d:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
        }
        assert!(d[9] >= Duration::from_secs(15));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(500));
    }

    #[test]
    fn the_read_budget_yields_after_a_bounded_run_of_frames_or_bytes() {
        let mut b = ReadBudget::default();
        let yields = (0..FRAME_BUDGET * 3).filter(|_| b.spend(100)).count();
        assert_eq!(yields, 3, "one yield per FRAME_BUDGET small frames");
        let mut b = ReadBudget::default();
        assert!(!b.spend(FRAME_BUDGET_BYTES / 2));
        assert!(b.spend(FRAME_BUDGET_BYTES / 2), "or per FRAME_BUDGET_BYTES");
        assert!(!b.spend(1), "refilled after the yield");
    }

    #[test]
    fn held_deliveries_keep_order_per_module_and_lose_nothing() {
        use bus::BusMessage;
        let lost = |n| BusMessage::Reply {
            id: RequestId(n),
            outcome: Outcome::Lost,
        };
        let mut held = Held::default();
        let mut got: Vec<(ModuleId, BusMessage)> = Vec::new();
        let mut meta_full = true;
        // MetaManager refuses, Edged takes.
        let deliver = |to, m, full: bool, got: &mut Vec<_>| {
            if to == ModuleId::MetaManager && full {
                Err(m)
            } else {
                got.push((to, m));
                Ok(())
            }
        };
        held.hand(ModuleId::MetaManager, lost(1), |t, m| {
            deliver(t, m, meta_full, &mut got)
        });
        held.hand(ModuleId::Edged, lost(2), |t, m| {
            deliver(t, m, meta_full, &mut got)
        });
        held.hand(ModuleId::MetaManager, lost(3), |t, m| {
            deliver(t, m, meta_full, &mut got)
        });
        assert_eq!(got, vec![(ModuleId::Edged, lost(2))]);
        assert_eq!(held.len(), 2);
        assert_eq!(held.first_target(), Some(ModuleId::MetaManager));
        held.flush(|t, m| deliver(t, m, meta_full, &mut got));
        assert_eq!(held.len(), 2, "still no room: still held");
        meta_full = false;
        held.flush(|t, m| deliver(t, m, meta_full, &mut got));
        assert!(held.is_empty());
        assert_eq!(
            got[1..],
            [
                (ModuleId::MetaManager, lost(1)),
                (ModuleId::MetaManager, lost(3))
            ]
        );
    }
}
