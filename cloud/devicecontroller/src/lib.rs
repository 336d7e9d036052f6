//! DeviceController: what upstream's DeviceController tells an edge's DeviceTwin, and what an
//! edge's DeviceTwin reports back (§5.3 of the protocol spec; upstream
//! `cloud/pkg/devicecontroller/controller/{downstream,upstream}.go`).
//!
//! Down, per node session ([`DeviceController::plan`], sans-IO like EdgeController's plan):
//! - **Membership**: upstream's edge learns which devices it has only from `membership`
//!   messages (group `twin`, op `update`, no ACK), never from the Device objects
//!   EdgeController delivers. Each device is `{id: "<ns>/<name>", name, description?}` as
//!   upstream sends it, added when a Device is bound to the node and removed when it is
//!   deleted or bound elsewhere. A device whose desired values changed is announced again.
//! - **Desired values**: current upstream carries them only inside the Device object (for DMI
//!   mappers), so an upstream edge's MQTT twin never sees them. Announced devices carry them
//!   as twins in upstream's own membership twin shape (`expected`, `metadata.type`,
//!   `expected_version`), which upstream's DeviceTwin applies as a cloud sync and turns into
//!   the `…/twin/update/delta` its MQTT mappers wait for. Its version rule wants
//!   `expected_version` not older than what it holds on either side: the cloud side is the
//!   Device's push version, the edge side the newest the edge reported.
//! - **Detail**: upstream's edge asks for `membership/detail` on every connect and retries
//!   every minute until confirmed. It is answered with the whole membership (the edge adds
//!   what is missing and removes what is not listed, so devices deleted while it was away
//!   go) and a confirmation of the request.
//!
//! Up: [`report`] turns `twin/edge_updated` and `state/update` into the Device's status.
//!
//! Membership is not acknowledged, so it is state of the session: a new session starts from
//! nothing announced and the plan announces everything again (harmless: known devices are
//! updated in place, and edgecore's own DeviceTwin ignores devices it already has).

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};

use cloudstore::{CloudStore, Kind, ObjectKey};
use proto::{Group, Message, ModuleName, Operation, ResourcePath};
use serde_json::{json, Value};

/// Twin types upstream's DeviceTwin accepts (`dtcommon.ValidateValue`); anything else is
/// announced as `string`, which accepts every value.
const TWIN_TYPES: &[&str] = &["string", "int", "integer", "float", "boolean"];

/// A desired twin as announced.
#[derive(Clone, Debug, PartialEq)]
struct Twin {
    value: String,
    ty: String,
    cloud_version: u64,
    edge_version: i64,
}

/// One device of a node, as membership shows it.
#[derive(Clone, Debug, PartialEq)]
struct Member {
    name: String,
    description: Option<String>,
    twins: BTreeMap<String, Twin>,
}

#[derive(Default)]
struct NodeState {
    /// What this session announced, by device id (`<ns>/<name>`).
    announced: BTreeMap<String, Member>,
    /// `membership/detail` requests not answered yet, by message id.
    detail: Vec<String>,
    /// The newest `expected_version.edge` the node reported, by (device id, twin).
    edge_versions: HashMap<(String, String), i64>,
}

/// Membership delivery state of every connected node.
#[derive(Default)]
pub struct DeviceController {
    nodes: HashMap<String, NodeState>,
}

/// Most `membership/detail` requests kept per node: the edge repeats an unanswered one,
/// so more add nothing.
const MAX_DETAIL_REQUESTS: usize = 4;

fn device_id(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

impl DeviceController {
    pub fn new() -> Self {
        Self::default()
    }

    /// A session for `node` started: nothing is announced on it yet.
    pub fn connected(&mut self, node: &str) {
        self.nodes.insert(node.to_owned(), NodeState::default());
    }

    pub fn disconnected(&mut self, node: &str) {
        self.nodes.remove(node);
    }

    /// The edge asked for `membership/detail` (message `msg_id`); the next plan answers it.
    pub fn detail_requested(&mut self, node: &str, msg_id: &str) {
        if let Some(n) = self.nodes.get_mut(node) {
            if n.detail.len() < MAX_DETAIL_REQUESTS {
                n.detail.push(msg_id.to_owned());
            }
        }
    }

    /// A `twin/edge_updated` report from `node`: remembers the edge's twin versions, and
    /// re-announces a device whose edge holds another expected value than the cloud wants
    /// (upstream's edge answers a refused sync with exactly such a report).
    pub fn observe_report(&mut self, node: &str, ns: &str, name: &str, content: &Value) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        let id = device_id(ns, name);
        for (twin, t) in content["twin"].as_object().into_iter().flatten() {
            if let Some(edge) = t["expected_version"]["edge"].as_i64() {
                let v = n
                    .edge_versions
                    .entry((id.clone(), twin.clone()))
                    .or_insert(0);
                *v = (*v).max(edge);
            }
            let reported_expected = t["expected"]["value"].as_str();
            let stale = n
                .announced
                .get(&id)
                .and_then(|m| m.twins.get(twin))
                .is_some_and(|a| reported_expected.is_some_and(|r| r != a.value));
            if stale {
                if let Some(m) = n.announced.get_mut(&id) {
                    m.twins.remove(twin);
                }
            }
        }
    }

    /// Messages `node` must get now: answers to detail requests, and a membership update
    /// for whatever changed since the last announcement.
    pub fn plan(&mut self, node: &str, store: &CloudStore, now_ms: i64) -> Vec<Message> {
        let Some(n) = self.nodes.get_mut(node) else {
            return Vec::new();
        };
        let want = members(node, store, &n.edge_versions);
        let mut out = Vec::new();
        if !n.detail.is_empty() {
            let devices: Vec<Value> = want
                .iter()
                .map(|(id, m)| member_json(id, m, now_ms))
                .collect();
            let content = json!({ "event_id": proto::message::new_msg_id(), "timestamp": now_ms, "devices": devices });
            out.push(Message::new(
                ModuleName::DeviceController,
                Group::Twin,
                Operation::Update,
                ResourcePath::MembershipDetail.to_string(),
                content,
                now_ms,
            ));
            for req in n.detail.drain(..) {
                let mut confirm = Message::new(
                    ModuleName::DeviceController,
                    Group::Twin,
                    Operation::Response,
                    ResourcePath::Twin.to_string(),
                    json!("OK"),
                    now_ms,
                );
                confirm.header.parent_msg_id = req;
                out.push(confirm);
            }
            n.announced = want;
            return out;
        }
        let added: Vec<Value> = want
            .iter()
            .filter(|(id, m)| n.announced.get(*id) != Some(m))
            .map(|(id, m)| member_json(id, m, now_ms))
            .collect();
        let removed: Vec<Value> = n
            .announced
            .iter()
            .filter(|(id, _)| !want.contains_key(*id))
            .map(|(id, m)| {
                let mut v = json!({ "id": id, "name": m.name });
                if let Some(d) = &m.description {
                    v["description"] = json!(d);
                }
                v
            })
            .collect();
        if added.is_empty() && removed.is_empty() {
            return out;
        }
        let list = |v: Vec<Value>| {
            if v.is_empty() {
                Value::Null
            } else {
                Value::Array(v)
            }
        };
        let content = json!({ "event_id": proto::message::new_msg_id(), "timestamp": now_ms,
            "added_devices": list(added), "removed_devices": list(removed) });
        out.push(Message::new(
            ModuleName::DeviceController,
            Group::Twin,
            Operation::Update,
            ResourcePath::Membership.to_string(),
            content,
            now_ms,
        ));
        n.announced = want;
        out
    }
}

/// The devices bound to `node`, as membership announces them.
fn members(
    node: &str,
    store: &CloudStore,
    edge_versions: &HashMap<(String, String), i64>,
) -> BTreeMap<String, Member> {
    let mut out = BTreeMap::new();
    for (key, e) in store.list(Kind::Device, None) {
        let d = &e.object;
        if d["spec"]["nodeName"].as_str() != Some(node)
            || d["metadata"].get("deletionTimestamp").is_some()
        {
            continue;
        }
        let id = device_id(&key.namespace, &key.name);
        let mut twins = BTreeMap::new();
        for p in d["spec"]["properties"].as_array().into_iter().flatten() {
            let (Some(name), Some(value)) = (p["name"].as_str(), p["desired"]["value"].as_str())
            else {
                continue;
            };
            let ty = p["desired"]["metadata"]["type"]
                .as_str()
                .map(str::to_ascii_lowercase)
                .filter(|t| TWIN_TYPES.contains(&t.as_str()))
                .unwrap_or_else(|| "string".to_owned());
            let edge_version = edge_versions
                .get(&(id.clone(), name.to_owned()))
                .copied()
                .unwrap_or(0);
            twins.insert(
                name.to_owned(),
                Twin {
                    value: value.to_owned(),
                    ty,
                    cloud_version: e.push_rv,
                    edge_version,
                },
            );
        }
        out.insert(
            id,
            Member {
                name: key.name.clone(),
                description: d["metadata"]["labels"]["description"]
                    .as_str()
                    .map(str::to_owned),
                twins,
            },
        );
    }
    out
}

/// A device as upstream's membership carries it (`dttype.Device`).
fn member_json(id: &str, m: &Member, now_ms: i64) -> Value {
    let mut v = json!({ "id": id, "name": m.name });
    if let Some(d) = &m.description {
        v["description"] = json!(d);
    }
    if !m.twins.is_empty() {
        let twins: serde_json::Map<String, Value> = m
            .twins
            .iter()
            .map(|(k, t)| {
                (
                    k.clone(),
                    json!({
                        "expected": { "value": t.value, "metadata": { "timestamp": now_ms } },
                        "optional": false,
                        "metadata": { "type": t.ty },
                        "expected_version": { "cloud": t.cloud_version, "edge": t.edge_version },
                    }),
                )
            })
            .collect();
        v["twin"] = Value::Object(twins);
    }
    v
}

/// Why a device report changed nothing.
#[derive(Debug, PartialEq)]
pub enum ReportError {
    UnknownDevice,
    NotBoundHere,
    Unusable(String),
    Store(String),
}

impl std::fmt::Display for ReportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReportError::UnknownDevice => f.write_str("no such device"),
            ReportError::NotBoundHere => f.write_str("the device is not bound to this node"),
            ReportError::Unusable(why) => write!(f, "unusable report: {why}"),
            ReportError::Store(e) => write!(f, "cannot store it: {e}"),
        }
    }
}

/// The answer to every device report, applied or not (upstream answers even reports it
/// drops, so a stale one is not resent forever): `"OK"`, source `devicecontroller`, group
/// `twin`, resource `twin`.
pub fn report_reply(req: &Message, now_ms: i64) -> Message {
    let mut ok = req.response_to(json!("OK"), now_ms);
    ok.route.source = ModuleName::DeviceController;
    ok.route.group = Group::Twin;
    ok.route.resource = ResourcePath::Twin.to_string();
    ok
}

/// `update device/<ns>/<name>/twin/edge_updated` or `…/state/update` from `node`: reported
/// values and state go into the Device's status (`status.twins[]`: `reported` and
/// `observedDesired`, as upstream writes its DeviceStatus; `state`, `lastOnlineTime`).
/// Only properties the Device declares are kept, so a node cannot grow it without bound.
pub fn report(
    store: &mut CloudStore,
    node: &str,
    ns: &str,
    name: &str,
    suffix: &str,
    msg: &Message,
) -> Result<(), ReportError> {
    let key = ObjectKey::new(Kind::Device, ns, name);
    let entry = store.get(&key).ok_or(ReportError::UnknownDevice)?;
    if entry.object["spec"]["nodeName"].as_str() != Some(node) {
        return Err(ReportError::NotBoundHere);
    }
    let patch = match suffix {
        "twin/edge_updated" => {
            let declared: Vec<&str> = entry.object["spec"]["properties"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["name"].as_str())
                .collect();
            let mut twins = entry.object["status"]["twins"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            twins.retain(|t| {
                t["propertyName"]
                    .as_str()
                    .is_some_and(|n| declared.contains(&n))
            });
            let value_of = |t: &Value, part: &str| -> Option<Value> {
                let v = t[part]["value"].as_str()?;
                Some(json!({ "value": v, "metadata": {
                    "timestamp": t[part]["metadata"]["timestamp"].as_i64().map(|ms| ms.to_string()).unwrap_or_default(),
                    "type": t["metadata"]["type"].as_str().unwrap_or("string"),
                } }))
            };
            let Some(reported) = msg.content["twin"].as_object() else {
                return Err(ReportError::Unusable("no twin map".into()));
            };
            for (k, t) in reported {
                if !declared.contains(&k.as_str()) {
                    continue;
                }
                let slot = match twins.iter().position(|x| x["propertyName"] == k.as_str()) {
                    Some(i) => &mut twins[i],
                    None => {
                        twins.push(json!({ "propertyName": k }));
                        twins.last_mut().expect("pushed above")
                    }
                };
                if let Some(r) = value_of(t, "actual") {
                    slot["reported"] = r;
                }
                if let Some(d) = value_of(t, "expected") {
                    slot["observedDesired"] = d;
                }
            }
            json!({ "status": { "twins": twins } })
        }
        "state/update" => {
            let dm: Value = proto::limits::parse_json(&msg.content_bytes())
                .map_err(|e| ReportError::Unusable(e.to_string()))?;
            let d = &dm["device"];
            let state = d["state"].as_str().unwrap_or("unknown");
            // Upstream's edge writes `lastOnlineTime`; older edgecore builds `last_online`.
            let last = d
                .get("lastOnlineTime")
                .or_else(|| d.get("last_online"))
                .cloned()
                .unwrap_or(Value::Null);
            json!({ "status": { "state": state, "lastOnlineTime": last } })
        }
        other => return Err(ReportError::Unusable(format!("unknown report {other:?}"))),
    };
    store
        .patch_status(&key, &patch)
        .map(|_| ())
        .map_err(|e| ReportError::Store(e.to_string()))
}

#[cfg(test)]
mod tests;
