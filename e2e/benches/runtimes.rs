//! Memory per pod on the two runtime adapters: containerd through CRI (containerd, a shim
//! and a pause process per pod) next to the direct one (edgecore alone: no daemon, no shim,
//! no pause). For each: apply → Running for N pods at once, then what the runtime side uses
//! with none and with N pods running, as RSS and PSS (shared pages split among their users,
//! the fairer sum over many processes). The workload containers themselves are left out:
//! they are the same on both.

use std::time::{Duration, Instant};

use e2e::containerd::Containerd;
use e2e::{wait_for, Cloud, Edge};

const N: usize = 10;

fn running(cloud: &Cloud, names: &[String]) -> bool {
    let list = cloud.admin("GET", "/api/v1/pods", b"").1;
    names.iter().all(|n| {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["metadata"]["name"] == n.as_str() && p["status"]["phase"] == "Running")
    })
}

/// (RSS, PSS) in KiB of one process, from smaps_rollup.
fn mem(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

fn sum(pids: &[i32]) -> (u64, u64) {
    pids.iter()
        .map(|p| mem(*p))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// Children of `parent` whose command line contains `needle`.
fn children(parent: i32, needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid: i32 = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if ppid == parent
            && String::from_utf8_lossy(&cmd)
                .replace('\0', " ")
                .contains(needle)
        {
            out.push(pid);
        }
    }
    out
}

struct Row {
    name: &'static str,
    apply_ms: u128,
    idle: (u64, u64),
    loaded: (u64, u64),
    processes: usize,
}

fn apply_all(cloud: &Cloud) -> u128 {
    let names: Vec<String> = (0..N).map(|i| format!("p{i}")).collect();
    let manifest: Vec<String> = names
        .iter()
        .map(|n| e2e::pods::sleeping_pod(n, "bench-edge"))
        .collect();
    let t = Instant::now();
    cloud.apply_ok(&manifest.join("---\n"));
    wait_for("pods Running", Duration::from_secs(300), || {
        running(cloud, &names).then_some(())
    });
    let ms = t.elapsed().as_millis();
    // Let the status reports and the first probes settle.
    std::thread::sleep(Duration::from_secs(3));
    ms
}

fn containerd() -> Row {
    let ctrd = Containerd::start();
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("bench-edge");
    let out = edge.join_with(&cloud, &cloud.token(), &ctrd.endpoint());
    assert!(out.status.success());
    let run = edge.run_with(&["--log-level", "warn"]);
    cloud.wait_ready("bench-edge", true, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let ctrd_pid = ctrd.proc.as_ref().unwrap().pid() as i32;
    let idle = sum(&[run.pid() as i32, ctrd_pid]);
    let apply_ms = apply_all(&cloud);
    let shims = ctrd.shims();
    let pauses: Vec<i32> = shims
        .iter()
        .flat_map(|s| children(*s, "sleep 2147483647"))
        .collect();
    let mut pids = vec![run.pid() as i32, ctrd_pid];
    pids.extend(&shims);
    pids.extend(&pauses);
    Row {
        name: "containerd (CRI)",
        apply_ms,
        idle,
        loaded: sum(&pids),
        processes: pids.len(),
    }
}

fn direct() -> Row {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("bench-edge");
    let _cleanup = e2e::direct::Cleanup::new(&edge);
    let out = edge.join_direct(&cloud, e2e::direct::oci_runtime());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    e2e::direct::import(&edge, &e2e::containerd::busybox_archive());
    let run = edge.run_with(&["--log-level", "warn"]);
    cloud.wait_ready("bench-edge", true, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let idle = sum(&[run.pid() as i32]);
    let apply_ms = apply_all(&cloud);
    let loaded = sum(&[run.pid() as i32]);
    // Deleted while the edge runs, so its containers go with the pods.
    for i in 0..N {
        let _ = cloud.cli(&["delete", "pod", &format!("p{i}")]);
    }
    Row {
        name: "direct (crun/runc)",
        apply_ms,
        idle,
        loaded,
        processes: 1,
    }
}

fn main() {
    let rows = [containerd(), direct()];
    println!(
        "\nruntime side of {N} pods (release edgecore, x86_64; workload processes excluded)\n"
    );
    println!("| adapter            | apply → Running | idle RSS / PSS      | {N} pods RSS / PSS   | per pod RSS / PSS | processes |");
    println!("|--------------------|-----------------|---------------------|---------------------|-------------------|-----------|");
    for r in rows {
        let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / N as f64 / 1024.0;
        println!(
            "| {:<18} | {:>12} ms | {:>6.1} / {:>6.1} MiB | {:>6.1} / {:>6.1} MiB | {:>5.2} / {:>5.2} MiB | {:>9} |",
            r.name,
            r.apply_ms,
            r.idle.0 as f64 / 1024.0,
            r.idle.1 as f64 / 1024.0,
            r.loaded.0 as f64 / 1024.0,
            r.loaded.1 as f64 / 1024.0,
            per(r.idle.0, r.loaded.0),
            per(r.idle.1, r.loaded.1),
            r.processes
        );
    }
    println!();
}
