//! The VM scenario: a cloudcore on the host, a device bound to the VM's node, and a VM whose
//! init joins, runs edgecore and round-trips the device twin through the embedded broker.
//! The host checks each step from its side (node Ready, desired value delivered, reported
//! value in the cloud) and collects the guest's memory report.

use std::path::PathBuf;

use std::time::Duration;

use e2e::{target_root, wait_for, Cloud, TempDir};
use serde_json::Value;

use crate::debian::{guest_kit, GuestKit};
use crate::initramfs::Initramfs;
use crate::vm::{fields, Vm};
use crate::{Arch, GUEST_MODULES, NET_MODULE};

const INIT: &str = include_str!("../guest/init.sh");
const TWIN: &str = include_str!("../guest/twin.sh");
const DEVICE: &str = "thermo";
const DESIRED: &str = "21.5";
const REPORT: &str = "23.4";

/// What one VM run measured. Memory in KiB, times from QEMU's start.
#[derive(Debug, Clone)]
pub struct VmReport {
    pub arch: Arch,
    pub kernel_package: String,
    pub mem_total_kb: u64,
    /// MemAvailable after boot, before edgecore started.
    pub avail_before_kb: u64,
    /// MemAvailable with edgecore registered, Ready, and serving the twin.
    pub avail_after_kb: u64,
    pub rss_kb: u64,
    pub anon_kb: u64,
    pub hwm_kb: u64,
    pub threads: u64,
    /// Guest kernel uptime when init reported the network up.
    pub boot: Duration,
    /// QEMU start to the node Ready in the cloud.
    pub ready: Duration,
    /// QEMU start to the reported twin value in the cloud.
    pub twin_in_cloud: Duration,
}

impl VmReport {
    /// Share of MemAvailable still available with edgecore running (DESIGN.md §8: ≥ 50 %).
    pub fn avail_left(&self) -> f64 {
        self.avail_after_kb as f64 / self.avail_before_kb.max(1) as f64
    }
}

/// The cross-built release binary `name` for `arch`.
pub fn cross_binary(arch: &Arch, name: &str) -> PathBuf {
    let p = target_root()
        .join(arch.rust_target)
        .join("release")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run `bash cross/build.sh {}` first",
        p.display(),
        arch.rust_target
    );
    p
}

/// Kernel, modules and busybox for `arch`, fetched into `<target>/qemu` on first use.
pub fn kit(arch: &Arch) -> GuestKit {
    // Tests run in parallel threads of one process and two may want the same kernel: one
    // fetch at a time, so the second finds the first's result instead of racing it.
    static FETCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    guest_kit(arch, &target_root().join("qemu"), GUEST_MODULES)
        .unwrap_or_else(|e| panic!("cannot get a kernel for the {} VM: {e}", arch.debian))
}

/// What a scenario adds to the common guest: its script (`/etc/scenario.sh`, sourced by
/// init.sh after boot), the modules it loads (through this one, `None`: all of
/// [`GUEST_MODULES`]) and a disk image (`/dev/vda`), if any.
pub struct Scenario {
    pub script: &'static str,
    pub modules_through: Option<&'static str>,
    pub disk: Option<PathBuf>,
}

/// The initramfs, gzip-compressed (the kernel holds the archive and its unpacked files at once
/// while booting; in 64 MB every MiB counts).
fn initramfs(arch: &Arch, kit: &GuestKit, env: &str, scenario: &Scenario) -> Vec<u8> {
    let read = |p: &PathBuf| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut a = Initramfs::new();
    for d in [
        "/bin",
        "/dev",
        "/etc",
        "/lib",
        "/lib/modules",
        "/proc",
        "/sys",
        "/tmp",
        "/var",
    ] {
        a.dir(d, 0o755);
    }
    // The kernel opens /dev/console for init's output before devtmpfs is mounted.
    a.char_dev("/dev/console", 0o600, 5, 1);
    a.file("/bin/busybox", 0o755, &read(&kit.busybox))
        .symlink("/bin/sh", "busybox")
        .file("/init", 0o755, INIT.as_bytes())
        .file("/etc/ek.env", 0o600, env.as_bytes());
    let mut names = String::new();
    for (name, path) in kit.modules_through(scenario.modules_through) {
        a.file(&format!("/lib/modules/{name}.ko"), 0o644, &read(path));
        names.push_str(name);
        names.push('\n');
    }
    a.file("/etc/modules", 0o644, names.as_bytes()).file(
        "/etc/scenario.sh",
        0o644,
        scenario.script.as_bytes(),
    );
    for bin in ["edgecore", "edge-mqtt"] {
        a.file(
            &format!("/bin/{bin}"),
            0o755,
            &read(&cross_binary(arch, bin)),
        );
    }
    gzip(&a.finish())
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("gzip")
        .arg("-1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip is needed to compress the initramfs");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    // Written from a thread so a full stdout pipe cannot block the write.
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("gzip");
    writer.join().unwrap().expect("write to gzip");
    assert!(out.status.success(), "gzip failed");
    out.stdout
}

fn device_manifest(node: &str) -> String {
    format!(
        "apiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceModel\nmetadata: {{name: thermometer}}\n\
         spec:\n  properties: [{{name: temperature}}]\n---\n\
         apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {{name: {DEVICE}}}\n\
         spec:\n  deviceModelRef: {{name: thermometer}}\n  nodeName: {node}\n  \
         properties: [{{name: temperature, desired: {{value: \"{DESIRED}\"}}}}]\n"
    )
}

pub(crate) fn kb(f: &std::collections::BTreeMap<String, String>, key: &str, vm: &Vm) -> u64 {
    f.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| vm.fail(&format!("the guest's report has no number {key}")))
}

/// Builds the initramfs for a guest that joins `cloud` with `token` as node `vm-<arch>` and
/// runs the twin scenario, and boots it. The returned directory holds the initramfs; keep it
/// while the VM runs.
pub fn boot_guest(arch: Arch, kit: &GuestKit, cloud: &Cloud, token: &str) -> (Vm, TempDir) {
    let env = format!("DEVICE={DEVICE}\nDESIRED={DESIRED}\nREPORT={REPORT}\n");
    let twin = Scenario {
        script: TWIN,
        modules_through: Some(NET_MODULE),
        disk: None,
    };
    boot_scenario(arch, kit, cloud, token, &env, &twin)
}

/// Boots a guest that joins `cloud` with `token` as node `vm-<arch>` and runs `scenario`,
/// with `env` (`KEY=value` lines) added to /etc/ek.env.
pub fn boot_scenario(
    arch: Arch,
    kit: &GuestKit,
    cloud: &Cloud,
    token: &str,
    env: &str,
    scenario: &Scenario,
) -> (Vm, TempDir) {
    let env = format!(
        "NODE=vm-{}\nWS={}\nCERT={}\nTOKEN={token}\n{env}",
        arch.debian,
        cloud.ws.port(),
        cloud.cert.port(),
    );
    let dir = TempDir::new(&format!("vm-{}", arch.debian));
    let initrd = dir.path().join("initramfs.cpio.gz");
    std::fs::write(&initrd, initramfs(&arch, kit, &env, scenario)).expect("write initramfs");
    (
        Vm::boot(arch, &kit.kernel, &initrd, scenario.disk.as_deref()),
        dir,
    )
}

/// A cloudcore the guests can reach: its certificate names QEMU's gateway address, which
/// is what the guest dials.
pub fn cloud_for_guests() -> Cloud {
    Cloud::start(&["--advertise-address", "10.0.2.2"])
}

/// Boots a VM of `arch`, runs the scenario, asserts every step and returns the measurements.
pub fn run(arch: Arch) -> VmReport {
    let kit = kit(&arch);
    let node = format!("vm-{}", arch.debian);
    let cloud = cloud_for_guests();
    cloud.apply_ok(&device_manifest(&node));
    let (mut vm, _dir) = boot_guest(arch, &kit, &cloud, &cloud.token());
    let booted = fields(&vm.expect("EK-BOOTED", Duration::from_secs(120)));
    vm.expect("EK-JOINED", Duration::from_secs(60));
    vm.wait_for(
        &format!("node {node} Ready in the cloud"),
        Duration::from_secs(60),
        |_| (cloud.ready(&node).as_deref() == Some("True")).then_some(()),
    );
    let ready = vm.started.elapsed();

    // Cloud → edge: the desired value reached the twin inside the guest.
    let get: Value = serde_json::from_str(&vm.expect("EK-TWIN-GET", Duration::from_secs(120)))
        .unwrap_or_else(|e| vm.fail(&format!("twin/get result is not JSON: {e}")));
    if get["twin"]["temperature"]["expected"]["value"] != DESIRED {
        vm.fail(&format!(
            "twin/get result lacks the desired value {DESIRED}: {get}"
        ));
    }
    // Edge → cloud: the value a mapper reported in the guest lands in the Device status.
    let update: Value = serde_json::from_str(&vm.expect("EK-TWIN-UPDATE", Duration::from_secs(60)))
        .unwrap_or_else(|e| vm.fail(&format!("twin/update result is not JSON: {e}")));
    if update["twin"]["temperature"]["actual"]["value"] != REPORT {
        vm.fail(&format!("twin/update result lacks {REPORT}: {update}"));
    }
    vm.wait_for(
        "the reported value in the cloud",
        Duration::from_secs(60),
        |_| (cloud.reported_twin(DEVICE, "temperature").as_deref() == Some(REPORT)).then_some(()),
    );
    let twin_in_cloud = vm.started.elapsed();

    let f = fields(&vm.expect("EK-FOOTPRINT", Duration::from_secs(30)));
    let report = VmReport {
        arch,
        kernel_package: kit.kernel_package.clone(),
        mem_total_kb: kb(&booted, "memtotal_kb", &vm),
        avail_before_kb: kb(&booted, "memavail_kb", &vm),
        avail_after_kb: kb(&f, "memavail_kb", &vm),
        rss_kb: kb(&f, "rss_kb", &vm),
        anon_kb: kb(&f, "anon_kb", &vm),
        hwm_kb: kb(&f, "hwm_kb", &vm),
        threads: kb(&f, "threads", &vm),
        boot: Duration::from_secs_f64(
            booted
                .get("uptime_s")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0),
        ),
        ready,
        twin_in_cloud,
    };
    // Still registered after the measurement: the edge did not fall over.
    wait_for("the node to stay Ready", Duration::from_secs(10), || {
        (cloud.ready(&node).as_deref() == Some("True")).then_some(())
    });
    report
}
