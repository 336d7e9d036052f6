//! The node's Kubernetes objects, built as upstream's kubelet builds them (§4.1–4.2): the
//! `v1.Node` for registration, the status strategic-merge patch and the `Lease`.
//!
//! Pure functions of facts and time, so the exact JSON is unit-tested.

use std::net::IpAddr;

use serde_json::{json, Value};

use crate::sysinfo::{NodeFacts, Pressure};

/// kubelet's read-only port as upstream edged reports it.
pub const KUBELET_PORT: u16 = 10350;
/// Pods a node admits (kubelet default).
pub const MAX_PODS: u32 = 110;
/// Lease duration (upstream 40 s, renewed every quarter of it).
pub const LEASE_DURATION_SECS: u64 = 40;

/// What this edgecore calls itself in `nodeInfo.kubeletVersion`: the Kubernetes and KubeEdge
/// versions whose protocol it speaks, then its own.
pub fn kubelet_version() -> String {
    format!(
        "v1.32.10-kubeedge-v1.23.0+edgecore.{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// A node condition's status and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub kind: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: &'static str,
}

/// The four conditions kubelet reports, from a pressure sample. A resource is under pressure
/// below 5 % headroom (kubelet's default hard eviction thresholds are of that order).
pub fn conditions(p: &Pressure) -> [Condition; 4] {
    let low = |avail: u64, total: u64| total > 0 && avail.saturating_mul(20) < total;
    let mem = low(p.mem_available_kib, p.mem_total_kib);
    let disk = low(p.disk_available_kib, p.disk_total_kib);
    [
        Condition {
            kind: "MemoryPressure",
            status: mem,
            reason: if mem {
                "KubeletHasInsufficientMemory"
            } else {
                "KubeletHasSufficientMemory"
            },
            message: if mem {
                "kubelet has insufficient memory available"
            } else {
                "kubelet has sufficient memory available"
            },
        },
        Condition {
            kind: "DiskPressure",
            status: disk,
            reason: if disk {
                "KubeletHasDiskPressure"
            } else {
                "KubeletHasNoDiskPressure"
            },
            message: if disk {
                "kubelet has disk pressure"
            } else {
                "kubelet has no disk pressure"
            },
        },
        Condition {
            kind: "PIDPressure",
            status: false,
            reason: "KubeletHasSufficientPID",
            message: "kubelet has sufficient PID available",
        },
        Condition {
            kind: "Ready",
            status: true,
            reason: "KubeletReady",
            message: "edgecore is posting ready status",
        },
    ]
}

fn condition_json(c: &Condition, heartbeat: &str, transition: &str) -> Value {
    json!({
        "type": c.kind,
        "status": if c.status { "True" } else { "False" },
        "lastHeartbeatTime": heartbeat,
        "lastTransitionTime": transition,
        "reason": c.reason,
        "message": c.message,
    })
}

/// The `v1.Node` registered with `insert null/node/<name>`.
pub fn node_object(
    name: &str,
    facts: &NodeFacts,
    ip: IpAddr,
    conds: &[Condition; 4],
    transitions: &[String; 4],
    now: &str,
) -> Value {
    let resources = json!({
        "cpu": facts.cpus.to_string(),
        "memory": format!("{}Ki", facts.memory_kib),
        "ephemeral-storage": format!("{}Ki", facts.ephemeral_kib),
        "pods": MAX_PODS.to_string(),
    });
    let conditions: Vec<Value> = conds
        .iter()
        .zip(transitions)
        .map(|(c, t)| condition_json(c, now, t))
        .collect();
    json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "labels": {
                "beta.kubernetes.io/arch": facts.arch,
                "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": facts.arch,
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node-role.kubernetes.io/agent": "",
                proto::EDGE_ROLE_LABEL: "",
            },
            "annotations": { "volumes.kubernetes.io/controller-managed-attach-detach": "true" },
        },
        "spec": {},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": conditions,
            "addresses": [
                { "type": "InternalIP", "address": ip.to_string() },
                { "type": "Hostname", "address": if facts.hostname.is_empty() { name } else { &facts.hostname } },
            ],
            "daemonEndpoints": { "kubeletEndpoint": { "Port": KUBELET_PORT } },
            "nodeInfo": {
                "machineID": facts.machine_id,
                "systemUUID": facts.machine_id,
                "bootID": facts.boot_id,
                "kernelVersion": facts.kernel,
                "osImage": facts.os_image,
                "containerRuntimeVersion": facts.runtime_version,
                "kubeletVersion": kubelet_version(),
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": facts.arch,
            },
        },
    })
}

/// The status patch sent as a JSON string with `patch null/nodepatch/<name>` (§1.3 c): every
/// condition with a fresh heartbeat, in kubelet's strategic-merge form.
pub fn status_patch(conds: &[Condition; 4], transitions: &[String; 4], now: &str) -> String {
    let order: Vec<Value> = conds.iter().map(|c| json!({ "type": c.kind })).collect();
    let list: Vec<Value> = conds
        .iter()
        .zip(transitions)
        .map(|(c, t)| condition_json(c, now, t))
        .collect();
    json!({ "status": { "$setElementOrder/conditions": order, "conditions": list } }).to_string()
}

/// A `coordination.k8s.io/v1 Lease` renewed at `renew_time`; `previous` (the last object the
/// cloud returned) keeps its metadata, resourceVersion included, as kubelet does.
pub fn lease(
    name: &str,
    node_uid: Option<&str>,
    previous: Option<&Value>,
    renew_time: &str,
) -> Value {
    let mut lease = previous.cloned().unwrap_or_else(|| {
        let mut meta = json!({ "name": name, "namespace": proto::LEASE_NAMESPACE });
        if let Some(uid) = node_uid {
            meta["ownerReferences"] = json!([{ "apiVersion": "v1", "kind": "Node", "name": name, "uid": uid }]);
        }
        json!({ "kind": "Lease", "apiVersion": "coordination.k8s.io/v1", "metadata": meta, "spec": {} })
    });
    lease["spec"] = json!({
        "holderIdentity": name,
        "leaseDurationSeconds": LEASE_DURATION_SECS,
        "renewTime": renew_time,
    });
    lease
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> NodeFacts {
        NodeFacts {
            hostname: "gw".into(),
            cpus: 4,
            memory_kib: 65536,
            ephemeral_kib: 1000,
            kernel: "6.1.0".into(),
            os_image: "Debian".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
            arch: "arm64",
            runtime_version: "containerd://1.6.20".into(),
        }
    }

    fn healthy() -> Pressure {
        Pressure {
            mem_available_kib: 50,
            mem_total_kib: 100,
            disk_available_kib: 50,
            disk_total_kib: 100,
        }
    }

    #[test]
    fn node_has_edge_label_resources_and_info() {
        let t: [String; 4] = Default::default();
        let n = node_object(
            "edge0",
            &facts(),
            "10.0.0.2".parse().unwrap(),
            &conditions(&healthy()),
            &t,
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(n["metadata"]["labels"][proto::EDGE_ROLE_LABEL], "");
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/arch"], "arm64");
        assert_eq!(n["status"]["capacity"]["cpu"], "4");
        assert_eq!(n["status"]["capacity"]["memory"], "65536Ki");
        assert_eq!(n["status"]["addresses"][0]["address"], "10.0.0.2");
        assert_eq!(n["status"]["nodeInfo"]["architecture"], "arm64");
        assert_eq!(n["status"]["nodeInfo"]["kernelVersion"], "6.1.0");
        assert_eq!(
            n["status"]["nodeInfo"]["containerRuntimeVersion"],
            "containerd://1.6.20"
        );
        let ready = &n["status"]["conditions"][3];
        assert_eq!(
            (ready["type"].as_str(), ready["status"].as_str()),
            (Some("Ready"), Some("True"))
        );
    }

    #[test]
    fn pressure_below_five_percent() {
        let c = conditions(&Pressure {
            mem_available_kib: 4,
            mem_total_kib: 100,
            disk_available_kib: 6,
            disk_total_kib: 100,
        });
        assert!(c[0].status, "memory pressure at 4 %");
        assert!(!c[1].status, "no disk pressure at 6 %");
        assert!(
            !conditions(&Pressure::default())[0].status,
            "unknown totals are not pressure"
        );
    }

    #[test]
    fn status_patch_is_kubelet_shaped() {
        let t: [String; 4] = Default::default();
        let p: Value = serde_json::from_str(&status_patch(
            &conditions(&healthy()),
            &t,
            "2026-01-01T00:00:10Z",
        ))
        .unwrap();
        assert_eq!(
            p["status"]["$setElementOrder/conditions"][3]["type"],
            "Ready"
        );
        assert_eq!(
            p["status"]["conditions"][3]["lastHeartbeatTime"],
            "2026-01-01T00:00:10Z"
        );
    }

    #[test]
    fn lease_keeps_previous_metadata() {
        let first = lease("edge0", Some("u1"), None, "2026-01-01T00:00:00.000000Z");
        assert_eq!(first["metadata"]["ownerReferences"][0]["uid"], "u1");
        let mut stored = first.clone();
        stored["metadata"]["resourceVersion"] = json!("42");
        let next = lease(
            "edge0",
            Some("u1"),
            Some(&stored),
            "2026-01-01T00:00:10.000000Z",
        );
        assert_eq!(next["metadata"]["resourceVersion"], "42");
        assert_eq!(next["spec"]["renewTime"], "2026-01-01T00:00:10.000000Z");
        assert_eq!(next["spec"]["leaseDurationSeconds"], 40);
    }
}
