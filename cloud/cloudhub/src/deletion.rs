//! Deleting a node (`cloudcore delete node NAME`): everything that is the node's goes.
//!
//! 1. Its certificates are revoked and its name freed ([`crate::enroll`]), and its registry
//!    record (node and lease) removed: from then on the tunnel and the certificate endpoint
//!    refuse what it holds, and its `--node-limit` slot is free.
//! 2. Its session, if any, ends; until a new enrollment of the name, a session still
//!    running cannot register it again.
//! 3. Its pods are deleted at once, as Kubernetes' pod garbage collector deletes the pods
//!    bound to a node that no longer exists: no node is left to stop them gracefully or to
//!    confirm, and a pod bound to a ghost would read Running forever. Each gets an event.
//! 4. What the cloud recorded the node acknowledged is forgotten, so no tombstone waits for
//!    it; a node enrolled under the name later starts from nothing.
//!
//! All of it is written in one turn, so one group commit makes it durable, and the admin API
//! answers after it. Should that commit fail, the store and the enrollment state are
//! reloaded as they were, and running the delete again does it (a node whose record is only
//! on disk by then is still found).
//!
//! Devices naming the node stay: they are the operator's hardware description and are
//! delivered again to a node of that name. The gateway itself cannot be told (its link is
//! gone): its containers run on until it joins again (`edgecore join` starts it afresh).

use std::time::{Duration, SystemTime};

use cloudstore::{Kind, ObjectKey};
use serde_json::Value;

use crate::enroll::{self, Refusal};
use crate::Hub;

/// How long a deletion mark outlives the delete at least: the longest validity an edge
/// certificate issued before records were kept can have (upstream's default, 365 days).
pub const LEGACY_CERT_LIFETIME: Duration = Duration::from_secs(365 * 86400);

/// What a delete did.
#[derive(Debug, Clone)]
pub struct NodeDeleted {
    /// The node object as it was, if it was registered.
    pub node: Option<Value>,
    /// Serials revoked.
    pub revoked: Vec<String>,
    /// Pods deleted with it (`namespace/name`).
    pub pods: Vec<String>,
    /// Whether a live session was closed.
    pub session_closed: bool,
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Deletes `name` and what is its (module docs).
pub fn delete_node(hub: &Hub, name: &str, now: SystemTime) -> Result<NodeDeleted, Refusal> {
    let fail = |status: u16, message: String| Refusal { status, message };
    let bound_pods: Vec<ObjectKey> = hub
        .store
        .borrow()
        .list(Kind::Pod, None)
        .filter(|(_, e)| e.object["spec"]["nodeName"] == name)
        .map(|(k, _)| k.clone())
        .collect();
    // A record only on disk: an earlier delete whose commit failed.
    let registered = hub.registry.borrow().contains(name)
        || hub
            .store
            .borrow()
            .load_nodes()
            .map_err(|e| fail(500, format!("cannot read the node records: {e}")))?
            .iter()
            .any(|(n, _)| n == name);
    let unix_now = unix(now);
    let mut enrollment = hub.enrollment.borrow_mut();
    enrollment.prune(unix_now);
    if !registered && !enrollment.holds_certificate(name) && bound_pods.is_empty() {
        return Err(fail(404, format!("node {name:?} not found")));
    }

    // 1. Revocation and the record, first.
    let validity = hub.cfg.edge_cert_validity.max(LEGACY_CERT_LIFETIME);
    let mark_until = unix_now + validity.as_secs() as i64 + 3600;
    let mut next = enrollment.clone();
    let revoked = next.delete(name, mark_until)?;
    hub.store
        .borrow_mut()
        .remove_node(name, (enroll::STATE_KEY, &next.encode()))
        .map_err(|e| fail(500, format!("cannot delete node {name:?}: {e}")))?;
    *enrollment = next;
    drop(enrollment);
    let node = hub.registry.borrow_mut().remove(name);

    // 2. Its session.
    let session_closed = hub.sessions.end(name);
    hub.controller.borrow_mut().disconnected(name);
    hub.devices.borrow_mut().disconnected(name);

    // 3. Its pods.
    let mut pods = Vec::new();
    for key in bound_pods {
        match hub.store.borrow_mut().delete(&key) {
            Ok(_) | Err(cloudstore::StoreError::NotFound(_)) => {}
            Err(e) => {
                return Err(fail(
                    500,
                    format!(
                        "node {name:?} deleted, but not its pod {}/{}: {e}; run the delete again",
                        key.namespace, key.name
                    ),
                ))
            }
        }
        hub.events.borrow_mut().record(
            &key,
            now,
            "NodeDeleted",
            format!("deleted with its node {name}"),
        );
        pods.push(format!("{}/{}", key.namespace, key.name));
    }

    // 4. What it acknowledged.
    let held: Vec<String> = hub
        .store
        .borrow()
        .synced(name)
        .map(|(uid, _)| uid.to_owned())
        .collect();
    for uid in held {
        if let Err(e) = hub.store.borrow_mut().record_sync(name, &uid, None) {
            return Err(fail(500, format!("node {name:?} deleted, but not its delivery records: {e}; run the delete again")));
        }
    }
    hub.store_changed();
    log::info!(
        "node {name} deleted: {} certificate(s) revoked, {} pod(s) deleted{}",
        revoked.serials.len(),
        pods.len(),
        if session_closed {
            ", session closed"
        } else {
            ""
        }
    );
    Ok(NodeDeleted {
        node,
        revoked: revoked.serials,
        pods,
        session_closed,
    })
}
