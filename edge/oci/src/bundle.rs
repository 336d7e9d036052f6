//! A bundle's `config.json` (OCI runtime spec 1.0) from what a container needs. Sans-IO: the
//! caller resolves args, env and mounts (image defaults and the pod's spec) and writes the
//! result next to the rootfs.

use serde_json::{json, Value};

/// How the container is networked.
#[derive(Clone, Debug, PartialEq)]
pub enum Network {
    /// The host's network namespace (`hostNetwork: true`).
    Host,
    /// A namespace kept by a bind mount at this path, shared by the pod's containers.
    Joined(String),
}

/// A bind mount.
#[derive(Clone, Debug, PartialEq)]
pub struct Mount {
    pub source: String,
    pub destination: String,
    pub read_only: bool,
}

/// Everything a bundle's config says.
#[derive(Clone, Debug, PartialEq)]
pub struct BundleSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// The UTS hostname; `None` keeps the host's (host networking, as kubelet does).
    pub hostname: Option<String>,
    pub network: Network,
    pub mounts: Vec<Mount>,
    /// Absolute, under the runtime's cgroup root (v1 controllers or the v2 tree alike: the
    /// OCI runtime maps the resources to whichever the host has).
    pub cgroups_path: String,
    pub memory_limit: Option<u64>,
    pub cpu_shares: Option<u64>,
    /// CFS quota in µs per [`CPU_PERIOD_US`].
    pub cpu_quota: Option<i64>,
    /// Relative to the bundle directory, or absolute.
    pub rootfs: String,
}

/// The CFS period limits are expressed in (kubelet's default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// The capabilities a container gets: the container runtimes' default set (containerd's and
/// Docker's), not the full set root has on the host.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths hidden from containers and paths made read-only (runc's and containerd's lists).
const MASKED: [&str; 9] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
];
const READONLY: [&str; 6] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/scsi",
];

/// CPU limit in millicores → CFS quota per [`CPU_PERIOD_US`], as kubelet computes it (at
/// least 1 ms).
pub fn cpu_quota(millis: u64) -> i64 {
    ((millis * CPU_PERIOD_US / 1000) as i64).max(1000)
}

/// CPU request in millicores → cgroup shares (kubelet: at least 2).
pub fn cpu_shares(millis: u64) -> u64 {
    (millis * 1024 / 1000).max(2)
}

impl BundleSpec {
    /// The `config.json` document.
    pub fn config(&self) -> Value {
        let mut namespaces = vec![
            json!({"type": "pid"}),
            json!({"type": "ipc"}),
            json!({"type": "mount"}),
        ];
        if self.hostname.is_some() {
            namespaces.push(json!({"type": "uts"}));
        }
        if let Network::Joined(path) = &self.network {
            namespaces.push(json!({"type": "network", "path": path}));
        }
        let mut mounts = vec![
            json!({"destination": "/proc", "type": "proc", "source": "proc",
                   "options": ["nosuid", "noexec", "nodev"]}),
            json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
            json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                   "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
            json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                   "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
            json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                   "options": ["nosuid", "noexec", "nodev"]}),
        ];
        // sysfs can only be mounted fresh in a network namespace of the container's own; with
        // the host's, the host's /sys is bound read-only (as runc does).
        mounts.push(match self.network {
            Network::Joined(_) => json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                   "options": ["nosuid", "noexec", "nodev", "ro"]}),
            Network::Host => json!({"destination": "/sys", "type": "bind", "source": "/sys",
                   "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}),
        });
        for m in &self.mounts {
            let mut options = vec!["rbind", "rprivate"];
            if m.read_only {
                options.push("ro");
            }
            mounts.push(json!({"destination": m.destination, "type": "bind",
                "source": m.source, "options": options}));
        }
        let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
        if let Some(b) = self.memory_limit {
            resources["memory"] = json!({"limit": b});
        }
        let mut cpu = serde_json::Map::new();
        if let Some(s) = self.cpu_shares {
            cpu.insert("shares".into(), json!(s));
        }
        if let Some(q) = self.cpu_quota {
            cpu.insert("quota".into(), json!(q));
            cpu.insert("period".into(), json!(CPU_PERIOD_US));
        }
        if !cpu.is_empty() {
            resources["cpu"] = Value::Object(cpu);
        }
        let caps = json!(DEFAULT_CAPS);
        let mut config = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": self.uid, "gid": self.gid},
                "args": self.args,
                "env": self.env,
                "cwd": if self.cwd.is_empty() { "/" } else { self.cwd.as_str() },
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                "noNewPrivileges": false,
            },
            "root": {"path": self.rootfs, "readonly": false},
            "mounts": mounts,
            "linux": {
                "cgroupsPath": self.cgroups_path,
                "resources": resources,
                "namespaces": namespaces,
                "maskedPaths": MASKED,
                "readonlyPaths": READONLY,
            },
        });
        if let Some(h) = &self.hostname {
            config["hostname"] = json!(h);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BundleSpec {
        BundleSpec {
            args: vec!["sh".into(), "-c".into(), "sleep 1".into()],
            env: vec!["PATH=/bin".into(), "GREETING=hi".into()],
            cwd: String::new(),
            uid: 1000,
            gid: 1000,
            hostname: Some("web".into()),
            network: Network::Joined("/data/direct/sandboxes/s1/netns".into()),
            mounts: vec![Mount {
                source: "/data/pods/u/volumes/config".into(),
                destination: "/config".into(),
                read_only: true,
            }],
            cgroups_path: "/edgecore/c1".into(),
            memory_limit: Some(64 << 20),
            cpu_shares: Some(cpu_shares(250)),
            cpu_quota: Some(cpu_quota(250)),
            rootfs: "rootfs".into(),
        }
    }

    #[test]
    fn config_carries_process_mounts_namespaces_and_limits() {
        let c = spec().config();
        assert_eq!(c["process"]["args"], json!(["sh", "-c", "sleep 1"]));
        assert_eq!(c["process"]["env"][1], "GREETING=hi");
        assert_eq!(c["process"]["cwd"], "/", "an empty working dir is /");
        assert_eq!(c["process"]["user"], json!({"uid": 1000, "gid": 1000}));
        assert_eq!(c["process"]["terminal"], false);
        assert_eq!(c["hostname"], "web");
        let ns = c["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.contains(&json!({"type": "network", "path": "/data/direct/sandboxes/s1/netns"})));
        assert!(ns.contains(&json!({"type": "uts"})));
        let vol = c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/config")
            .unwrap();
        assert_eq!(vol["source"], "/data/pods/u/volumes/config");
        assert_eq!(vol["options"], json!(["rbind", "rprivate", "ro"]));
        let sys = c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys");
        assert_eq!(sys.unwrap()["type"], "sysfs");
        let r = &c["linux"]["resources"];
        assert_eq!(r["memory"]["limit"], 64 << 20);
        assert_eq!(
            r["cpu"],
            json!({"shares": 256, "quota": 25000, "period": 100000})
        );
        assert_eq!(c["linux"]["cgroupsPath"], "/edgecore/c1");
    }

    #[test]
    fn host_network_has_no_network_or_uts_namespace_and_binds_sys() {
        let mut s = spec();
        s.network = Network::Host;
        s.hostname = None;
        s.memory_limit = None;
        s.cpu_quota = None;
        s.cpu_shares = None;
        let c = s.config();
        let ns = c["linux"]["namespaces"].as_array().unwrap();
        assert!(
            ns.iter()
                .all(|n| n["type"] != "network" && n["type"] != "uts"),
            "{ns:?}"
        );
        assert!(c.get("hostname").is_none());
        let sys = c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys");
        assert_eq!(sys.unwrap()["type"], "bind");
        assert!(c["linux"]["resources"].get("memory").is_none());
        assert!(c["linux"]["resources"].get("cpu").is_none());
    }

    #[test]
    fn cpu_conversions_follow_kubelet() {
        assert_eq!(cpu_quota(1000), 100_000);
        assert_eq!(cpu_quota(1), 1000, "at least 1 ms");
        assert_eq!(cpu_shares(1), 2, "at least 2 shares");
        assert_eq!(cpu_shares(500), 512);
    }
}
