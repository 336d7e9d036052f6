//! What CloudHub does with each message from an edge (§2.7 and §4 of the protocol spec), as a
//! sans-IO function: registry in, reply out.
//!
//! Served today: keepalive, ACKs, node register/query/update/patch, legacy nodestatus, lease
//! query/insert/update. Any other request is answered with a `NotImplemented` status so an
//! upstream edgecore does not sit on its 60 s reply timeout; fire-and-forget messages
//! (events, `membership/detail`, uploads) are dropped as upstream cloudcore drops them.

use std::time::SystemTime;

use proto::{objresp, Group, Message, ModuleName, Operation, ResourceKind, ResourcePath};
use serde_json::{json, Value};

use crate::nodes::{NodeRegistry, StatusError};

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

fn forbidden(node: &str, resource: &str) -> StatusError {
    StatusError(objresp::status(
        403,
        "Forbidden",
        &format!("node {node:?} may not act on {resource:?}"),
        json!({ "name": resource }),
    ))
}

/// What happened, for the session's bookkeeping.
#[derive(Debug, PartialEq)]
pub enum Effect {
    /// A keepalive: resets the session's keepalive timer.
    Keepalive,
    /// An acknowledgement of a message the cloud sent (by its id).
    Ack(String),
    Other,
}

/// Handles one message from `node`. Returns what it meant and the reply to send, if any.
pub fn upstream(
    reg: &mut NodeRegistry,
    node: &str,
    msg: &Message,
    now: SystemTime,
) -> (Effect, Option<Message>) {
    reg.heard_from(node, now);
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
        Operation::Upload if msg.route.group == Group::User => return (Effect::Other, None),
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
        ResourcePath::MembershipDetail => None, // upstream ignores it too (§5.3)
        ResourcePath::Object {
            kind,
            name: Some(name),
            ..
        } if is_node_kind(kind) && name != node => Some(object_reply(
            msg,
            Err(forbidden(node, &msg.route.resource)),
            now,
        )),
        ResourcePath::Object {
            kind: ResourceKind::Lease,
            name: Some(name),
            ..
        } if name != node => Some(object_reply(
            msg,
            Err(forbidden(node, &msg.route.resource)),
            now,
        )),
        ResourcePath::Object {
            kind: ResourceKind::Node,
            ..
        } => match op {
            Operation::Insert => Some(object_reply(
                msg,
                reg.register(node, msg.content.clone(), now),
                now,
            )),
            Operation::Query => Some(match reg.get(node, now, std::time::Duration::MAX) {
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
                // Upstream merges only labels and annotations into the live node (§4.1 step 5).
                let meta = &msg.content["metadata"];
                let patch = json!({ "metadata": { "labels": meta["labels"], "annotations": meta["annotations"] } });
                let patch = serde_json::to_vec(&patch).unwrap_or_default();
                Some(match reg.patch(node, &patch, now) {
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
            reg.patch(node, &msg.content_bytes(), now),
            now,
        )),
        ResourcePath::Object {
            kind: ResourceKind::NodeStatus,
            ..
        } => Some(legacy_node_status(reg, node, msg, now)),
        ResourcePath::Object {
            kind: ResourceKind::Lease,
            ..
        } => match op {
            Operation::Query => Some(object_reply(msg, reg.lease(node), now)),
            Operation::Insert => Some(object_reply(
                msg,
                reg.write_lease(node, msg.content.clone(), true, now),
                now,
            )),
            Operation::Update => Some(object_reply(
                msg,
                reg.write_lease(node, msg.content.clone(), false, now),
                now,
            )),
            _ => Some(not_implemented(msg, now)),
        },
        ResourcePath::Object {
            kind: ResourceKind::Event,
            ..
        } => None, // fire and forget upstream too
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

    fn edge_msg(op: Operation, resource: &str, content: Value) -> Message {
        Message::new(ModuleName::Edged, Group::Meta, op, resource, content, 0)
    }

    #[test]
    fn a_node_may_only_touch_itself() {
        let mut reg = NodeRegistry::new(10);
        let t = SystemTime::now();
        let m = edge_msg(
            Operation::Insert,
            "null/node/edge1",
            json!({"metadata":{"name":"edge1"}}),
        );
        let (_, r) = upstream(&mut reg, "edge0", &m, t);
        let r = r.unwrap();
        assert!(matches!(
            Reply::from_content(&r.content),
            Reply::Failed { code: 403, .. }
        ));
        assert!(!reg.contains("edge1"));
        let m = edge_msg(Operation::Update, "kube-node-lease/lease/edge1", json!({}));
        let (_, r) = upstream(&mut reg, "edge0", &m, t);
        assert!(matches!(
            Reply::from_content(&r.unwrap().content),
            Reply::Failed { code: 403, .. }
        ));
    }

    #[test]
    fn replies_are_shaped_like_edgecontroller() {
        let mut reg = NodeRegistry::new(10);
        let t = SystemTime::now();
        let m = edge_msg(
            Operation::Insert,
            "null/node/edge0",
            json!({"metadata":{"name":"edge0"}}),
        );
        let (_, r) = upstream(&mut reg, "edge0", &m, t);
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
    fn unknown_requests_are_answered_and_bad_paths_refused() {
        let mut reg = NodeRegistry::new(10);
        let t = SystemTime::now();
        let (_, r) = upstream(
            &mut reg,
            "e",
            &edge_msg(Operation::Query, "default/configmap/x", Value::Null),
            t,
        );
        assert!(matches!(
            Reply::from_content(&r.unwrap().content),
            Reply::Failed { code: 501, .. }
        ));
        let (_, r) = upstream(
            &mut reg,
            "e",
            &edge_msg(Operation::Insert, "a//b", Value::Null),
            t,
        );
        assert!(matches!(
            Reply::from_content(&r.unwrap().content),
            Reply::Failed { code: 400, .. }
        ));
        let (_, r) = upstream(
            &mut reg,
            "e",
            &edge_msg(Operation::Insert, "default/event/x", json!({})),
            t,
        );
        assert!(r.is_none());
    }
}
