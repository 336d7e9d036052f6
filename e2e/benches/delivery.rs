//! Delivery benchmark: edgecore's memory and store size holding 100 pods, 100 configmaps and
//! 100 secrets, for the redb and sled backends side by side; then messages per second and
//! p50/p99 latency from `apply` to the edge's acknowledgement for a burst of 1,000 pods, with
//! the group-commit numbers (store commits and flash bytes per 1,000 objects, from
//! edgecore's exit line); and edgecore's memory holding one pod with ten 1 MiB configmaps (the
//! largest the cloud stores).
//!
//! Needs a release edgecore built with `--features sled` (scripts/bench.sh does that).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use e2e::{proc_status, wait_for, Cloud, Edge};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn disk_bytes(path: &std::path::Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => std::fs::read_dir(path)
            .map(|d| d.flatten().map(|e| disk_bytes(&e.path())).sum())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

fn edge_on(cloud: &Cloud, backend: &str) -> (Edge, e2e::Proc) {
    let edge = Edge::new("bench-edge");
    edge.join_ok(cloud);
    let path = edge.config_path();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cfg["store"] = serde_json::json!({ "backend": backend });
    std::fs::write(&path, cfg.to_string()).unwrap();
    // Info: edgecore's exit line counts the store's commits and bytes.
    let run = edge.run_with(&["--log-level", "info"]);
    cloud.wait_ready("bench-edge", true, Duration::from_secs(60));
    (edge, run)
}

fn footprint(backend: &str) -> String {
    let cloud = Cloud::start(&[]);
    let (edge, run) = edge_on(&cloud, backend);
    let mut manifest = String::new();
    for i in 0..100 {
        let _ = write!(
            manifest,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm{i}}}\ndata: {{config.yaml: \"key{i}: {}\"}}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {{name: s{i}}}\nstringData: {{token: \"{}\"}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: pod{i}, labels: {{app: bench}}}}\nspec:\n  nodeName: bench-edge\n  \
             containers: [{{name: app, image: busybox, command: [sh, -c, sleep 3600], env: [{{name: N, value: \"{i}\"}}]}}]\n  \
             volumes: [{{name: c, configMap: {{name: cm{i}}}}}, {{name: s, secret: {{secretName: s{i}}}}}]\n---\n",
            "v".repeat(64),
            "t".repeat(32)
        );
    }
    let (status, body) = cloud.admin("POST", "/api/v1/apply", manifest.as_bytes());
    assert_eq!(status, 200, "{body}");
    wait_for("300 objects acknowledged", Duration::from_secs(120), || {
        (cloud.synced("bench-edge", "Pod").len() == 100
            && cloud.synced("bench-edge", "ConfigMap").len() == 100
            && cloud.synced("bench-edge", "Secret").len() == 100)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(3)); // let the store settle before measuring
    let [rss, anon, hwm, threads] = proc_status(run.pid());
    let file = edge.dir.path().join(if backend == "redb" {
        "edgecore.redb"
    } else {
        "edgecore.sled"
    });
    format!(
        "| {backend:<5} | {:>8.2} MiB | {:>8.2} MiB | {:>8.2} MiB | {threads:>7} | {:>9.1} KiB |",
        rss as f64 / 1024.0,
        anon as f64 / 1024.0,
        hwm as f64 / 1024.0,
        disk_bytes(&file) as f64 / 1024.0
    )
}

/// One pod using ten configmaps of 1 MiB, the most data one may hold
/// (`cloudstore::limits::MAX_DATA_BYTES`): edgecore's memory once all are stored (the byte
/// bounds: mailboxes, batches and shared objects instead of copies).
fn big_configmaps() -> String {
    let cloud = Cloud::start(&[]);
    let (_edge, run) = edge_on(&cloud, "redb");
    let [rss0, _, _, _] = proc_status(run.pid());
    for i in 0..10 {
        let cm = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big{i}}}\ndata: {{blob: \"{}\"}}\n",
            "x".repeat(cloudstore::limits::MAX_DATA_BYTES - "blob".len())
        );
        let (status, body) = cloud.admin("POST", "/api/v1/apply", cm.as_bytes());
        assert_eq!(status, 200, "{body}");
    }
    let vols: Vec<String> = (0..10)
        .map(|i| format!("{{name: v{i}, configMap: {{name: big{i}}}}}"))
        .collect();
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: big}}\nspec:\n  nodeName: bench-edge\n  \
         containers: [{{name: app, image: busybox}}]\n  volumes: [{}]\n",
        vols.join(", ")
    );
    let (status, body) = cloud.admin("POST", "/api/v1/apply", pod.as_bytes());
    assert_eq!(status, 200, "{body}");
    wait_for("11 objects acknowledged", Duration::from_secs(120), || {
        (cloud.synced("bench-edge", "ConfigMap").len() == 10
            && cloud.synced("bench-edge", "Pod").len() == 1)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(3)); // a few pod passes with everything stored
    let [rss, anon, hwm, _] = proc_status(run.pid());
    format!(
        "| 1 pod, 10 × 1 MiB configmaps | {:>8.2} MiB | {:>8.2} MiB | {:>8.2} MiB | {:>8.2} MiB |",
        rss0 as f64 / 1024.0,
        rss as f64 / 1024.0,
        anon as f64 / 1024.0,
        hwm as f64 / 1024.0
    )
}

/// `one_apply`: all 1,000 pods in one manifest (one transaction), which measures delivery
/// alone; otherwise one apply per pod, which includes the cloud's fsync per write.
fn burst(one_apply: bool) -> String {
    const N: usize = 1000;
    let cloud = Cloud::start(&[]);
    let (_edge, run) = edge_on(&cloud, "redb");
    let pod = |i: usize| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: b{i}}}\nspec:\n  nodeName: bench-edge\n  containers: [{{name: app, image: busybox}}]\n")
    };
    let mut applied = Vec::with_capacity(N);
    if one_apply {
        let all: Vec<String> = (0..N).map(pod).collect();
        let (status, body) = cloud.admin("POST", "/api/v1/apply", all.join("---\n").as_bytes());
        assert_eq!(status, 200, "{body}");
        applied = vec![now_ms(); N];
    } else {
        for i in 0..N {
            let (status, body) = cloud.admin("POST", "/api/v1/apply", pod(i).as_bytes());
            assert_eq!(status, 200, "{body}");
            applied.push(now_ms());
        }
    }
    wait_for("1000 pods acknowledged", Duration::from_secs(300), || {
        (cloud.synced("bench-edge", "Pod").len() == N).then_some(())
    });
    let mut lat = Vec::with_capacity(N);
    let mut last_ack = 0;
    for (i, t_apply) in applied.iter().enumerate() {
        let ev = cloud
            .admin("GET", &format!("/api/v1/events/pods/default/b{i}"), b"")
            .1;
        // The cloud's event ring is bounded: the oldest pods' events may be gone.
        let Some(acked) = ev["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["reason"] == "Delivered")
            .and_then(|e| e["timeMs"].as_i64())
        else {
            continue;
        };
        last_ack = last_ack.max(acked);
        lat.push((acked - t_apply).max(0));
    }
    lat.sort();
    let n = lat.len();
    let span = (last_ack - applied[0]).max(1) as f64 / 1000.0;
    run.signal(rustix::process::Signal::TERM);
    let pid = run.pid();
    let exited = (0..150).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_or(true, |s| s.contains("State:\tZ"))
    });
    let log = run.log();
    if !exited {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!("edgecore did not exit 15 s after SIGTERM; its log ends:");
        for l in tail.iter().rev() {
            eprintln!("{l}");
        }
    }
    let (commits, bytes) = e2e::pods::store_commits(&log);
    let per_k = |x: u64| x as f64 * 1000.0 / N as f64;
    format!(
        "| {N} pods, {:<20} | {:>7.0} msg/s | {:>5} ms | {:>5} ms | {:>5} ms | {n:>5} | {:>7.1} | {:>8.1} KiB |",
        if one_apply {
            "in one apply"
        } else {
            "one apply each"
        },
        N as f64 / span,
        lat[n / 2],
        lat[n * 99 / 100],
        lat[n - 1],
        per_k(commits),
        per_k(bytes) / 1024.0
    )
}

fn main() {
    let burst_only = std::env::args().any(|a| a == "--burst-only");
    if burst_only {
        println!("{}", burst(false));
        return;
    }
    println!("\nedgecore holding 100 pods + 100 configmaps + 100 secrets (release, x86_64)\n");
    println!("| store | VmRSS        | RssAnon      | VmHWM        | threads | store on disk |");
    println!("|-------|--------------|--------------|--------------|---------|---------------|");
    for backend in ["redb", "sled"] {
        println!("{}", footprint(backend));
    }
    println!("\n| objects                        | VmRSS before | VmRSS after  | RssAnon      | VmHWM        |");
    println!("|--------------------------------|--------------|--------------|--------------|--------------|");
    println!("{}", big_configmaps());
    if std::env::args().any(|a| a == "--memory-only") {
        return;
    }
    println!(
        "\napply → edge acknowledgement (cloud and edge on loopback, redb, each write fsynced)\n"
    );
    println!("| burst                          | throughput    | p50      | p99      | max      | timed | commits/1k | flash/1k     |");
    println!("|--------------------------------|---------------|----------|----------|----------|-------|---------|--------------|");
    println!("{}", burst(false));
    println!("{}", burst(true));
    println!();
}
