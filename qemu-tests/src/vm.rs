//! One QEMU system-emulation VM: `-M virt`, a kernel and an initramfs, user-mode networking
//! (the guest reaches the host's loopback at 10.0.2.2) and the serial console on stdout, which
//! the harness reads. The VM is killed by PID when dropped; every wait has a deadline and a
//! failed one shows the console.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::Proc;

use crate::{Arch, VM_MEMORY_MB};

pub struct Vm {
    proc: Proc,
    pub arch: Arch,
    pub started: Instant,
}

impl Vm {
    /// Boots `kernel` with `initrd`, and `disk` (a raw image) as `/dev/vda` if given.
    pub fn boot(arch: Arch, kernel: &Path, initrd: &Path, disk: Option<&Path>) -> Vm {
        assert!(
            Command::new(arch.qemu).arg("--version").output().is_ok(),
            "{} is missing: apt-get install qemu-system-arm (scripts/test.sh does)",
            arch.qemu
        );
        let mut cmd = Command::new(arch.qemu);
        cmd.args(["-M", "virt", "-cpu", arch.cpu, "-smp", "1"])
            .args(["-m", &format!("{VM_MEMORY_MB}M")])
            .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
            .arg("-no-reboot")
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            // panic=-1: a guest kernel panic powers the VM off at once instead of hanging.
            .args(["-append", "console=ttyAMA0 panic=-1 quiet"])
            .args([
                "-netdev",
                "user,id=n0",
                "-device",
                "virtio-net-device,netdev=n0",
            ]);
        if let Some(disk) = disk {
            let mut drive = std::ffi::OsString::from("if=none,format=raw,id=d0,file=");
            drive.push(disk);
            cmd.arg("-drive")
                .arg(drive)
                .args(["-device", "virtio-blk-device,drive=d0"]);
        }
        Vm {
            proc: Proc::spawn(cmd),
            arch,
            started: Instant::now(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Everything the console printed so far.
    pub fn console(&self) -> String {
        self.proc.log()
    }

    /// Fails the test with the console attached.
    pub fn fail(&self, why: &str) -> ! {
        panic!(
            "{} VM: {why}\n--- guest console ({:.1} s since boot) ---\n{}--- end of console ---",
            self.arch.debian,
            self.started.elapsed().as_secs_f64(),
            self.console()
        );
    }

    /// Polls `f` until it returns `Some`, failing when `timeout` passes, when QEMU exits or
    /// when the guest reports a failed step (`EK-FAIL`).
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Vm) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if let Some(line) = self.console().lines().find(|l| l.starts_with("EK-FAIL")) {
                let line = line.to_owned();
                self.fail(&format!(
                    "the guest failed while waiting for {what}: {line}"
                ));
            }
            if let Ok(Some(status)) = self.proc.child.try_wait() {
                self.fail(&format!("QEMU exited ({status}) while waiting for {what}"));
            }
            if Instant::now() >= deadline {
                self.fail(&format!("timed out after {timeout:?} waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the console line starting with `marker` and returns the rest of it.
    pub fn expect(&mut self, marker: &str, timeout: Duration) -> String {
        self.wait_for(&format!("console line {marker:?}"), timeout, |vm| {
            vm.console()
                .lines()
                .find_map(|l| l.strip_prefix(marker))
                .map(|rest| rest.trim().to_owned())
        })
    }
}

/// `key=value` pairs of a report line.
pub fn fields(line: &str) -> std::collections::BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
