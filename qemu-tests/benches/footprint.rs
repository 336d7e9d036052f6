//! The footprint report: one table with, against DESIGN.md §8's budgets,
//! - the stripped size of every release binary per target;
//! - edgecore on this host, idle and connected to a cloudcore on loopback (no pods), with the
//!   embedded MQTT broker off and on: VmRSS, RssAnon, threads, descriptors, join and Ready time;
//! - edgecore in 64 MB aarch64 and armv7 QEMU VMs after joining and serving a device twin:
//!   its VmRSS, RssAnon and threads, and the MemAvailable it leaves;
//! - edgecore in a 64 MB aarch64 VM running one pod from the cloud under crun (direct
//!   runtime): its VmRSS and the MemAvailable left with the pod.
//!
//! Run with `bash scripts/footprint.sh` (builds what it needs first).
//! `FOOTPRINT_SECS` sets how long the host edgecore stays connected before measuring [30].

use std::time::{Duration, Instant};

use e2e::{fd_count, proc_status, target_root, Cloud, Edge};
use qemu_tests::pod::{self, PodReport};
use qemu_tests::scenario::{self, VmReport};
use qemu_tests::{ARM64, ARMHF};

struct Table(Vec<[String; 4]>);

impl Table {
    fn row(&mut self, what: &str, value: String, budget: &str, ok: Option<bool>) {
        let verdict = match ok {
            Some(true) => "within",
            Some(false) => "OVER",
            None => "",
        };
        self.0.push([
            what.to_owned(),
            value,
            budget.to_owned(),
            verdict.to_owned(),
        ]);
    }

    fn print(&self) {
        let w = |i: usize, min: usize| {
            self.0
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(min)
        };
        let (a, b, c) = (w(0, 4), w(1, 5), w(2, 6));
        println!(
            "| {:<a$} | {:>b$} | {:>c$} | {:<6} |",
            "what", "value", "budget", ""
        );
        println!(
            "|{}|{}|{}|{}|",
            "-".repeat(a + 2),
            "-".repeat(b + 2),
            "-".repeat(c + 2),
            "-".repeat(8)
        );
        for r in &self.0 {
            println!(
                "| {:<a$} | {:>b$} | {:>c$} | {:<6} |",
                r[0], r[1], r[2], r[3]
            );
        }
    }
}

fn mib(kib: u64) -> String {
    format!("{:.2} MiB", kib as f64 / 1024.0)
}

/// Host edgecore after `secs` connected: `[VmRSS, RssAnon, VmHWM, Threads]`, descriptors,
/// join time and run→Ready time.
fn host(secs: u64, broker: bool) -> ([u64; 4], usize, Duration, Duration) {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("bench-edge");
    let t = Instant::now();
    edge.join_ok(&cloud);
    let join = t.elapsed();
    if !broker {
        edge.set_config(
            "modules",
            serde_json::json!({ "edged": true, "metamanager": true, "eventbus": false, "devicetwin": false }),
        );
    }
    let run = edge.run_with(&["--log-level", "warn"]);
    let t = Instant::now();
    cloud.wait_ready("bench-edge", true, Duration::from_secs(60));
    let ready = t.elapsed();
    std::thread::sleep(Duration::from_secs(secs));
    assert_eq!(
        cloud.ready("bench-edge").as_deref(),
        Some("True"),
        "edge fell off during the run"
    );
    (proc_status(run.pid()), fd_count(run.pid()), join, ready)
}

fn vm_rows(t: &mut Table, r: &VmReport) {
    let a = r.arch.debian;
    t.row(
        &format!("{a} VM: MemTotal (64 MB VM, {})", r.kernel_package),
        mib(r.mem_total_kb),
        "",
        None,
    );
    t.row(
        &format!("{a} VM: MemAvailable before edgecore"),
        mib(r.avail_before_kb),
        "",
        None,
    );
    t.row(
        &format!("{a} VM: edgecore VmRSS, serving a twin"),
        mib(r.rss_kb),
        "",
        None,
    );
    t.row(
        &format!("{a} VM: edgecore RssAnon"),
        mib(r.anon_kb),
        "",
        None,
    );
    t.row(
        &format!("{a} VM: edgecore VmHWM (peak RSS)"),
        mib(r.hwm_kb),
        "",
        None,
    );
    t.row(
        &format!("{a} VM: edgecore threads"),
        r.threads.to_string(),
        "2",
        Some(r.threads <= 2),
    );
    t.row(
        &format!("{a} VM: MemAvailable left with edgecore"),
        format!(
            "{} ({:.0} %)",
            mib(r.avail_after_kb),
            r.avail_left() * 100.0
        ),
        ">= 50 %",
        Some(r.avail_left() >= 0.5),
    );
    t.row(
        &format!("{a} VM: kernel boot to network up"),
        format!("{} ms", r.boot.as_millis()),
        "",
        None,
    );
    t.row(
        &format!("{a} VM: QEMU start to node Ready"),
        format!("{} ms", r.ready.as_millis()),
        "",
        None,
    );
    t.row(
        &format!("{a} VM: QEMU start to reported twin in cloud"),
        format!("{} ms", r.twin_in_cloud.as_millis()),
        "",
        None,
    );
}

fn pod_rows(t: &mut Table, r: &PodReport) {
    let a = r.arch.debian;
    t.row(
        &format!("{a} VM, pod on crun: MemAvailable before edgecore"),
        mib(r.avail_before_kb),
        "",
        None,
    );
    t.row(
        &format!("{a} VM, pod on crun: edgecore VmRSS with one pod"),
        mib(r.rss_kb),
        "",
        None,
    );
    t.row(
        &format!("{a} VM, pod on crun: edgecore RssAnon with one pod"),
        mib(r.anon_kb),
        "",
        None,
    );
    t.row(
        &format!("{a} VM, pod on crun: MemAvailable left, edgecore and pod"),
        format!(
            "{} ({:.0} %)",
            mib(r.avail_after_kb),
            r.avail_left() * 100.0
        ),
        ">= 40 %",
        Some(r.avail_left() >= 0.4),
    );
    t.row(
        &format!("{a} VM, pod on crun: QEMU start to pod Running (1 restart)"),
        format!("{} ms", r.running.as_millis()),
        "",
        None,
    );
}

fn main() {
    let secs: u64 = std::env::var("FOOTPRINT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut t = Table(Vec::new());

    let root = target_root();
    for (label, path, budget) in [
        (
            "edgecore aarch64-unknown-linux-musl",
            "aarch64-unknown-linux-musl/release/edgecore",
            Some(4u64 << 20),
        ),
        (
            "edgecore armv7-unknown-linux-gnueabihf",
            "armv7-unknown-linux-gnueabihf/release/edgecore",
            None,
        ),
        (
            "edgecore riscv64gc-unknown-linux-gnu",
            "riscv64gc-unknown-linux-gnu/release/edgecore",
            None,
        ),
        (
            "edgecore x86_64-unknown-linux-gnu",
            "release/edgecore",
            None,
        ),
        (
            "cloudcore x86_64-unknown-linux-gnu",
            "release/cloudcore",
            None,
        ),
        (
            "edge-mqtt aarch64-unknown-linux-musl",
            "aarch64-unknown-linux-musl/release/edge-mqtt",
            None,
        ),
        (
            "edge-mqtt armv7-unknown-linux-gnueabihf",
            "armv7-unknown-linux-gnueabihf/release/edge-mqtt",
            None,
        ),
    ] {
        let what = format!("binary size: {label}");
        match std::fs::metadata(root.join(path)) {
            Ok(m) => t.row(
                &what,
                format!("{:.2} MiB", m.len() as f64 / (1u64 << 20) as f64),
                if budget.is_some() { "4 MiB" } else { "" },
                budget.map(|b| m.len() <= b),
            ),
            Err(_) => t.row(&what, "not built".into(), "", None),
        }
    }

    eprintln!("measuring edgecore on this host after {secs} s connected, broker off, then on");
    let ([rss, anon, hwm, threads], fds, join, ready) = host(secs, false);
    let ([rss_b, anon_b, _, threads_b], fds_b, _, _) = host(secs, true);
    t.row(
        "host: edgecore VmRSS, broker off",
        mib(rss),
        "6 MiB",
        Some(rss <= 6 * 1024),
    );
    t.row("host: edgecore RssAnon, broker off", mib(anon), "", None);
    t.row(
        "host: edgecore VmHWM (peak RSS), broker off",
        mib(hwm),
        "",
        None,
    );
    t.row(
        "host: edgecore threads, broker off",
        threads.to_string(),
        "2",
        Some(threads <= 2),
    );
    t.row(
        "host: edgecore open descriptors, broker off",
        fds.to_string(),
        "",
        None,
    );
    t.row(
        "host: edgecore VmRSS, embedded broker on",
        mib(rss_b),
        "12 MiB",
        Some(rss_b <= 12 * 1024),
    );
    t.row(
        "host: edgecore RssAnon, embedded broker on",
        mib(anon_b),
        "",
        None,
    );
    t.row(
        "host: edgecore threads, embedded broker on",
        threads_b.to_string(),
        "2",
        Some(threads_b <= 2),
    );
    t.row(
        "host: edgecore open descriptors, broker on",
        fds_b.to_string(),
        "",
        None,
    );
    t.row(
        "host: edgecore join (CA fetch, CSR, signing)",
        format!("{} ms", join.as_millis()),
        "",
        None,
    );
    t.row(
        "host: edgecore run start to node Ready",
        format!("{} ms", ready.as_millis()),
        "",
        None,
    );

    for arch in [ARM64, ARMHF] {
        eprintln!("booting the {} VM", arch.debian);
        vm_rows(&mut t, &scenario::run(arch));
    }
    eprintln!("booting the arm64 VM with a pod on crun");
    pod_rows(&mut t, &pod::run(ARM64));

    println!(
        "\nedgecore footprint (release; host {}: idle, connected {secs} s, no pods; \
         VMs: {} MB, user-mode network, no pods but the crun rows' one)\n",
        std::env::consts::ARCH,
        qemu_tests::VM_MEMORY_MB
    );
    t.print();
    println!();
}
