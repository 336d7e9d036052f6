//! edgecore in 64 MB aarch64 and armv7 QEMU VMs (Debian's generic kernels, busybox initramfs),
//! joined to a cloudcore on the host: the node turns Ready, a device twin round-trips through
//! the embedded broker inside the guest, and edgecore leaves at least half of the VM's
//! available memory (DESIGN.md §8). In another 64 MB aarch64 VM, a pod from the cloud runs on
//! edgecore's daemonless runtime with Debian's crun (issue 13: ≥ 40 % of MemAvailable left).
//!
//! Needs the cross-built release binaries (`bash cross/build.sh`) and qemu-system-arm, so it
//! is ignored by a plain `cargo test`; `scripts/test.sh` runs it with `--ignored`.

use std::time::{Duration, Instant};

use qemu_tests::pod::{self, PodReport};
use qemu_tests::scenario::{self, VmReport};
use qemu_tests::{Arch, ARM64, ARMHF};

fn check(arch: Arch) {
    let r: VmReport = scenario::run(arch);
    eprintln!("{r:?}");
    assert!(
        r.avail_left() >= 0.5,
        "{}: edgecore left {:.0} % of MemAvailable ({} of {} KiB)",
        arch.debian,
        r.avail_left() * 100.0,
        r.avail_after_kb,
        r.avail_before_kb
    );
    // The single-threaded runtime: main thread and the reactor, on the target as on the host.
    assert!(r.threads <= 2, "{}: {} threads", arch.debian, r.threads);
}

#[test]
#[ignore = "needs cross/build.sh and QEMU; scripts/test.sh runs it"]
fn edgecore_in_an_arm64_vm() {
    check(ARM64);
}

#[test]
#[ignore = "needs cross/build.sh and QEMU; scripts/test.sh runs it"]
fn edgecore_in_an_armhf_vm() {
    check(ARMHF);
}

/// A pod applied in the cloud for the VM's node runs there under crun, with no container
/// daemon: Running and Ready in the cloud after crashing once (restartCount 1), its ConfigMap
/// mounted, its exec liveness probe run, the container kept (not recreated) across edgecore
/// killed and restarted, and at least 40 % of the VM's MemAvailable left.
#[test]
#[ignore = "needs cross/build.sh and QEMU; scripts/test.sh runs it"]
fn a_pod_from_the_cloud_runs_under_crun_in_an_arm64_vm() {
    let r: PodReport = pod::run(ARM64);
    eprintln!("{r:?}");
    assert!(
        r.avail_left() >= 0.4,
        "edgecore and the pod left {:.0} % of MemAvailable ({} of {} KiB)",
        r.avail_left() * 100.0,
        r.avail_after_kb,
        r.avail_before_kb
    );
}

/// A guest step that fails ends the test at once, with the reason and the console, not after
/// a deadline: here the guest joins with a token of another cloud, which `edgecore join`
/// refuses.
#[test]
#[ignore = "needs cross/build.sh and QEMU; scripts/test.sh runs it"]
fn a_failing_guest_step_fails_at_once_with_the_console() {
    let kit = scenario::kit(&ARM64);
    let cloud = scenario::cloud_for_guests();
    let other = scenario::cloud_for_guests();
    let t = Instant::now();
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (mut vm, _dir) = scenario::boot_guest(ARM64, &kit, &cloud, &other.token());
        vm.expect("EK-JOINED", Duration::from_secs(60));
    }))
    .expect_err("the join with a foreign token must fail");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        t.elapsed() < Duration::from_secs(50),
        "waited out the deadline instead of failing at once"
    );
    assert!(msg.contains("EK-FAIL edgecore join"), "{msg}");
    assert!(msg.contains("CA does not match the token"), "{msg}");
    assert!(msg.contains("--- guest console"), "{msg}");
    assert!(cloud.ready("vm-arm64").is_none(), "nothing registered");
}
