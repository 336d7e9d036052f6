//! MetaManager: the edge's durable copy of everything the cloud sent (§4.7 of the protocol
//! spec), on the [`store::KvStore`] of DESIGN.md §4.
//!
//! - An object is written (fsynced) **before** its acknowledgement leaves, so an acknowledged
//!   object survives any crash.
//! - Versions only move forward: an object older (by resourceVersion) than the stored one is
//!   acknowledged but not written, so a late resend never overwrites newer state.
//! - Objects are served from the store, so a gateway restarted without a cloud still has its
//!   pods, configmaps and secrets.
//!
//! - What pods reference but the cloud did not push (configmaps, secrets, service account
//!   tokens) is asked for ([`deps`]), stored the same way, and acknowledged once stored.
//!
//! [`MetaCore`] is the store logic; [`run`] batches whatever is waiting in the mailbox (pushes
//! and answers) into one transaction (one fsync for a burst) and then acknowledges each.

#![forbid(unsafe_code)]

pub mod deps;

use std::collections::BTreeMap;

use bus::{
    AckHandle, Bus, BusMessage, CloudObject, Link, Mailbox, ModuleId, ObjectKind, ObjectOp,
    Shutdown, Throttle, TokenKey, Wake,
};
use serde::{Deserialize, Serialize};
use store::{KvStore, Op, StoreError};

/// Most messages written in one transaction: bounds the batch's memory while still turning a
/// burst of pushes into a few fsyncs.
pub const MAX_BATCH: usize = 64;
/// A round of taking mail that got this many means a burst: yield once, take more.
const BURST_ROUND: usize = 4;
/// Most bytes ([`BusMessage::weight`]) taken into one transaction; the first message is
/// always taken, so one object larger than this is written alone.
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// Schema version byte leading every stored value.
const SCHEMA: u8 = 1;

/// One stored object: the cloud's JSON bytes, untouched, plus what dedup needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub resource_version: String,
    pub uid: String,
    pub json: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored value under {0} is corrupt: {1}")]
    Corrupt(String, String),
}

/// Service account tokens: `tok/<pod uid>/<account>/<expiration secs>/<audience>`.
const TOKEN_PREFIX: &[u8] = b"tok/";

/// One stored token, with the key fields again so a scan needs no key parsing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct TokenRecord {
    pod_uid: String,
    service_account: String,
    audience: String,
    expiration_secs: u64,
    token: String,
    expires_unix: i64,
    /// The lifetime the cloud granted (it may shorten the one asked for).
    granted_secs: u64,
}

fn token_key(k: &TokenKey) -> Vec<u8> {
    format!(
        "tok/{}/{}/{}/{}",
        k.pod_uid, k.service_account, k.expiration_secs, k.audience
    )
    .into_bytes()
}

/// The store key of an object: `obj/<kind>/<namespace>/<name>`.
pub fn key(kind: ObjectKind, namespace: &str, name: &str) -> Vec<u8> {
    format!("obj/{}/{namespace}/{name}", kind.as_str()).into_bytes()
}

fn kind_prefix(kind: Option<ObjectKind>) -> Vec<u8> {
    match kind {
        Some(k) => format!("obj/{}/", k.as_str()).into_bytes(),
        None => b"obj/".to_vec(),
    }
}

pub fn encode(r: &Record) -> Vec<u8> {
    let mut out = vec![SCHEMA];
    out.extend(postcard::to_stdvec(r).unwrap_or_default());
    out
}

pub fn decode(key: &[u8], bytes: &[u8]) -> Result<Record, MetaError> {
    let corrupt = |why: String| MetaError::Corrupt(String::from_utf8_lossy(key).into_owned(), why);
    match bytes.split_first() {
        Some((&SCHEMA, rest)) => postcard::from_bytes(rest).map_err(|e| corrupt(e.to_string())),
        Some((v, _)) => Err(corrupt(format!("unknown schema version {v}"))),
        None => Err(corrupt("empty value".into())),
    }
}

/// Whether version `new` may replace `have`. Kubernetes resourceVersions are opaque strings but
/// numeric in every apiserver and in cloudcore; anything non-numeric is taken as newer.
pub fn is_newer_or_same(new: &str, have: &str) -> bool {
    match (new.parse::<u64>(), have.parse::<u64>()) {
        (Ok(n), Ok(h)) => n >= h,
        _ => true,
    }
}

/// What an incoming object did to the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Stored,
    /// Older than what is stored: kept the stored one.
    Stale {
        stored: String,
    },
    Deleted,
    /// A delete for something not stored, or stored under another uid.
    NothingToDelete,
}

/// A stored object, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
    pub record: Record,
}

/// The store logic, IO only through the [`KvStore`].
pub struct MetaCore {
    store: std::rc::Rc<dyn KvStore>,
}

impl MetaCore {
    /// `store` is shared with DeviceTwin (one store file per gateway; keys are namespaced).
    pub fn new(store: std::rc::Rc<dyn KvStore>) -> Self {
        MetaCore { store }
    }

    pub fn store(&self) -> &dyn KvStore {
        self.store.as_ref()
    }

    /// Applies a batch of cloud objects in one atomic, durable transaction and says what each
    /// did. Within a batch later messages see earlier ones.
    pub fn apply_batch(&self, objs: &[&CloudObject]) -> Result<Vec<Applied>, MetaError> {
        self.commit(objs, &[])
    }

    /// Objects and token changes (`None` deletes) in one atomic, durable transaction.
    pub fn commit(
        &self,
        objs: &[&CloudObject],
        tokens: &[(TokenKey, Option<deps::StoredToken>)],
    ) -> Result<Vec<Applied>, MetaError> {
        let mut pending: BTreeMap<Vec<u8>, Option<Record>> = BTreeMap::new();
        let mut results = Vec::with_capacity(objs.len());
        for obj in objs {
            let k = key(obj.kind, &obj.namespace, &obj.name);
            let current = match pending.get(&k) {
                Some(r) => r.clone(),
                None => match self.store.get(&k)? {
                    Some(bytes) => Some(decode(&k, &bytes)?),
                    None => None,
                },
            };
            let uid = obj.object["metadata"]["uid"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            match obj.op {
                ObjectOp::Upsert => {
                    if let Some(cur) = &current {
                        if !is_newer_or_same(&obj.resource_version, &cur.resource_version) {
                            results.push(Applied::Stale {
                                stored: cur.resource_version.clone(),
                            });
                            continue;
                        }
                    }
                    let json = serde_json::to_vec(&obj.object).unwrap_or_default();
                    pending.insert(
                        k,
                        Some(Record {
                            resource_version: obj.resource_version.clone(),
                            uid,
                            json,
                        }),
                    );
                    results.push(Applied::Stored);
                }
                ObjectOp::Delete => match &current {
                    Some(cur) if uid.is_empty() || cur.uid.is_empty() || cur.uid == uid => {
                        pending.insert(k, None);
                        results.push(Applied::Deleted);
                    }
                    _ => results.push(Applied::NothingToDelete),
                },
            }
        }
        let mut ops: Vec<Op> = pending
            .into_iter()
            .map(|(k, r)| match r {
                Some(r) => Op::Put(k, encode(&r)),
                None => Op::Delete(k),
            })
            .collect();
        for (key, t) in tokens {
            ops.push(match t {
                Some(t) => {
                    let rec = TokenRecord {
                        pod_uid: key.pod_uid.clone(),
                        service_account: key.service_account.clone(),
                        audience: key.audience.clone(),
                        expiration_secs: key.expiration_secs,
                        token: t.token.clone(),
                        expires_unix: t.expires_unix,
                        granted_secs: t.expiration_secs,
                    };
                    let mut bytes = vec![SCHEMA];
                    bytes.extend(postcard::to_stdvec(&rec).map_err(|e| {
                        MetaError::Corrupt(
                            String::from_utf8_lossy(&token_key(key)).into(),
                            e.to_string(),
                        )
                    })?);
                    Op::Put(token_key(key), bytes)
                }
                None => Op::Delete(token_key(key)),
            });
        }
        if !ops.is_empty() {
            self.store.apply(&ops)?;
        }
        Ok(results)
    }

    /// Every stored object of `kind` (all kinds if `None`), in key order.
    pub fn list(&self, kind: Option<ObjectKind>) -> Result<Vec<StoredObject>, MetaError> {
        list_from(self.store.scan_prefix(&kind_prefix(kind))?)
    }

    pub fn get(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StoredObject>, MetaError> {
        let k = key(kind, namespace, name);
        match self.store.get(&k)? {
            Some(bytes) => Ok(Some(StoredObject {
                kind,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                record: decode(&k, &bytes)?,
            })),
            None => Ok(None),
        }
    }
}

/// Decodes `obj/<kind>/<ns>/<name>` pairs (as from a scan) into objects.
pub fn list_from(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<StoredObject>, MetaError> {
    let mut out = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        let text = String::from_utf8_lossy(&k).into_owned();
        let mut parts = text.splitn(4, '/');
        let (_, kind, ns, name) = (parts.next(), parts.next(), parts.next(), parts.next());
        let (Some(kind), Some(ns), Some(name)) = (kind.and_then(|k| k.parse().ok()), ns, name)
        else {
            return Err(MetaError::Corrupt(
                text,
                "key is not obj/<kind>/<ns>/<name>".into(),
            ));
        };
        out.push(StoredObject {
            kind,
            namespace: ns.to_owned(),
            name: name.to_owned(),
            record: decode(&k, &v)?,
        });
    }
    Ok(out)
}

impl MetaCore {
    /// Every stored token, by key.
    pub fn tokens(&self) -> Result<BTreeMap<TokenKey, deps::StoredToken>, MetaError> {
        let mut out = BTreeMap::new();
        for (k, v) in self.store.scan_prefix(TOKEN_PREFIX)? {
            let corrupt = |why: String| MetaError::Corrupt(String::from_utf8_lossy(&k).into(), why);
            let rec: TokenRecord = match v.split_first() {
                Some((&SCHEMA, rest)) => {
                    postcard::from_bytes(rest).map_err(|e| corrupt(e.to_string()))?
                }
                _ => return Err(corrupt("unknown schema".into())),
            };
            out.insert(
                TokenKey {
                    pod_uid: rec.pod_uid,
                    service_account: rec.service_account,
                    audience: rec.audience,
                    expiration_secs: rec.expiration_secs,
                },
                deps::StoredToken {
                    token: rec.token,
                    expires_unix: rec.expires_unix,
                    expiration_secs: rec.granted_secs,
                },
            );
        }
        Ok(out)
    }

    /// The desired state for Edged: every stored pod, configmap and secret.
    pub fn desired(&self) -> Result<bus::DesiredPods, MetaError> {
        let json = |o: &StoredObject| {
            serde_json::from_slice::<serde_json::Value>(&o.record.json).unwrap_or_default()
        };
        let mut d = bus::DesiredPods::default();
        for o in self.list(Some(ObjectKind::Pod))? {
            d.pods.push(std::rc::Rc::new(json(&o)));
        }
        for o in self.list(Some(ObjectKind::ConfigMap))? {
            d.configmaps.insert(
                (o.namespace.clone(), o.name.clone()),
                std::rc::Rc::new(json(&o)),
            );
        }
        for o in self.list(Some(ObjectKind::Secret))? {
            d.secrets.insert(
                (o.namespace.clone(), o.name.clone()),
                std::rc::Rc::new(json(&o)),
            );
        }
        for (k, t) in self.tokens()? {
            d.tokens.insert(
                k,
                bus::Token {
                    token: t.token,
                    expires_unix: t.expires_unix,
                },
            );
        }
        Ok(d)
    }
}

/// What the store holds, parsed once at start and kept current after every commit: Edged's
/// desired state and the references to fetch come from here, so a burst costs its own
/// objects, not a re-read and re-parse of everything stored, and every version of
/// [`bus::DesiredPods`] shares these objects instead of copying them.
#[derive(Default)]
struct View {
    objects: BTreeMap<(ObjectKind, String, String), std::rc::Rc<serde_json::Value>>,
}

impl View {
    fn load(core: &MetaCore) -> Result<View, MetaError> {
        let mut v = View::default();
        for o in core.list(None)? {
            let json = serde_json::from_slice(&o.record.json).unwrap_or_default();
            v.objects
                .insert((o.kind, o.namespace, o.name), std::rc::Rc::new(json));
        }
        Ok(v)
    }

    fn has(&self, kind: ObjectKind, ns: &str, name: &str) -> bool {
        self.objects
            .contains_key(&(kind, ns.to_owned(), name.to_owned()))
    }

    fn pods(&self) -> impl Iterator<Item = &serde_json::Value> {
        self.objects
            .iter()
            .filter(|((k, _, _), _)| *k == ObjectKind::Pod)
            .map(|(_, v)| v.as_ref())
    }

    fn desired(&self, core: &MetaCore, deps: &deps::Deps) -> bus::DesiredPods {
        let mut d = bus::DesiredPods::default();
        for ((kind, ns, name), v) in &self.objects {
            let key = (ns.clone(), name.clone());
            match kind {
                ObjectKind::Pod => d.pods.push(v.clone()),
                ObjectKind::ConfigMap => {
                    d.configmaps.insert(key, v.clone());
                }
                ObjectKind::Secret => {
                    d.secrets.insert(key, v.clone());
                }
                _ => {}
            }
        }
        match core.tokens() {
            Ok(tokens) => {
                for (k, t) in tokens {
                    d.tokens.insert(
                        k,
                        bus::Token {
                            token: t.token,
                            expires_unix: t.expires_unix,
                        },
                    );
                }
            }
            Err(e) => log::error!("cannot read stored tokens for edged: {e}"),
        }
        d.missing = deps.missing().clone();
        d
    }
}

/// Tells Edged what it must run now (the bus's desired cell: never waits, never queued).
fn publish(view: &View, core: &MetaCore, deps: &deps::Deps, bus: &Bus) {
    if bus.is_enabled(ModuleId::Edged) {
        bus.set_desired(std::rc::Rc::new(view.desired(core, deps)));
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What one burst of messages asks the store to do.
#[derive(Default)]
struct Burst {
    objects: Vec<CloudObject>,
    /// Acknowledgements owed once the burst is stored, by object index.
    acks: Vec<Option<AckHandle>>,
    tokens: Vec<(TokenKey, Option<deps::StoredToken>)>,
    missing_changed: bool,
    /// What the messages taken weigh ([`BusMessage::weight`]), against [`MAX_BATCH_BYTES`].
    bytes: usize,
}

fn take(burst: &mut Burst, deps: &mut deps::Deps, msg: BusMessage, now: i64) {
    burst.bytes += msg.weight();
    match msg {
        BusMessage::FromCloud(o) => {
            let ack = Some(o.ack.clone());
            burst.objects.push(*o);
            burst.acks.push(ack);
        }
        BusMessage::Link(l) => deps.link(matches!(l, Link::Connected { .. })),
        BusMessage::Reply { id, outcome } if deps.is_mine(id) => {
            let ack = match &outcome {
                bus::Outcome::Answered { ack, .. } => ack.as_deref().cloned(),
                _ => None,
            };
            match deps.on_reply(id, outcome, now) {
                deps::Answer::Object {
                    kind,
                    namespace,
                    name,
                    resource_version,
                    object,
                } => {
                    burst.objects.push(CloudObject {
                        op: ObjectOp::Upsert,
                        kind,
                        namespace,
                        name,
                        resource_version,
                        object,
                        ack: ack.clone().unwrap_or(AckHandle {
                            msg_id: String::new(),
                            route: Default::default(),
                        }),
                    });
                    burst.acks.push(ack);
                }
                deps::Answer::Token { key, token } => burst.tokens.push((key, Some(token))),
                deps::Answer::Missing => burst.missing_changed = true,
                deps::Answer::Nothing => {}
            }
        }
        _ => {}
    }
}

/// Runs MetaManager until shutdown.
pub async fn run(core: MetaCore, mailbox: Mailbox, bus: Bus, shutdown: Shutdown) {
    let mut deps = deps::Deps::new();
    let mut view = match View::load(&core) {
        Ok(v) => v,
        Err(e) => {
            log::error!("cannot read the store: {e}; starting from an empty view");
            View::default()
        }
    };
    // Edged starts from the store, cloud or no cloud: this is what keeps pods running offline.
    publish(&view, &core, &deps, &bus);
    let mut store_failed = Throttle::default();
    // What the stored pods reference: recomputed only when a pod changed, so a burst of
    // deliveries does not walk every stored pod once per commit.
    let mut wanted = deps::wanted(view.pods());
    // Retries of queries come due on this tick.
    let mut ticker = smol::Timer::interval(std::time::Duration::from_secs(1));
    loop {
        let now = now_ms();
        let mut burst = Burst::default();
        match mailbox.next(&mut ticker, &shutdown).await {
            Wake::Stop => return,
            Wake::Tick => {}
            Wake::Mail(first) => {
                // Group commit: whatever else is already waiting, up to MAX_BATCH messages
                // and MAX_BATCH_BYTES, shares one transaction. What does not fit stays in
                // the mailbox for the next one.
                // While a burst is on (a round took several), let EdgeHub run once and take
                // what it added too: a commit costs about the same for 2 objects or 60.
                take(&mut burst, &mut deps, first, now);
                let mut taken = 1;
                loop {
                    let before = taken;
                    while taken < MAX_BATCH {
                        let left = MAX_BATCH_BYTES.saturating_sub(burst.bytes);
                        match mailbox.try_recv_within(left) {
                            Some(m) => take(&mut burst, &mut deps, m, now),
                            None => break,
                        }
                        taken += 1;
                    }
                    if taken >= MAX_BATCH
                        || taken - before < BURST_ROUND
                        || burst.bytes >= MAX_BATCH_BYTES
                    {
                        break;
                    }
                    smol::future::yield_now().await;
                }
            }
        }
        let mut changed = burst.missing_changed;
        let mut pods_changed = false;
        if !burst.objects.is_empty() || !burst.tokens.is_empty() {
            let result = {
                let objs: Vec<&CloudObject> = burst.objects.iter().collect();
                core.commit(&objs, &burst.tokens)
            };
            match result {
                Ok(results) => {
                    store_failed.reset();
                    changed |= !burst.tokens.is_empty();
                    let mut acks = Vec::with_capacity(results.len());
                    for ((obj, res), ack) in burst.objects.into_iter().zip(results).zip(burst.acks)
                    {
                        let key = (obj.kind, obj.namespace, obj.name);
                        match res {
                            Applied::Stored => {
                                pods_changed |= key.0 == ObjectKind::Pod;
                                view.objects.insert(key.clone(), std::rc::Rc::new(obj.object));
                                changed = true;
                            }
                            Applied::Deleted => {
                                pods_changed |= key.0 == ObjectKind::Pod;
                                view.objects.remove(&key);
                                changed = true;
                            }
                            Applied::Stale { stored } => log::debug!(
                                "{} {}/{} rv {} is older than stored rv {stored}; kept the stored one",
                                key.0.as_str(),
                                key.1,
                                key.2,
                                obj.resource_version
                            ),
                            Applied::NothingToDelete => {}
                        }
                        if obj.op == ObjectOp::Upsert && deps.arrived(key.0, &key.1, &key.2) {
                            changed = true;
                        }
                        acks.extend(ack.filter(|a| !a.msg_id.is_empty()));
                    }
                    // Only now, after the commit: every acknowledgement of the burst.
                    for ack in acks {
                        if !bus
                            .send(ModuleId::EdgeHub, BusMessage::Persisted(Box::new(ack)))
                            .await
                        {
                            return;
                        }
                    }
                }
                // Nothing is acknowledged: the cloud resends (queries are asked again), and the
                // next attempt may succeed (a full disk freed, say). The store stays at its last
                // committed state.
                Err(e) => {
                    if let Some(n) = store_failed.allow(std::time::Instant::now()) {
                        log::error!(
                            "cannot persist {} object(s) from the cloud: {e}{n}",
                            burst.objects.len()
                        );
                    }
                }
            }
        }
        if pods_changed {
            wanted = deps::wanted(view.pods());
        }
        if !fetch(&core, &view, &wanted, &mut deps, &bus, &mut changed).await {
            return;
        }
        if changed {
            publish(&view, &core, &deps, &bus);
        }
    }
}

/// Asks for what the stored pods need and the store lacks; drops tokens of pods gone.
async fn fetch(
    core: &MetaCore,
    view: &View,
    wanted: &std::collections::BTreeSet<deps::Want>,
    deps: &mut deps::Deps,
    bus: &Bus,
    changed: &mut bool,
) -> bool {
    let tokens = core.tokens().unwrap_or_default();
    let stale: Vec<(TokenKey, Option<deps::StoredToken>)> = tokens
        .keys()
        .filter(|k| {
            !wanted
                .iter()
                .any(|w| matches!(w, deps::Want::Token { key, .. } if key == *k))
        })
        .map(|k| (k.clone(), None))
        .collect();
    if !stale.is_empty() {
        match core.commit(&[], &stale) {
            Ok(_) => *changed = true,
            Err(e) => log::error!("cannot drop tokens of deleted pods: {e}"),
        }
    }
    let has = |kind, ns: &str, name: &str| view.has(kind, ns, name);
    let reqs = deps.poll(wanted, has, |k| tokens.get(k).cloned(), now_ms());
    for (id, request) in reqs {
        let msg = BusMessage::ToCloud {
            from: ModuleId::MetaManager,
            id,
            request,
        };
        if !bus.send(ModuleId::EdgeHub, msg).await {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::AckHandle;
    use serde_json::json;

    fn core(name: &str) -> MetaCore {
        let p = std::env::temp_dir().join(format!("meta-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        MetaCore::new(std::rc::Rc::from(
            store::open(&p, store::Backend::Redb).unwrap(),
        ))
    }

    fn obj(op: ObjectOp, kind: ObjectKind, name: &str, rv: &str, uid: &str) -> CloudObject {
        CloudObject {
            op,
            kind,
            namespace: "default".into(),
            name: name.into(),
            resource_version: rv.into(),
            object: json!({"metadata": {"name": name, "namespace": "default", "uid": uid, "resourceVersion": rv}, "spec": {"x": rv}}),
            ack: AckHandle {
                msg_id: format!("m-{rv}"),
                route: proto::Route::default(),
            },
        }
    }

    #[test]
    fn versions_only_move_forward() {
        let c = core("fwd");
        let v5 = obj(ObjectOp::Upsert, ObjectKind::Pod, "p", "5", "u1");
        let v3 = obj(ObjectOp::Upsert, ObjectKind::Pod, "p", "3", "u1");
        let v9 = obj(ObjectOp::Upsert, ObjectKind::Pod, "p", "9", "u1");
        assert_eq!(c.apply_batch(&[&v5]).unwrap(), vec![Applied::Stored]);
        assert_eq!(
            c.apply_batch(&[&v3]).unwrap(),
            vec![Applied::Stale { stored: "5".into() }]
        );
        assert_eq!(
            c.get(ObjectKind::Pod, "default", "p")
                .unwrap()
                .unwrap()
                .record
                .resource_version,
            "5"
        );
        // Within one batch too: 9 then 3 leaves 9.
        assert_eq!(
            c.apply_batch(&[&v9, &v3]).unwrap(),
            vec![Applied::Stored, Applied::Stale { stored: "9".into() }]
        );
        let stored = c.get(ObjectKind::Pod, "default", "p").unwrap().unwrap();
        let back: serde_json::Value = serde_json::from_slice(&stored.record.json).unwrap();
        assert_eq!(back, v9.object, "the cloud's JSON is kept whole");
    }

    #[test]
    fn deletes_respect_uid_and_kinds_are_separate() {
        let c = core("del");
        let pod = obj(ObjectOp::Upsert, ObjectKind::Pod, "x", "1", "u1");
        let cm = obj(ObjectOp::Upsert, ObjectKind::ConfigMap, "x", "2", "u2");
        c.apply_batch(&[&pod, &cm]).unwrap();
        assert_eq!(c.list(None).unwrap().len(), 2);
        assert_eq!(c.list(Some(ObjectKind::ConfigMap)).unwrap().len(), 1);
        let wrong_uid = obj(ObjectOp::Delete, ObjectKind::Pod, "x", "3", "other");
        assert_eq!(
            c.apply_batch(&[&wrong_uid]).unwrap(),
            vec![Applied::NothingToDelete]
        );
        let del = obj(ObjectOp::Delete, ObjectKind::Pod, "x", "3", "u1");
        assert_eq!(c.apply_batch(&[&del]).unwrap(), vec![Applied::Deleted]);
        assert!(c.get(ObjectKind::Pod, "default", "x").unwrap().is_none());
        assert!(c
            .get(ObjectKind::ConfigMap, "default", "x")
            .unwrap()
            .is_some());
        assert_eq!(
            c.apply_batch(&[&del]).unwrap(),
            vec![Applied::NothingToDelete]
        );
    }

    #[test]
    fn records_carry_a_schema_byte_and_reject_unknown_ones() {
        let r = Record {
            resource_version: "1".into(),
            uid: "u".into(),
            json: b"{}".to_vec(),
        };
        let bytes = encode(&r);
        assert_eq!(bytes[0], SCHEMA);
        assert_eq!(decode(b"k", &bytes).unwrap(), r);
        let mut future = bytes.clone();
        future[0] = 99;
        assert!(matches!(decode(b"k", &future), Err(MetaError::Corrupt(..))));
        assert!(decode(b"k", &bytes[..bytes.len() - 1]).is_err());
        assert!(decode(b"k", &[]).is_err());
    }

    #[test]
    fn non_numeric_versions_are_taken_as_newer() {
        assert!(is_newer_or_same("10", "9"));
        assert!(!is_newer_or_same("9", "10"));
        assert!(is_newer_or_same("abc", "10"));
    }

    /// The store, noting at each commit how many messages EdgeHub had been handed.
    struct Watching {
        inner: Box<dyn KvStore>,
        bus: std::cell::RefCell<Option<Bus>>,
        commits: std::cell::RefCell<Vec<usize>>,
    }

    impl KvStore for Watching {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(key)
        }
        fn scan_prefix(&self, prefix: &[u8]) -> Result<store::Pairs, StoreError> {
            self.inner.scan_prefix(prefix)
        }
        fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
            if let Some(bus) = self.bus.borrow().as_ref() {
                self.commits
                    .borrow_mut()
                    .push(bus.queued(ModuleId::EdgeHub).0);
            }
            self.inner.apply(ops)
        }
        fn bytes_written(&self) -> u64 {
            self.inner.bytes_written()
        }
    }

    #[test]
    fn a_burst_of_pushes_is_one_commit_and_acknowledged_after_it() {
        let p = std::env::temp_dir().join(format!("meta-burst-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let watching = std::rc::Rc::new(Watching {
            inner: store::open(&p, store::Backend::Redb).unwrap(),
            bus: Default::default(),
            commits: Default::default(),
        });
        let (bus, mut boxes) = Bus::new(&[ModuleId::EdgeHub, ModuleId::MetaManager]);
        *watching.bus.borrow_mut() = Some(bus.clone());
        let meta = boxes.pop().unwrap();
        let hub = boxes.pop().unwrap();
        const N: usize = 20;
        for i in 0..N {
            let o = obj(
                ObjectOp::Upsert,
                ObjectKind::ConfigMap,
                &format!("c{i}"),
                &format!("{}", i + 1),
                &format!("u{i}"),
            );
            bus.deliver(ModuleId::MetaManager, BusMessage::FromCloud(Box::new(o)))
                .unwrap();
        }
        let (mut trigger, shutdown) = Shutdown::new();
        let ex = smol::LocalExecutor::new();
        let acks = smol::block_on(ex.run(async {
            let task = ex.spawn(run(
                MetaCore::new(watching.clone()),
                meta,
                bus.clone(),
                shutdown,
            ));
            let mut acks = 0;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while acks < N && std::time::Instant::now() < deadline {
                let m = smol::future::or(hub.recv(), async {
                    smol::Timer::at(deadline).await;
                    None
                })
                .await;
                acks += matches!(m, Some(BusMessage::Persisted(_))) as usize;
            }
            trigger.trigger();
            task.await;
            acks
        }));
        assert_eq!(acks, N);
        assert_eq!(
            *watching.commits.borrow(),
            vec![0],
            "one commit for the burst, before any acknowledgement"
        );
        let _ = std::fs::remove_file(&p);
    }
}
