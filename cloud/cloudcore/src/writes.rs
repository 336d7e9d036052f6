//! The single-object writes the admin API and the Kubernetes API share: each goes through the
//! store (validation, defaults, limits, the group commit), records its event, publishes the
//! namespace's root CA configmap and rings the edges. The caller answers once
//! `hub.durable()` says the write is on disk.

use std::time::SystemTime;

use cloudhub::Hub;
use cloudstore::{Change, Kind, ObjectKey, Put, StoreError};
use kubeapi::Deleted;
use serde_json::Value;

use crate::admin::unix_now;

/// Creates or updates one object (`cloudstore::CloudStore::put`).
pub fn put(
    hub: &Hub,
    kind: Kind,
    obj: &Value,
    expect: Put,
    dry_run: bool,
) -> Result<(Change, Value), StoreError> {
    let (change, stored) = hub
        .store
        .borrow_mut()
        .put(kind, obj, expect, unix_now(), dry_run)?;
    if dry_run || change == Change::Unchanged {
        return Ok((change, stored));
    }
    let key = cloudstore::key_of(kind, &stored);
    let rv = cloudstore::rv_of(&stored);
    hub.events.borrow_mut().record(
        &key,
        SystemTime::now(),
        "Applied",
        format!("{} at version {rv}", change.as_str()),
    );
    hub.publish_root_ca([key.namespace.as_str()]);
    hub.store_changed();
    Ok((change, stored))
}

/// Deletes one object: a pod running on a node gracefully (see [`graceful_pod_delete`]),
/// anything else at once.
pub fn delete(hub: &Hub, key: &ObjectKey, grace: Option<u64>) -> Result<Deleted, StoreError> {
    if let Some(marked) = graceful_pod_delete(hub, key, grace) {
        return marked.map(Deleted::Terminating);
    }
    let obj = hub.store.borrow_mut().delete(key)?;
    hub.events
        .borrow_mut()
        .record(key, SystemTime::now(), "Deleted", "deleted".into());
    hub.store_changed();
    Ok(Deleted::Gone(obj))
}

/// The pod strategy's graceful delete (Kubernetes `CheckGracefulDelete`): a pod bound to a
/// node and still running is only marked (`deletionTimestamp`, the grace period given, else
/// its `terminationGracePeriodSeconds`) and its node stops it, then deletes it. Grace 0, a pod
/// never scheduled, or one already finished is deleted at once (`None`: the caller deletes).
fn graceful_pod_delete(
    hub: &Hub,
    key: &ObjectKey,
    grace: Option<u64>,
) -> Option<Result<Value, StoreError>> {
    if key.kind != Kind::Pod {
        return None;
    }
    let grace = {
        let store = hub.store.borrow();
        let pod = &store.get(key)?.object;
        let scheduled = pod["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
        let finished = matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        );
        let grace = grace
            .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_u64())
            .unwrap_or(30);
        if !scheduled || finished || grace == 0 {
            return None;
        }
        grace
    };
    let result = hub.store.borrow_mut().mark_deleting(key, grace, unix_now());
    if result.is_ok() {
        hub.events.borrow_mut().record(
            key,
            SystemTime::now(),
            "Killing",
            format!("deletion requested; its node stops it within {grace}s, then it is gone"),
        );
        hub.store_changed();
    }
    Some(result)
}
