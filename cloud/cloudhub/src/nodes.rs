//! The node registry: Node and Lease objects as the edge reported them, plus when each node was
//! last heard from. Sans-IO: every call takes the time.
//!
//! Readiness is decided here, as kube-controller-manager's node lifecycle controller would: a
//! node is Ready while anything (keepalive, lease, status) arrived within the grace period
//! (40 s by default); past it the Ready condition reads False with reason `NodeStatusUnknown`.
//!
//! Records changed since the last save are *dirty*; CloudHub saves them to the store in one
//! transaction every few seconds and at shutdown ([`NodeRegistry::take_dirty`]) and restores
//! them at start ([`NodeRegistry::restore`]), so after a cloudcore restart every node is
//! listed at once, and one whose edge is gone turns NotReady instead of vanishing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use proto::objresp;
use serde_json::{json, Value};

/// What a failed registry operation tells the edge, as a Kubernetes `Status`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusError(pub Value);

struct NodeRecord {
    node: Value,
    lease: Option<Value>,
    last_heard: SystemTime,
}

/// All registered nodes, bounded by `limit` (upstream `NodeLimit`, 500 by default).
pub struct NodeRegistry {
    nodes: BTreeMap<String, NodeRecord>,
    next_rv: u64,
    limit: usize,
    /// Changed since the last [`NodeRegistry::take_dirty`].
    dirty: BTreeSet<String>,
    /// Deleted by the admin, oldest first: a session of the old node that has not ended yet
    /// must not register it again. Cleared by a new enrollment ([`NodeRegistry::readmit`]).
    retired: std::collections::VecDeque<String>,
    /// What a node may change beyond its status.
    pub writes: crate::admission::NodeWrites,
}

/// Deleted names remembered against re-registration. Only sessions still running at the
/// delete need it (they end within a turn), so a few are plenty.
pub const MAX_RETIRED: usize = 64;

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

use cloudstore::smp;

impl NodeRegistry {
    pub fn new(limit: usize) -> Self {
        NodeRegistry {
            nodes: BTreeMap::new(),
            next_rv: 100,
            limit,
            dirty: BTreeSet::new(),
            retired: std::collections::VecDeque::new(),
            writes: Default::default(),
        }
    }

    /// Removes `name` (the admin deleted it) with its lease; returns the node object. Until
    /// [`NodeRegistry::readmit`], the name cannot register again.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.dirty.remove(name);
        if !self.retired.iter().any(|n| n == name) {
            if self.retired.len() >= MAX_RETIRED {
                self.retired.pop_front();
            }
            self.retired.push_back(name.to_owned());
        }
        self.nodes.remove(name).map(|r| r.node)
    }

    /// `name` was enrolled again: it may register.
    pub fn readmit(&mut self, name: &str) {
        self.retired.retain(|n| n != name);
    }

    /// The records changed since the last call, serialized for the store; they count as
    /// saved from now on ([`NodeRegistry::mark_dirty`] puts them back if the save fails).
    pub fn take_dirty(&mut self) -> Vec<(String, Vec<u8>)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|name| {
                let r = self.nodes.get(&name)?;
                let rec =
                    json!({ "node": r.node, "lease": r.lease, "lastHeard": unix(r.last_heard) });
                Some((name, rec.to_string().into_bytes()))
            })
            .collect()
    }

    pub fn mark_dirty<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        self.dirty.extend(names.into_iter().map(str::to_owned));
    }

    /// Puts back a record saved by [`NodeRegistry::take_dirty`]. The node was last heard
    /// when it was saved, so it reads NotReady once the grace period has passed since then,
    /// unless its edge reconnects.
    pub fn restore(&mut self, name: &str, bytes: &[u8]) -> Result<(), String> {
        let rec: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("node record {name}: {e}"))?;
        let mut node = rec["node"].clone();
        if node["metadata"]["name"] != name {
            return Err(format!("node record {name} holds another node"));
        }
        within_limits_on_restore(name, &mut node);
        let lease = Some(rec["lease"].clone()).filter(|l| l.is_object());
        let rv = |v: &Value| {
            v["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        };
        self.next_rv = self
            .next_rv
            .max(rv(&node))
            .max(lease.as_ref().map_or(0, rv));
        let heard = rec["lastHeard"].as_i64().unwrap_or(0).max(0) as u64;
        self.nodes.insert(
            name.to_owned(),
            NodeRecord {
                node,
                lease,
                last_heard: SystemTime::UNIX_EPOCH + Duration::from_secs(heard),
            },
        );
        Ok(())
    }

    fn bump(&mut self) -> String {
        self.next_rv += 1;
        self.next_rv.to_string()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.nodes.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Anything arrived from `name`.
    pub fn heard_from(&mut self, name: &str, now: SystemTime) {
        if let Some(r) = self.nodes.get_mut(name) {
            r.last_heard = now;
        }
    }

    /// `insert null/node/<name>`: create, or take the edge's new report if it exists (an edge
    /// re-registers on every connect; upstream answers AlreadyExists and kubelet then reads the
    /// node, which comes to the same).
    pub fn register(
        &mut self,
        name: &str,
        node: Value,
        now: SystemTime,
    ) -> Result<Value, StatusError> {
        // What a node may register (crate::admission): a new node as sent, an existing one
        // only its status; within the limits.
        let mut node =
            crate::admission::node_registration(name, self.nodes.get(name).map(|r| &r.node), node)?;
        if self.retired.iter().any(|n| n == name) {
            return Err(StatusError(objresp::status(
                403,
                "Forbidden",
                &format!("node {name:?} was deleted by the admin; join it again with a new token"),
                json!({ "name": name, "kind": "nodes" }),
            )));
        }
        if !self.nodes.contains_key(name) && self.nodes.len() >= self.limit {
            return Err(StatusError(objresp::status(
                429,
                "TooManyRequests",
                &format!("node limit of {} reached", self.limit),
                json!({ "name": name, "kind": "nodes" }),
            )));
        }
        let rv = self.bump();
        let (uid, created) = match self.nodes.get(name) {
            Some(r) => (
                r.node["metadata"]["uid"].clone(),
                r.node["metadata"]["creationTimestamp"].clone(),
            ),
            None => (
                json!(proto::message::new_msg_id()),
                json!(proto::time::rfc3339(unix(now))),
            ),
        };
        node["kind"] = json!("Node");
        node["apiVersion"] = json!("v1");
        cloudstore::defaults::node(&mut node);
        let meta = &mut node["metadata"];
        meta["uid"] = uid;
        meta["creationTimestamp"] = created;
        meta["resourceVersion"] = json!(rv);
        let lease = self.nodes.remove(name).and_then(|r| r.lease);
        self.dirty.insert(name.to_owned());
        self.nodes.insert(
            name.to_owned(),
            NodeRecord {
                node: node.clone(),
                lease,
                last_heard: now,
            },
        );
        Ok(node)
    }

    fn not_found_node(name: &str) -> StatusError {
        StatusError(objresp::not_found("nodes", "", name))
    }

    /// `patch null/nodepatch/<name>`: apply the edge's strategic-merge patch.
    pub fn patch(
        &mut self,
        name: &str,
        patch: &[u8],
        now: SystemTime,
    ) -> Result<Value, StatusError> {
        let patch = crate::admission::parse(patch, "Node", "nodes", name)?;
        if !self.nodes.contains_key(name) {
            return Err(Self::not_found_node(name));
        }
        let current = &self.nodes[name].node;
        let mut merged = smp::apply(current, &patch, &smp::schema::NODE).map_err(|e| {
            StatusError(objresp::status(
                e.code,
                if e.code == 500 {
                    "InternalError"
                } else {
                    "BadRequest"
                },
                &e.message,
                json!({ "name": name, "kind": "nodes" }),
            ))
        })?;
        // Status only, within the limits (crate::admission).
        crate::admission::node_update(name, current, &mut merged, self.writes)?;
        let rv = self.bump();
        let r = self.nodes.get_mut(name).expect("checked above");
        r.node = merged;
        r.node["metadata"]["resourceVersion"] = json!(rv);
        r.last_heard = now;
        self.dirty.insert(name.to_owned());
        Ok(r.node.clone())
    }

    pub fn lease(&self, name: &str) -> Result<Value, StatusError> {
        self.nodes
            .get(name)
            .and_then(|r| r.lease.clone())
            .ok_or_else(|| StatusError(objresp::not_found("leases", "coordination.k8s.io", name)))
    }

    /// `insert` (`create = true`) or `update` of `kube-node-lease/lease/<name>`, with
    /// resourceVersion checks as the apiserver does them.
    pub fn write_lease(
        &mut self,
        name: &str,
        mut lease: Value,
        create: bool,
        now: SystemTime,
    ) -> Result<Value, StatusError> {
        let Some(existing) = self.nodes.get(name).map(|r| r.lease.clone()) else {
            return Err(Self::not_found_node(name));
        };
        let details = json!({ "name": name, "group": "coordination.k8s.io", "kind": "leases" });
        // Checked before anything indexes into it: serde_json panics writing a field of
        // anything but an object, and one node's bad lease must not end cloudcore.
        if !lease.is_object() || !(lease["metadata"].is_object() || lease["metadata"].is_null()) {
            let r =
                cloudstore::limits::Refusal::invalid("a Lease and its metadata must be objects");
            return Err(StatusError(r.status("Lease", "leases", name)));
        }
        match (&existing, create) {
            (Some(_), true) => {
                return Err(StatusError(objresp::status(
                    409,
                    "AlreadyExists",
                    &format!("leases.coordination.k8s.io \"{name}\" already exists"),
                    details,
                )));
            }
            (None, false) => {
                return Err(StatusError(objresp::not_found(
                    "leases",
                    "coordination.k8s.io",
                    name,
                )))
            }
            (Some(old), false) => {
                let sent = lease["metadata"]["resourceVersion"].as_str().unwrap_or("");
                let have = old["metadata"]["resourceVersion"].as_str().unwrap_or("");
                if !sent.is_empty() && sent != have {
                    return Err(StatusError(objresp::status(
                        409,
                        "Conflict",
                        &format!("Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
                        details,
                    )));
                }
                lease["metadata"]["uid"] = old["metadata"]["uid"].clone();
                lease["metadata"]["creationTimestamp"] =
                    old["metadata"]["creationTimestamp"].clone();
            }
            (None, true) => {
                lease["metadata"]["uid"] = json!(proto::message::new_msg_id());
                lease["metadata"]["creationTimestamp"] = json!(proto::time::rfc3339(unix(now)));
            }
        }
        let rv = self.bump();
        lease["kind"] = json!("Lease");
        lease["apiVersion"] = json!("coordination.k8s.io/v1");
        lease["metadata"]["namespace"] = json!(proto::LEASE_NAMESPACE);
        lease["metadata"]["name"] = json!(name);
        lease["metadata"]["resourceVersion"] = json!(rv);
        cloudstore::limits::check_stored(&lease, existing.as_ref())
            .map_err(|r| StatusError(r.status("Lease", "leases", name)))?;
        let r = self.nodes.get_mut(name).expect("checked above");
        r.lease = Some(lease.clone());
        r.last_heard = now;
        self.dirty.insert(name.to_owned());
        Ok(lease)
    }

    /// The node as `get` shows it, with readiness judged at `now`.
    fn view(&self, r: &NodeRecord, now: SystemTime, grace: Duration) -> Value {
        let mut node = r.node.clone();
        let silent = now.duration_since(r.last_heard).unwrap_or_default();
        if silent > grace {
            let since = proto::time::rfc3339(unix(r.last_heard + grace));
            let heard = proto::time::rfc3339(unix(r.last_heard));
            let not_ready = json!({
                "type": "Ready",
                "status": "False",
                "reason": "NodeStatusUnknown",
                "message": format!("edgecore stopped posting node status ({}s ago)", silent.as_secs()),
                "lastHeartbeatTime": heard,
                "lastTransitionTime": since,
            });
            if let Ok(n) = smp::apply(
                &node,
                &json!({ "status": { "conditions": [not_ready] } }),
                &smp::schema::NODE,
            ) {
                node = n;
            }
        }
        node
    }

    /// A Kubernetes `NodeList` of every node.
    pub fn list(&self, now: SystemTime, grace: Duration) -> Value {
        let items: Vec<Value> = self
            .nodes
            .values()
            .map(|r| self.view(r, now, grace))
            .collect();
        json!({
            "kind": "NodeList",
            "apiVersion": "v1",
            "metadata": { "resourceVersion": self.next_rv.to_string() },
            "items": items,
        })
    }

    /// One node, if registered.
    pub fn get(&self, name: &str, now: SystemTime, grace: Duration) -> Option<Value> {
        self.nodes.get(name).map(|r| self.view(r, now, grace))
    }
}

/// Whether a node object's Ready condition is True.
pub fn is_ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// A node saved before the object limits may be over them (a status 124 levels deep breaks
/// every `get nodes`; patched labels made 100 MiB nodes). Its status goes first (the node
/// reports it again when it connects), then its labels and annotations; its identity stays.
fn within_limits_on_restore(name: &str, node: &mut Value) {
    let over = |n: &Value| cloudstore::limits::check_stored(n, Some(n)).err();
    let Some(why) = over(node) else {
        return;
    };
    node["status"] = json!({});
    let mut dropped = "its status";
    if over(node).is_some() {
        let meta = &node["metadata"];
        node["metadata"] = json!({ "name": name, "uid": meta["uid"],
            "creationTimestamp": meta["creationTimestamp"], "resourceVersion": meta["resourceVersion"] });
        node["spec"] = json!({});
        dropped = "its status, labels, annotations and spec";
    }
    log::warn!("saved node {name} is over the object limits ({why}): restored without {dropped}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Value {
        json!({ "metadata": { "name": name }, "status": { "conditions": [
            { "type": "MemoryPressure", "status": "False" },
            { "type": "Ready", "status": "True", "lastHeartbeatTime": "t0" }
        ] } })
    }

    const GRACE: Duration = Duration::from_secs(40);

    fn ready(list: &Value, name: &str) -> Value {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["metadata"]["name"] == name)
            .map(|n| {
                n["status"]["conditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["type"] == "Ready")
                    .unwrap()["status"]
                    .clone()
            })
            .unwrap_or(Value::Null)
    }

    #[test]
    fn saved_records_restore_nodes_with_identity_lease_and_last_heard() {
        let mut r = NodeRegistry::new(10);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let a = r.register("a", node("a"), t).unwrap();
        r.register("b", node("b"), t).unwrap();
        let lease = r
            .write_lease("a", json!({"metadata":{},"spec":{}}), true, t)
            .unwrap();
        let saved = r.take_dirty();
        assert_eq!(saved.len(), 2);
        assert!(r.take_dirty().is_empty(), "saved records are clean");
        r.patch("b", br#"{"status":{}}"#, t).unwrap();
        assert_eq!(r.take_dirty().len(), 1, "only the changed node");

        let mut back = NodeRegistry::new(10);
        for (name, bytes) in &saved {
            back.restore(name, bytes).unwrap();
        }
        let list = back.list(t + Duration::from_secs(1), GRACE);
        let a2 = &list["items"][0];
        assert_eq!(a2["metadata"]["uid"], a["metadata"]["uid"]);
        assert_eq!(
            back.lease("a").unwrap()["metadata"]["uid"],
            lease["metadata"]["uid"]
        );
        assert_eq!(ready(&list, "a"), "True");
        // Nobody reconnects: past the grace period since it was last heard, NotReady.
        let later = back.list(t + GRACE + Duration::from_secs(1), GRACE);
        assert_eq!(ready(&later, "a"), "False");
        // New versions continue above the restored ones.
        let n = back.register("a", node("a"), t).unwrap();
        let rv = |v: &Value| {
            v["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        assert!(rv(&n) > rv(&lease));
        // A damaged record is refused, the rest stays.
        assert!(back.restore("c", b"{not json").is_err());
        assert!(
            back.restore("c", &saved[0].1).is_err(),
            "record of another node"
        );
        assert_eq!(back.len(), 2);
    }

    #[test]
    fn a_record_saved_over_the_limits_restores_within_them() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!([deep]);
        }
        let mut n = node("deep");
        n["metadata"]["uid"] = json!("u-deep");
        n["metadata"]["labels"] = json!({"site": "a"});
        n["status"]["nodeInfo"] = json!({ "x": deep });
        let mut big = node("big");
        big["metadata"]["labels"] = json!({ "k": "v".repeat(proto::limits::MAX_OBJECT_BYTES) });
        let mut back = NodeRegistry::new(10);
        for (name, n) in [("deep", n), ("big", big)] {
            let rec = json!({ "node": n, "lease": null, "lastHeard": 1_000_000 });
            back.restore(name, rec.to_string().as_bytes()).unwrap();
        }
        let list = back.list(t, GRACE);
        let text = list.to_string();
        assert!(text.len() < 64 << 10, "{} bytes", text.len());
        let items = list["items"].as_array().unwrap();
        let deep = items
            .iter()
            .find(|n| n["metadata"]["name"] == "deep")
            .unwrap();
        assert_eq!(deep["metadata"]["uid"], "u-deep");
        assert_eq!(
            deep["metadata"]["labels"],
            json!({"site": "a"}),
            "only the status went"
        );
        let big = items
            .iter()
            .find(|n| n["metadata"]["name"] == "big")
            .unwrap();
        assert!(big["metadata"].get("labels").is_none());
        // What a client reads back: the whole list parses.
        let _: Value = serde_json::from_str(&text).unwrap();
    }

    #[test]
    fn register_assigns_identity_and_keeps_it_on_reregister() {
        let mut r = NodeRegistry::new(10);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let a = r.register("edge0", node("edge0"), t).unwrap();
        let uid = a["metadata"]["uid"].clone();
        assert!(uid.is_string());
        assert_eq!(a["kind"], "Node");
        let b = r
            .register("edge0", node("edge0"), t + Duration::from_secs(5))
            .unwrap();
        assert_eq!(b["metadata"]["uid"], uid);
        assert_ne!(
            b["metadata"]["resourceVersion"],
            a["metadata"]["resourceVersion"]
        );
        assert!(
            r.register("edge0", node("other"), t).is_err(),
            "name must match the session"
        );
    }

    #[test]
    fn a_deleted_node_frees_its_slot_and_cannot_register_until_readmitted() {
        let mut r = NodeRegistry::new(1);
        let t = SystemTime::now();
        r.register("a", node("a"), t).unwrap();
        r.write_lease("a", json!({"metadata":{},"spec":{}}), true, t)
            .unwrap();
        assert_eq!(r.register("b", node("b"), t).unwrap_err().0["code"], 429);
        assert_eq!(r.remove("a").unwrap()["metadata"]["name"], "a");
        assert!(!r.contains("a"));
        assert_eq!(
            r.lease("a").unwrap_err().0["reason"],
            "NotFound",
            "lease gone with it"
        );
        assert!(r.take_dirty().is_empty(), "nothing of it is saved again");
        // Its old session, not ended yet, re-registers: refused.
        let e = r.register("a", node("a"), t).unwrap_err();
        assert_eq!(e.0["code"], 403);
        assert!(e.0["message"].as_str().unwrap().contains("deleted"));
        // The slot is free for another node, and the name after a new enrollment.
        r.register("b", node("b"), t).unwrap();
        r.remove("b");
        r.readmit("a");
        r.register("a", node("a"), t).unwrap();
        assert!(r.remove("zz").is_none());
    }

    #[test]
    fn node_limit_is_enforced() {
        let mut r = NodeRegistry::new(1);
        let t = SystemTime::now();
        r.register("a", node("a"), t).unwrap();
        let e = r.register("b", node("b"), t).unwrap_err();
        assert_eq!(e.0["code"], 429);
        assert!(
            r.register("a", node("a"), t).is_ok(),
            "re-registering an existing node is fine"
        );
    }

    #[test]
    fn patches_merge_conditions_by_type() {
        let mut r = NodeRegistry::new(10);
        let t = SystemTime::now();
        r.register("e", node("e"), t).unwrap();
        let p = br#"{"status":{"$setElementOrder/conditions":[{"type":"MemoryPressure"},{"type":"Ready"},{"type":"DiskPressure"}],"conditions":[{"type":"Ready","lastHeartbeatTime":"t1"},{"type":"DiskPressure","status":"False"}]}}"#;
        let n = r.patch("e", p, t).unwrap();
        let conds = n["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds.len(), 3);
        assert_eq!(conds[1]["lastHeartbeatTime"], "t1");
        assert_eq!(
            conds[1]["status"], "True",
            "fields not in the patch survive"
        );
        assert!(r.patch("e", b"not json", t).is_err());
        assert_eq!(r.patch("zz", b"{}", t).unwrap_err().0["reason"], "NotFound");
    }

    #[test]
    fn readiness_follows_heartbeats() {
        let mut r = NodeRegistry::new(10);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        r.register("e", node("e"), t).unwrap();
        assert!(is_ready(&r.get("e", t + GRACE, GRACE).unwrap()));
        let stale = r
            .get("e", t + GRACE + Duration::from_secs(1), GRACE)
            .unwrap();
        assert!(!is_ready(&stale));
        let ready = stale["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()
            .clone();
        assert_eq!(ready["reason"], "NodeStatusUnknown");
        r.heard_from("e", t + GRACE);
        assert!(is_ready(
            &r.get("e", t + GRACE + Duration::from_secs(1), GRACE)
                .unwrap()
        ));
        let list = r.list(t, GRACE);
        assert_eq!(list["kind"], "NodeList");
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn lease_lifecycle_with_conflicts() {
        let mut r = NodeRegistry::new(10);
        let t = SystemTime::now();
        r.register("e", node("e"), t).unwrap();
        assert_eq!(r.lease("e").unwrap_err().0["reason"], "NotFound");
        assert_eq!(
            r.write_lease("e", json!({"metadata":{}}), false, t)
                .unwrap_err()
                .0["reason"],
            "NotFound"
        );
        let l = r
            .write_lease("e", json!({"metadata":{},"spec":{}}), true, t)
            .unwrap();
        assert_eq!(
            r.write_lease("e", l.clone(), true, t).unwrap_err().0["reason"],
            "AlreadyExists"
        );
        let l2 = r.write_lease("e", l.clone(), false, t).unwrap();
        assert_eq!(l2["metadata"]["uid"], l["metadata"]["uid"]);
        let stale = r.write_lease("e", l, false, t).unwrap_err();
        assert_eq!(stale.0["reason"], "Conflict");
        assert_eq!(r.lease("e").unwrap(), l2);
        assert_eq!(
            r.write_lease("nobody", json!({}), true, t).unwrap_err().0["reason"],
            "NotFound"
        );
    }
}
