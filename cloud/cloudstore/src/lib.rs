//! cloudcore's object store: Kubernetes-shaped objects (Pod, ConfigMap, Secret) with uid,
//! resourceVersion, creationTimestamp and generation, plus the per-node record of what each
//! edge acknowledged (upstream's ObjectSync, §3.6 of the protocol spec), reset when the edge's
//! store turns out to be a new one ([`epoch`]).
//!
//! Writes change an in-memory mirror (loaded at open: the cloud has memory to spare and the
//! delivery planner reads often) and a write set made durable by one redb transaction per
//! commit ([`commit`]): after every call, or, in group mode, once for everything written in a
//! turn of cloudcore's executor, before any of it is answered. A cloudcore killed at any
//! instant restarts with every write it had answered.
//!
//! Each object carries a *push version* beside its resourceVersion: the version of its last
//! change that edges must see. Status reports from an edge move the resourceVersion but not the
//! push version, so they are not echoed back to the node (upstream filters status-only updates
//! the same way).

#![forbid(unsafe_code)]

mod commit;
pub mod defaults;
mod epoch;
pub mod history;
pub mod kinds;
pub mod limits;
mod put;
pub mod smp;

use std::collections::BTreeMap;
use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use epoch::EpochSeen;
pub use kinds::{FieldError, Kind};
pub use put::Put;

use commit::{Table, WriteSet};

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const SYNCED: TableDefinition<&str, &[u8]> = TableDefinition::new("synced");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Node records (CloudHub's registry: node, lease, last heard), by node name.
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
/// Other saved state of the hub, by name (`events`).
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
/// The last state of deleted objects some node still holds, by uid: the `delete` sent to
/// that node carries the whole object, as upstream's does. Removed once no node holds it.
const TOMBSTONES: TableDefinition<&str, &[u8]> = TableDefinition::new("tombstones");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {0}: {1}")]
    Open(String, String),
    #[error("store: {0}")]
    Io(String),
    #[error("store record {0} is corrupt: {1}")]
    Corrupt(String, String),
    #[error("{0} not found")]
    NotFound(String),
    /// A patch that cannot be applied, with the HTTP status the apiserver gives it.
    #[error("{1}")]
    Patch(u16, String),
    /// The object would break a limit every stored object keeps ([`limits::check_stored`]).
    #[error("{1}: {0}")]
    Refused(limits::Refusal, ObjectKey),
    /// A create of a name that is taken.
    #[error("{0} already exists")]
    AlreadyExists(ObjectKey),
    /// An update whose resourceVersion is not the stored one.
    #[error("{0} has been modified since version {1}")]
    Conflict(ObjectKey, String),
}

fn io<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Io(e.to_string())
}

/// Identifies an object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        ObjectKey {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// `pods/<namespace>/<name>`: how the store and saved events name an object.
    pub fn db_key(&self) -> String {
        format!("{}/{}/{}", self.kind.plural(), self.namespace, self.name)
    }

    pub fn from_db_key(k: &str) -> Option<Self> {
        let mut p = k.splitn(3, '/');
        let kind = Kind::from_cli(p.next()?)?;
        Some(ObjectKey::new(kind, p.next()?, p.next()?))
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.name(), self.namespace, self.name)
    }
}

/// A stored object and its push version.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub object: Value,
    pub push_rv: u64,
}

impl Entry {
    pub fn rv(&self) -> u64 {
        rv_of(&self.object)
    }

    pub fn uid(&self) -> &str {
        self.object["metadata"]["uid"].as_str().unwrap_or("")
    }
}

/// The numeric resourceVersion of an object (0 if absent).
pub fn rv_of(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// What a node acknowledged for one object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncEntry {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub rv: u64,
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Kind::from_manifest(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown kind {s}")))
    }
}

/// What `apply` did to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    Configured,
    Unchanged,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Configured => "configured",
            Change::Unchanged => "unchanged",
        }
    }
}

/// Fields a user may set: everything but status and server-owned metadata.
fn desired_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("status");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "generation",
                "managedFields",
                "selfLink",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                meta.remove(k);
            }
        }
    }
    o
}

fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut out = e.push_rv.to_le_bytes().to_vec();
    out.extend(serde_json::to_vec(&e.object).unwrap_or_default());
    out
}

fn decode_entry(key: &str, bytes: &[u8]) -> Result<Entry, StoreError> {
    let corrupt = |why: &str| StoreError::Corrupt(key.to_owned(), why.to_owned());
    if bytes.len() < 8 {
        return Err(corrupt("shorter than its header"));
    }
    let push_rv = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let object = serde_json::from_slice(&bytes[8..]).map_err(|e| corrupt(&e.to_string()))?;
    Ok(Entry { object, push_rv })
}

/// The store.
pub struct CloudStore {
    db: redb::Database,
    objects: BTreeMap<ObjectKey, Entry>,
    synced: BTreeMap<(String, String), SyncEntry>,
    last_rv: u64,
    /// Bumped by every change to objects (not to sync records): lets readers cache what they
    /// derive from the objects.
    objects_version: u64,
    tombstones: BTreeMap<String, Value>,
    /// Node → its store's epoch, as last recorded.
    epochs: BTreeMap<String, String>,
    /// Writes not yet durable, and whether writes wait for `commit` (group mode).
    pending: WriteSet,
    group: bool,
    generation: u64,
    durable: u64,
    commits: u64,
    /// Recent changes, for watches (in memory: a restart starts it afresh).
    history: history::History,
}

impl CloudStore {
    /// Opens or creates the store file and loads the mirror.
    pub fn open(path: &Path) -> Result<CloudStore, StoreError> {
        let open_err =
            |e: &dyn std::fmt::Display| StoreError::Open(path.display().to_string(), e.to_string());
        let db = redb::Database::create(path).map_err(|e| open_err(&e))?;
        let tx = db.begin_write().map_err(|e| open_err(&e))?;
        tx.open_table(OBJECTS).map_err(|e| open_err(&e))?;
        tx.open_table(SYNCED).map_err(|e| open_err(&e))?;
        tx.open_table(META).map_err(|e| open_err(&e))?;
        tx.open_table(NODES).map_err(|e| open_err(&e))?;
        tx.open_table(STATE).map_err(|e| open_err(&e))?;
        tx.open_table(TOMBSTONES).map_err(|e| open_err(&e))?;
        tx.open_table(epoch::EPOCHS).map_err(|e| open_err(&e))?;
        tx.commit().map_err(|e| open_err(&e))?;
        let mut store = CloudStore {
            db,
            objects: BTreeMap::new(),
            synced: BTreeMap::new(),
            last_rv: 0,
            objects_version: 0,
            tombstones: BTreeMap::new(),
            epochs: BTreeMap::new(),
            pending: WriteSet::default(),
            group: false,
            generation: 0,
            durable: 0,
            commits: 0,
            history: history::History::new(0),
        };
        store.reload()?;
        Ok(store)
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Entry> {
        self.objects.get(key)
    }

    /// Objects of `kind`, in `namespace` if given, in key order.
    pub fn list<'a>(
        &'a self,
        kind: Kind,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a Entry)> + 'a {
        self.objects
            .iter()
            .filter(move |(k, _)| k.kind == kind && namespace.is_none_or(|ns| ns == k.namespace))
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Changes whenever any object changes.
    pub fn objects_version(&self) -> u64 {
        self.objects_version
    }

    /// The latest resourceVersion handed out.
    pub fn last_rv(&self) -> u64 {
        self.last_rv
    }

    /// Creates or updates validated manifest objects, all in one durable transaction.
    pub fn apply(
        &mut self,
        objs: &[(Kind, Value)],
        now_unix: i64,
    ) -> Result<Vec<(ObjectKey, Change, u64)>, StoreError> {
        let mut staged: Vec<(ObjectKey, Entry)> = Vec::new();
        let mut results = Vec::new();
        let mut rv = self.last_rv;
        for (kind, manifest) in objs {
            let key = key_of(*kind, manifest);
            let current = staged
                .iter()
                .rev()
                .find(|(k, _)| *k == key)
                .map(|(_, e)| e)
                .or_else(|| self.objects.get(&key));
            let Some((obj, change)) = prepare(*kind, manifest, current, rv + 1, now_unix)
                .map_err(|r| StoreError::Refused(r, key.clone()))?
            else {
                results.push((key, Change::Unchanged, current.map_or(0, Entry::rv)));
                continue;
            };
            rv += 1;
            staged.push((
                key.clone(),
                Entry {
                    object: obj,
                    push_rv: rv,
                },
            ));
            results.push((key, change, rv));
        }
        if !staged.is_empty() {
            for (k, e) in &staged {
                self.stage(Table::Objects, k.db_key(), Some(encode_entry(e)));
            }
            self.stage_rv(rv);
            self.last_rv = rv;
            self.objects_version += 1;
            for (k, e) in staged {
                let rv = e.rv();
                let object = e.object.clone();
                let prev = self.objects.insert(k.clone(), e).map(|p| p.object);
                self.record(k, rv, object, prev);
            }
            self.finish()?;
        }
        Ok(results)
    }

    /// Deletes an object durably, at once; returns it. While a node still holds it, its last
    /// state is kept as a tombstone for the `delete` sent to that node.
    pub fn delete(&mut self, key: &ObjectKey) -> Result<Value, StoreError> {
        let Some(entry) = self.objects.get(key) else {
            return Err(StoreError::NotFound(key.to_string()));
        };
        let uid = entry.uid().to_owned();
        let mut last = entry.object.clone();
        last["apiVersion"] = json!(key.kind.api_version());
        last["kind"] = json!(key.kind.name());
        let held = self.synced.keys().any(|(_, u)| *u == uid);
        // A deletion is a change at its own version, as etcd's are: watches are told it at
        // that version, and a watch resumed from before it can be told it again.
        let rv = self.last_rv + 1;
        self.stage(Table::Objects, key.db_key(), None);
        self.stage_rv(rv);
        self.last_rv = rv;
        if held {
            let bytes = serde_json::to_vec(&last).map_err(io)?;
            self.stage(Table::Tombstones, uid.clone(), Some(bytes));
            self.tombstones.insert(uid, last);
        }
        self.objects_version += 1;
        let removed = self.objects.remove(key).expect("checked above").object;
        let mut gone = removed.clone();
        gone["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.history.record(history::Event {
            rv,
            key: key.clone(),
            kind: history::EventType::Deleted,
            object: gone,
            prev: Some(removed.clone()),
        });
        self.finish()?;
        Ok(removed)
    }

    /// The last state of a deleted object some node still holds.
    pub fn tombstone(&self, uid: &str) -> Option<&Value> {
        self.tombstones.get(uid)
    }

    /// Starts a graceful deletion: `metadata.deletionTimestamp` = now + `grace_secs` and
    /// `deletionGracePeriodSeconds`, as the apiserver marks a pod whose kubelet must stop it
    /// first. A second call may shorten the grace period, never lengthen it. The push version
    /// moves: the node must see the mark.
    pub fn mark_deleting(
        &mut self,
        key: &ObjectKey,
        grace_secs: u64,
        now_unix: i64,
    ) -> Result<Value, StoreError> {
        let Some(cur) = self.objects.get(key) else {
            return Err(StoreError::NotFound(key.to_string()));
        };
        let mut obj = cur.object.clone();
        let meta = &mut obj["metadata"];
        let deadline = now_unix.saturating_add(grace_secs as i64);
        let current = meta["deletionTimestamp"]
            .as_str()
            .and_then(proto::time::parse_rfc3339);
        if current.is_some_and(|c| c <= deadline) {
            return Ok(obj); // already marked, with no longer a grace period
        }
        meta["deletionTimestamp"] = json!(proto::time::rfc3339(deadline));
        meta["deletionGracePeriodSeconds"] = json!(grace_secs);
        let rv = self.last_rv + 1;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let entry = Entry {
            object: obj.clone(),
            push_rv: rv,
        };
        self.write_entry(key, entry, rv)?;
        Ok(obj)
    }

    pub(crate) fn write_entry(
        &mut self,
        key: &ObjectKey,
        entry: Entry,
        rv: u64,
    ) -> Result<(), StoreError> {
        self.stage(Table::Objects, key.db_key(), Some(encode_entry(&entry)));
        self.stage_rv(rv);
        self.last_rv = rv;
        self.objects_version += 1;
        let object = entry.object.clone();
        let prev = self.objects.insert(key.clone(), entry).map(|p| p.object);
        self.record(key.clone(), rv, object, prev);
        self.finish()
    }

    fn record(&mut self, key: ObjectKey, rv: u64, object: Value, prev: Option<Value>) {
        let kind = match prev {
            None => history::EventType::Added,
            Some(_) => history::EventType::Modified,
        };
        self.history.record(history::Event {
            rv,
            key,
            kind,
            object,
            prev,
        });
    }

    /// Recent changes (see [`history`]).
    pub fn history(&self) -> &history::History {
        &self.history
    }

    /// Merges a status report into an object. Moves its resourceVersion, not its push version.
    pub fn patch_status(&mut self, key: &ObjectKey, patch: &Value) -> Result<Value, StoreError> {
        let Some(cur) = self.objects.get(key) else {
            return Err(StoreError::NotFound(key.to_string()));
        };
        let status_patch = json!({ "status": patch.get("status").cloned().unwrap_or(Value::Null) });
        let mut obj = cur.object.clone();
        match key.kind {
            // CRDs take JSON merge patches (the apiserver refuses strategic merge on them).
            Kind::Device | Kind::DeviceModel => smp::json_merge_patch(&mut obj, &status_patch),
            _ => {
                obj = smp::apply(&obj, &status_patch, smp::schema::for_kind(key.kind.name()))
                    .map_err(|e| StoreError::Patch(e.code, e.message))?
            }
        }
        let rv = self.last_rv + 1;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        limits::check_stored(&obj, Some(&cur.object))
            .map_err(|r| StoreError::Refused(r, key.clone()))?;
        let entry = Entry {
            object: obj.clone(),
            push_rv: cur.push_rv,
        };
        self.write_entry(key, entry, rv)?;
        Ok(obj)
    }

    /// What `node` acknowledged, by object uid.
    pub fn synced<'a>(
        &'a self,
        node: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a SyncEntry)> + 'a {
        let start = (node.to_owned(), String::new());
        self.synced
            .range(start..)
            .take_while(move |((n, _), _)| n == node)
            .map(|((_, uid), e)| (uid.as_str(), e))
    }

    pub fn synced_entry(&self, node: &str, uid: &str) -> Option<&SyncEntry> {
        self.synced.get(&(node.to_owned(), uid.to_owned()))
    }

    /// The node records saved by [`CloudStore::save_nodes`], by name.
    pub fn load_nodes(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let mut out = BTreeMap::new();
        for item in tx.open_table(NODES).map_err(io)?.iter().map_err(io)? {
            let (k, v) = item.map_err(io)?;
            out.insert(k.value().to_owned(), v.value().to_vec());
        }
        for (k, v) in self.pending.in_table(Table::Nodes) {
            match v {
                Some(v) => out.insert(k.to_owned(), v.clone()),
                None => out.remove(k),
            };
        }
        Ok(out.into_iter().collect())
    }

    /// Saves node records (name, opaque bytes), all in one commit.
    pub fn save_nodes(&mut self, records: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        for (name, bytes) in records {
            self.stage(Table::Nodes, name.clone(), Some(bytes.clone()));
        }
        self.finish()
    }

    /// Removes the saved record of a node the admin deleted and saves a piece of hub state
    /// (its revocations), in one commit.
    pub fn remove_node(&mut self, name: &str, state: (&str, &[u8])) -> Result<(), StoreError> {
        self.stage(Table::Nodes, name.to_owned(), None);
        self.stage(Table::State, state.0.to_owned(), Some(state.1.to_vec()));
        self.finish()
    }

    /// A piece of hub state saved with [`CloudStore::save_state`].
    pub fn load_state(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.pending.get(Table::State, name) {
            return Ok(v.clone());
        }
        let tx = self.db.begin_read().map_err(io)?;
        let t = tx.open_table(STATE).map_err(io)?;
        Ok(t.get(name).map_err(io)?.map(|v| v.value().to_vec()))
    }

    /// Saves a piece of hub state, replacing what was saved under `name`.
    pub fn save_state(&mut self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.stage(Table::State, name.to_owned(), Some(bytes.to_vec()));
        self.finish()
    }

    /// Records (or, with `None`, forgets) what `node` acknowledged for `uid`, durably.
    pub fn record_sync(
        &mut self,
        node: &str,
        uid: &str,
        entry: Option<SyncEntry>,
    ) -> Result<(), StoreError> {
        let db_key = format!("{node}\0{uid}");
        let bytes = entry
            .as_ref()
            .map(|e| serde_json::to_vec(e).unwrap_or_default());
        self.stage(Table::Synced, db_key, bytes);
        // The last node that held a deleted object let it go: its tombstone goes too.
        let drop_tombstone = entry.is_none()
            && self.tombstones.contains_key(uid)
            && !self
                .synced
                .keys()
                .any(|(n, u)| u == uid && n.as_str() != node);
        if drop_tombstone {
            self.stage(Table::Tombstones, uid.to_owned(), None);
            self.tombstones.remove(uid);
        }
        let k = (node.to_owned(), uid.to_owned());
        match entry {
            Some(e) => self.synced.insert(k, e),
            None => self.synced.remove(&k),
        };
        self.finish()
    }
}

/// The key of a manifest object of `kind` (namespace `default` when it names none).
pub fn key_of(kind: Kind, manifest: &Value) -> ObjectKey {
    let ns = manifest["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let name = manifest["metadata"]["name"].as_str().unwrap_or("");
    ObjectKey::new(kind, ns, name)
}

/// The object a write of `manifest` stores over `current`, at resourceVersion `rv`: the
/// fields a user may set from the manifest, defaulted; uid, creation time, a deletion in
/// progress and status kept from `current`; the generation moved by a spec change. `None`
/// when nothing a user may set changes (an apply that is `unchanged`).
fn prepare(
    kind: Kind,
    manifest: &Value,
    current: Option<&Entry>,
    rv: u64,
    now_unix: i64,
) -> Result<Option<(Value, Change)>, limits::Refusal> {
    let key = key_of(kind, manifest);
    let mut desired = desired_part(manifest);
    desired["kind"] = json!(kind.name());
    desired["metadata"]["namespace"] = json!(key.namespace);
    if kind == Kind::Secret {
        fold_string_data(&mut desired);
    }
    defaults::apply(kind, &mut desired, false);
    let (mut obj, change, generation) = match current {
        Some(cur) if desired_part(&cur.object) == desired => return Ok(None),
        Some(cur) => {
            let mut o = desired.clone();
            o["metadata"]["uid"] = cur.object["metadata"]["uid"].clone();
            o["metadata"]["creationTimestamp"] =
                cur.object["metadata"]["creationTimestamp"].clone();
            // A deletion in progress cannot be undone by an update.
            for k in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
                if let Some(v) = cur.object["metadata"].get(k) {
                    o["metadata"][k] = v.clone();
                }
            }
            if let Some(st) = cur.object.get("status") {
                o["status"] = st.clone();
            }
            let spec_changed = cur.object.get("spec") != desired.get("spec");
            let gen = cur.object["metadata"]["generation"].as_u64().unwrap_or(1)
                + u64::from(spec_changed);
            (o, Change::Configured, gen)
        }
        None => {
            let mut o = desired.clone();
            o["metadata"]["uid"] = json!(proto::message::new_msg_id());
            o["metadata"]["creationTimestamp"] = json!(proto::time::rfc3339(now_unix));
            defaults::apply(kind, &mut o, true);
            (o, Change::Created, 1)
        }
    };
    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    obj["metadata"]["generation"] = json!(generation);
    limits::check_stored(&obj, current.map(|c| &c.object))?;
    Ok(Some((obj, change)))
}

/// `stringData` is write-only sugar: fold it into base64 `data` as the apiserver does.
fn fold_string_data(secret: &mut Value) {
    let Some(sd) = secret.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    let Some(sd) = sd.as_object().cloned() else {
        return;
    };
    if !secret["data"].is_object() {
        secret["data"] = json!({});
    }
    for (k, v) in sd {
        secret["data"][k] = json!(base64(v.as_str().unwrap_or("").as_bytes()));
    }
}

/// Standard base64 with padding, as JSON carries bytes.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("cloudstore-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    fn pod(name: &str, image: &str) -> (Kind, Value) {
        (
            Kind::Pod,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": "edge0", "containers": [{"name": "c", "image": image}]}}),
        )
    }

    #[test]
    fn every_write_is_in_the_history_at_its_version_and_a_reopen_starts_it_afresh() {
        use history::EventType::*;
        let p = tmp("history");
        let mut s = CloudStore::open(&p).unwrap();
        let start = s.last_rv();
        s.apply(&[pod("p", "a")], 0).unwrap();
        s.apply(&[pod("p", "b")], 0).unwrap();
        let key = ObjectKey::new(Kind::Pod, "default", "p");
        s.delete(&key).unwrap();
        let seen: Vec<_> = s
            .history()
            .since(start)
            .unwrap()
            .map(|e| (e.kind, e.rv))
            .collect();
        assert_eq!(
            seen,
            [
                (Added, start + 1),
                (Modified, start + 2),
                (Deleted, start + 3)
            ]
        );
        assert_eq!(s.last_rv(), start + 3, "a deletion moves the version");
        drop(s);
        let s = CloudStore::open(&p).unwrap();
        assert_eq!(s.last_rv(), start + 3, "versions are durable");
        assert_eq!(s.history().start(), start + 3);
        assert!(
            s.history().since(start + 2).is_err(),
            "the past is not known"
        );
        assert_eq!(s.history().since(start + 3).unwrap().count(), 0);
    }

    #[test]
    fn a_removed_node_record_stays_removed_and_its_state_is_saved_with_it() {
        let path = tmp("remove-node");
        {
            let mut s = CloudStore::open(&path).unwrap();
            s.save_nodes(&[("a".into(), b"A".to_vec()), ("b".into(), b"B".to_vec())])
                .unwrap();
            s.remove_node("a", ("enrollment", b"revoked")).unwrap();
        }
        let s = CloudStore::open(&path).unwrap();
        assert_eq!(s.load_nodes().unwrap(), vec![("b".into(), b"B".to_vec())]);
        assert_eq!(
            s.load_state("enrollment").unwrap().as_deref(),
            Some(&b"revoked"[..])
        );
    }

    #[test]
    fn apply_creates_configures_and_skips_unchanged() {
        let mut s = CloudStore::open(&tmp("apply")).unwrap();
        let r = s.apply(&[pod("a", "busybox")], 1000).unwrap();
        assert_eq!(r[0].1, Change::Created);
        let e = s.get(&r[0].0).unwrap().clone();
        assert_eq!(e.object["metadata"]["generation"], 1);
        assert_eq!(e.object["metadata"]["namespace"], "default");
        assert_eq!(e.object["status"]["phase"], "Pending");
        assert_eq!(e.push_rv, e.rv());
        let r2 = s.apply(&[pod("a", "busybox")], 1001).unwrap();
        assert_eq!(r2[0].1, Change::Unchanged);
        assert_eq!(s.last_rv(), e.rv(), "no-op apply moves nothing");
        let r3 = s.apply(&[pod("a", "alpine")], 1002).unwrap();
        assert_eq!(r3[0].1, Change::Configured);
        let e3 = s.get(&r3[0].0).unwrap();
        assert_eq!(e3.uid(), e.uid());
        assert_eq!(e3.object["metadata"]["generation"], 2);
        assert!(e3.rv() > e.rv());
    }

    #[test]
    fn status_patches_do_not_move_the_push_version_and_everything_persists() {
        let path = tmp("persist");
        let key;
        let push;
        {
            let mut s = CloudStore::open(&path).unwrap();
            let r = s.apply(&[pod("a", "busybox")], 1000).unwrap();
            key = r[0].0.clone();
            push = s.get(&key).unwrap().push_rv;
            s.patch_status(&key, &json!({"status": {"phase": "Running"}}))
                .unwrap();
            s.record_sync(
                "edge0",
                "u1",
                Some(SyncEntry {
                    kind: Kind::Pod,
                    namespace: "default".into(),
                    name: "a".into(),
                    rv: push,
                }),
            )
            .unwrap();
        }
        let s = CloudStore::open(&path).unwrap();
        let e = s.get(&key).unwrap();
        assert_eq!(e.object["status"]["phase"], "Running");
        assert_eq!(e.push_rv, push);
        assert!(e.rv() > push);
        assert_eq!(s.synced("edge0").count(), 1);
        assert_eq!(s.synced("edge1").count(), 0);
        assert_eq!(s.synced_entry("edge0", "u1").unwrap().rv, push);
    }

    #[test]
    fn graceful_marks_and_tombstones() {
        let path = tmp("graceful");
        let mut s = CloudStore::open(&path).unwrap();
        let r = s.apply(&[pod("a", "busybox")], 1000).unwrap();
        let key = r[0].0.clone();
        let before = s.get(&key).unwrap().clone();
        let marked = s.mark_deleting(&key, 30, 2000).unwrap();
        assert_eq!(
            marked["metadata"]["deletionTimestamp"],
            proto::time::rfc3339(2030)
        );
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
        let after = s.get(&key).unwrap();
        assert!(after.push_rv > before.push_rv, "the node must see the mark");
        // A longer grace period does not move the deadline; a shorter one does.
        let again = s.mark_deleting(&key, 60, 2001).unwrap();
        assert_eq!(
            again["metadata"]["deletionTimestamp"],
            proto::time::rfc3339(2030)
        );
        let shorter = s.mark_deleting(&key, 0, 2001).unwrap();
        assert_eq!(
            shorter["metadata"]["deletionTimestamp"],
            proto::time::rfc3339(2001)
        );
        // Held by a node: the deleted object's last state stays until the node lets go.
        let uid = before.uid().to_owned();
        let sync = SyncEntry {
            kind: Kind::Pod,
            namespace: "default".into(),
            name: "a".into(),
            rv: 1,
        };
        s.record_sync("edge0", &uid, Some(sync)).unwrap();
        s.delete(&key).unwrap();
        assert_eq!(s.tombstone(&uid).unwrap()["kind"], "Pod");
        drop(s);
        let mut s = CloudStore::open(&path).unwrap();
        assert_eq!(
            s.tombstone(&uid).unwrap()["apiVersion"],
            "v1",
            "kept across restarts"
        );
        s.record_sync("edge0", &uid, None).unwrap();
        assert!(s.tombstone(&uid).is_none());
        drop(s);
        assert!(CloudStore::open(&path).unwrap().tombstone(&uid).is_none());
        // Held by no node: no tombstone at all.
        let mut s = CloudStore::open(&path).unwrap();
        let r = s.apply(&[pod("b", "busybox")], 1000).unwrap();
        let uid = s.get(&r[0].0).unwrap().uid().to_owned();
        s.delete(&r[0].0).unwrap();
        assert!(s.tombstone(&uid).is_none());
    }

    #[test]
    fn delete_and_string_data() {
        let mut s = CloudStore::open(&tmp("del")).unwrap();
        let secret = (
            Kind::Secret,
            json!({"apiVersion": "v1", "metadata": {"name": "s"}, "stringData": {"pw": "hello"}}),
        );
        let r = s.apply(&[secret], 0).unwrap();
        assert_eq!(s.get(&r[0].0).unwrap().object["data"]["pw"], "aGVsbG8=");
        s.delete(&r[0].0).unwrap();
        assert!(s.get(&r[0].0).is_none());
        assert!(matches!(s.delete(&r[0].0), Err(StoreError::NotFound(_))));
    }
}
