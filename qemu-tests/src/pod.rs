//! The pod scenario: a cloudcore on the host applies a ConfigMap and a pod for the VM's node;
//! in the VM, edgecore on its daemonless runtime runs it with Debian's crun from the busybox
//! image imported out of the VM's disk (its root after boot, see guest/pod.sh). The host checks the pod Running and Ready in the cloud
//! with one restart (it crashes once), the ConfigMap's value inside the container, the memory
//! left, and that the container survives edgecore killed and started again (adopted, not
//! recreated).

use std::time::Duration;

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::{target_root, Cloud, TempDir};
use serde_json::Value;

use crate::crun::{crun_kit, CrunKit};
use crate::scenario::{boot_scenario, cloud_for_guests, kb, kit, Scenario};
use crate::vm::{fields, Vm};
use crate::Arch;

const POD_SCRIPT: &str = include_str!("../guest/pod.sh");
const POD: &str = "blink";
const GREETING: &str = "hello-from-the-cloud";
const IMAGE: &str = "localhost/busybox:test";
/// Where the image archive is on the guest's disk (pod.sh imports it from there).
const DISK_ARCHIVE: &str = "images/busybox.tar";
/// The guest's disk: crun, its libraries and the image archive, with room for edgecore's
/// data dir (the image store, bundles, overlay upper dirs, logs). A sparse file.
const DISK_MB: u32 = 64;

/// What the pod run measured. Memory in KiB, times from QEMU's start.
#[derive(Debug, Clone)]
pub struct PodReport {
    pub arch: Arch,
    pub mem_total_kb: u64,
    /// MemAvailable before edgecore, on the disk root (the initramfs freed by switch_root;
    /// crun and the image archive on the disk).
    pub avail_before_kb: u64,
    /// MemAvailable with edgecore and the pod running (image imported into the disk).
    pub avail_after_kb: u64,
    /// edgecore's VmRSS with the pod running.
    pub rss_kb: u64,
    pub anon_kb: u64,
    pub threads: u64,
    /// QEMU start to the pod Running and Ready in the cloud, after its one restart.
    pub running: Duration,
}

impl PodReport {
    pub fn avail_left(&self) -> f64 {
        self.avail_after_kb as f64 / self.avail_before_kb.max(1) as f64
    }
}

fn manifest(node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: greeting}}
data: {{greeting: {GREETING}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {POD}}}
spec:
  nodeName: {node}
  containers:
  - name: app
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, "cp /config/greeting /out/greeting; if [ ! -e /out/crashed ]; then touch /out/crashed; exit 3; fi; while true; do sleep 1; done"]
    volumeMounts: [{{name: config, mountPath: /config}}, {{name: out, mountPath: /out}}]
    livenessProbe: {{exec: {{command: [touch, /out/probed]}}, periodSeconds: 1}}
  volumes: [{{name: config, configMap: {{name: greeting}}}}, {{name: out, hostPath: {{path: /var/lib/pod-out}}}}]
"#
    )
}

fn pod_status(cloud: &Cloud) -> Value {
    let (status, v) = cloud.admin("GET", &format!("/api/v1/pods/default/{POD}"), b"");
    if status == 200 {
        v["status"].clone()
    } else {
        Value::Null
    }
}

/// Running, Ready, after exactly one restart: the container's id.
fn running_after_one_restart(cloud: &Cloud) -> Option<String> {
    let s = pod_status(cloud);
    let c = &s["containerStatuses"][0];
    (s["phase"] == "Running" && c["ready"] == true && c["restartCount"] == 1)
        .then(|| c["containerID"].as_str().unwrap_or_default().to_owned())
}

/// The busybox image for `arch`'s guest, built from the guest's own busybox-static.
fn image_archive(arch: &Arch, busybox: &Path) -> Vec<u8> {
    let work = target_root().join("qemu-images").join(arch.debian);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("image work dir");
    let archive = e2e::containerd::build_image(&work, IMAGE, &["/bin/sh"], busybox, arch.debian);
    std::fs::read(&archive).expect("read the image archive")
}

/// The guest's disk, an ext4 image made with `mkfs.ext4 -d` (no root, no loop mount): files
/// on a gateway's flash are page cache the kernel can reclaim, not initramfs RAM, and crun with
/// its libraries and the image would not fit a 64 MB VM's initramfs next to the kernel.
/// Laid out as the guest's root (it switches to the disk): `bin/crun`, `lib/...` (crun's guest paths
/// without the leading slash) and [`DISK_ARCHIVE`].
fn disk(dir: &TempDir, crun: &CrunKit, archive: &[u8]) -> PathBuf {
    let root = dir.path().join("root");
    let put = |rel: &str, data: &[u8], mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        let p = root.join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    for (guest, file) in &crun.files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        put(guest, &data, 0o755);
    }
    put(DISK_ARCHIVE, archive, 0o644);
    let img = dir.path().join("disk.img");
    // No journal and no metadata checksums: fewer modules (crc32c) and less kernel memory.
    let out = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-O",
            "^has_journal,^metadata_csum",
            "-E",
            "root_owner=0:0",
            "-d",
        ])
        .arg(&root)
        .arg(&img)
        .arg(format!("{DISK_MB}M"))
        .output()
        .expect("mkfs.ext4 is needed (apt-get install e2fsprogs)");
    assert!(
        out.status.success(),
        "mkfs.ext4 -d {}: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

/// Boots a VM of `arch` running the pod scenario, asserts every step and returns the
/// measurements.
pub fn run(arch: Arch) -> PodReport {
    let kit = kit(&arch);
    let crun = crun_kit(&arch, &target_root().join("qemu"))
        .unwrap_or_else(|e| panic!("cannot get crun for the {} VM: {e}", arch.debian));
    let node = format!("vm-{}", arch.debian);
    let cloud = cloud_for_guests();
    cloud.apply_ok(&manifest(&node));

    let disk_dir = TempDir::new(&format!("vm-disk-{}", arch.debian));
    let disk = disk(&disk_dir, &crun, &image_archive(&arch, &kit.busybox));
    let scenario = Scenario {
        script: POD_SCRIPT,
        modules_through: None,
        disk: Some(disk),
    };
    let (mut vm, _dir) = boot_scenario(arch, &kit, &cloud, &cloud.token(), "", &scenario);
    let booted = fields(&vm.expect("EK-BOOTED", Duration::from_secs(120)));
    let root = fields(&vm.expect("EK-ROOT", Duration::from_secs(60)));
    vm.expect("EK-JOINED", Duration::from_secs(60));
    let id = vm.wait_for(
        "the pod Running and Ready in the cloud after one restart",
        Duration::from_secs(120),
        |_| running_after_one_restart(&cloud),
    );
    let running = vm.started.elapsed();
    let config = vm.expect("EK-POD-CONFIG", Duration::from_secs(60));
    if config != GREETING {
        vm.fail(&format!(
            "the container read {config:?} from its ConfigMap, not {GREETING:?}"
        ));
    }
    let f = fields(&vm.expect("EK-FOOTPRINT", Duration::from_secs(30)));

    // edgecore killed and started again: the same one container runs, probed by the new
    // edgecore, and the cloud still sees it with its one restart.
    let adopted = fields(&vm.expect("EK-ADOPTED", Duration::from_secs(90)));
    let short = |v: &str| v.rsplit("://").next().unwrap_or(v).to_owned();
    if adopted.get("before") != adopted.get("after")
        || adopted.get("after").map(String::as_str) != Some(short(&id).as_str())
    {
        vm.fail(&format!(
            "the container did not survive edgecore's restart: {adopted:?}, cloud had {id}"
        ));
    }
    vm.wait_for(
        "the pod still Running with one restart after edgecore's restart",
        Duration::from_secs(30),
        |_| (running_after_one_restart(&cloud).as_deref() == Some(id.as_str())).then_some(()),
    );
    report(arch, &booted, &root, &f, running, &vm)
}

fn report(
    arch: Arch,
    booted: &std::collections::BTreeMap<String, String>,
    root: &std::collections::BTreeMap<String, String>,
    f: &std::collections::BTreeMap<String, String>,
    running: Duration,
    vm: &Vm,
) -> PodReport {
    PodReport {
        arch,
        mem_total_kb: kb(booted, "memtotal_kb", vm),
        avail_before_kb: kb(root, "memavail_kb", vm),
        avail_after_kb: kb(f, "memavail_kb", vm),
        rss_kb: kb(f, "rss_kb", vm),
        anon_kb: kb(f, "anon_kb", vm),
        threads: kb(f, "threads", vm),
        running,
    }
}
