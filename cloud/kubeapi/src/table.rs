//! `meta.k8s.io/v1` Table responses: the columns and cells kube-apiserver's printers give each
//! kind, so `kubectl get` (and `-o wide`, the priority 1 columns) looks as on a real cluster.

use serde_json::{json, Value};

use crate::resources::Resource;

/// One column: name as kubectl shows it before upper-casing, type, priority (1: `-o wide`).
type Column = (&'static str, &'static str, u8);

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.";

fn columns(r: Resource) -> &'static [Column] {
    match r {
        Resource::Pods => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        Resource::Nodes => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        Resource::ConfigMaps => &[
            ("Name", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        Resource::Secrets => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        Resource::Namespaces => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Age", "string", 0),
        ],
        Resource::Leases => &[
            ("Name", "string", 0),
            ("Holder", "string", 0),
            ("Age", "string", 0),
        ],
        Resource::Events => &[
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
            ("Subobject", "string", 1),
            ("Source", "string", 1),
            ("First Seen", "string", 1),
            ("Count", "string", 1),
            ("Name", "string", 1),
        ],
        // Custom resources without printer columns: what the apiserver gives every CRD.
        Resource::Devices | Resource::DeviceModels => {
            &[("Name", "string", 0), ("Age", "string", 0)]
        }
    }
}

/// How kubectl words a duration (apimachinery's `HumanDuration`): two significant units
/// while they matter, one after.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h) = (s / 60, s / 3600);
    let (d, y) = (h / 24, h / 24 / 365);
    let pair = |big: i64, bu: &str, small: i64, su: &str| {
        if small == 0 {
            format!("{big}{bu}")
        } else {
            format!("{big}{bu}{small}{su}")
        }
    };
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        pair(m, "m", s % 60, "s")
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        pair(h, "h", m % 60, "m")
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        pair(d, "d", h % 24, "h")
    } else if h < 24 * 365 * 2 {
        format!("{d}d")
    } else if h < 24 * 365 * 8 {
        pair(y, "y", d % 365, "d")
    } else {
        format!("{y}y")
    }
}

/// `<unknown>` for a missing timestamp, as the printers say.
fn age(ts: &Value, now: i64) -> String {
    match ts.as_str().and_then(proto::time::parse_rfc3339) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

fn or_none(v: &Value) -> Value {
    match v.as_str() {
        Some(s) if !s.is_empty() => json!(s),
        _ => json!("<none>"),
    }
}

fn or_unknown(v: &Value) -> Value {
    match v.as_str() {
        Some(s) if !s.is_empty() => json!(s),
        _ => json!("<unknown>"),
    }
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The pod printer's READY, STATUS and RESTARTS: the phase or reason, overridden by what the
/// containers wait or terminated for, `Terminating` once deletion started.
fn pod_cells(pod: &Value, now: i64) -> (String, String, String) {
    let status = &pod["status"];
    let total = arr(&pod["spec"]["containers"]).len();
    let mut reason = status["reason"]
        .as_str()
        .or(status["phase"].as_str())
        .unwrap_or("")
        .to_owned();
    let (mut ready, mut restarts, mut last_restart) = (0, 0i64, None::<i64>);
    let mut init_running = false;
    for (i, c) in arr(&status["initContainerStatuses"]).iter().enumerate() {
        restarts += c["restartCount"].as_i64().unwrap_or(0);
        let st = &c["state"];
        if st["terminated"]["exitCode"].as_i64() == Some(0) {
            continue;
        }
        init_running = true;
        reason = if let Some(r) = st["terminated"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
        {
            format!("Init:{r}")
        } else if st["terminated"].is_object() {
            format!("Init:ExitCode:{}", st["terminated"]["exitCode"])
        } else if let Some(r) = st["waiting"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty() && *r != "PodInitializing")
        {
            format!("Init:{r}")
        } else {
            format!("Init:{i}/{}", arr(&pod["spec"]["initContainers"]).len())
        };
        break;
    }
    let mut has_running = false;
    for c in arr(&status["containerStatuses"]).iter().rev() {
        restarts += c["restartCount"].as_i64().unwrap_or(0);
        if let Some(t) = c["lastState"]["terminated"]["finishedAt"]
            .as_str()
            .and_then(proto::time::parse_rfc3339)
        {
            last_restart = Some(last_restart.map_or(t, |l| l.max(t)));
        }
        if init_running {
            continue;
        }
        let st = &c["state"];
        if let Some(r) = st["waiting"]["reason"].as_str().filter(|r| !r.is_empty()) {
            reason = r.to_owned();
        } else if let Some(r) = st["terminated"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
        {
            reason = r.to_owned();
        } else if st["terminated"].is_object() {
            reason = match st["terminated"]["signal"].as_i64().filter(|s| *s != 0) {
                Some(sig) => format!("Signal:{sig}"),
                None => format!("ExitCode:{}", st["terminated"]["exitCode"]),
            };
        } else if st["running"].is_object() && c["ready"] == true {
            has_running = true;
            ready += 1;
        }
    }
    if !init_running && reason == "Completed" && has_running {
        reason = if pod_ready(pod) {
            "Running"
        } else {
            "NotReady"
        }
        .into();
    }
    if pod["metadata"]["deletionTimestamp"].is_string() {
        reason = if status["reason"] == "NodeLost" {
            "Unknown"
        } else {
            "Terminating"
        }
        .into();
    }
    let restarts = match last_restart {
        Some(t) if restarts > 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };
    (format!("{ready}/{total}"), reason, restarts)
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    arr(&obj["status"]["conditions"])
        .iter()
        .find(|c| c["type"] == kind)
}

fn pod_ready(pod: &Value) -> bool {
    condition(pod, "Ready").is_some_and(|c| c["status"] == "True")
}

fn readiness_gates(pod: &Value) -> Value {
    let gates = arr(&pod["spec"]["readinessGates"]);
    if gates.is_empty() {
        return json!("<none>");
    }
    let met = gates
        .iter()
        .filter(|g| {
            condition(pod, g["conditionType"].as_str().unwrap_or(""))
                .is_some_and(|c| c["status"] == "True")
        })
        .count();
    json!(format!("{met}/{}", gates.len()))
}

fn node_status(node: &Value) -> String {
    let mut s = match condition(node, "Ready").map(|c| c["status"].as_str().unwrap_or("")) {
        Some("True") => "Ready",
        Some("False") => "NotReady",
        _ => "Unknown",
    }
    .to_owned();
    if node["spec"]["unschedulable"] == true {
        s.push_str(",SchedulingDisabled");
    }
    s
}

/// Roles from `node-role.kubernetes.io/<role>` labels and `kubernetes.io/role`.
fn node_roles(node: &Value) -> Value {
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = node["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                if !r.is_empty() {
                    roles.push(r.to_owned());
                }
            } else if k == "kubernetes.io/role" {
                if let Some(v) = v.as_str().filter(|v| !v.is_empty()) {
                    roles.push(v.to_owned());
                }
            }
        }
    }
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        json!("<none>")
    } else {
        json!(roles.join(","))
    }
}

fn node_address(node: &Value, kind: &str) -> Value {
    arr(&node["status"]["addresses"])
        .iter()
        .find(|a| a["type"] == kind)
        .map_or(json!("<none>"), |a| or_none(&a["address"]))
}

fn data_count(obj: &Value) -> usize {
    let n = |v: &Value| v.as_object().map_or(0, |m| m.len());
    n(&obj["data"]) + n(&obj["binaryData"])
}

/// The cells of one object's row.
pub fn cells(r: Resource, obj: &Value, now: i64) -> Vec<Value> {
    let meta = &obj["metadata"];
    let name = json!(meta["name"].as_str().unwrap_or(""));
    let created = age(&meta["creationTimestamp"], now);
    match r {
        Resource::Pods => {
            let (ready, status, restarts) = pod_cells(obj, now);
            vec![
                name,
                json!(ready),
                json!(status),
                json!(restarts),
                json!(created),
                or_none(&obj["status"]["podIP"]),
                or_none(&obj["spec"]["nodeName"]),
                or_none(&obj["status"]["nominatedNodeName"]),
                readiness_gates(obj),
            ]
        }
        Resource::Nodes => {
            let info = &obj["status"]["nodeInfo"];
            vec![
                name,
                json!(node_status(obj)),
                node_roles(obj),
                json!(created),
                json!(info["kubeletVersion"].as_str().unwrap_or("")),
                node_address(obj, "InternalIP"),
                node_address(obj, "ExternalIP"),
                or_unknown(&info["osImage"]),
                or_unknown(&info["kernelVersion"]),
                or_unknown(&info["containerRuntimeVersion"]),
            ]
        }
        Resource::ConfigMaps => vec![name, json!(data_count(obj)), json!(created)],
        Resource::Secrets => vec![
            name,
            json!(obj["type"].as_str().unwrap_or("")),
            json!(data_count(obj)),
            json!(created),
        ],
        Resource::Namespaces => vec![
            name,
            json!(obj["status"]["phase"].as_str().unwrap_or("")),
            json!(created),
        ],
        Resource::Leases => vec![
            name,
            or_none(&obj["spec"]["holderIdentity"]),
            json!(created),
        ],
        Resource::Events => {
            let io = &obj["involvedObject"];
            let last = if obj["lastTimestamp"].is_string() {
                &obj["lastTimestamp"]
            } else {
                &obj["eventTime"]
            };
            vec![
                json!(age(last, now)),
                json!(obj["type"].as_str().unwrap_or("")),
                json!(obj["reason"].as_str().unwrap_or("")),
                json!(format!(
                    "{}/{}",
                    io["kind"].as_str().unwrap_or("").to_ascii_lowercase(),
                    io["name"].as_str().unwrap_or("")
                )),
                json!(obj["message"].as_str().unwrap_or("")),
                json!(io["fieldPath"].as_str().unwrap_or("")),
                json!(obj["source"]["component"].as_str().unwrap_or("")),
                json!(age(&obj["firstTimestamp"], now)),
                json!(obj["count"].as_i64().unwrap_or(1).to_string()),
                name,
            ]
        }
        Resource::Devices | Resource::DeviceModels => vec![name, json!(created)],
    }
}

/// How much of each object a row carries (`?includeObject=`): kubectl asks for the metadata
/// (the default) to print namespaces and labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

/// A Table of `objects`.
pub fn table(r: Resource, objects: &[Value], rv: &str, include: Include, now: i64) -> Value {
    let cols: Vec<Value> = columns(r)
        .iter()
        .map(|(name, ty, priority)| {
            let description = match *name {
                "Name" => NAME_DESC,
                "Age" => AGE_DESC,
                other => other,
            };
            let format = if *name == "Name" { "name" } else { "" };
            json!({ "name": name, "type": ty, "format": format, "description": description, "priority": priority })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({ "cells": cells(r, o, now) });
            match include {
                Include::None => {}
                Include::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o["metadata"],
                    })
                }
                Include::Object => row["object"] = o.clone(),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": rv },
        "columnDefinitions": cols,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn ts(ago: i64) -> String {
        proto::time::rfc3339(NOW - ago)
    }

    #[test]
    fn durations_read_as_kubectl_writes_them() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (150, "2m30s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 300, "3h5m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (2 * 86400, "2d"),
            (2 * 86400 + 3600, "2d1h"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (731 * 86400, "2y1d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
    }

    #[test]
    fn pod_rows_have_the_pod_printers_cells() {
        let running = json!({
            "metadata": { "name": "web", "creationTimestamp": ts(300) },
            "spec": { "nodeName": "edge-1", "containers": [{ "name": "a" }, { "name": "b" }] },
            "status": { "phase": "Running", "podIP": "10.0.0.5",
                "conditions": [{ "type": "Ready", "status": "False" }],
                "containerStatuses": [
                    { "name": "a", "ready": true, "restartCount": 0, "state": { "running": {} } },
                    { "name": "b", "ready": false, "restartCount": 2,
                      "state": { "waiting": { "reason": "CrashLoopBackOff" } },
                      "lastState": { "terminated": { "exitCode": 1, "finishedAt": ts(65) } } },
                ] },
        });
        assert_eq!(
            cells(Resource::Pods, &running, NOW),
            vec![
                json!("web"),
                json!("1/2"),
                json!("CrashLoopBackOff"),
                json!("2 (65s ago)"),
                json!("5m"),
                json!("10.0.0.5"),
                json!("edge-1"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
        let pending = json!({ "metadata": { "name": "p" }, "spec": { "containers": [{}] },
                              "status": { "phase": "Pending" } });
        let c = cells(Resource::Pods, &pending, NOW);
        assert_eq!(
            &c[1..5],
            &[
                json!("0/1"),
                json!("Pending"),
                json!("0"),
                json!("<unknown>")
            ]
        );
        assert_eq!(c[6], json!("<none>"));
        let mut deleting = running.clone();
        deleting["metadata"]["deletionTimestamp"] = json!(ts(1));
        assert_eq!(
            cells(Resource::Pods, &deleting, NOW)[2],
            json!("Terminating")
        );
        let init = json!({ "metadata": { "name": "i" },
            "spec": { "containers": [{}], "initContainers": [{}, {}] },
            "status": { "phase": "Pending", "initContainerStatuses": [
                { "state": { "terminated": { "exitCode": 0 } } },
                { "state": { "running": {} } } ] } });
        assert_eq!(cells(Resource::Pods, &init, NOW)[2], json!("Init:1/2"));
    }

    #[test]
    fn node_rows_have_the_node_printers_cells() {
        let node = json!({
            "metadata": { "name": "edge-1", "creationTimestamp": ts(3 * 86400),
                          "labels": { "node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": "" } },
            "spec": { "unschedulable": true },
            "status": { "conditions": [{ "type": "Ready", "status": "True" }],
                "addresses": [{ "type": "InternalIP", "address": "192.168.1.9" }],
                "nodeInfo": { "kubeletVersion": "v1.29.5-kubeedge-v1.17.0", "osImage": "Debian",
                              "kernelVersion": "6.1.0", "containerRuntimeVersion": "containerd://1.7" } },
        });
        assert_eq!(
            cells(Resource::Nodes, &node, NOW),
            vec![
                json!("edge-1"),
                json!("Ready,SchedulingDisabled"),
                json!("agent,edge"),
                json!("3d"),
                json!("v1.29.5-kubeedge-v1.17.0"),
                json!("192.168.1.9"),
                json!("<none>"),
                json!("Debian"),
                json!("6.1.0"),
                json!("containerd://1.7"),
            ]
        );
        let bare = json!({ "metadata": { "name": "n" } });
        let c = cells(Resource::Nodes, &bare, NOW);
        assert_eq!(
            (&c[1], &c[2], &c[7]),
            (&json!("Unknown"), &json!("<none>"), &json!("<unknown>"))
        );
    }

    #[test]
    fn tables_carry_columns_rows_and_the_asked_object() {
        let cm = json!({ "metadata": { "name": "c", "namespace": "ns", "creationTimestamp": ts(30) },
                         "data": { "a": "1", "b": "2" }, "binaryData": { "c": "AA==" } });
        let t = table(
            Resource::ConfigMaps,
            std::slice::from_ref(&cm),
            "7",
            Include::Metadata,
            NOW,
        );
        assert_eq!(t["kind"], "Table");
        let names: Vec<_> = arr(&t["columnDefinitions"])
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(names, vec![json!("Name"), json!("Data"), json!("Age")]);
        assert_eq!(t["rows"][0]["cells"], json!(["c", 3, "30s"]));
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["namespace"], "ns");
        let t = table(
            Resource::ConfigMaps,
            std::slice::from_ref(&cm),
            "7",
            Include::None,
            NOW,
        );
        assert!(t["rows"][0].get("object").is_none());
        let t = table(Resource::Pods, &[], "7", Include::Object, NOW);
        let wide: Vec<_> = arr(&t["columnDefinitions"])
            .iter()
            .filter(|c| c["priority"] == 1)
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(
            wide,
            vec![
                json!("IP"),
                json!("Node"),
                json!("Nominated Node"),
                json!("Readiness Gates")
            ]
        );
    }
}
