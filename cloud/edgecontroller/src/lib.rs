//! EdgeController: decides what each edge node must hold and delivers it reliably (§3.6 and
//! §4.3–4.5 of the protocol spec). Sans-IO: the caller passes the store and the clock and
//! writes the returned messages to the node's session.
//!
//! Delivery is level-triggered. A node must hold every pod whose `spec.nodeName` names it and
//! every configmap and secret those pods use. [`EdgeController::plan`] compares that with what
//! the node acknowledged (the store's sync records, kept durably) and with what is in flight,
//! and returns the messages that close the gap:
//! - objects the node never acknowledged go as `insert`, newer versions as `update`;
//! - acknowledged objects that are gone or no longer meant for the node go as `delete`
//!   (content: only name, namespace and uid, as upstream's synccontroller sends);
//! - configmaps and secrets go before the pods that use them, pod deletes before theirs.
//!
//! Because the plan is computed from state, not queued events, the per-node "queue" coalesces
//! by construction: fifty updates in a burst send the newest version, not fifty messages, and a
//! reconnect resends exactly what changed while the node was away. At most [`WINDOW`] messages
//! per node are unacknowledged at once; each is resent with the same `msg_id` every
//! [`RESEND_AFTER`] (backing off to [`RESEND_MAX`]) until acknowledged or superseded.
//!
//! A message the edge could not accept (over [`proto::limits::EDGE_MAX_FRAME_BYTES`]: only an
//! object stored before the object limit can be that large) is never sent: it would break the
//! tunnel and be resent first on every reconnect, so the node would get nothing else. It is
//! skipped until the object changes and reported once ([`EdgeController::take_undeliverable`]);
//! a delete that large goes with only the object's name, namespace and uid.

#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use cloudstore::{kinds, CloudStore, Kind, ObjectKey, StoreError, SyncEntry};
use proto::{Group, Message, Operation, ResourcePath};
use serde_json::json;

/// Unacknowledged messages per node at most: bounds memory and keeps a slow node from being
/// flooded, while letting a burst flow without a round trip per object. A round trip is an
/// edge commit plus a cloud commit (~30-40 ms here with fsync), so the window is what sets a
/// burst's throughput: 32 gave ~800 objects/s, 256 gives several thousand. The edge takes
/// them in batches of its own (MetaManager's group commit), reading no more than it can hold.
pub const WINDOW: usize = 256;
/// Bytes (frames as sent) unacknowledged per node at most, whatever their count; one message
/// always goes, however large (it is under the edge's frame limit).
pub const WINDOW_BYTES: usize = 8 << 20;
/// First resend of an unacknowledged message (upstream: 5 s).
pub const RESEND_AFTER: Duration = Duration::from_secs(5);
/// Resends back off (doubling) to this period.
pub const RESEND_MAX: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq)]
enum Sent {
    Upsert { rv: u64 },
    Delete,
}

struct InFlight {
    uid: String,
    key: ObjectKey,
    sent: Sent,
    msg: Message,
    next_resend: Instant,
    attempts: u32,
    /// The frame's length, for [`WINDOW_BYTES`].
    bytes: usize,
}

#[derive(Default)]
struct NodeDelivery {
    inflight: Vec<InFlight>,
    /// What the node must hold, as of a store `objects_version`: recomputed only when objects
    /// change, not on every acknowledgement.
    desired: Option<(u64, Vec<Desired>)>,
}

/// What an acknowledgement confirmed.
#[derive(Debug, Clone, PartialEq)]
pub struct Acked {
    pub key: ObjectKey,
    /// `Some(rv)` for an object now held at `rv`, `None` for a delete.
    pub rv: Option<u64>,
}

/// One object a node must hold.
#[derive(Clone)]
struct Desired {
    uid: String,
    key: ObjectKey,
    push_rv: u64,
}

/// Every object `node` must hold, configmaps and secrets first.
fn desired(node: &str, store: &CloudStore) -> Vec<Desired> {
    let mut pods = Vec::new();
    let mut refs: Vec<ObjectKey> = Vec::new();
    for (key, e) in store.list(Kind::Pod, None) {
        if e.object["spec"]["nodeName"].as_str() != Some(node) {
            continue;
        }
        let (cms, secrets) = kinds::pod_references(&e.object);
        for (kind, names) in [(Kind::ConfigMap, cms), (Kind::Secret, secrets)] {
            for n in names {
                let k = ObjectKey::new(kind, &key.namespace, &n);
                if !refs.contains(&k) {
                    refs.push(k);
                }
            }
        }
        pods.push(Desired {
            uid: e.uid().to_owned(),
            key: key.clone(),
            push_rv: e.push_rv,
        });
    }
    // Devices bound to the node, and the models they use.
    let mut devices = Vec::new();
    for (key, e) in store.list(Kind::Device, None) {
        if e.object["spec"]["nodeName"].as_str() != Some(node) {
            continue;
        }
        if let Some(model) = e.object["spec"]["deviceModelRef"]["name"].as_str() {
            let k = ObjectKey::new(Kind::DeviceModel, &key.namespace, model);
            if !refs.contains(&k) {
                refs.push(k);
            }
        }
        devices.push(Desired {
            uid: e.uid().to_owned(),
            key: key.clone(),
            push_rv: e.push_rv,
        });
    }
    let mut out: Vec<Desired> = refs
        .into_iter()
        .filter_map(|k| {
            let e = store.get(&k)?;
            Some(Desired {
                uid: e.uid().to_owned(),
                key: k,
                push_rv: e.push_rv,
            })
        })
        .collect();
    out.extend(pods);
    out.extend(devices);
    out
}

fn path(key: &ObjectKey) -> String {
    ResourcePath::object(&key.namespace, key.kind.wire(), &key.name).to_string()
}

/// Reliable per-node delivery state.
#[derive(Default)]
pub struct EdgeController {
    nodes: HashMap<String, NodeDelivery>,
    /// Object versions too large for a node's frame, by (node, uid): not sent again until
    /// the object changes. Kept across reconnects, so each is reported once.
    too_large: HashMap<(String, String), u64>,
    /// Skipped objects not yet reported.
    undeliverable: Vec<Undeliverable>,
}

/// An object not sent to a node because the edge could not accept the message.
#[derive(Debug, Clone, PartialEq)]
pub struct Undeliverable {
    pub node: String,
    pub key: ObjectKey,
    /// What the message would have taken.
    pub bytes: usize,
}

impl Undeliverable {
    pub fn message(&self) -> String {
        format!(
            "not sent to node {}: the message would be {} bytes, over the {} bytes an edge accepts in one frame (EDGE_MAX_FRAME_BYTES); the object limit is {} bytes",
            self.node,
            self.bytes,
            proto::limits::EDGE_MAX_FRAME_BYTES,
            proto::limits::MAX_OBJECT_BYTES
        )
    }
}

/// Bytes of `msg` as a frame (its JSON and the newline).
fn frame_len(msg: &Message) -> usize {
    proto::limits::json_len(msg) + 1
}

impl EdgeController {
    pub fn new() -> Self {
        Self::default()
    }

    /// A session for `node` started: nothing is in flight on it yet.
    pub fn connected(&mut self, node: &str) {
        self.nodes.insert(node.to_owned(), NodeDelivery::default());
    }

    /// The session ended: in-flight messages are forgotten; the next connect resyncs.
    pub fn disconnected(&mut self, node: &str) {
        self.nodes.remove(node);
    }

    pub fn in_flight(&self, node: &str) -> usize {
        self.nodes.get(node).map_or(0, |d| d.inflight.len())
    }

    /// Objects skipped since the last call because their message was too large for the
    /// edge, each reported once per version (for events and logs).
    pub fn take_undeliverable(&mut self) -> Vec<Undeliverable> {
        std::mem::take(&mut self.undeliverable)
    }

    /// The messages to send `node` now: resends that are due, then whatever closes the gap
    /// between what it must hold and what it acknowledged, within the window.
    pub fn plan(
        &mut self,
        node: &str,
        store: &CloudStore,
        now: Instant,
        now_ms: i64,
    ) -> Vec<Message> {
        let Some(d) = self.nodes.get_mut(node) else {
            return Vec::new();
        };
        let too_large = &mut self.too_large;
        let version = store.objects_version();
        if d.desired.as_ref().is_none_or(|(v, _)| *v != version) {
            d.desired = Some((version, desired(node, store)));
        }
        // Disjoint fields: the cached list is read while `inflight` is changed below.
        let want: &[Desired] = d.desired.as_ref().map(|(_, w)| w.as_slice()).unwrap_or(&[]);
        let want_uids: HashSet<&str> = want.iter().map(|w| w.uid.as_str()).collect();
        let mut out = Vec::new();
        let full = |inflight: &[InFlight], more: usize| {
            inflight.len() >= WINDOW
                || (!inflight.is_empty()
                    && inflight.iter().map(|f| f.bytes).sum::<usize>() + more > WINDOW_BYTES)
        };

        // Upserts in flight for objects no longer meant for the node: cancel, delete instead.
        let mut cancelled: Vec<(String, ObjectKey)> = Vec::new();
        d.inflight.retain(|f| {
            let keep = matches!(f.sent, Sent::Delete) || want_uids.contains(f.uid.as_str());
            if !keep {
                cancelled.push((f.uid.clone(), f.key.clone()));
            }
            keep
        });

        for w in want {
            let acked = store.synced_entry(node, &w.uid).map(|s| s.rv);
            if acked.is_some_and(|rv| rv >= w.push_rv) {
                continue;
            }
            if let Some(pos) = d.inflight.iter().position(|f| f.uid == w.uid) {
                match d.inflight[pos].sent {
                    Sent::Upsert { rv } if rv >= w.push_rv => continue,
                    // Superseded by a newer version: only the newest is worth sending.
                    _ => {
                        d.inflight.remove(pos);
                    }
                }
            }
            if d.inflight.len() >= WINDOW {
                break;
            }
            let skip = (node.to_owned(), w.uid.clone());
            if too_large.get(&skip) == Some(&w.push_rv) {
                continue;
            }
            let Some(entry) = store.get(&w.key) else {
                continue;
            };
            let rv = entry.rv();
            let mut obj = entry.object.clone();
            obj["apiVersion"] = json!(w.key.kind.api_version());
            obj["kind"] = json!(w.key.kind.name());
            let op = if acked.is_some() {
                Operation::Update
            } else {
                Operation::Insert
            };
            let mut msg = Message::new(
                w.key.kind.source(),
                Group::Resource,
                op,
                path(&w.key),
                obj,
                now_ms,
            );
            msg.header.resourceversion = rv.to_string();
            let bytes = frame_len(&msg);
            if bytes <= proto::limits::EDGE_MAX_FRAME_BYTES && full(&d.inflight, bytes) {
                break;
            }
            if bytes > proto::limits::EDGE_MAX_FRAME_BYTES {
                too_large.insert(skip, w.push_rv);
                self.undeliverable.push(Undeliverable {
                    node: node.to_owned(),
                    key: w.key.clone(),
                    bytes,
                });
                continue;
            }
            d.inflight.push(InFlight {
                uid: w.uid.clone(),
                key: w.key.clone(),
                sent: Sent::Upsert { rv },
                msg: msg.clone(),
                next_resend: now + RESEND_AFTER,
                attempts: 1,
                bytes,
            });
            out.push(msg);
        }

        // Deletes: acknowledged objects the node must no longer hold (pods first), and
        // cancelled upserts the node may have stored without its ACK reaching us.
        let mut deletes: Vec<(String, ObjectKey)> = store
            .synced(node)
            .filter(|(uid, _)| !want_uids.contains(uid))
            .map(|(uid, s): (&str, &SyncEntry)| {
                (
                    uid.to_owned(),
                    ObjectKey::new(s.kind, &s.namespace, &s.name),
                )
            })
            .collect();
        for c in cancelled {
            if !deletes.iter().any(|(u, _)| *u == c.0) {
                deletes.push(c);
            }
        }
        deletes.sort_by_key(|(_, k)| k.kind != Kind::Pod);
        for (uid, key) in deletes {
            if d.inflight.len() >= WINDOW {
                break;
            }
            if d.inflight
                .iter()
                .any(|f| f.uid == uid && f.sent == Sent::Delete)
            {
                continue;
            }
            // What the edge needs to find and remove the object.
            let minimal = json!({ "apiVersion": key.kind.api_version(), "kind": key.kind.name(),
                "metadata": { "name": key.name, "namespace": key.namespace, "uid": uid } });
            // The whole object, as upstream's watch-driven delete carries it: its last state if
            // it is gone, its current one if it is only no longer meant for this node.
            let content = store
                .tombstone(&uid)
                .cloned()
                .or_else(|| {
                    let e = store.get(&key).filter(|e| e.uid() == uid)?;
                    let mut o = e.object.clone();
                    o["apiVersion"] = json!(key.kind.api_version());
                    o["kind"] = json!(key.kind.name());
                    Some(o)
                })
                .unwrap_or_else(|| minimal.clone());
            let mut msg = Message::new(
                key.kind.source(),
                Group::Resource,
                Operation::Delete,
                path(&key),
                content,
                now_ms,
            );
            // Too large for the edge: only what it needs.
            if frame_len(&msg) > proto::limits::EDGE_MAX_FRAME_BYTES {
                msg.content = minimal;
            }
            d.inflight.push(InFlight {
                uid,
                key,
                sent: Sent::Delete,
                bytes: frame_len(&msg),
                msg: msg.clone(),
                next_resend: now + RESEND_AFTER,
                attempts: 1,
            });
            out.push(msg);
        }

        // Resends, same msg_id so a late ACK of an earlier copy still counts.
        for f in d.inflight.iter_mut() {
            if f.next_resend <= now && !out.iter().any(|m| m.header.msg_id == f.msg.header.msg_id) {
                f.attempts += 1;
                let backoff = RESEND_AFTER
                    .saturating_mul(1 << f.attempts.min(8))
                    .min(RESEND_MAX);
                f.next_resend = now + backoff;
                log::debug!("resending {} to {node} (attempt {})", f.key, f.attempts);
                out.push(f.msg.clone());
            }
        }
        out
    }

    /// Handles an acknowledgement (`response` with `parent_msg_id`) from `node`: records the
    /// acknowledged version durably. `Ok(None)` if it answers nothing in flight (late or
    /// duplicate ACKs are harmless).
    pub fn ack(
        &mut self,
        node: &str,
        parent: &str,
        store: &mut CloudStore,
    ) -> Result<Option<Acked>, StoreError> {
        let Some(d) = self.nodes.get_mut(node) else {
            return Ok(None);
        };
        let Some(pos) = d
            .inflight
            .iter()
            .position(|f| f.msg.header.msg_id == parent)
        else {
            return Ok(None);
        };
        let f = d.inflight.remove(pos);
        let rv = match f.sent {
            Sent::Upsert { rv } => {
                let entry = SyncEntry {
                    kind: f.key.kind,
                    namespace: f.key.namespace.clone(),
                    name: f.key.name.clone(),
                    rv,
                };
                store.record_sync(node, &f.uid, Some(entry))?;
                Some(rv)
            }
            Sent::Delete => {
                store.record_sync(node, &f.uid, None)?;
                None
            }
        };
        Ok(Some(Acked { key: f.key, rv }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn store(name: &str) -> CloudStore {
        let p = std::env::temp_dir().join(format!("edgectl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        CloudStore::open(&p).unwrap()
    }

    fn pod(name: &str, node: &str, image: &str, cm: Option<&str>) -> (Kind, Value) {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": image}]}});
        if let Some(cm) = cm {
            p["spec"]["volumes"] = json!([{"name": "v", "configMap": {"name": cm}}]);
        }
        (Kind::Pod, p)
    }

    fn cm(name: &str, v: &str) -> (Kind, Value) {
        (
            Kind::ConfigMap,
            json!({"apiVersion": "v1", "metadata": {"name": name}, "data": {"k": v}}),
        )
    }

    fn ack_all(c: &mut EdgeController, s: &mut CloudStore, msgs: &[Message]) {
        for m in msgs {
            c.ack("edge0", &m.header.msg_id, s).unwrap();
        }
    }

    #[test]
    fn sends_referenced_configmaps_first_then_pods_and_nothing_once_acked() {
        let mut s = store("first");
        s.apply(
            &[
                cm("cfg", "1"),
                pod("web", "edge0", "busybox", Some("cfg")),
                pod("other", "edge1", "busybox", None),
                cm("unused", "x"),
            ],
            0,
        )
        .unwrap();
        let mut c = EdgeController::new();
        let t = Instant::now();
        assert!(
            c.plan("edge0", &s, t, 0).is_empty(),
            "nothing for a node that is not connected"
        );
        c.connected("edge0");
        let msgs = c.plan("edge0", &s, t, 0);
        let res: Vec<(&str, &str)> = msgs
            .iter()
            .map(|m| (m.route.operation.as_str(), m.route.resource.as_str()))
            .collect();
        assert_eq!(
            res,
            [
                ("insert", "default/configmap/cfg"),
                ("insert", "default/pod/web")
            ]
        );
        assert_eq!(msgs[1].content["kind"], "Pod");
        assert_eq!(msgs[1].content["apiVersion"], "v1");
        assert!(!msgs[1].header.resourceversion.is_empty());
        assert!(
            c.plan("edge0", &s, t, 0).is_empty(),
            "in flight: not sent twice"
        );
        ack_all(&mut c, &mut s, &msgs);
        assert_eq!(c.in_flight("edge0"), 0);
        assert!(c.plan("edge0", &s, t + RESEND_AFTER * 2, 0).is_empty());
    }

    #[test]
    fn unacked_messages_are_resent_with_the_same_id() {
        let mut s = store("resend");
        s.apply(&[pod("web", "edge0", "busybox", None)], 0).unwrap();
        let mut c = EdgeController::new();
        c.connected("edge0");
        let t = Instant::now();
        let first = c.plan("edge0", &s, t, 0);
        assert!(c
            .plan("edge0", &s, t + RESEND_AFTER - Duration::from_millis(1), 0)
            .is_empty());
        let again = c.plan("edge0", &s, t + RESEND_AFTER, 0);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].header.msg_id, first[0].header.msg_id);
        assert_eq!(
            c.ack("edge0", &first[0].header.msg_id, &mut s)
                .unwrap()
                .unwrap()
                .rv,
            Some(s.last_rv())
        );
        assert_eq!(
            c.ack("edge0", &first[0].header.msg_id, &mut s).unwrap(),
            None,
            "duplicate ACK is harmless"
        );
    }

    #[test]
    fn bursts_coalesce_to_the_newest_version() {
        let mut s = store("burst");
        let mut c = EdgeController::new();
        c.connected("edge0");
        let t = Instant::now();
        s.apply(&[pod("web", "edge0", "v0", None)], 0).unwrap();
        let first = c.plan("edge0", &s, t, 0);
        for i in 1..50 {
            s.apply(&[pod("web", "edge0", &format!("v{i}"), None)], 0)
                .unwrap();
        }
        let next = c.plan("edge0", &s, t, 0);
        assert_eq!(next.len(), 1, "only the newest version goes");
        assert_eq!(next[0].content["spec"]["containers"][0]["image"], "v49");
        // The late ACK of the superseded send counts for nothing.
        assert_eq!(
            c.ack("edge0", &first[0].header.msg_id, &mut s).unwrap(),
            None
        );
        ack_all(&mut c, &mut s, &next);
        assert!(c.plan("edge0", &s, t, 0).is_empty());
    }

    #[test]
    fn reconnect_resyncs_changes_and_deletes_made_while_away() {
        let mut s = store("resync");
        s.apply(
            &[
                pod("keep", "edge0", "a", None),
                pod("gone", "edge0", "a", None),
                pod("moved", "edge0", "a", None),
            ],
            0,
        )
        .unwrap();
        let mut c = EdgeController::new();
        c.connected("edge0");
        let t = Instant::now();
        let msgs = c.plan("edge0", &s, t, 0);
        ack_all(&mut c, &mut s, &msgs);
        c.disconnected("edge0");
        // While away: one changed, one deleted, one moved to another node, one added.
        s.apply(
            &[
                pod("keep", "edge0", "b", None),
                pod("moved", "edge1", "a", None),
                pod("new", "edge0", "a", None),
            ],
            0,
        )
        .unwrap();
        s.delete(&ObjectKey::new(Kind::Pod, "default", "gone"))
            .unwrap();
        c.connected("edge0");
        let msgs = c.plan("edge0", &s, t, 0);
        let mut res: Vec<(String, String)> = msgs
            .iter()
            .map(|m| (m.route.operation.to_string(), m.route.resource.clone()))
            .collect();
        res.sort();
        assert_eq!(
            res,
            [
                ("delete".to_owned(), "default/pod/gone".to_owned()),
                ("delete".to_owned(), "default/pod/moved".to_owned()),
                ("insert".to_owned(), "default/pod/new".to_owned()),
                ("update".to_owned(), "default/pod/keep".to_owned()),
            ]
        );
        let del = msgs
            .iter()
            .find(|m| m.route.resource == "default/pod/gone")
            .unwrap();
        assert!(del.content["metadata"]["uid"].is_string());
        assert_eq!(del.content["kind"], "Pod", "deletes carry the whole object");
        assert_eq!(del.content["spec"]["containers"][0]["image"], "a");
        let moved = msgs
            .iter()
            .find(|m| m.route.resource == "default/pod/moved")
            .unwrap();
        assert_eq!(moved.content["spec"]["nodeName"], "edge1");
        ack_all(&mut c, &mut s, &msgs);
        assert_eq!(s.synced("edge0").count(), 2, "keep and new");
        assert!(c.plan("edge0", &s, t, 0).is_empty());
    }

    #[test]
    fn a_replaced_edge_store_gets_everything_again_and_deletes_still_go() {
        let mut s = store("epoch");
        s.apply(
            &[
                cm("cfg", "1"),
                pod("web", "edge0", "a", Some("cfg")),
                pod("gone", "edge0", "a", None),
            ],
            0,
        )
        .unwrap();
        let mut c = EdgeController::new();
        c.connected("edge0");
        s.note_store_epoch("edge0", "e1").unwrap();
        let t = Instant::now();
        let msgs = c.plan("edge0", &s, t, 0);
        ack_all(&mut c, &mut s, &msgs);
        assert!(c.plan("edge0", &s, t, 0).is_empty());
        c.disconnected("edge0");
        s.delete(&ObjectKey::new(Kind::Pod, "default", "gone"))
            .unwrap();

        // Back with the same store: only the delete made while away.
        c.connected("edge0");
        assert_eq!(
            s.note_store_epoch("edge0", "e1").unwrap(),
            cloudstore::EpochSeen::Same
        );
        let same: Vec<String> = c
            .plan("edge0", &s, t, 0)
            .iter()
            .map(|m| format!("{} {}", m.route.operation, m.route.resource))
            .collect();
        assert_eq!(same, ["delete default/pod/gone"]);
        c.disconnected("edge0");

        // Back with a new store: everything it must hold again, and the delete too (the
        // records stay, so nothing it might hold is forgotten).
        c.connected("edge0");
        assert!(matches!(
            s.note_store_epoch("edge0", "e2").unwrap(),
            cloudstore::EpochSeen::Replaced { reset: 3, .. }
        ));
        let mut again: Vec<String> = c
            .plan("edge0", &s, t, 0)
            .iter()
            .map(|m| format!("{} {}", m.route.operation, m.route.resource))
            .collect();
        again.sort();
        assert_eq!(
            again,
            [
                "delete default/pod/gone",
                "update default/configmap/cfg",
                "update default/pod/web"
            ]
        );
    }

    #[test]
    fn window_bounds_what_is_in_flight() {
        let mut s = store("window");
        let pods: Vec<(Kind, Value)> = (0..WINDOW + 10)
            .map(|i| pod(&format!("p{i}"), "edge0", "a", None))
            .collect();
        s.apply(&pods, 0).unwrap();
        let mut c = EdgeController::new();
        c.connected("edge0");
        let t = Instant::now();
        let first = c.plan("edge0", &s, t, 0);
        assert_eq!(first.len(), WINDOW);
        ack_all(&mut c, &mut s, &first[..5]);
        assert_eq!(c.plan("edge0", &s, t, 0).len(), 5);
    }

    #[test]
    fn the_window_is_bounded_in_bytes_too() {
        let mut s = store("window-bytes");
        // Twelve configmaps of 0.9 MiB, each used by a pod: 8 MiB holds eight of them.
        let big = "x".repeat(900 << 10);
        let mut objs: Vec<(Kind, Value)> = (0..12).map(|i| cm(&format!("c{i}"), &big)).collect();
        objs.extend((0..12).map(|i| pod(&format!("p{i}"), "edge0", "a", Some(&format!("c{i}")))));
        s.apply(&objs, 0).unwrap();
        let mut c = EdgeController::new();
        c.connected("edge0");
        let t = Instant::now();
        let first = c.plan("edge0", &s, t, 0);
        let bytes: usize = first.iter().map(frame_len).sum();
        assert!(bytes <= WINDOW_BYTES, "{bytes} bytes in flight");
        assert!(
            first.len() < 24,
            "the byte bound held some back: {}",
            first.len()
        );
        assert!(first.len() >= 8, "as many as fit went: {}", first.len());
        // Acknowledged, the rest goes.
        ack_all(&mut c, &mut s, &first);
        let second = c.plan("edge0", &s, t, 0);
        assert_eq!(first.len() + second.len(), 24);
    }

    #[test]
    fn an_object_too_large_for_the_edge_is_skipped_once_and_wedges_nothing() {
        let mut s = store("too-large");
        // As a store written before the object limit holds it: apply refuses it now, so it
        // goes into the file the way an older cloudcore wrote it.
        let big = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "big", "namespace": "default", "uid": "u-big", "resourceVersion": "5"},
            "data": {"k": "x".repeat(proto::limits::EDGE_MAX_FRAME_BYTES)}});
        assert!(s.apply(&[(Kind::ConfigMap, big.clone())], 0).is_err());
        let path = std::env::temp_dir().join(format!("edgectl-too-large-{}", std::process::id()));
        drop(s);
        {
            const OBJECTS: redb::TableDefinition<&str, &[u8]> =
                redb::TableDefinition::new("objects");
            let db = redb::Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            let mut value = 5u64.to_le_bytes().to_vec();
            value.extend(serde_json::to_vec(&big).unwrap());
            tx.open_table(OBJECTS)
                .unwrap()
                .insert("configmaps/default/big", value.as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        let mut s = CloudStore::open(&path).unwrap();
        s.apply(
            &[
                pod("web", "edge0", "a", Some("big")),
                pod("other", "edge0", "a", None),
            ],
            0,
        )
        .unwrap();
        let mut c = EdgeController::new();
        c.connected("edge0");
        let t = Instant::now();
        let msgs = c.plan("edge0", &s, t, 0);
        let res: Vec<&str> = msgs.iter().map(|m| m.route.resource.as_str()).collect();
        assert_eq!(
            res,
            ["default/pod/other", "default/pod/web"],
            "everything else goes"
        );
        assert!(msgs
            .iter()
            .all(|m| m.encode().len() <= proto::limits::EDGE_MAX_FRAME_BYTES));
        let skipped = c.take_undeliverable();
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].key.name, "big");
        assert!(
            skipped[0].message().contains("4194304"),
            "{}",
            skipped[0].message()
        );
        ack_all(&mut c, &mut s, &msgs);
        // Not resent, not reported again, across resend time and a reconnect.
        assert!(c.plan("edge0", &s, t + RESEND_MAX * 2, 0).is_empty());
        c.disconnected("edge0");
        c.connected("edge0");
        assert!(c.plan("edge0", &s, t, 0).is_empty());
        assert!(c.take_undeliverable().is_empty());
    }
}
