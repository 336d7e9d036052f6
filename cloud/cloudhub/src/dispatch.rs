//! What CloudHub does with each message from an edge (§2.7 and §4 of the protocol spec), as a
//! sans-IO function: registry in, reply out.
//!
//! Served: keepalive, ACKs, node register/query/update/patch, legacy nodestatus, lease
//! query/insert/update, pod status (`podpatch`, legacy `podstatus`), pod deletion by its node,
//! and configmap/secret queries for objects the node's pods use. Any other request is answered
//! with a `NotImplemented` status so an upstream edgecore does not sit on its 60 s reply
//! timeout; fire-and-forget messages (events, `membership/detail`, uploads) are dropped as
//! upstream cloudcore drops them.
//!
//! A node may only touch its own node and lease objects and the pods bound to it; what it may
//! change in them is [`crate::admission`]'s whitelist, refused as the apiserver refuses it.

use std::time::SystemTime;

use proto::{objresp, Group, Message, ModuleName, Operation, ResourceKind, ResourcePath};
use serde_json::{json, Value};

use cloudstore::{kinds, CloudStore, Kind, ObjectKey};

use crate::admission;
use crate::events::Events;
use crate::nodes::{NodeRegistry, StatusError};

/// The state a message may read or change.
pub struct Ctx<'a> {
    pub nodes: &'a mut NodeRegistry,
    pub store: &'a mut CloudStore,
    pub events: &'a mut Events,
    /// Signs service account tokens.
    pub ca: &'a pki::Ca,
}

/// The issuer and default audience of service account tokens (a cluster's
/// `--service-account-issuer` default).
pub const TOKEN_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Shortest token lifetime granted (the apiserver's minimum, 10 minutes).
pub const MIN_TOKEN_SECS: u64 = 600;
/// Longest token lifetime granted.
pub const MAX_TOKEN_SECS: u64 = 48 * 3600;

/// `query <ns>/serviceaccounttoken/<account>` with a TokenRequest (§4.5): a token is minted
/// only for a pod bound to this node that runs as that account, bound to that pod. Answered
/// with the TokenRequest and its status, without a resourceversion (upstream's shape).
fn token_query(
    ctx: &mut Ctx,
    node: &str,
    ns: &str,
    account: &str,
    msg: &Message,
    now: SystemTime,
) -> Message {
    let refused = |code: u16, reason: &str, message: String| {
        let st = objresp::status(
            code,
            reason,
            &message,
            json!({ "name": account, "kind": "serviceaccounts" }),
        );
        reply(msg, json!({ "ErrStatus": st }), "", now)
    };
    let spec = &msg.content["spec"];
    let bound = &spec["boundObjectRef"];
    if bound["kind"] != "Pod" {
        return refused(
            400,
            "BadRequest",
            "a node may only request tokens bound to a pod".into(),
        );
    }
    let pod_name = bound["name"].as_str().unwrap_or("");
    let pod_uid = bound["uid"].as_str().unwrap_or("");
    let key = match own_pod(ctx.store, node, ns, pod_name, ("create", "token")) {
        Ok(k) => k,
        Err(StatusError(st)) => return reply(msg, json!({ "ErrStatus": st }), "", now),
    };
    let pod = &ctx.store.get(&key).expect("checked by own_pod").object;
    let pod_account = pod["spec"]["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    if !pod_uid.is_empty() && pod["metadata"]["uid"].as_str() != Some(pod_uid) {
        return refused(
            409,
            "Conflict",
            format!("pod {ns}/{pod_name} has another uid"),
        );
    }
    if pod_account != account {
        return refused(
            403,
            "Forbidden",
            format!("pod {ns}/{pod_name} runs as service account {pod_account:?}, not {account:?}"),
        );
    }
    let secs = spec["expirationSeconds"]
        .as_u64()
        .unwrap_or(3600)
        .clamp(MIN_TOKEN_SECS, MAX_TOKEN_SECS);
    let audiences = match spec["audiences"].as_array() {
        Some(a) if !a.is_empty() => Value::Array(a.clone()),
        _ => json!([TOKEN_ISSUER]),
    };
    let iat = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let exp = iat + secs as i64;
    let claims = json!({
        "aud": audiences, "exp": exp, "iat": iat, "nbf": iat, "iss": TOKEN_ISSUER,
        "jti": proto::message::new_msg_id(),
        "sub": format!("system:serviceaccount:{ns}:{account}"),
        "kubernetes.io": {
            "namespace": ns,
            "node": { "name": node },
            "pod": { "name": pod_name, "uid": pod["metadata"]["uid"] },
            "serviceaccount": { "name": account },
        },
    });
    let token = match ctx.ca.sign_es256(&claims) {
        Ok(t) => t,
        Err(e) => return refused(500, "InternalError", e.to_string()),
    };
    let answer = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": { "name": account, "namespace": ns, "creationTimestamp": proto::time::rfc3339(iat) },
        "spec": { "audiences": audiences, "expirationSeconds": secs, "boundObjectRef": bound },
        "status": { "token": token, "expirationTimestamp": proto::time::rfc3339(exp) },
    });
    reply(msg, answer, "", now)
}

fn now_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A reply as upstream's edgecontroller shapes it: source `edgecontroller`, group `resource`,
/// the request's resource, operation `response`, `parent_msg_id` = the request's id.
fn reply(req: &Message, content: Value, resource_version: &str, now: SystemTime) -> Message {
    let mut m = req.response_to(content, now_ms(now));
    m.route.source = ModuleName::EdgeController;
    m.route.group = Group::Resource;
    m.header.resourceversion = resource_version.to_owned();
    m
}

fn rv_of(obj: &Value) -> String {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

fn object_reply(req: &Message, result: Result<Value, StatusError>, now: SystemTime) -> Message {
    match result {
        Ok(obj) => {
            let rv = rv_of(&obj);
            reply(req, objresp::ok(obj), &rv, now)
        }
        Err(StatusError(st)) => reply(req, objresp::err(st), "", now),
    }
}

/// A request for another node's Node or Lease, refused as the node authorizer and
/// NodeRestriction refuse it.
fn other_nodes(node: &str, path: &ResourcePath, op: &Operation) -> StatusError {
    let ResourcePath::Object {
        kind,
        name: Some(name),
        ..
    } = path
    else {
        return admission::other_node(node, "");
    };
    let verb = match op {
        Operation::Insert => "create",
        Operation::Update => "update",
        Operation::Patch => "patch",
        Operation::Delete => "delete",
        _ => "get",
    };
    match kind {
        ResourceKind::Lease => admission::not_authorized(
            node,
            verb,
            "leases",
            "",
            "coordination.k8s.io",
            proto::LEASE_NAMESPACE,
            name,
            "can only access node lease with the same name as the requesting node",
        ),
        _ if verb == "get" => admission::not_authorized(
            node,
            verb,
            "nodes",
            "",
            "",
            "",
            name,
            &format!("node '{node}' cannot read '{name}', only its own Node object"),
        ),
        _ => admission::other_node(node, name),
    }
}

/// What happened, for the session's bookkeeping.
#[derive(Debug, PartialEq)]
pub enum Effect {
    /// A keepalive: resets the session's keepalive timer.
    Keepalive,
    /// An acknowledgement of a message the cloud sent (by its id).
    Ack(String),
    /// The edge asked for its device membership (request id).
    MembershipDetail(String),
    /// The edge reported a device's twins (DeviceController follows its versions).
    TwinReport {
        namespace: String,
        name: String,
    },
    Other,
}

/// The pod `ns/name` if it is bound to `node`; otherwise the node authorizer's denial of
/// `verb` on `pods/<sub>` (`sub` may be empty).
fn own_pod(
    store: &CloudStore,
    node: &str,
    ns: &str,
    name: &str,
    (verb, sub): (&str, &str),
) -> Result<ObjectKey, StatusError> {
    let key = ObjectKey::new(Kind::Pod, ns, name);
    match store.get(&key) {
        None => Err(StatusError(objresp::not_found("pods", "", name))),
        Some(e) if e.object["spec"]["nodeName"].as_str() == Some(node) => Ok(key),
        Some(_) => Err(admission::not_authorized(
            node,
            verb,
            "pods",
            sub,
            "",
            ns,
            name,
            &format!("no relationship found between node '{node}' and this object"),
        )),
    }
}

/// A store failure as the Status the apiserver would answer: a refused object with its
/// reason, a patch error with its code, anything else an internal error.
fn store_err(e: cloudstore::StoreError) -> StatusError {
    use cloudstore::StoreError as E;
    StatusError(match e {
        E::Refused(r, key) => r.status(key.kind.name(), key.kind.plural(), &key.name),
        E::Patch(code, message) => objresp::status(
            code,
            if code == 500 {
                "InternalError"
            } else {
                "BadRequest"
            },
            &message,
            json!({}),
        ),
        e => objresp::status(500, "InternalError", &e.to_string(), json!({})),
    })
}

/// `patch <ns>/podpatch/<name>` (a strategic-merge patch as a JSON string, §4.4).
fn pod_patch(
    ctx: &mut Ctx,
    node: &str,
    ns: &str,
    name: &str,
    msg: &Message,
    now: SystemTime,
) -> Result<Value, StatusError> {
    let key = own_pod(ctx.store, node, ns, name, ("patch", "status"))?;
    let patch = admission::parse(&msg.content_bytes(), "Pod", "pods", name)?;
    let current = &ctx.store.get(&key).expect("checked by own_pod").object;
    admission::pod_status(node, current, &patch)?;
    let pod = ctx.store.patch_status(&key, &patch).map_err(store_err)?;
    let phase = pod["status"]["phase"].as_str().unwrap_or("").to_owned();
    ctx.events.record(
        &key,
        now,
        "StatusReported",
        format!("node {node} reports phase {phase}"),
    );
    Ok(pod)
}

/// Legacy `update <ns>/podstatus[/<name>]` with `PodStatusRequest`s (§4.4): answered `"OK"`.
fn legacy_pod_status(
    ctx: &mut Ctx,
    node: &str,
    ns: &str,
    msg: &Message,
    now: SystemTime,
) -> Message {
    let reqs: Vec<&Value> = match &msg.content {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    for r in reqs {
        let Some(name) = r["Name"].as_str() else {
            continue;
        };
        if let Ok(key) = own_pod(ctx.store, node, ns, name, ("update", "status")) {
            // Answered "OK" whatever happens, as upstream's legacy path answers.
            match ctx
                .store
                .patch_status(&key, &json!({ "status": r["Status"] }))
            {
                Ok(_) => ctx.events.record(
                    &key,
                    now,
                    "StatusReported",
                    format!("node {node} reports status (legacy)"),
                ),
                Err(e) => log::debug!("node {node}: legacy status of {key} refused: {e}"),
            }
        }
    }
    reply(msg, json!("OK"), "", now)
}

/// `delete <ns>/pod/<name>` from the node that ran it (graceful deletion's last step, §4.3).
fn pod_delete(
    ctx: &mut Ctx,
    node: &str,
    ns: &str,
    name: &str,
    msg: &Message,
    now: SystemTime,
) -> Message {
    let key = match own_pod(ctx.store, node, ns, name, ("delete", "")) {
        Ok(k) => k,
        Err(StatusError(st)) => return reply(msg, json!({ "ErrStatus": st }), "", now),
    };
    // The precondition uid comes as DeleteOptions or, from some versions, as a bare string.
    let want_uid = msg
        .content
        .as_str()
        .or_else(|| msg.content["preconditions"]["uid"].as_str())
        .unwrap_or("");
    let have_uid = ctx
        .store
        .get(&key)
        .map(|e| e.uid().to_owned())
        .unwrap_or_default();
    if !want_uid.is_empty() && want_uid != have_uid {
        let st = objresp::status(
            409,
            "Conflict",
            &format!("precondition failed: uid {want_uid} is not {have_uid}"),
            json!({}),
        );
        return reply(msg, json!({ "ErrStatus": st }), "", now);
    }
    match ctx.store.delete(&key) {
        Ok(_) => {
            ctx.events
                .record(&key, now, "Deleted", format!("deleted by node {node}"));
            reply(msg, json!("OK"), "", now)
        }
        Err(e) => reply(msg, json!({ "ErrStatus": store_err(e).0 }), "", now),
    }
}

/// `query <ns>/configmap|secret/<name>`: answered with the object when a pod on this node uses
/// it (§4.5); the reply is a plain object or `{"ErrStatus":…}`.
fn object_query(
    ctx: &mut Ctx,
    node: &str,
    kind: Kind,
    ns: &str,
    name: &str,
    msg: &Message,
    now: SystemTime,
) -> Message {
    let key = ObjectKey::new(kind, ns, name);
    let Some(entry) = ctx.store.get(&key) else {
        return reply(
            msg,
            json!({ "ErrStatus": objresp::not_found(kind.plural(), "", name) }),
            "",
            now,
        );
    };
    let used = ctx.store.list(Kind::Pod, Some(ns)).any(|(_, p)| {
        p.object["spec"]["nodeName"].as_str() == Some(node) && {
            let (cms, secrets) = kinds::pod_references(&p.object);
            let names = if kind == Kind::ConfigMap {
                cms
            } else {
                secrets
            };
            names.iter().any(|n| n == name)
        }
    });
    if !used {
        let st = objresp::status(
            403,
            "Forbidden",
            &format!("no pod on node {node:?} uses {} {ns}/{name}", kind.name()),
            json!({}),
        );
        return reply(msg, json!({ "ErrStatus": st }), "", now);
    }
    let mut obj = entry.object.clone();
    obj["apiVersion"] = json!("v1");
    obj["kind"] = json!(kind.name());
    let answer = reply(msg, obj, &entry.rv().to_string(), now);
    // Only an object stored before the object limit can make an answer this large: the edge
    // would refuse the frame and ask again on every reconnect. The same rule as delivery
    // (edgecontroller): what fits in the edge's frame goes.
    if proto::limits::json_len(&answer) >= proto::limits::EDGE_MAX_FRAME_BYTES {
        let bytes = proto::limits::json_len(&entry.object);
        let st =
            cloudstore::limits::Refusal::too_large(bytes).status(kind.name(), kind.plural(), name);
        return reply(msg, json!({ "ErrStatus": st }), "", now);
    }
    answer
}

/// Handles one message from `node`. Returns what it meant and the reply to send, if any.
pub fn upstream(
    ctx: &mut Ctx,
    node: &str,
    msg: &Message,
    now: SystemTime,
) -> (Effect, Option<Message>) {
    ctx.nodes.heard_from(node, now);
    match &msg.route.operation {
        Operation::Keepalive => return (Effect::Keepalive, None),
        Operation::Response => return (Effect::Ack(msg.header.parent_msg_id.clone()), None),
        Operation::Error => {
            log::debug!(
                "node {node} reported an error for {}: {}",
                msg.route.resource,
                msg.content
            );
            return (Effect::Other, None);
        }
        Operation::Upload if msg.route.group == Group::User => {
            // No router is configured (cloudcore has none yet): log what arrived, as the
            // place a router would pick it up.
            log::debug!(
                "node {node} uploaded {} bytes on topic {}",
                msg.content_bytes().len(),
                msg.route.resource
            );
            return (Effect::Other, None);
        }
        _ => {}
    }
    let path = match ResourcePath::parse(&msg.route.resource) {
        Ok(p) => p,
        Err(e) => {
            log::warn!("node {node} sent an unusable resource: {e}");
            let st = objresp::status(400, "BadRequest", &e.to_string(), json!({}));
            return (Effect::Other, Some(reply(msg, objresp::err(st), "", now)));
        }
    };
    let op = &msg.route.operation;
    let answer = match &path {
        // Upstream ignores it and the edge asks again every minute; DeviceController answers
        // it with the node's membership.
        ResourcePath::MembershipDetail => {
            return (Effect::MembershipDetail(msg.header.msg_id.clone()), None)
        }
        ResourcePath::Device {
            namespace,
            name,
            suffix,
        } if *op == Operation::Update => {
            let key = ObjectKey::new(Kind::Device, namespace, name);
            match devicecontroller::report(ctx.store, node, namespace, name, suffix, msg) {
                Ok(()) => ctx.events.record(
                    &key,
                    now,
                    "Reported",
                    format!("node {node} reported {suffix}"),
                ),
                Err(e) => {
                    log::warn!("node {node}: device report for {namespace}/{name} dropped: {e}")
                }
            }
            let reply = devicecontroller::report_reply(msg, now_ms(now));
            let effect = if suffix == "twin/edge_updated" {
                Effect::TwinReport {
                    namespace: namespace.clone(),
                    name: name.clone(),
                }
            } else {
                Effect::Other
            };
            return (effect, Some(reply));
        }
        ResourcePath::Object {
            kind,
            name: Some(name),
            ..
        } if (is_node_kind(kind) || *kind == ResourceKind::Lease) && name != node => {
            Some(object_reply(msg, Err(other_nodes(node, &path, op)), now))
        }
        ResourcePath::Object {
            kind: ResourceKind::Node,
            ..
        } => match op {
            Operation::Insert => Some(object_reply(
                msg,
                ctx.nodes.register(node, msg.content.clone(), now),
                now,
            )),
            Operation::Query => Some(match ctx.nodes.get(node, now, std::time::Duration::MAX) {
                Some(n) => {
                    let rv = rv_of(&n);
                    reply(msg, n, &rv, now)
                }
                None => reply(
                    msg,
                    json!({ "ErrStatus": objresp::not_found("nodes", "", node) }),
                    "",
                    now,
                ),
            }),
            Operation::Update => {
                // Upstream merges only labels and annotations into the live node (§4.1 step 5),
                // and only keys it was sent: nothing is removed (a null in a merge patch
                // would remove; Go reads it as "").
                let meta = &msg.content["metadata"];
                let mut patch = json!({ "metadata": {} });
                for field in ["labels", "annotations"] {
                    if let Some(m) = meta[field].as_object() {
                        let m: serde_json::Map<String, Value> = m
                            .iter()
                            .map(|(k, v)| {
                                (k.clone(), if v.is_null() { json!("") } else { v.clone() })
                            })
                            .collect();
                        patch["metadata"][field] = Value::Object(m);
                    }
                }
                let patch = serde_json::to_vec(&patch).unwrap_or_default();
                Some(match ctx.nodes.patch(node, &patch, now) {
                    Ok(_) => reply(msg, json!("OK"), "", now),
                    Err(StatusError(st)) => reply(msg, json!({ "ErrStatus": st }), "", now),
                })
            }
            _ => Some(not_implemented(msg, now)),
        },
        ResourcePath::Object {
            kind: ResourceKind::NodePatch,
            ..
        } if *op == Operation::Patch => Some(object_reply(
            msg,
            ctx.nodes.patch(node, &msg.content_bytes(), now),
            now,
        )),
        ResourcePath::Object {
            kind: ResourceKind::NodeStatus,
            ..
        } => Some(legacy_node_status(ctx.nodes, node, msg, now)),
        ResourcePath::Object {
            kind: ResourceKind::Lease,
            ..
        } => match op {
            Operation::Query => Some(object_reply(msg, ctx.nodes.lease(node), now)),
            Operation::Insert | Operation::Update => Some(object_reply(
                msg,
                ctx.nodes
                    .write_lease(node, msg.content.clone(), *op == Operation::Insert, now),
                now,
            )),
            _ => Some(not_implemented(msg, now)),
        },
        ResourcePath::Object {
            kind: ResourceKind::Event,
            ..
        } => None, // fire and forget upstream too
        ResourcePath::Object {
            namespace,
            kind: ResourceKind::PodPatch,
            name: Some(name),
        } if *op == Operation::Patch => Some(object_reply(
            msg,
            pod_patch(ctx, node, namespace, name, msg, now),
            now,
        )),
        ResourcePath::Object {
            namespace,
            kind: ResourceKind::PodStatus,
            ..
        } if *op == Operation::Update => Some(legacy_pod_status(ctx, node, namespace, msg, now)),
        ResourcePath::Object {
            namespace,
            kind: ResourceKind::Pod,
            name: Some(name),
        } if *op == Operation::Delete => Some(pod_delete(ctx, node, namespace, name, msg, now)),
        ResourcePath::Object {
            namespace,
            kind: ResourceKind::ServiceAccountToken,
            name: Some(account),
        } if *op == Operation::Query => Some(token_query(ctx, node, namespace, account, msg, now)),
        ResourcePath::Object {
            namespace,
            kind: k @ (ResourceKind::ConfigMap | ResourceKind::Secret),
            name: Some(name),
        } if *op == Operation::Query => {
            let kind = if *k == ResourceKind::ConfigMap {
                Kind::ConfigMap
            } else {
                Kind::Secret
            };
            Some(object_query(ctx, node, kind, namespace, name, msg, now))
        }
        _ => match op {
            Operation::Query
            | Operation::Insert
            | Operation::Update
            | Operation::Patch
            | Operation::Delete => Some(not_implemented(msg, now)),
            _ => None,
        },
    };
    (Effect::Other, answer)
}

fn is_node_kind(k: &ResourceKind) -> bool {
    matches!(
        k,
        ResourceKind::Node | ResourceKind::NodePatch | ResourceKind::NodeStatus
    )
}

fn not_implemented(msg: &Message, now: SystemTime) -> Message {
    let st = objresp::status(
        501,
        "NotImplemented",
        &format!(
            "cloudcore does not serve {} {} yet",
            msg.route.operation, msg.route.resource
        ),
        json!({}),
    );
    let content = if msg.route.operation == Operation::Query {
        json!({ "ErrStatus": st })
    } else {
        objresp::err(st)
    };
    reply(msg, content, "", now)
}

/// Pre-v1.12 edges: `insert <ns>/nodestatus/<n>` with a Node, `update` with a
/// `NodeStatusRequest` whose `Status` replaces the node status; both answered `"OK"` (§4.1).
fn legacy_node_status(
    reg: &mut NodeRegistry,
    node: &str,
    msg: &Message,
    now: SystemTime,
) -> Message {
    let result = match msg.route.operation {
        Operation::Insert => reg.register(node, msg.content.clone(), now).map(|_| ()),
        Operation::Update => {
            let patch = json!({ "status": msg.content["Status"] });
            reg.patch(node, &serde_json::to_vec(&patch).unwrap_or_default(), now)
                .map(|_| ())
        }
        _ => return not_implemented(msg, now),
    };
    match result {
        Ok(()) => reply(msg, json!("OK"), "", now),
        Err(StatusError(st)) => reply(msg, json!(st["message"]), "", now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::objresp::Reply;

    fn parts(name: &str) -> (NodeRegistry, CloudStore, Events) {
        let p = std::env::temp_dir().join(format!("dispatch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        (
            NodeRegistry::new(10),
            CloudStore::open(&p).unwrap(),
            Events::default(),
        )
    }

    fn test_ca() -> &'static pki::Ca {
        static CA: std::sync::OnceLock<pki::Ca> = std::sync::OnceLock::new();
        CA.get_or_init(|| {
            let d = std::env::temp_dir().join(format!("dispatch-ca-{}", std::process::id()));
            pki::Ca::load_or_create(&d).unwrap()
        })
    }

    macro_rules! ctx {
        ($r:ident, $s:ident, $e:ident) => {
            &mut Ctx {
                nodes: &mut $r,
                store: &mut $s,
                events: &mut $e,
                ca: test_ca(),
            }
        };
    }

    fn edge_msg(op: Operation, resource: &str, content: Value) -> Message {
        Message::new(ModuleName::Edged, Group::Meta, op, resource, content, 0)
    }

    #[test]
    fn a_node_may_only_touch_itself() {
        let (mut reg, mut store, mut events) = parts("self");
        let t = SystemTime::now();
        let m = edge_msg(
            Operation::Insert,
            "null/node/edge1",
            json!({"metadata":{"name":"edge1"}}),
        );
        let (_, r) = upstream(ctx!(reg, store, events), "edge0", &m, t);
        let r = r.unwrap();
        assert!(matches!(
            Reply::from_content(&r.content),
            Reply::Failed { code: 403, .. }
        ));
        assert!(!reg.contains("edge1"));
        let m = edge_msg(Operation::Update, "kube-node-lease/lease/edge1", json!({}));
        let (_, r) = upstream(ctx!(reg, store, events), "edge0", &m, t);
        assert!(matches!(
            Reply::from_content(&r.unwrap().content),
            Reply::Failed { code: 403, .. }
        ));
    }

    #[test]
    fn a_node_update_merges_the_labels_it_sends_and_removes_none() {
        let (mut reg, mut store, mut events) = parts("node-update");
        reg.writes.labels = true;
        let t = SystemTime::now();
        let m = edge_msg(
            Operation::Insert,
            "null/node/edge0",
            json!({"metadata": {"name": "edge0", "labels": {"a": "1"}}, "status": {}}),
        );
        upstream(ctx!(reg, store, events), "edge0", &m, t)
            .1
            .unwrap();
        for (content, labels) in [
            (json!({"metadata": {"name": "edge0"}}), json!({"a": "1"})),
            (
                json!({"metadata": {"labels": {"b": "2"}}}),
                json!({"a": "1", "b": "2"}),
            ),
        ] {
            let m = edge_msg(Operation::Update, "null/node/edge0", content);
            let r = upstream(ctx!(reg, store, events), "edge0", &m, t)
                .1
                .unwrap();
            assert_eq!(r.content, json!("OK"));
            let n = reg.get("edge0", t, std::time::Duration::MAX).unwrap();
            assert_eq!(n["metadata"]["labels"], labels);
        }
    }

    #[test]
    fn a_lease_that_is_not_an_object_or_over_the_limits_is_refused() {
        let (mut reg, mut store, mut events) = parts("lease-shape");
        let t = SystemTime::now();
        let m = edge_msg(
            Operation::Insert,
            "null/node/edge0",
            json!({"metadata": {"name": "edge0"}, "status": {}}),
        );
        upstream(ctx!(reg, store, events), "edge0", &m, t)
            .1
            .unwrap();
        let lease = |v: Value| json!({"metadata": {"name": "edge0"}, "spec": v});
        let big = lease(json!({"holderIdentity": "x".repeat(proto::limits::MAX_OBJECT_BYTES)}));
        for (op, content, code) in [
            (Operation::Insert, json!(5), 422),
            (Operation::Insert, json!({"metadata": [1]}), 422),
            (Operation::Insert, big.clone(), 413),
            (Operation::Insert, lease(json!({})), 0),
            (Operation::Update, json!("x"), 422),
            (Operation::Update, big, 413),
        ] {
            let m = edge_msg(op.clone(), "kube-node-lease/lease/edge0", content.clone());
            let r = upstream(ctx!(reg, store, events), "edge0", &m, t)
                .1
                .unwrap();
            match Reply::from_content(&r.content) {
                Reply::Failed { code: c, .. } => assert_eq!(c, code, "{op:?}"),
                _ => assert_eq!(code, 0, "{op:?} accepted"),
            }
        }
        let kept = reg.lease("edge0").unwrap();
        assert_eq!(kept["spec"], json!({}), "state intact");
    }

    #[test]
    fn a_node_writes_only_its_status_within_the_limits() {
        let (mut reg, mut store, mut events) = parts("whitelist");
        let t = SystemTime::now();
        let m = edge_msg(
            Operation::Insert,
            "null/node/evil",
            json!({"metadata": {"name": "evil", "labels": {"role": "edge"}}, "status": {}}),
        );
        upstream(ctx!(reg, store, events), "evil", &m, t).1.unwrap();
        let patch =
            |reg: &mut NodeRegistry, store: &mut CloudStore, events: &mut Events, p: String| {
                let m = edge_msg(Operation::Patch, "null/nodepatch/evil", Value::String(p));
                let ctx = &mut Ctx {
                    nodes: reg,
                    store,
                    events,
                    ca: test_ca(),
                };
                let r = upstream(ctx, "evil", &m, t).1.unwrap();
                match Reply::from_content(&r.content) {
                    Reply::Failed { code, message, .. } => Err((code, message)),
                    other => Ok(other),
                }
            };
        let deep = format!("{}1{}", "[".repeat(124), "]".repeat(124));
        for (p, code) in [
            (json!({"metadata": {"name": "good"}}).to_string(), 400),
            (
                json!({"metadata": {"labels": {"role": "control-plane"}}}).to_string(),
                403,
            ),
            (json!({"spec": {"unschedulable": true}}).to_string(), 403),
            (json!({"metadata": "x"}).to_string(), 422),
            (format!("{{\"status\":{{\"deep\":{deep}}}}}"), 422),
            (
                json!({"status": {"big": "x".repeat(2 << 20)}}).to_string(),
                413,
            ),
        ] {
            let e = patch(&mut reg, &mut store, &mut events, p.clone()).unwrap_err();
            assert_eq!(e.0, code, "{}: {}", &p[..p.len().min(80)], e.1);
        }
        // Growth stops at the object limit: 1 MiB reports under new keys, the second refused.
        let grow = |i: usize| json!({"status": {format!("k{i}"): "y".repeat(1 << 20)}}).to_string();
        assert!(patch(&mut reg, &mut store, &mut events, grow(0)).is_ok());
        let e = patch(&mut reg, &mut store, &mut events, grow(1)).unwrap_err();
        assert!(e.0 == 413 && e.1.contains("1572864"), "{e:?}");
        assert!(patch(
            &mut reg,
            &mut store,
            &mut events,
            json!({"status": {"phase": "Running"}}).to_string()
        )
        .is_ok());
        let list = reg.list(t, std::time::Duration::from_secs(40));
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["evil"], "no second node");
        assert_eq!(list["items"][0]["metadata"]["labels"]["role"], "edge");
        let text = list.to_string();
        assert!(text.len() <= proto::limits::MAX_OBJECT_BYTES + 4096);
        let _: Value = serde_json::from_str(&text).expect("the list reads back");
        // Another node's lease, as the node authorizer words it.
        let m = edge_msg(Operation::Update, "kube-node-lease/lease/good", json!({}));
        let r = upstream(ctx!(reg, store, events), "evil", &m, t).1.unwrap();
        assert!(
            matches!(Reply::from_content(&r.content), Reply::Failed { code: 403, message, .. }
            if message.ends_with("can only access node lease with the same name as the requesting node"))
        );
    }

    #[test]
    fn replies_are_shaped_like_edgecontroller() {
        let (mut reg, mut store, mut events) = parts("t1");
        let t = SystemTime::now();
        let m = edge_msg(
            Operation::Insert,
            "null/node/edge0",
            json!({"metadata":{"name":"edge0"}}),
        );
        let (_, r) = upstream(ctx!(reg, store, events), "edge0", &m, t);
        let r = r.unwrap();
        assert_eq!(r.header.parent_msg_id, m.header.msg_id);
        assert_eq!(r.route.source, ModuleName::EdgeController);
        assert_eq!(r.route.group, Group::Resource);
        assert_eq!(r.route.operation, Operation::Response);
        assert_eq!(r.route.resource, "null/node/edge0");
        assert!(!r.header.resourceversion.is_empty());
        assert!(matches!(Reply::from_content(&r.content), Reply::Object(_)));
    }

    #[test]
    fn pod_status_and_queries_are_limited_to_the_nodes_own_pods() {
        let (mut reg, mut store, mut events) = parts("pods");
        let t = SystemTime::now();
        let pod = |name: &str, node: &str| {
            (
                Kind::Pod,
                json!({"apiVersion": "v1", "metadata": {"name": name},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}],
                         "volumes": [{"name": "v", "configMap": {"name": "cfg"}}]}}),
            )
        };
        let cm = (
            Kind::ConfigMap,
            json!({"apiVersion": "v1", "metadata": {"name": "cfg"}, "data": {"k": "v"}}),
        );
        store
            .apply(&[pod("mine", "edge0"), pod("theirs", "edge1"), cm], 0)
            .unwrap();
        let patch = json!("{\"status\":{\"phase\":\"Running\"}}");
        let m = Message::new(
            ModuleName::Edged,
            Group::Meta,
            Operation::Patch,
            "default/podpatch/mine",
            patch.clone(),
            0,
        );
        let (_, r) = upstream(ctx!(reg, store, events), "edge0", &m, t);
        match Reply::from_content(&r.unwrap().content) {
            Reply::Object(p) => assert_eq!(p["status"]["phase"], "Running"),
            other => panic!("{other:?}"),
        }
        let m = Message::new(
            ModuleName::Edged,
            Group::Meta,
            Operation::Patch,
            "default/podpatch/theirs",
            patch,
            0,
        );
        let (_, r) = upstream(ctx!(reg, store, events), "edge0", &m, t);
        assert!(matches!(
            Reply::from_content(&r.unwrap().content),
            Reply::Failed { code: 403, .. }
        ));
        let q = Message::new(
            ModuleName::Edged,
            Group::Meta,
            Operation::Query,
            "default/configmap/cfg",
            Value::Null,
            0,
        );
        let (_, r) = upstream(ctx!(reg, store, events), "edge0", &q, t);
        let r = r.unwrap();
        assert_eq!(r.content["data"]["k"], "v");
        assert!(!r.header.resourceversion.is_empty());
        let (_, r) = upstream(ctx!(reg, store, events), "edge9", &q, t);
        assert!(matches!(
            Reply::from_content(&r.unwrap().content),
            Reply::Failed { code: 403, .. }
        ));
        let del = Message::new(
            ModuleName::Edged,
            Group::Meta,
            Operation::Delete,
            "default/pod/mine",
            json!({"preconditions": {"uid": "wrong"}}),
            0,
        );
        let (_, r) = upstream(ctx!(reg, store, events), "edge0", &del, t);
        assert!(matches!(
            Reply::from_content(&r.unwrap().content),
            Reply::Failed { code: 409, .. }
        ));
        let del = Message::new(
            ModuleName::Edged,
            Group::Meta,
            Operation::Delete,
            "default/pod/mine",
            Value::Null,
            0,
        );
        let (_, r) = upstream(ctx!(reg, store, events), "edge0", &del, t);
        assert_eq!(Reply::from_content(&r.unwrap().content), Reply::Ok);
        assert!(store
            .get(&ObjectKey::new(Kind::Pod, "default", "mine"))
            .is_none());
    }

    #[test]
    fn tokens_are_minted_only_for_the_nodes_own_pods_and_their_account() {
        let (mut reg, mut store, mut events) = parts("tokens");
        let t = SystemTime::now();
        let pod = |name: &str, node: &str, sa: Option<&str>| {
            let mut p = json!({"apiVersion": "v1", "metadata": {"name": name},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}});
            if let Some(sa) = sa {
                p["spec"]["serviceAccountName"] = json!(sa);
            }
            (Kind::Pod, p)
        };
        store
            .apply(
                &[
                    pod("mine", "edge0", None),
                    pod("theirs", "edge1", None),
                    pod("robot", "edge0", Some("robot")),
                ],
                0,
            )
            .unwrap();
        let uid = |s: &CloudStore, n: &str| {
            s.get(&ObjectKey::new(Kind::Pod, "default", n))
                .unwrap()
                .uid()
                .to_owned()
        };
        let ask = |sa: &str, pod: &str, uid: &str| {
            Message::new(
                ModuleName::Edged,
                Group::Meta,
                Operation::Query,
                format!("default/serviceaccounttoken/{sa}"),
                json!({"metadata": {"creationTimestamp": null}, "spec": {"audiences": null, "expirationSeconds": 3607,
                    "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod, "uid": uid}},
                    "status": {"token": "", "expirationTimestamp": null}}),
                0,
            )
        };
        let m = ask("default", "mine", &uid(&store, "mine"));
        let (_, r) = upstream(ctx!(reg, store, events), "edge0", &m, t);
        let r = r.unwrap();
        assert!(
            r.header.resourceversion.is_empty(),
            "TokenRequests carry no version"
        );
        assert_eq!(r.content["kind"], "TokenRequest");
        assert_eq!(r.content["spec"]["expirationSeconds"], 3607);
        let claims = test_ca()
            .verify_es256(r.content["status"]["token"].as_str().unwrap())
            .unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:default:default");
        assert_eq!(claims["kubernetes.io"]["pod"]["name"], "mine");
        assert_eq!(claims["aud"], json!([TOKEN_ISSUER]));
        let exp = proto::time::parse_rfc3339(
            r.content["status"]["expirationTimestamp"].as_str().unwrap(),
        )
        .unwrap();
        assert_eq!(exp, claims["exp"].as_i64().unwrap());
        // Another node's pod, another account, another uid: refused.
        for (node, m, code) in [
            (
                "edge0",
                ask("default", "theirs", &uid(&store, "theirs")),
                403,
            ),
            ("edge0", ask("default", "robot", &uid(&store, "robot")), 403),
            ("edge0", ask("default", "mine", "not-the-uid"), 409),
            ("edge0", ask("default", "ghost", ""), 404),
        ] {
            let (_, r) = upstream(ctx!(reg, store, events), node, &m, t);
            assert!(
                matches!(Reply::from_content(&r.unwrap().content), Reply::Failed { code: c, .. } if c == code),
                "{m:?}"
            );
        }
        let m = ask("robot", "robot", &uid(&store, "robot"));
        let (_, r) = upstream(ctx!(reg, store, events), "edge0", &m, t);
        assert_eq!(r.unwrap().content["kind"], "TokenRequest");
    }

    #[test]
    fn unknown_requests_are_answered_and_bad_paths_refused() {
        let (mut reg, mut store, mut events) = parts("t2");
        let t = SystemTime::now();
        let (_, r) = upstream(
            ctx!(reg, store, events),
            "e",
            &edge_msg(Operation::Query, "default/persistentvolume/x", Value::Null),
            t,
        );
        assert!(matches!(
            Reply::from_content(&r.unwrap().content),
            Reply::Failed { code: 501, .. }
        ));
        let (_, r) = upstream(
            ctx!(reg, store, events),
            "e",
            &edge_msg(Operation::Insert, "a//b", Value::Null),
            t,
        );
        assert!(matches!(
            Reply::from_content(&r.unwrap().content),
            Reply::Failed { code: 400, .. }
        ));
        let (_, r) = upstream(
            ctx!(reg, store, events),
            "e",
            &edge_msg(Operation::Insert, "default/event/x", json!({})),
            t,
        );
        assert!(r.is_none());
    }
}
