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
/// versions whose protocol it speaks (upstream: `v1.32.10-kubeedge-v1.23.0`), then its own as
/// semver build metadata.
pub fn kubelet_version() -> String {
    format!(
        "v1.32.10-kubeedge-v1.23.0+edgecore.{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// What is held back from the node's capacity for the system and for eviction, as kubelet's
/// `systemReserved`/`kubeReserved` and hard eviction thresholds (edgecore's defaults:
/// nothing reserved, evict below 100 MiB of memory or 10 % of the data filesystem).
#[derive(Clone, Debug, PartialEq)]
pub struct Reservations {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub ephemeral_bytes: u64,
    /// `evictionHard: memory.available`.
    pub eviction_memory_bytes: u64,
    /// `evictionHard: nodefs.available`, percent of the data filesystem.
    pub eviction_nodefs_percent: u64,
}

impl Default for Reservations {
    fn default() -> Self {
        Reservations {
            cpu_millis: 0,
            memory_bytes: 0,
            ephemeral_bytes: 0,
            eviction_memory_bytes: 100 << 20,
            eviction_nodefs_percent: 10,
        }
    }
}

/// A node condition's status and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub kind: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The four conditions kubelet reports, from a pressure sample and the runtime's health. A
/// resource is under pressure below 5 % headroom (of the order of kubelet's default hard
/// eviction thresholds). A runtime that does not answer makes the node not Ready, as
/// kubelet's runtime check does.
pub fn conditions(p: &Pressure, runtime_down: Option<&str>) -> [Condition; 4] {
    let low = |avail: u64, total: u64| total > 0 && avail.saturating_mul(20) < total;
    let mem = low(p.mem_available_kib, p.mem_total_kib);
    let disk = low(p.disk_available_kib, p.disk_total_kib);
    let (ready, reason, message) = match runtime_down {
        None => (true, "EdgeReady", "edge is posting ready status".to_owned()),
        Some(e) => (
            false,
            "KubeletNotReady",
            format!("container runtime is down: {e}"),
        ),
    };
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
            }
            .into(),
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
            }
            .into(),
        },
        Condition {
            kind: "PIDPressure",
            status: false,
            reason: "KubeletHasSufficientPID",
            message: "kubelet has sufficient PID available".into(),
        },
        Condition {
            kind: "Ready",
            status: ready,
            reason,
            message,
        },
    ]
}

/// Why edgecore's store cannot write (a full disk, a failing card).
#[derive(Clone, Debug, PartialEq)]
pub struct StoreFault {
    pub message: String,
    /// The filesystem is full or the quota is spent.
    pub no_space: bool,
}

/// A store that cannot write makes the node not Ready, as kubelet's storage errors do
/// (`KubeletNotReady` with the error, aggregated with any other as kubelet's
/// `errors.NewAggregate` joins them), and a full filesystem is DiskPressure. Such a node
/// cannot keep what the cloud sends it, so it must not look ready for workloads.
pub fn with_store_fault(conds: &mut [Condition; 4], fault: &StoreFault) {
    let err = format!("edgecore store cannot write: {}", fault.message);
    let ready = &mut conds[3];
    ready.message = if ready.status {
        err
    } else {
        format!("[{}, {err}]", ready.message)
    };
    ready.status = false;
    ready.reason = "KubeletNotReady";
    if fault.no_space {
        let disk = &mut conds[1];
        disk.status = true;
        disk.reason = "KubeletHasDiskPressure";
        disk.message = "kubelet has disk pressure".into();
    }
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

/// `capacity` and `allocatable` as kubelet computes them: allocatable is capacity less the
/// reservations and hard eviction thresholds, and memory less the huge pages.
pub fn resources(facts: &NodeFacts, r: &Reservations) -> (Value, Value) {
    let mem = facts.memory_kib * 1024;
    let eph = facts.ephemeral_kib * 1024;
    let hugepages: u64 = facts.hugepages.iter().map(|(_, b)| b).sum();
    let mut capacity = json!({
        "cpu": facts.cpus.to_string(),
        "memory": format!("{}Ki", facts.memory_kib),
        "ephemeral-storage": format!("{}Ki", facts.ephemeral_kib),
        "pods": MAX_PODS.to_string(),
    });
    let alloc_mem = mem
        .saturating_sub(r.memory_bytes + r.eviction_memory_bytes)
        .saturating_sub(hugepages);
    let alloc_eph = eph.saturating_sub(r.ephemeral_bytes + eph * r.eviction_nodefs_percent / 100);
    let alloc_cpu = (u64::from(facts.cpus) * 1000).saturating_sub(r.cpu_millis);
    let mut allocatable = json!({
        "cpu": if alloc_cpu % 1000 == 0 { (alloc_cpu / 1000).to_string() } else { format!("{alloc_cpu}m") },
        "memory": format!("{}Ki", alloc_mem / 1024),
        "ephemeral-storage": alloc_eph.to_string(),
        "pods": MAX_PODS.to_string(),
    });
    for (name, bytes) in &facts.hugepages {
        capacity[name] = json!(bytes.to_string());
        allocatable[name] = json!(bytes.to_string());
    }
    (capacity, allocatable)
}

/// The node's whole status, as kubelet fills it. The Hostname address is the node name
/// (kubelet's hostname override is the node name on an edge).
pub fn status(
    name: &str,
    facts: &NodeFacts,
    reservations: &Reservations,
    ip: IpAddr,
    conds: &[Condition; 4],
    transitions: &[String; 4],
    now: &str,
) -> Value {
    let (capacity, allocatable) = resources(facts, reservations);
    let conditions: Vec<Value> = conds
        .iter()
        .zip(transitions)
        .map(|(c, t)| condition_json(c, now, t))
        .collect();
    json!({
        "capacity": capacity,
        "allocatable": allocatable,
        "conditions": conditions,
        "addresses": [
            { "type": "InternalIP", "address": ip.to_string() },
            { "type": "Hostname", "address": name },
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
    })
}

/// The `v1.Node` registered with `insert null/node/<name>`.
pub fn node_object(name: &str, facts: &NodeFacts, status: Value) -> Value {
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
        "status": status,
    })
}

/// The status patch sent as a JSON string with `patch null/nodepatch/<name>` (§1.3 c): the
/// whole status in kubelet's strategic-merge form: conditions by type in their order, the
/// address list replaced whole (kubelet's workaround for its merge-by-type tag).
pub fn status_patch(status: &Value) -> String {
    let mut st = status.clone();
    let order: Vec<Value> = st["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| json!({ "type": c["type"] }))
        .collect();
    st["$setElementOrder/conditions"] = json!(order);
    if let Some(a) = st["addresses"].as_array_mut() {
        a.push(json!({ "$patch": "replace" }));
    }
    json!({ "status": st }).to_string()
}

/// The status without what moves on every report (heartbeat times): two statuses with the
/// same key differ in something a kubelet would report.
pub fn status_key(status: &Value) -> String {
    let mut st = status.clone();
    for c in st["conditions"].as_array_mut().into_iter().flatten() {
        if let Some(m) = c.as_object_mut() {
            m.remove("lastHeartbeatTime");
        }
    }
    st.to_string()
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
            memory_kib: 1 << 20,
            ephemeral_kib: 1000,
            kernel: "6.1.0".into(),
            os_image: "Debian".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
            arch: "arm64",
            runtime_version: "containerd://1.6.20".into(),
            hugepages: vec![("hugepages-2Mi".into(), 4 << 20)],
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

    fn st(conds: &[Condition; 4]) -> Value {
        let t: [String; 4] = Default::default();
        status(
            "edge0",
            &facts(),
            &Reservations::default(),
            "10.0.0.2".parse().unwrap(),
            conds,
            &t,
            "2026-01-01T00:00:00Z",
        )
    }

    #[test]
    fn node_has_edge_label_resources_and_info() {
        let s = st(&conditions(&healthy(), None));
        let n = node_object("edge0", &facts(), s);
        assert_eq!(n["metadata"]["labels"][proto::EDGE_ROLE_LABEL], "");
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/arch"], "arm64");
        let status = &n["status"];
        assert_eq!(status["capacity"]["cpu"], "4");
        assert_eq!(status["capacity"]["memory"], "1048576Ki");
        assert_eq!(status["capacity"]["hugepages-2Mi"], "4194304");
        // 1 GiB less the 100 MiB eviction threshold and the 4 MiB of huge pages.
        assert_eq!(
            status["allocatable"]["memory"],
            format!("{}Ki", (1u64 << 20) - 100 * 1024 - 4 * 1024)
        );
        assert_eq!(
            status["allocatable"]["ephemeral-storage"],
            (1000 * 1024 - 1000 * 1024 / 10).to_string()
        );
        assert_eq!(status["allocatable"]["cpu"], "4");
        assert_eq!(status["addresses"][0]["address"], "10.0.0.2");
        assert_eq!(
            status["addresses"][1],
            json!({"type": "Hostname", "address": "edge0"}),
            "the node name, not the OS host name"
        );
        assert_eq!(
            status["nodeInfo"]["containerRuntimeVersion"],
            "containerd://1.6.20"
        );
        let ready = &status["conditions"][3];
        assert_eq!(
            (
                ready["type"].as_str(),
                ready["status"].as_str(),
                ready["reason"].as_str()
            ),
            (Some("Ready"), Some("True"), Some("EdgeReady"))
        );
    }

    #[test]
    fn pressure_and_a_dead_runtime() {
        let c = conditions(
            &Pressure {
                mem_available_kib: 4,
                mem_total_kib: 100,
                disk_available_kib: 6,
                disk_total_kib: 100,
            },
            None,
        );
        assert!(c[0].status, "memory pressure at 4 %");
        assert!(!c[1].status, "no disk pressure at 6 %");
        assert!(
            !conditions(&Pressure::default(), None)[0].status,
            "unknown totals are not pressure"
        );
        let down = conditions(&healthy(), Some("connection refused"));
        assert!(!down[3].status);
        assert_eq!(down[3].reason, "KubeletNotReady");
        assert!(down[3].message.contains("container runtime is down"));
    }

    #[test]
    fn a_store_that_cannot_write_makes_the_node_not_ready_and_a_full_disk_disk_pressure() {
        let full = StoreFault {
            message: "No space left on device (os error 28)".into(),
            no_space: true,
        };
        let mut c = conditions(&healthy(), None);
        with_store_fault(&mut c, &full);
        assert_eq!(
            (c[3].kind, c[3].status, c[3].reason),
            ("Ready", false, "KubeletNotReady")
        );
        assert_eq!(
            c[3].message,
            "edgecore store cannot write: No space left on device (os error 28)"
        );
        assert_eq!(
            (c[1].kind, c[1].status, c[1].reason),
            ("DiskPressure", true, "KubeletHasDiskPressure")
        );
        // Another error is not disk pressure, and joins the runtime's as kubelet aggregates.
        let mut c = conditions(&healthy(), Some("connection refused"));
        let io = StoreFault {
            message: "Input/output error (os error 5)".into(),
            no_space: false,
        };
        with_store_fault(&mut c, &io);
        assert_eq!(
            c[3].message,
            "[container runtime is down: connection refused, edgecore store cannot write: Input/output error (os error 5)]"
        );
        assert!(!c[1].status);
    }

    #[test]
    fn status_patch_is_kubelet_shaped_and_keys_ignore_heartbeats() {
        let s = st(&conditions(&healthy(), None));
        let p: Value = serde_json::from_str(&status_patch(&s)).unwrap();
        assert_eq!(
            p["status"]["$setElementOrder/conditions"][3]["type"],
            "Ready"
        );
        assert_eq!(p["status"]["addresses"][2], json!({"$patch": "replace"}));
        assert_eq!(p["status"]["nodeInfo"]["kernelVersion"], "6.1.0");
        let mut later = s.clone();
        later["conditions"][0]["lastHeartbeatTime"] = json!("2026-01-01T00:00:10Z");
        assert_eq!(status_key(&s), status_key(&later));
        later["nodeInfo"]["containerRuntimeVersion"] = json!("containerd://1.7.0");
        assert_ne!(status_key(&s), status_key(&later));
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
