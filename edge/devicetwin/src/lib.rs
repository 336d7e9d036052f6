//! DeviceTwin (§5 of the protocol spec): devices and their twins in the store, the upstream
//! MQTT API (`$hw/events/device/<ns>/<name>/twin/update|get`, `state/update`,
//! `$hw/events/node/<node>/membership/get`), desired values from the cloud turned into deltas,
//! and reported values synced to the cloud.
//!
//! [`TwinCore`] is sans-IO over the store: input an MQTT message or a cloud object, output
//! publishes and cloud requests. Reports for the cloud are queued in the store
//! (`twinq/<seq>`, at most [`QUEUE_CAPACITY`], oldest evicted and counted) and removed only
//! when the cloud confirms them, so updates made offline reach the cloud after reconnect.
//! Bad input (malformed JSON, wrong types, unknown devices, oversize values) gets an error on
//! the matching result topic and never changes stored state.
//!
//! Writes go through a [`store::Batched`] layer: the runner handles every message already
//! waiting (up to [`MAX_BATCH`]) and commits them in one durable transaction before it
//! publishes any result or acknowledges any object, so a burst of mapper updates costs one
//! fsync, not one each.

#![forbid(unsafe_code)]

use std::rc::Rc;

use bus::{
    Bus, BusMessage, CloudObject, CloudRequest, Link, Mailbox, ModuleId, ObjectOp, Outcome, Reply,
    RequestId, Shutdown, Wake,
};
use serde_json::{json, Map, Value};
use store::{Batched, KvStore, Op, StoreError};

/// Reports waiting for the cloud at most; the oldest is dropped (and counted) beyond this.
pub const QUEUE_CAPACITY: usize = 1000;
/// Longest twin value (upstream's limit).
pub const MAX_VALUE_BYTES: usize = 512;
/// Longest twin or attribute name (upstream's limit).
pub const MAX_KEY_BYTES: usize = 128;
/// Largest MQTT payload DeviceTwin parses.
pub const MAX_PAYLOAD_BYTES: usize = 64 << 10;

const STATES: [&str; 5] = ["online", "offline", "ok", "unknown", "unhealthy"];

/// What the core wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    Publish {
        topic: String,
        payload: Vec<u8>,
        /// The answer to bad input (an unknown device, a malformed payload): limited to
        /// [`REFUSALS_PER_SEC`].
        refusal: bool,
    },
    /// A report was queued for the cloud.
    Queued,
}

fn device_key(ns: &str, name: &str) -> Vec<u8> {
    format!("dev/{ns}/{name}").into_bytes()
}

/// DeviceModels are kept apart from devices: a model is never a member of the node.
fn model_key(ns: &str, name: &str) -> Vec<u8> {
    format!("model/{ns}/{name}").into_bytes()
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() < MAX_KEY_BYTES
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,:/@#".contains(c))
}

fn publish(topic: String, v: &Value) -> Out {
    Out::Publish {
        topic,
        payload: v.to_string().into_bytes(),
        refusal: false,
    }
}

fn error_result(topic: &str, event_id: &str, now_ms: i64, code: u16, reason: &str) -> Out {
    let v = json!({ "event_id": event_id, "timestamp": now_ms, "code": code, "reason": reason });
    Out::Publish {
        topic: format!("{topic}/result"),
        payload: v.to_string().into_bytes(),
        refusal: true,
    }
}

/// The sans-IO core.
pub struct TwinCore {
    node: String,
    /// Reads see uncommitted writes; [`TwinCore::commit`] makes them durable.
    store: Batched,
    /// Keys of the queued reports, oldest first: an index so the hot path never rescans the
    /// store.
    queue: std::collections::VecDeque<Vec<u8>>,
    next_seq: u64,
    /// Reports dropped because the queue was full.
    pub dropped: u64,
    full_log: bus::Throttle,
}

impl TwinCore {
    pub fn new(node: &str, store: Rc<dyn KvStore>) -> Result<Self, StoreError> {
        let queue: std::collections::VecDeque<Vec<u8>> = store
            .scan_prefix(b"twinq/")?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let next_seq = queue
            .back()
            .and_then(|k| std::str::from_utf8(&k[6..]).ok()?.parse::<u64>().ok())
            .map_or(0, |s| s + 1);
        Ok(TwinCore {
            node: node.to_owned(),
            store: Batched::new(store),
            queue,
            next_seq,
            dropped: 0,
            full_log: bus::Throttle::default(),
        })
    }

    /// Makes everything handled since the last commit durable, in one transaction. Nothing
    /// the core returned since (results to publish, objects to acknowledge) may be acted on
    /// before this succeeds. On failure none of it was stored, and the report queue's index
    /// is rebuilt from the store.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        let r = self.store.commit();
        if r.is_err() {
            self.queue = self
                .store
                .scan_prefix(b"twinq/")?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
        }
        r
    }

    pub fn device(&self, ns: &str, name: &str) -> Result<Option<Value>, StoreError> {
        Ok(self
            .store
            .get(&device_key(ns, name))?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// A stored DeviceModel, as the cloud sent it.
    pub fn model(&self, ns: &str, name: &str) -> Result<Option<Value>, StoreError> {
        Ok(self
            .store
            .get(&model_key(ns, name))?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// A DeviceModel pushed by the cloud: stored (or removed) as a model, for mappers;
    /// membership is untouched.
    pub fn on_model(&mut self, obj: &CloudObject) -> Result<Vec<Out>, StoreError> {
        let k = model_key(&obj.namespace, &obj.name);
        match obj.op {
            ObjectOp::Delete => self.store.delete(&k)?,
            ObjectOp::Upsert => self
                .store
                .put(&k, &serde_json::to_vec(&obj.object).unwrap_or_default())?,
        }
        Ok(Vec::new())
    }

    pub fn devices(&self) -> Result<Vec<Value>, StoreError> {
        Ok(self
            .store
            .scan_prefix(b"dev/")?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect())
    }

    /// Reports waiting for the cloud: `(queue key, request)`.
    pub fn queued(&self) -> Result<Vec<(Vec<u8>, CloudRequest)>, StoreError> {
        self.queued_head(usize::MAX)
    }

    /// The oldest `n` reports waiting for the cloud.
    pub fn queued_head(&self, n: usize) -> Result<Vec<(Vec<u8>, CloudRequest)>, StoreError> {
        let mut out = Vec::new();
        for k in self.queue.iter().take(n) {
            let Some(v) = self.store.get(k)? else {
                continue;
            };
            let k = k.clone();
            let Ok(q) = serde_json::from_slice::<Value>(&v) else {
                continue;
            };
            let (ns, name) = (
                q["namespace"].as_str().unwrap_or("").to_owned(),
                q["name"].as_str().unwrap_or("").to_owned(),
            );
            let req = match q["kind"].as_str() {
                Some("state") => CloudRequest::DeviceState {
                    namespace: ns,
                    name,
                    content: q["content"].as_str().unwrap_or("").to_owned(),
                },
                _ => CloudRequest::TwinReported {
                    namespace: ns,
                    name,
                    content: q["content"].clone(),
                },
            };
            out.push((k, req));
        }
        Ok(out)
    }

    /// The cloud confirmed a queued report.
    pub fn confirmed(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.store.delete(key)?;
        if let Some(pos) = self.queue.iter().position(|k| k == key) {
            self.queue.remove(pos);
        }
        Ok(())
    }

    fn enqueue_op(
        &mut self,
        kind: &str,
        ns: &str,
        name: &str,
        content: Value,
        ops: &mut Vec<Op>,
    ) -> Result<(), StoreError> {
        if self.queue.len() >= QUEUE_CAPACITY {
            let overflow = self.queue.len() + 1 - QUEUE_CAPACITY;
            for k in self.queue.iter().take(overflow) {
                ops.push(Op::Delete(k.clone()));
                self.dropped += 1;
            }
            if let Some(n) = self.full_log.allow(std::time::Instant::now()) {
                log::warn!(
                    "twin report queue full ({QUEUE_CAPACITY}); dropped the oldest ({} so far){n}",
                    self.dropped
                );
            }
        }
        let key = format!("twinq/{:016}", self.next_seq).into_bytes();
        self.next_seq += 1;
        let q = json!({ "kind": kind, "namespace": ns, "name": name, "content": content });
        ops.push(Op::Put(key, q.to_string().into_bytes()));
        Ok(())
    }

    /// Mirrors a committed batch's queue changes in the index.
    fn index(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Put(k, _) if k.starts_with(b"twinq/") => self.queue.push_back(k.clone()),
                Op::Delete(k) if k.starts_with(b"twinq/") => {
                    if let Some(pos) = self.queue.iter().position(|q| q == k) {
                        self.queue.remove(pos);
                    }
                }
                _ => {}
            }
        }
    }

    fn save(&mut self, dev: &Value, mut ops: Vec<Op>) -> Result<(), StoreError> {
        let ns = dev["namespace"].as_str().unwrap_or("default");
        let name = dev["name"].as_str().unwrap_or("");
        ops.push(Op::Put(device_key(ns, name), dev.to_string().into_bytes()));
        self.store.apply(&ops)?;
        self.index(&ops);
        Ok(())
    }

    /// Handles one MQTT message from EventBus.
    pub fn on_mqtt(
        &mut self,
        topic: &str,
        payload: &[u8],
        now_ms: i64,
    ) -> Result<Vec<Out>, StoreError> {
        let parts: Vec<&str> = topic.split('/').collect();
        match parts.as_slice() {
            ["$hw", "events", "node", node, "membership", "get"] if *node == self.node => {
                let event_id = serde_json::from_slice::<Value>(payload)
                    .ok()
                    .and_then(|v| v["event_id"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                let devices: Vec<Value> = self.devices()?.iter().map(membership_entry).collect();
                Ok(vec![publish(
                    format!("{topic}/result"),
                    &json!({ "event_id": event_id, "timestamp": now_ms, "devices": devices }),
                )])
            }
            ["$hw", "events", "device", ns, name, "twin", action] => {
                self.twin_api(topic, ns, name, action, payload, now_ms)
            }
            ["$hw", "events", "device", ns, name, "state", "update"] => {
                self.state_update(topic, ns, name, payload, now_ms)
            }
            _ => {
                log::debug!("twin: no handler for topic {topic}");
                Ok(Vec::new())
            }
        }
    }

    fn parse(&self, topic: &str, payload: &[u8], now_ms: i64) -> Result<(Value, String), Out> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(error_result(
                topic,
                "",
                now_ms,
                400,
                &format!(
                    "payload of {} bytes is over {MAX_PAYLOAD_BYTES}",
                    payload.len()
                ),
            ));
        }
        match serde_json::from_slice::<Value>(payload) {
            Ok(v) if v.is_object() => {
                let id = v["event_id"].as_str().unwrap_or("").to_owned();
                Ok((v, id))
            }
            Ok(_) => Err(error_result(
                topic,
                "",
                now_ms,
                400,
                "payload must be a JSON object",
            )),
            Err(e) => Err(error_result(
                topic,
                "",
                now_ms,
                400,
                &format!("malformed JSON: {e}"),
            )),
        }
    }

    /// A request on a device topic: the parsed payload, its event id and the stored device,
    /// or the error result to publish (bad payload, unknown device).
    fn request(
        &self,
        topic: &str,
        ns: &str,
        name: &str,
        payload: &[u8],
        now_ms: i64,
    ) -> Result<Result<(Value, String, Value), Out>, StoreError> {
        let (msg, event_id) = match self.parse(topic, payload, now_ms) {
            Ok(x) => x,
            Err(out) => return Ok(Err(out)),
        };
        match self.device(ns, name)? {
            Some(dev) => Ok(Ok((msg, event_id, dev))),
            None => Ok(Err(error_result(
                topic,
                &event_id,
                now_ms,
                404,
                &format!("device {ns}/{name} not found on this node"),
            ))),
        }
    }

    fn twin_api(
        &mut self,
        topic: &str,
        ns: &str,
        name: &str,
        action: &str,
        payload: &[u8],
        now_ms: i64,
    ) -> Result<Vec<Out>, StoreError> {
        let (msg, event_id, mut dev) = match self.request(topic, ns, name, payload, now_ms)? {
            Ok(x) => x,
            Err(out) => return Ok(vec![out]),
        };
        match action {
            "get" => Ok(vec![publish(
                format!("{topic}/result"),
                &json!({ "event_id": event_id, "timestamp": now_ms, "twin": dev["twin"] }),
            )]),
            "update" => {
                let Some(twins) = msg["twin"].as_object() else {
                    return Ok(vec![error_result(
                        topic,
                        &event_id,
                        now_ms,
                        400,
                        "twin must be an object of twin name → value",
                    )]);
                };
                // Validate everything before changing anything.
                for (k, t) in twins {
                    if !valid_key(k) {
                        return Ok(vec![error_result(
                            topic,
                            &event_id,
                            now_ms,
                            400,
                            &format!("twin name {k:?} is not valid"),
                        )]);
                    }
                    match &t["actual"]["value"] {
                        Value::String(s) if s.len() <= MAX_VALUE_BYTES => {}
                        Value::String(_) => {
                            return Ok(vec![error_result(
                                topic,
                                &event_id,
                                now_ms,
                                400,
                                &format!("twin {k}: value over {MAX_VALUE_BYTES} bytes"),
                            )])
                        }
                        Value::Null if t.get("actual").is_none() => {}
                        _ => {
                            return Ok(vec![error_result(
                                topic,
                                &event_id,
                                now_ms,
                                400,
                                &format!("twin {k}: actual.value must be a string"),
                            )])
                        }
                    }
                }
                let mut result = Map::new();
                let mut document = Map::new();
                let mut report = Map::new();
                for (k, t) in twins {
                    let old = dev["twin"][k].clone();
                    let mut cur = if old.is_object() {
                        old.clone()
                    } else {
                        json!({})
                    };
                    if let Some(v) = t["actual"]["value"].as_str() {
                        cur["actual"] = json!({ "value": v, "metadata": { "timestamp": now_ms } });
                        let edge = cur["actual_version"]["edge"].as_i64().unwrap_or(0) + 1;
                        let cloud = cur["actual_version"]["cloud"].as_i64().unwrap_or(0);
                        cur["actual_version"] = json!({ "cloud": cloud, "edge": edge });
                    }
                    if let Some(ty) = t["metadata"]["type"].as_str() {
                        cur["metadata"] = json!({ "type": ty });
                    }
                    if !dev["twin"].is_object() {
                        dev["twin"] = json!({});
                    }
                    dev["twin"][k] = cur.clone();
                    result.insert(k.clone(), cur.clone());
                    document.insert(k.clone(), json!({ "last": if old.is_null() { Value::Null } else { old }, "current": cur.clone() }));
                    report.insert(k.clone(), json!({ "actual": cur["actual"], "metadata": cur["metadata"], "actual_version": cur["actual_version"] }));
                }
                let mut ops = Vec::new();
                self.enqueue_op(
                    "twin",
                    ns,
                    name,
                    json!({ "event_id": event_id, "timestamp": now_ms, "twin": report }),
                    &mut ops,
                )?;
                self.save(&dev, ops)?;
                let mut out = vec![
                    publish(
                        format!("{topic}/result"),
                        &json!({ "event_id": event_id, "timestamp": now_ms, "twin": result }),
                    ),
                    publish(
                        format!("{topic}/document"),
                        &json!({ "event_id": event_id, "timestamp": now_ms, "twin": document }),
                    ),
                ];
                out.extend(delta(
                    &dev,
                    &format!("$hw/events/device/{ns}/{name}/twin/update/delta"),
                    now_ms,
                ));
                out.push(Out::Queued);
                Ok(out)
            }
            // Results, deltas and documents are ours; cloud_updated is legacy.
            _ => Ok(Vec::new()),
        }
    }

    fn state_update(
        &mut self,
        topic: &str,
        ns: &str,
        name: &str,
        payload: &[u8],
        now_ms: i64,
    ) -> Result<Vec<Out>, StoreError> {
        let (msg, event_id, mut dev) = match self.request(topic, ns, name, payload, now_ms)? {
            Ok(x) => x,
            Err(out) => return Ok(vec![out]),
        };
        let Some(state) = msg["state"].as_str().filter(|s| STATES.contains(s)) else {
            return Ok(vec![error_result(
                topic,
                &event_id,
                now_ms,
                400,
                &format!("state must be one of {}", STATES.join(", ")),
            )]);
        };
        dev["state"] = json!(state);
        if matches!(state, "online" | "ok") {
            dev["last_online"] = json!(proto::time::rfc3339(now_ms / 1000));
        }
        // Upstream's DeviceTwin writes `lastOnlineTime` here (empty unless online or ok).
        let last = if matches!(state, "online" | "ok") {
            dev["last_online"].clone()
        } else {
            json!("")
        };
        let device_msg = json!({ "event_id": event_id, "timestamp": now_ms,
            "device": { "name": name, "state": state, "lastOnlineTime": last } });
        let mut ops = Vec::new();
        self.enqueue_op("state", ns, name, json!(device_msg.to_string()), &mut ops)?;
        self.save(&dev, ops)?;
        Ok(vec![
            publish(format!("{topic}/result"), &device_msg),
            Out::Queued,
        ])
    }

    /// A Device (devices.kubeedge.io/v1beta1) pushed by the cloud: its desired values become
    /// expected twin values; a new device joins the membership.
    pub fn on_device(&mut self, obj: &CloudObject, now_ms: i64) -> Result<Vec<Out>, StoreError> {
        let (ns, name) = (obj.namespace.as_str(), obj.name.as_str());
        let membership = format!("$hw/events/node/{}/membership/updated", self.node);
        let existing = self.device(ns, name)?;
        if obj.op == ObjectOp::Delete {
            if let Some(dev) = existing {
                self.store.delete(&device_key(ns, name))?;
                return Ok(vec![publish(
                    membership,
                    &json!({ "event_id": "", "timestamp": now_ms, "added_devices": [], "removed_devices": [membership_entry(&dev)] }),
                )]);
            }
            return Ok(Vec::new());
        }
        let is_new = existing.is_none();
        let mut dev = existing.unwrap_or_else(|| json!({ "id": format!("{ns}/{name}"), "name": name, "namespace": ns, "state": "unknown", "attributes": {}, "twin": {} }));
        dev["description"] = obj.object["metadata"]["labels"]["description"].clone();
        for p in obj.object["spec"]["properties"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(pname) = p["name"].as_str().filter(|k| valid_key(k)) else {
                continue;
            };
            let mut cur = dev["twin"][pname].clone();
            if !cur.is_object() {
                cur = json!({});
            }
            if let Some(v) = p["desired"]["value"].as_str() {
                if cur["expected"]["value"].as_str() != Some(v) {
                    let cloud = cur["expected_version"]["cloud"].as_i64().unwrap_or(0) + 1;
                    cur["expected"] = json!({ "value": v, "metadata": { "timestamp": now_ms } });
                    cur["expected_version"] = json!({ "cloud": cloud, "edge": cur["expected_version"]["edge"].as_i64().unwrap_or(0) });
                }
            }
            if let Some(ty) = p["desired"]["metadata"]["type"].as_str() {
                cur["metadata"] = json!({ "type": ty });
            }
            dev["twin"][pname] = cur;
        }
        self.save(&dev, Vec::new())?;
        let mut out = Vec::new();
        if is_new {
            out.push(publish(membership, &json!({ "event_id": "", "timestamp": now_ms, "added_devices": [membership_entry(&dev)], "removed_devices": [] })));
        }
        out.extend(delta(
            &dev,
            &format!("$hw/events/device/{ns}/{name}/twin/update/delta"),
            now_ms,
        ));
        Ok(out)
    }

    /// Upstream's membership push (`added_devices`, `removed_devices`): devices are members
    /// of the node from it or from their Device object, whichever comes first, and are
    /// announced on `membership/updated` once; a device known already is not announced again
    /// (a cloud that sends both must not make mappers see it twice).
    pub fn on_membership(&mut self, content: &Value, now_ms: i64) -> Result<Vec<Out>, StoreError> {
        let mut added = Vec::new();
        let mut removed = Vec::new();
        for d in content["added_devices"].as_array().into_iter().flatten() {
            let Some(id) = d["id"].as_str() else { continue };
            let (ns, name) = id.split_once('/').unwrap_or(("default", id));
            if self.device(ns, name)?.is_none() {
                let dev = json!({ "id": id, "name": name, "namespace": ns, "state": "unknown",
                    "description": d["description"], "attributes": {}, "twin": {} });
                self.save(&dev, Vec::new())?;
                added.push(membership_entry(&dev));
            }
        }
        for d in content["removed_devices"].as_array().into_iter().flatten() {
            let Some(id) = d["id"].as_str() else { continue };
            let (ns, name) = id.split_once('/').unwrap_or(("default", id));
            if let Some(dev) = self.device(ns, name)? {
                self.store.delete(&device_key(ns, name))?;
                removed.push(membership_entry(&dev));
            }
        }
        if added.is_empty() && removed.is_empty() {
            return Ok(Vec::new());
        }
        let list = |v: Vec<Value>| {
            if v.is_empty() {
                Value::Null
            } else {
                Value::Array(v)
            }
        };
        Ok(vec![publish(
            format!("$hw/events/node/{}/membership/updated", self.node),
            &json!({ "event_id": content["event_id"], "timestamp": now_ms,
                "added_devices": list(added), "removed_devices": list(removed) }),
        )])
    }
}

fn membership_entry(dev: &Value) -> Value {
    json!({ "id": dev["id"], "name": dev["name"], "description": dev["description"] })
}

/// The delta message when any expected value differs from the actual one.
fn delta(dev: &Value, topic: &str, now_ms: i64) -> Option<Out> {
    let mut d = Map::new();
    for (k, t) in dev["twin"].as_object()? {
        if let Some(exp) = t["expected"]["value"].as_str() {
            if t["actual"]["value"].as_str() != Some(exp) {
                d.insert(k.clone(), json!(exp));
            }
        }
    }
    (!d.is_empty()).then(|| {
        publish(
            topic.to_owned(),
            &json!({ "event_id": "", "timestamp": now_ms, "twin": dev["twin"], "delta": d }),
        )
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Reports in flight at most: DeviceTwin's part of the bus contract (its reply room).
const IN_FLIGHT: usize = ModuleId::DeviceTwin.in_flight();

/// MQTT results waiting for room in EventBus's mailbox at most, in bytes. DeviceTwin never
/// waits on EventBus (EventBus waits on DeviceTwin: the bus's deadlock rule), so results it
/// cannot hand over yet wait here; beyond this the oldest is shed and counted. An EventBus
/// that reads its mailbox while it waits never lets it fill.
pub const OUTBOX_BYTES: usize = 256 << 10;
/// Answers to bad input (unknown devices, malformed payloads) per second at most, with a
/// burst of as many; beyond it each is shed at once (counted). Every answer travels back
/// through EventBus and the broker in the same order as good results, so a client flooding a
/// topic of a device that does not exist would otherwise put its refusals in front of every
/// other device's results.
pub const REFUSALS_PER_SEC: u32 = 100;

/// Messages handled per store commit at most: bounds the uncommitted buffer (a device
/// document is at most a few KiB) and how long a burst delays its first result.
pub const MAX_BATCH: usize = 256;
/// A round of taking mail that got this many means a burst: yield once and take more into
/// the same commit.
const BURST_ROUND: usize = 16;

/// What handling one bus message produced, acted on only after the commit.
#[derive(Default)]
struct Effects {
    publish: Vec<Out>,
    persisted: Vec<bus::AckHandle>,
    /// A message that may have changed devices or queued a report: commit before acting.
    durable: bool,
}

/// Confirmed reports whose removal from the store queue may wait for the next commit at
/// most. A confirmation needs no fsync of its own: lost in a crash, the report is sent once
/// more (a resend of an older report is followed by the newer ones, in queue order), so
/// confirmations ride on the commits of updates, on this many, or on the 1 s tick.
pub const LAZY_CONFIRMS: usize = 256;

/// The runner's state besides the core.
struct Runner {
    /// Reports confirmed while handling the current batch.
    confirmed_now: usize,
    connected: bool,
    in_flight: Vec<(RequestId, Vec<u8>)>,
    next_id: u32,
}

impl Runner {
    fn handle(&mut self, core: &mut TwinCore, msg: BusMessage, now: i64, fx: &mut Effects) {
        fx.durable |= !matches!(msg, BusMessage::Reply { .. } | BusMessage::Link(_));
        let result = match msg {
            BusMessage::Mqtt { topic, payload } => core.on_mqtt(&topic, &payload, now),
            BusMessage::FromCloud(obj) => {
                let r = if obj.kind == bus::ObjectKind::DeviceModel {
                    core.on_model(&obj)
                } else {
                    core.on_device(&obj, now)
                };
                if r.is_ok() {
                    fx.persisted.push(obj.ack);
                }
                r
            }
            BusMessage::Membership(c) => core.on_membership(&c, now),
            BusMessage::Link(l) => {
                self.connected = matches!(l, Link::Connected { .. });
                self.in_flight.clear();
                Ok(Vec::new())
            }
            BusMessage::Reply { id, outcome } => {
                if let Some(pos) = self.in_flight.iter().position(|(i, _)| *i == id) {
                    let (_, key) = self.in_flight.remove(pos);
                    match outcome {
                        Outcome::Answered {
                            reply: Reply::Ok | Reply::Object(_),
                            ..
                        } => match core.confirmed(&key) {
                            Ok(()) => self.confirmed_now += 1,
                            Err(e) => log::error!("twin: cannot drop a confirmed report: {e}"),
                        },
                        _ => log::debug!("twin report not confirmed; it stays queued"),
                    }
                }
                Ok(Vec::new())
            }
            _ => Ok(Vec::new()),
        };
        match result {
            Ok(outs) => fx.publish.extend(outs),
            Err(e) => log::error!("twin: store failed, nothing changed: {e}"),
        }
    }

    /// Sends queued reports to the cloud, [`IN_FLIGHT`] at most. False when edgecore stops.
    async fn send_reports(&mut self, core: &TwinCore, bus: &Bus) -> bool {
        if !self.connected || self.in_flight.len() >= IN_FLIGHT {
            return true;
        }
        let queue = match core.queued_head(IN_FLIGHT + self.in_flight.len()) {
            Ok(q) => q,
            Err(e) => {
                log::error!("twin: cannot read the report queue: {e}");
                return true;
            }
        };
        for (key, req) in queue {
            if self.in_flight.len() >= IN_FLIGHT {
                break;
            }
            if self.in_flight.iter().any(|(_, k)| *k == key) {
                continue;
            }
            self.next_id = self.next_id.wrapping_add(1);
            let id = RequestId(self.next_id);
            self.in_flight.push((id, key));
            let msg = BusMessage::ToCloud {
                from: ModuleId::DeviceTwin,
                id,
                request: req,
            };
            if !bus.send(ModuleId::EdgeHub, msg).await {
                return false;
            }
        }
        true
    }
}

/// MQTT results in order, waiting for room in EventBus's mailbox ([`OUTBOX_BYTES`]), with
/// refusals limited to [`REFUSALS_PER_SEC`].
struct Outbox {
    queue: std::collections::VecDeque<BusMessage>,
    bytes: usize,
    /// Refusals that may go now (a token bucket of [`REFUSALS_PER_SEC`]) and when it was
    /// last filled.
    refusal_tokens: f64,
    filled_at: std::time::Instant,
    shed: u64,
    shed_log: bus::Throttle,
}

impl Outbox {
    fn new(now: std::time::Instant) -> Outbox {
        Outbox {
            queue: Default::default(),
            bytes: 0,
            refusal_tokens: f64::from(REFUSALS_PER_SEC),
            filled_at: now,
            shed: 0,
            shed_log: Default::default(),
        }
    }

    fn push(&mut self, msg: BusMessage, refusal: bool, now: std::time::Instant) {
        if refusal {
            let rate = f64::from(REFUSALS_PER_SEC);
            let dt = now.saturating_duration_since(self.filled_at).as_secs_f64();
            self.refusal_tokens = (self.refusal_tokens + dt * rate).min(rate);
            self.filled_at = now;
            if self.refusal_tokens < 1.0 {
                self.shed_one(&msg, now);
                return;
            }
            self.refusal_tokens -= 1.0;
        }
        self.bytes += msg.weight();
        self.queue.push_back(msg);
        while self.bytes > OUTBOX_BYTES && self.queue.len() > 1 {
            let Some(old) = self.queue.pop_front() else {
                break;
            };
            self.bytes -= old.weight();
            self.shed_one(&old, now);
        }
    }

    fn shed_one(&mut self, msg: &BusMessage, now: std::time::Instant) {
        self.shed += 1;
        if let Some(n) = self.shed_log.allow(now) {
            log::warn!(
                "twin: shed {} ({} in all): EventBus is behind by {} bytes of results, or refusals are over {REFUSALS_PER_SEC}/s{n}",
                msg.summary(),
                self.shed,
                self.bytes,
            );
        }
    }

    /// Hands results to EventBus until its mailbox refuses one.
    fn flush(&mut self, bus: &Bus) {
        while let Some(m) = self.queue.pop_front() {
            let w = m.weight();
            match bus.deliver(ModuleId::EventBus, m) {
                Ok(()) => self.bytes -= w,
                Err(bus::Full(m)) => {
                    self.queue.push_front(m);
                    return;
                }
            }
        }
    }
}

/// Runs DeviceTwin until shutdown.
pub async fn run(mut core: TwinCore, mailbox: Mailbox, bus: Bus, shutdown: Shutdown) {
    let mut r = Runner {
        confirmed_now: 0,
        connected: false,
        in_flight: Vec::new(),
        next_id: 0,
    };
    let mut outbox = Outbox::new(std::time::Instant::now());
    let mut store_failed = bus::Throttle::default();
    let mut ticker = smol::Timer::interval(std::time::Duration::from_secs(1));
    let mut lazy = 0usize;
    loop {
        use smol::future::FutureExt;
        outbox.flush(&bus);
        let waiting = !outbox.queue.is_empty();
        let wake = async { Some(mailbox.next(&mut ticker, &shutdown).await) }
            .or(async {
                if !waiting {
                    std::future::pending::<()>().await;
                }
                bus.room(ModuleId::EventBus).await;
                None
            })
            .await;
        let Some(wake) = wake else {
            continue; // EventBus took mail: hand it more results
        };
        let now = now_ms();
        let mut fx = Effects::default();
        let tick = matches!(wake, Wake::Tick);
        match wake {
            Wake::Stop => {
                if outbox.shed > 0 || core.dropped > 0 {
                    log::info!(
                        "twin: {} MQTT results shed, {} reports dropped since start",
                        outbox.shed,
                        core.dropped
                    );
                }
                return;
            }
            Wake::Tick => {}
            Wake::Mail(first) => {
                // Group commit: everything already waiting shares the commit below. While a
                // burst is on (a round took many), let the senders run once and take what
                // they added too: a commit costs about the same for 10 messages or 200.
                r.handle(&mut core, first, now, &mut fx);
                let mut taken = 1;
                loop {
                    let before = taken;
                    while taken < MAX_BATCH {
                        let Some(msg) = mailbox.try_recv() else {
                            break;
                        };
                        r.handle(&mut core, msg, now, &mut fx);
                        taken += 1;
                    }
                    if taken >= MAX_BATCH || taken - before < BURST_ROUND {
                        break;
                    }
                    smol::future::yield_now().await;
                }
            }
        }
        lazy += r.confirmed_now;
        r.confirmed_now = 0;
        if !(fx.durable || tick || lazy >= LAZY_CONFIRMS) {
            // Only confirmations: send the next reports now, commit their removal later.
            if !r.send_reports(&core, &bus).await {
                return;
            }
            continue;
        }
        lazy = 0;
        if let Err(e) = core.commit() {
            if let Some(n) = store_failed.allow(std::time::Instant::now()) {
                log::error!("twin: store commit failed, the last messages changed nothing: {e}{n}");
            }
            continue;
        }
        store_failed.reset();
        // Only now, after the commit: results, acknowledgements, reports.
        for o in fx.publish {
            if let Out::Publish {
                topic,
                payload,
                refusal,
            } = o
            {
                outbox.push(
                    BusMessage::MqttPublish { topic, payload },
                    refusal,
                    std::time::Instant::now(),
                );
            }
        }
        outbox.flush(&bus);
        for ack in fx.persisted {
            if !bus
                .send(ModuleId::EdgeHub, BusMessage::Persisted(Box::new(ack)))
                .await
            {
                return;
            }
        }
        if !r.send_reports(&core, &bus).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(name: &str) -> TwinCore {
        let p = std::env::temp_dir().join(format!("twin-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        TwinCore::new(
            "edge0",
            Rc::from(store::open(&p, store::Backend::Redb).unwrap()),
        )
        .unwrap()
    }

    fn device_obj(desired: &str) -> CloudObject {
        CloudObject {
            op: ObjectOp::Upsert,
            kind: bus::ObjectKind::Device,
            namespace: "default".into(),
            name: "thermo".into(),
            resource_version: "5".into(),
            object: json!({"metadata": {"name": "thermo"}, "spec": {"properties": [{"name": "temperature", "desired": {"value": desired, "metadata": {"type": "string"}}}]}}),
            ack: bus::AckHandle {
                msg_id: "m".into(),
                route: proto::Route::default(),
            },
        }
    }

    fn topics(out: &[Out]) -> Vec<String> {
        out.iter()
            .filter_map(|o| match o {
                Out::Publish { topic, .. } => Some(topic.clone()),
                _ => None,
            })
            .collect()
    }

    fn payload(out: &[Out], suffix: &str) -> Value {
        out.iter()
            .find_map(|o| match o {
                Out::Publish { topic, payload, .. } if topic.ends_with(suffix) => {
                    serde_json::from_slice(payload).ok()
                }
                _ => None,
            })
            .unwrap()
    }

    const UPD: &str = "$hw/events/device/default/thermo/twin/update";

    #[test]
    fn refusals_are_rate_limited_and_good_results_are_not() {
        let msg = |t: &str| BusMessage::MqttPublish {
            topic: t.into(),
            payload: vec![b'x'; 100],
        };
        let t0 = std::time::Instant::now();
        let mut o = Outbox::new(t0);
        let good = |o: &Outbox| {
            o.queue
                .iter()
                .filter(|m| matches!(m, BusMessage::MqttPublish { topic, .. } if topic.starts_with("good")))
                .count()
        };
        // A flood of refusals within one instant: the burst goes, the rest is shed.
        for _ in 0..1000 {
            o.push(msg("bad"), true, t0);
        }
        assert_eq!(o.queue.len(), REFUSALS_PER_SEC as usize);
        assert_eq!(o.shed, 1000 - u64::from(REFUSALS_PER_SEC));
        // Good results are not limited.
        for _ in 0..1000 {
            o.push(msg("good"), false, t0);
        }
        assert_eq!(good(&o), 1000);
        // Half a second later, half the rate is back.
        let t1 = t0 + std::time::Duration::from_millis(500);
        let before = o.queue.len();
        for _ in 0..1000 {
            o.push(msg("bad"), true, t1);
        }
        assert_eq!(o.queue.len() - before, REFUSALS_PER_SEC as usize / 2);
        // Good results alone past the outbox: the oldest go, and the count stays true.
        for _ in 0..(2 * OUTBOX_BYTES / 100) {
            o.push(msg("good"), false, t1);
        }
        assert!(o.bytes <= OUTBOX_BYTES);
        assert_eq!(
            o.bytes,
            o.queue.iter().map(BusMessage::weight).sum::<usize>()
        );
    }

    #[test]
    fn handled_messages_are_durable_only_after_commit() {
        let p = std::env::temp_dir().join(format!("twin-commit-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let base: Rc<dyn KvStore> = Rc::from(store::open(&p, store::Backend::Redb).unwrap());
        let mut a = TwinCore::new("edge0", base.clone()).unwrap();
        a.on_device(&device_obj("20"), 1).unwrap();
        a.commit().unwrap();
        let before = base.bytes_written();
        for v in ["1", "2", "3"] {
            let msg = format!(r#"{{"twin":{{"temperature":{{"actual":{{"value":"{v}"}}}}}}}}"#);
            a.on_mqtt(UPD, msg.as_bytes(), 2).unwrap();
        }
        // The handling core reads its own writes; the store has none of them yet.
        let actual = |c: &TwinCore| {
            c.device("default", "thermo").unwrap().unwrap()["twin"]["temperature"]["actual"]
                ["value"]
                .clone()
        };
        assert_eq!(actual(&a), "3");
        assert_eq!(base.bytes_written(), before);
        let b = TwinCore::new("edge0", base.clone()).unwrap();
        assert!(actual(&b).is_null());
        assert!(b.queued().unwrap().is_empty());
        a.commit().unwrap();
        let b = TwinCore::new("edge0", base.clone()).unwrap();
        assert_eq!(actual(&b), "3");
        assert_eq!(
            b.queued().unwrap().len(),
            3,
            "three reports queued for the cloud"
        );
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn cloud_desired_value_becomes_a_delta_and_membership() {
        let mut c = core("desired");
        let out = c.on_device(&device_obj("20"), 1).unwrap();
        assert_eq!(
            topics(&out),
            [
                "$hw/events/node/edge0/membership/updated",
                "$hw/events/device/default/thermo/twin/update/delta"
            ]
        );
        assert_eq!(payload(&out, "delta")["delta"]["temperature"], "20");
        let out = c
            .on_mqtt(
                "$hw/events/node/edge0/membership/get",
                br#"{"event_id":"e1"}"#,
                2,
            )
            .unwrap();
        let r = payload(&out, "membership/get/result");
        assert_eq!(r["devices"][0]["id"], "default/thermo");
        assert_eq!(r["event_id"], "e1");
    }

    #[test]
    fn models_are_models_and_devices_arriving_both_ways_count_once() {
        let mut c = core("models");
        let mut model = device_obj("x");
        model.kind = bus::ObjectKind::DeviceModel;
        model.name = "thermo-model".into();
        model.object = json!({"kind": "DeviceModel", "metadata": {"name": "thermo-model"}, "spec": {"properties": [{"name": "temperature", "type": "INT"}]}});
        assert!(
            c.on_model(&model).unwrap().is_empty(),
            "no membership announcement for a model"
        );
        assert!(c.devices().unwrap().is_empty(), "a model is not a device");
        assert_eq!(
            c.model("default", "thermo-model").unwrap().unwrap()["spec"]["properties"][0]["type"],
            "INT"
        );
        let out = c
            .on_mqtt(
                "$hw/events/node/edge0/membership/get",
                br#"{"event_id":"e1"}"#,
                2,
            )
            .unwrap();
        assert_eq!(payload(&out, "membership/get/result")["devices"], json!([]));
        // The Device object first, then upstream's membership for it: announced once.
        let out = c.on_device(&device_obj("20"), 3).unwrap();
        assert!(topics(&out)
            .iter()
            .any(|t| t.ends_with("membership/updated")));
        let m = json!({"event_id": "m1", "timestamp": 4, "added_devices": [{"id": "default/thermo", "name": "thermo"}], "removed_devices": null});
        assert!(
            c.on_membership(&m, 4).unwrap().is_empty(),
            "known already: not announced again"
        );
        assert_eq!(c.devices().unwrap().len(), 1);
        // Membership first, then the Device object: announced once, by the membership.
        let m = json!({"added_devices": [{"id": "default/other", "name": "other"}]});
        let out = c.on_membership(&m, 5).unwrap();
        assert_eq!(
            payload(&out, "membership/updated")["added_devices"][0]["id"],
            "default/other"
        );
        let mut other = device_obj("1");
        other.name = "other".into();
        let out = c.on_device(&other, 6).unwrap();
        assert!(!topics(&out)
            .iter()
            .any(|t| t.ends_with("membership/updated")));
        // Removal of an unknown device announces nothing; of a known one, once.
        let gone = json!({"removed_devices": [{"id": "default/nope"}]});
        assert!(c.on_membership(&gone, 7).unwrap().is_empty());
        let gone = json!({"removed_devices": [{"id": "default/other"}]});
        let out = c.on_membership(&gone, 8).unwrap();
        assert_eq!(
            payload(&out, "membership/updated")["removed_devices"][0]["id"],
            "default/other"
        );
        model.op = ObjectOp::Delete;
        c.on_model(&model).unwrap();
        assert!(c.model("default", "thermo-model").unwrap().is_none());
    }

    #[test]
    fn reported_values_update_twin_queue_a_report_and_clear_the_delta() {
        let mut c = core("reported");
        c.on_device(&device_obj("20"), 1).unwrap();
        let out = c.on_mqtt(UPD, br#"{"event_id":"e","timestamp":1,"twin":{"temperature":{"actual":{"value":"19"},"metadata":{"type":"string"}}}}"#, 2).unwrap();
        assert!(topics(&out).contains(&format!("{UPD}/result")));
        assert!(
            topics(&out).contains(&format!("{UPD}/delta")),
            "19 != 20: still a delta"
        );
        assert_eq!(
            payload(&out, "result")["twin"]["temperature"]["actual"]["value"],
            "19"
        );
        assert_eq!(
            payload(&out, "document")["twin"]["temperature"]["current"]["actual"]["value"],
            "19"
        );
        let out = c
            .on_mqtt(
                UPD,
                br#"{"twin":{"temperature":{"actual":{"value":"20"}}}}"#,
                3,
            )
            .unwrap();
        assert!(
            !topics(&out).iter().any(|t| t.ends_with("delta")),
            "matching values: no delta"
        );
        let q = c.queued().unwrap();
        assert_eq!(q.len(), 2);
        match &q[1].1 {
            CloudRequest::TwinReported {
                namespace,
                name,
                content,
            } => {
                assert_eq!((namespace.as_str(), name.as_str()), ("default", "thermo"));
                assert_eq!(content["twin"]["temperature"]["actual"]["value"], "20");
                assert_eq!(content["twin"]["temperature"]["actual_version"]["edge"], 2);
            }
            other => panic!("{other:?}"),
        }
        c.confirmed(&q[0].0).unwrap();
        assert_eq!(c.queued().unwrap().len(), 1);
    }

    #[test]
    fn bad_input_gets_an_error_result_and_changes_nothing() {
        let mut c = core("bad");
        c.on_device(&device_obj("20"), 1).unwrap();
        let before = c.device("default", "thermo").unwrap();
        let long = format!(
            r#"{{"twin":{{"temperature":{{"actual":{{"value":"{}"}}}}}}}}"#,
            "x".repeat(600)
        );
        for (topic, body, code) in [
            (UPD, "not json".to_owned(), 400),
            (UPD, "[1]".to_owned(), 400),
            (UPD, r#"{"twin":null}"#.to_owned(), 400),
            (
                UPD,
                r#"{"twin":{"temperature":{"actual":{"value":5}}}}"#.to_owned(),
                400,
            ),
            (
                UPD,
                r#"{"twin":{"bad key!":{"actual":{"value":"1"}}}}"#.to_owned(),
                400,
            ),
            (UPD, long, 400),
            (
                "$hw/events/device/default/nosuch/twin/update",
                r#"{"twin":{}}"#.to_owned(),
                404,
            ),
            (
                "$hw/events/device/default/thermo/state/update",
                r#"{"state":"exploded"}"#.to_owned(),
                400,
            ),
        ] {
            let out = c.on_mqtt(topic, body.as_bytes(), 2).unwrap();
            assert_eq!(out.len(), 1, "{body}");
            assert_eq!(payload(&out, "/result")["code"], code, "{body}");
        }
        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert_eq!(
            payload(&c.on_mqtt(UPD, &big, 2).unwrap(), "/result")["code"],
            400
        );
        assert_eq!(
            c.device("default", "thermo").unwrap(),
            before,
            "bad input changed the device"
        );
        assert!(c.queued().unwrap().is_empty(), "bad input queued a report");
    }

    #[test]
    fn state_updates_and_a_bounded_queue() {
        let mut c = core("state");
        c.on_device(&device_obj("1"), 1).unwrap();
        let out = c
            .on_mqtt(
                "$hw/events/device/default/thermo/state/update",
                br#"{"event_id":"s","state":"online"}"#,
                1_718_006_440_000,
            )
            .unwrap();
        assert_eq!(
            payload(&out, "state/update/result")["device"]["state"],
            "online"
        );
        assert_eq!(
            c.device("default", "thermo").unwrap().unwrap()["state"],
            "online"
        );
        for i in 0..QUEUE_CAPACITY + 5 {
            c.on_mqtt(
                UPD,
                format!(r#"{{"twin":{{"temperature":{{"actual":{{"value":"{i}"}}}}}}}}"#)
                    .as_bytes(),
                2,
            )
            .unwrap();
        }
        assert_eq!(c.queued().unwrap().len(), QUEUE_CAPACITY);
        assert_eq!(c.dropped, 6);
        // The newest report survives eviction.
        match &c.queued().unwrap().last().unwrap().1 {
            CloudRequest::TwinReported { content, .. } => assert_eq!(
                content["twin"]["temperature"]["actual"]["value"],
                format!("{}", QUEUE_CAPACITY + 4)
            ),
            other => panic!("{other:?}"),
        }
    }

    /// The store, noting at each commit what the modules had been handed so far.
    struct Watching {
        inner: Box<dyn KvStore>,
        bus: std::cell::RefCell<Option<Bus>>,
        /// (results queued for EventBus, messages queued for EdgeHub) at each commit.
        commits: std::cell::RefCell<Vec<(usize, usize)>>,
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
                self.commits.borrow_mut().push((
                    bus.queued(ModuleId::EventBus).0,
                    bus.queued(ModuleId::EdgeHub).0,
                ));
            }
            self.inner.apply(ops)
        }
        fn bytes_written(&self) -> u64 {
            self.inner.bytes_written()
        }
    }

    #[test]
    fn a_burst_is_one_commit_and_results_and_acks_go_out_only_after_it() {
        let p = std::env::temp_dir().join(format!("twin-burst-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let watching = Rc::new(Watching {
            inner: store::open(&p, store::Backend::Redb).unwrap(),
            bus: Default::default(),
            commits: Default::default(),
        });
        let core = TwinCore::new("edge0", watching.clone()).unwrap();
        let (bus, mut boxes) =
            Bus::new(&[ModuleId::EdgeHub, ModuleId::EventBus, ModuleId::DeviceTwin]);
        *watching.bus.borrow_mut() = Some(bus.clone());
        let twin = boxes.pop().unwrap();
        let (eventbus, hub) = (boxes.pop().unwrap(), boxes.pop().unwrap());
        bus.deliver(
            ModuleId::DeviceTwin,
            BusMessage::FromCloud(Box::new(device_obj("20"))),
        )
        .unwrap();
        const N: usize = 40;
        for v in 0..N {
            let msg = format!(
                r#"{{"event_id":"e{v}","twin":{{"temperature":{{"actual":{{"value":"{v}"}}}}}}}}"#
            );
            bus.deliver(
                ModuleId::DeviceTwin,
                BusMessage::Mqtt {
                    topic: UPD.into(),
                    payload: msg.into_bytes(),
                },
            )
            .unwrap();
        }
        let (mut trigger, shutdown) = Shutdown::new();
        let ex = smol::LocalExecutor::new();
        let results = smol::block_on(ex.run(async {
            let task = ex.spawn(run(core, twin, bus.clone(), shutdown));
            let mut results = 0;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while results < N && std::time::Instant::now() < deadline {
                let m = smol::future::or(eventbus.recv(), async {
                    smol::Timer::at(deadline).await;
                    None
                })
                .await;
                if let Some(BusMessage::MqttPublish { topic, .. }) = m {
                    results += topic.ends_with("/twin/update/result") as usize;
                }
            }
            trigger.trigger();
            task.await;
            results
        }));
        assert_eq!(results, N, "every update answered");
        let commits = watching.commits.borrow().clone();
        assert_eq!(commits.len(), 1, "one commit for the burst: {commits:?}");
        assert_eq!(
            commits[0],
            (0, 0),
            "no result, acknowledgement or report before the commit"
        );
        let mut acks = 0;
        while let Some(m) = hub.try_recv() {
            acks += matches!(m, BusMessage::Persisted(_)) as usize;
        }
        assert_eq!(
            acks, 1,
            "the device object is acknowledged after the commit"
        );
        let _ = std::fs::remove_file(&p);
    }
}
