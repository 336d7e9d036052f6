//! What a node may write, as a whitelist: its own Node's status (labels and annotations only
//! with `--allow-node-labels`, and then within NodeRestriction's label rules), its own Lease,
//! and the status of pods bound to it. Everything else a node sends that would change an
//! object is refused with the answer kube-apiserver gives an edge's request when cloudcore
//! relays it under the node's identity (upstream's CloudHub authorization impersonates the
//! node, so the node authorizer and the NodeRestriction admission plugin decide):
//!
//! - another node's objects: 403 from the authorizer or NodeRestriction
//!   (`node "a" is not allowed to modify node "b"`);
//! - a patch that renames the object: 400 (`the name of the object (b) does not match the name
//!   on the URL (a)`); a uid precondition that does not hold: 409;
//! - taints: 403 (`node "a" is not allowed to modify taints`), labels: 403
//!   (`is not allowed to modify labels: …`);
//! - the rest of `spec`, and metadata other than labels and annotations: 403 too. Upstream's
//!   `nodes/status` and `pods/status` quietly keep the old spec; refusing tells the edge.
//! - over the size and depth limits (`cloudstore::limits`): 413 or 422.
//!
//! Sans-IO: functions of the stored object and what the node sent.

use std::collections::BTreeSet;

use cloudstore::limits::{self, Refusal};
use cloudstore::smp;
use proto::limits::{JsonError, LimitError};
use serde_json::{json, Map, Value};

use crate::nodes::StatusError;

/// What a node may change beyond status (`cloudcore serve --allow-node-labels`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeWrites {
    /// Its own labels (outside the kubernetes.io and k8s.io namespaces but kubelet's own, as
    /// NodeRestriction allows) and annotations.
    pub labels: bool,
}

/// Metadata the server owns: what a node sends for these is not what is stored.
const SERVER_META: [&str; 6] = [
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
];

/// Labels a kubelet may set on its own Node (`kubeletapis.IsKubeletLabel`).
const KUBELET_LABELS: [&str; 11] = [
    "kubernetes.io/hostname",
    "kubernetes.io/arch",
    "kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
];

fn in_namespace(ns: &str, domain: &str) -> bool {
    ns == domain || ns.strip_suffix(domain).is_some_and(|p| p.ends_with('.'))
}

/// NodeRestriction's `getForbiddenLabels`: a node may not set `node-restriction.kubernetes.io`
/// labels, nor kubernetes.io and k8s.io ones other than kubelet's.
fn forbidden_label(key: &str) -> bool {
    let ns = key.split_once('/').map_or("", |(p, _)| p);
    if in_namespace(ns, "node-restriction.kubernetes.io") {
        return true;
    }
    let kubernetes = in_namespace(ns, "kubernetes.io") || in_namespace(ns, "k8s.io");
    let kubelet = KUBELET_LABELS.contains(&key)
        || in_namespace(ns, "kubelet.kubernetes.io")
        || in_namespace(ns, "node.kubernetes.io");
    kubernetes && !kubelet
}

/// Keys whose values differ between two string maps (either may be absent).
fn modified(a: &Value, b: &Value) -> BTreeSet<String> {
    let empty = Map::new();
    let (a, b) = (
        a.as_object().unwrap_or(&empty),
        b.as_object().unwrap_or(&empty),
    );
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .chain(b.iter().filter(|(k, v)| a.get(*k) != Some(v)))
        .map(|(k, _)| k.clone())
        .collect()
}

fn list(keys: &BTreeSet<String>) -> String {
    keys.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// The Status of a refusal of object `name` (`kind` `Node`, resource `nodes`).
fn refused(r: Refusal, kind: &str, plural: &str, name: &str) -> StatusError {
    StatusError(r.status(kind, plural, name))
}

/// The authorizer's denial, worded as the apiserver words it: `<resource> "<name>" is
/// forbidden: User "system:node:<node>" cannot <verb> resource "<resource>[/<sub>]" in API
/// group "<group>" (in the namespace "<ns>" | at the cluster scope): <reason>`.
#[allow(clippy::too_many_arguments)]
pub fn not_authorized(
    node: &str,
    verb: &str,
    resource: &str,
    subresource: &str,
    group: &str,
    namespace: &str,
    name: &str,
    reason: &str,
) -> StatusError {
    let full = if subresource.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}/{subresource}")
    };
    let scope = if namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace {namespace:?}")
    };
    let qualified = if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    };
    let user = proto::node_common_name(node);
    let mut details = json!({ "name": name, "kind": resource });
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    StatusError(proto::objresp::status(
        403,
        "Forbidden",
        &format!("{qualified} {name:?} is forbidden: User {user:?} cannot {verb} resource {full:?} in API group {group:?} {scope}: {reason}"),
        details,
    ))
}

/// NodeRestriction's answer to node `node` writing node `other`.
pub fn other_node(node: &str, other: &str) -> StatusError {
    refused(
        Refusal::forbidden(format!(
            "node {node:?} is not allowed to modify node {other:?}"
        )),
        "Node",
        "nodes",
        other,
    )
}

/// A patch or object from a node, parsed within the size and depth limits.
pub fn parse(bytes: &[u8], kind: &str, plural: &str, name: &str) -> Result<Value, StatusError> {
    proto::limits::parse_json(bytes).map_err(|e| {
        let r = match e {
            JsonError::Limit(LimitError::TooLarge { len, .. }) => Refusal::too_large(len),
            JsonError::Limit(LimitError::TooDeep { max }) => Refusal::invalid(format!(
                "the patch is nested deeper than the limit of {max} levels (MAX_JSON_DEPTH)"
            )),
            JsonError::Syntax(e) => Refusal::bad_request(format!("invalid JSON document: {e}")),
        };
        refused(r, kind, plural, name)
    })
}

/// The checks a status write shares for nodes and pods: `merged` (the stored object with the
/// node's patch applied) may differ from `current` only in `status`, and in labels and
/// annotations when `labels` allows; server-owned metadata and unknown top-level fields are
/// put back as they were. `what` names the writer for messages (`node "edge0"`).
fn status_only(
    node: &str,
    current: &Value,
    merged: &mut Value,
    kind: &str,
    plural: &str,
    labels: LabelRule,
) -> Result<(), StatusError> {
    let name = current["metadata"]["name"].as_str().unwrap_or("");
    let no = |r: Refusal| refused(r, kind, plural, name);
    let shape = |field: &str, v: &Value| {
        if v.is_object() || v.is_null() {
            Ok(())
        } else {
            Err(no(Refusal::invalid(format!("{field}: must be an object"))))
        }
    };
    if !merged.is_object() {
        return Err(no(Refusal::invalid("patch: must be an object")));
    }
    for field in ["metadata", "spec", "status"] {
        shape(field, &merged[field])?;
    }
    let (cur_meta, new_meta) = (&current["metadata"], &merged["metadata"]);
    let new_name = new_meta["name"].as_str().unwrap_or("");
    if new_name != name {
        return Err(no(Refusal::bad_request(format!(
            "the name of the object ({new_name}) does not match the name on the URL ({name})"
        ))));
    }
    let (uid, new_uid) = (&cur_meta["uid"], &new_meta["uid"]);
    if !new_uid.is_null() && new_uid != uid {
        return Err(StatusError(proto::objresp::status(
            409,
            "Conflict",
            &format!(
                "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                new_uid.as_str().unwrap_or(""),
                uid.as_str().unwrap_or("")
            ),
            json!({ "name": name, "kind": plural }),
        )));
    }
    // Labels, then annotations, then the rest of metadata, then spec.
    let changed = modified(&cur_meta["labels"], &new_meta["labels"]);
    match labels {
        _ if changed.is_empty() => {}
        LabelRule::Node { allowed: true } => {
            let bad: BTreeSet<String> = changed.into_iter().filter(|k| forbidden_label(k)).collect();
            if !bad.is_empty() {
                return Err(no(Refusal::forbidden(format!(
                    "is not allowed to modify labels: {}",
                    list(&bad)
                ))));
            }
        }
        LabelRule::Node { allowed: false } => {
            return Err(no(Refusal::forbidden(format!(
                "is not allowed to modify labels: {} (cloudcore serve --allow-node-labels lets a node change its own)",
                list(&changed)
            ))))
        }
        LabelRule::Pod => {
            return Err(no(Refusal::forbidden(format!(
                "node {node:?} cannot update labels through pod status"
            ))))
        }
    }
    let changed = modified(&cur_meta["annotations"], &new_meta["annotations"]);
    if !changed.is_empty() && labels != (LabelRule::Node { allowed: true }) {
        return Err(no(Refusal::forbidden(format!(
            "node {node:?} is not allowed to modify annotations: {}{}",
            list(&changed),
            if labels == LabelRule::Pod {
                ""
            } else {
                " (cloudcore serve --allow-node-labels lets a node change its own)"
            }
        ))));
    }
    let rest = |m: &Value| {
        let mut m = m.as_object().cloned().unwrap_or_default();
        for k in SERVER_META.iter().chain(&["labels", "annotations"]) {
            m.remove(*k);
        }
        m
    };
    let (a, b) = (rest(cur_meta), rest(new_meta));
    if a != b {
        let keys: BTreeSet<String> = a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .chain(b.iter().filter(|(k, v)| a.get(*k) != Some(v)))
            .map(|(k, _)| format!("metadata.{k}"))
            .collect();
        return Err(no(Refusal::forbidden(format!(
            "node {node:?} is not allowed to modify {}",
            list(&keys)
        ))));
    }
    let spec = |v: &Value| v.as_object().cloned().unwrap_or_default();
    let (a, b) = (spec(&current["spec"]), spec(&merged["spec"]));
    if a != b {
        if kind == "Node" && a.get("taints") != b.get("taints") {
            return Err(no(Refusal::forbidden(format!(
                "node {node:?} is not allowed to modify taints"
            ))));
        }
        let keys: BTreeSet<String> = a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .chain(b.iter().filter(|(k, v)| a.get(*k) != Some(v)))
            .map(|(k, _)| format!("spec.{k}"))
            .collect();
        return Err(no(Refusal::forbidden(format!(
            "node {node:?} is not allowed to modify {}",
            list(&keys)
        ))));
    }
    // What the server owns, as it was; a Node and a Pod have no other top-level fields.
    for k in SERVER_META {
        match cur_meta.get(k) {
            Some(v) => merged["metadata"][k] = v.clone(),
            None => {
                if let Some(m) = merged["metadata"].as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
    if let Some(m) = merged.as_object_mut() {
        m.retain(|k, _| {
            matches!(
                k.as_str(),
                "kind" | "apiVersion" | "metadata" | "spec" | "status"
            )
        });
        for k in ["kind", "apiVersion"] {
            match current.get(k) {
                Some(v) => {
                    m.insert(k.to_owned(), v.clone());
                }
                None => {
                    m.remove(k);
                }
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LabelRule {
    Node { allowed: bool },
    Pod,
}

/// `patch null/nodepatch/<node>` (and the legacy and `update` paths): `merged` is the stored
/// Node with the node's patch applied; on success it is what may be stored (defaults applied,
/// server-owned fields as they were, within the limits).
pub fn node_update(
    node: &str,
    current: &Value,
    merged: &mut Value,
    writes: NodeWrites,
) -> Result<(), StatusError> {
    status_only(
        node,
        current,
        merged,
        "Node",
        "nodes",
        LabelRule::Node {
            allowed: writes.labels,
        },
    )?;
    cloudstore::defaults::node(merged);
    limits::check_stored(merged, Some(current)).map_err(|r| refused(r, "Node", "nodes", node))
}

/// `insert null/node/<node>`: the Node to store. A first registration is taken as sent (a
/// node registers its own labels, as upstream's cloudcore creates them for it), minus what
/// the server owns. A registration of a node that exists changes only its status: upstream
/// answers AlreadyExists and the kubelet reports its status next; identity, labels,
/// annotations and spec stay as they are.
pub fn node_registration(
    node: &str,
    current: Option<&Value>,
    mut sent: Value,
) -> Result<Value, StatusError> {
    let sent_name = sent["metadata"]["name"].as_str().unwrap_or("").to_owned();
    if sent_name != node {
        return Err(other_node(node, &sent_name));
    }
    let status_ok = sent["status"].is_object() || sent["status"].is_null();
    if !sent.is_object() || !sent["metadata"].is_object() || !status_ok {
        return Err(refused(
            Refusal::invalid("metadata and status must be objects"),
            "Node",
            "nodes",
            node,
        ));
    }
    let mut out = match current {
        Some(cur) => {
            let mut n = cur.clone();
            n["status"] = sent["status"].take();
            n
        }
        None => {
            for k in SERVER_META
                .iter()
                .chain(&["deletionTimestamp", "deletionGracePeriodSeconds"])
            {
                if let Some(m) = sent["metadata"].as_object_mut() {
                    m.remove(*k);
                }
            }
            sent
        }
    };
    cloudstore::defaults::node(&mut out);
    limits::check_stored(&out, current).map_err(|r| refused(r, "Node", "nodes", node))?;
    Ok(out)
}

/// A status patch from `node` for its pod `current`: refused unless it changes only status
/// (a uid in the patch is kubelet's precondition). Kubelet's own patches
/// (`{"metadata":{"uid":…},"status":…}`) skip the merge that checking anything else needs.
pub fn pod_status(node: &str, current: &Value, patch: &Value) -> Result<(), StatusError> {
    let name = current["metadata"]["name"].as_str().unwrap_or("");
    let Some(p) = patch.as_object() else {
        return Err(refused(
            Refusal::bad_request("invalid JSON document: a patch must be an object"),
            "Pod",
            "pods",
            name,
        ));
    };
    let only_uid = |m: &Value| m.as_object().is_some_and(|m| m.keys().all(|k| k == "uid"));
    let simple = p.keys().all(|k| k == "status" || k == "metadata")
        && p.get("metadata").is_none_or(only_uid);
    let mut merged = if simple {
        let mut m = current.clone();
        if let Some(uid) = p.get("metadata").and_then(|m| m.get("uid")) {
            m["metadata"]["uid"] = uid.clone();
        }
        m
    } else {
        smp::apply(current, patch, &smp::schema::POD).map_err(|e| {
            StatusError(proto::objresp::status(
                e.code,
                if e.code == 500 {
                    "InternalError"
                } else {
                    "BadRequest"
                },
                &e.message,
                json!({ "name": name, "kind": "pods" }),
            ))
        })?
    };
    status_only(node, current, &mut merged, "Pod", "pods", LabelRule::Pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Value {
        json!({"kind": "Node", "apiVersion": "v1",
            "metadata": {"name": "edge0", "uid": "u0", "resourceVersion": "7",
                "labels": {"kubernetes.io/hostname": "edge0", "node-role.kubernetes.io/edge": ""},
                "annotations": {"a": "1"}},
            "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {"phase": "Running"}})
    }

    fn patched(patch: Value) -> Value {
        smp::apply(&node(), &patch, &smp::schema::NODE).unwrap()
    }

    fn update(patch: Value, labels: bool) -> Result<Value, Value> {
        let mut m = patched(patch);
        node_update("edge0", &node(), &mut m, NodeWrites { labels })
            .map(|()| m)
            .map_err(|e| e.0)
    }

    #[test]
    fn a_node_may_write_its_status_and_nothing_else_by_default() {
        let n = update(json!({"status": {"phase": "Pending", "x": [1]}}), false).unwrap();
        assert_eq!(n["status"]["x"], json!([1]));
        assert_eq!(n["metadata"]["uid"], "u0");
        for (patch, code, message) in [
            (
                json!({"metadata": {"name": "good"}}),
                400,
                "the name of the object (good) does not match the name on the URL (edge0)",
            ),
            (
                json!({"metadata": {"uid": "other"}}),
                409,
                "Precondition failed: UID in precondition: other, UID in object meta: u0",
            ),
            (
                json!({"spec": {"taints": []}}),
                403,
                "nodes \"edge0\" is forbidden: node \"edge0\" is not allowed to modify taints",
            ),
            (
                json!({"spec": {"podCIDR": "10.0.0.0/24", "unschedulable": true}}),
                403,
                "nodes \"edge0\" is forbidden: node \"edge0\" is not allowed to modify spec.podCIDR, spec.unschedulable",
            ),
            (
                json!({"metadata": {"labels": {"good": "yes"}}}),
                403,
                "nodes \"edge0\" is forbidden: is not allowed to modify labels: good (cloudcore serve --allow-node-labels lets a node change its own)",
            ),
            (
                json!({"metadata": {"annotations": {"a": null}}}),
                403,
                "nodes \"edge0\" is forbidden: node \"edge0\" is not allowed to modify annotations: a (cloudcore serve --allow-node-labels lets a node change its own)",
            ),
            (
                json!({"metadata": {"finalizers": ["x"]}}),
                403,
                "nodes \"edge0\" is forbidden: node \"edge0\" is not allowed to modify metadata.finalizers",
            ),
            (json!({"metadata": "x"}), 422, "Node \"edge0\" is invalid: metadata: must be an object"),
            (json!({"status": [1]}), 422, "Node \"edge0\" is invalid: status: must be an object"),
        ] {
            let e = update(patch.clone(), false).unwrap_err();
            assert_eq!((e["code"].as_u64(), e["message"].as_str()), (Some(code), Some(message)), "{patch}");
        }
        // Server-owned fields the patch names are put back, not refused.
        let n = update(
            json!({"metadata": {"resourceVersion": "1", "creationTimestamp": "x"}, "extra": 1}),
            false,
        )
        .unwrap();
        assert_eq!(n["metadata"]["resourceVersion"], "7");
        assert!(n["metadata"].get("creationTimestamp").is_none());
        assert!(n.get("extra").is_none());
    }

    #[test]
    fn with_the_config_labels_follow_node_restriction() {
        let n = update(
            json!({"metadata": {"labels": {"site": "a", "kubernetes.io/hostname": "h",
                "topology.kubernetes.io/zone": "z", "x.node.kubernetes.io/y": "1"}, "annotations": {"b": "2"}}}),
            true,
        )
        .unwrap();
        assert_eq!(n["metadata"]["labels"]["site"], "a");
        assert_eq!(n["metadata"]["annotations"]["b"], "2");
        for key in [
            "node-role.kubernetes.io/master",
            "node-restriction.kubernetes.io/trusted",
            "example.k8s.io/x",
        ] {
            let e = update(json!({"metadata": {"labels": {key: ""}}}), true).unwrap_err();
            assert_eq!(
                e["message"],
                format!("nodes \"edge0\" is forbidden: is not allowed to modify labels: {key}")
            );
        }
        // Removing a reserved label is modifying it.
        let e = update(
            json!({"metadata": {"labels": {"node-role.kubernetes.io/edge": null}}}),
            true,
        )
        .unwrap_err();
        assert_eq!(e["code"], 403);
        // Limits hold whatever the config.
        let e = update(json!({"metadata": {"labels": {"bad key": ""}}}), true).unwrap_err();
        assert_eq!(e["code"], 422);
    }

    #[test]
    fn registration_keeps_an_existing_node_and_checks_a_new_one() {
        let mut sent = node();
        sent["metadata"]["labels"] = json!({"evil": "1"});
        sent["spec"] = json!({});
        sent["status"] = json!({"phase": "Pending"});
        let n = node_registration("edge0", Some(&node()), sent.clone()).unwrap();
        assert_eq!(n["metadata"]["labels"], node()["metadata"]["labels"]);
        assert_eq!(n["spec"], node()["spec"]);
        assert_eq!(n["status"]["phase"], "Pending");
        let n = node_registration("edge0", None, sent.clone()).unwrap();
        assert_eq!(n["metadata"]["labels"]["evil"], "1");
        assert!(n["metadata"].get("uid").is_none(), "the server makes those");
        let e = node_registration("edge1", None, sent.clone()).unwrap_err();
        assert_eq!(
            e.0["message"],
            "nodes \"edge0\" is forbidden: node \"edge1\" is not allowed to modify node \"edge0\""
        );
        sent["status"]["big"] = json!("x".repeat(proto::limits::MAX_OBJECT_BYTES));
        let e = node_registration("edge0", Some(&node()), sent).unwrap_err();
        assert_eq!(e.0["reason"], "RequestEntityTooLarge");
    }

    #[test]
    fn pod_status_patches_may_carry_kubelets_uid_precondition_only() {
        let pod = json!({"metadata": {"name": "p", "uid": "u1", "labels": {"app": "a"}},
            "spec": {"nodeName": "edge0", "containers": [{"name": "c", "image": "i"}]}});
        assert!(pod_status(
            "edge0",
            &pod,
            &json!({"metadata": {"uid": "u1"}, "status": {"phase": "Running"}})
        )
        .is_ok());
        assert!(
            pod_status(
                "edge0",
                &pod,
                &json!({"status": {}, "metadata": {"labels": {"app": "a"}}})
            )
            .is_ok(),
            "no change is no change"
        );
        for (patch, code, message) in [
            (
                json!({"metadata": {"uid": "old"}, "status": {}}),
                409,
                "Precondition failed: UID in precondition: old, UID in object meta: u1",
            ),
            (
                json!({"metadata": {"labels": {"app": "b"}}}),
                403,
                "pods \"p\" is forbidden: node \"edge0\" cannot update labels through pod status",
            ),
            (
                json!({"spec": {"nodeName": "edge1"}}),
                403,
                "pods \"p\" is forbidden: node \"edge0\" is not allowed to modify spec.nodeName",
            ),
            (
                json!({"metadata": {"name": "q"}}),
                400,
                "the name of the object (q) does not match the name on the URL (p)",
            ),
            (
                json!([1]),
                400,
                "invalid JSON document: a patch must be an object",
            ),
        ] {
            let e = pod_status("edge0", &pod, &patch).unwrap_err().0;
            assert_eq!(
                (e["code"].as_u64(), e["message"].as_str()),
                (Some(code), Some(message)),
                "{patch}"
            );
        }
    }

    #[test]
    fn patches_are_parsed_within_the_limits() {
        let deep = format!("{{\"status\":{}1{}}}", "[".repeat(100), "]".repeat(100));
        let e = parse(deep.as_bytes(), "Node", "nodes", "edge0")
            .unwrap_err()
            .0;
        assert_eq!(
            (e["code"].as_u64(), e["reason"].as_str()),
            (Some(422), Some("Invalid"))
        );
        let big = format!(
            "{{\"status\":{{\"x\":\"{}\"}}}}",
            "x".repeat(proto::limits::MAX_OBJECT_BYTES)
        );
        let e = parse(big.as_bytes(), "Node", "nodes", "edge0")
            .unwrap_err()
            .0;
        assert_eq!(e["code"], 413);
        assert_eq!(
            parse(b"nope", "Node", "nodes", "edge0").unwrap_err().0["code"],
            400
        );
    }

    #[test]
    fn authorizer_denials_read_as_the_apiservers() {
        let e = not_authorized(
            "edge0",
            "patch",
            "pods",
            "status",
            "",
            "default",
            "theirs",
            "no relationship found between node 'edge0' and this object",
        );
        assert_eq!(e.0["message"], "pods \"theirs\" is forbidden: User \"system:node:edge0\" cannot patch resource \"pods/status\" in API group \"\" in the namespace \"default\": no relationship found between node 'edge0' and this object");
        let e = not_authorized(
            "edge0",
            "update",
            "leases",
            "",
            "coordination.k8s.io",
            "kube-node-lease",
            "edge1",
            "can only access node lease with the same name as the requesting node",
        );
        assert!(e.0["message"].as_str().unwrap().starts_with("leases.coordination.k8s.io \"edge1\" is forbidden: User \"system:node:edge0\" cannot update resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"kube-node-lease\""));
    }
}
