//! Edges on edgecore's daemonless runtime: the OCI runtime to use on this host, joining and
//! importing the test image, and cleaning up what the runtime leaves (containers outlive
//! edgecore by design, and their overlays and network namespaces are mounts).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::containerd::busybox_archive;
use crate::{Cloud, Edge, Proc};

pub const CRUN: &str = "/usr/bin/crun";
pub const RUNC: &str = "/usr/sbin/runc";

/// The OCI runtime for this host: crun, except where it refuses the host's cgroups (crun 1.8
/// rejects a hybrid v1/v2 layout whose v2 tree has controllers, as this CI host's has:
/// hugetlb), where runc, which the direct runtime also accepts, runs the same bundles.
pub fn oci_runtime() -> &'static str {
    let hybrid = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .is_ok_and(|c| !c.trim().is_empty());
    if hybrid {
        RUNC
    } else {
        CRUN
    }
}

/// The containers the OCI runtime runs for `edge`: (id, status, pid).
pub fn oci_list(edge: &Edge) -> Vec<(String, String, i64)> {
    let out = Command::new(oci_runtime())
        .arg("--root")
        .arg(edge.dir.path().join("direct/oci"))
        .args(["list", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["id"].as_str().unwrap_or("").to_owned(),
                c["status"].as_str().unwrap_or("").to_owned(),
                c["pid"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

/// Deletes what the OCI runtime still runs for the edge and unmounts its root filesystems
/// and network namespaces, so a failed test leaves no container or mount behind. Drop it
/// before the edge's temp dir.
pub struct Cleanup(pub std::path::PathBuf);

impl Cleanup {
    pub fn new(edge: &Edge) -> Cleanup {
        Cleanup(edge.dir.path().to_owned())
    }

    /// What a power cut leaves (with edgecore already killed): the containers' processes
    /// gone (SIGKILL), their root filesystems and the pods' network namespaces unmounted,
    /// and the OCI runtime's state and edgecore's records on disk as they were.
    pub fn power_cut(&self, edge: &Edge) {
        for (_, _, pid) in oci_list(edge) {
            if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
        crate::wait_for("the containers gone", Duration::from_secs(30), || {
            oci_list(edge)
                .iter()
                .all(|(_, status, _)| status == "stopped")
                .then_some(())
        });
        self.unmount();
    }

    fn unmount(&self) {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = self.0.display().to_string();
        for m in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
            if m.starts_with(&prefix) {
                let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let root = self.0.join("direct/oci");
        let out = Command::new(oci_runtime())
            .arg("--root")
            .arg(&root)
            .args(["list", "-q"])
            .output();
        for id in out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
        {
            let _ = Command::new(oci_runtime())
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", id.trim()])
                .status();
        }
        self.unmount();
    }
}

/// Joins `edge` to `cloud` in direct mode with the test image imported, fast pod timers,
/// and runs it until the node is Ready.
pub fn start_edge(cloud: &Cloud, edge: &Edge) -> Proc {
    let out = edge.join_direct(cloud, oci_runtime());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    import(edge, &busybox_archive());
    edge.set_config("crash_backoff", serde_json::json!("1s"));
    edge.set_config("pod_sync_period", serde_json::json!("300ms"));
    let run = edge.run("1s");
    cloud.wait_ready(&edge.name, true, Duration::from_secs(60));
    run
}

pub fn import(edge: &Edge, archive: &Path) {
    let out = edge.import_image(archive);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
