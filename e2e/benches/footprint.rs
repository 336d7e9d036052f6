//! Footprint benchmark: a release cloudcore and edgecore on loopback, connected for a while,
//! then edgecore's memory, threads and descriptors, time to enroll and to turn Ready, and the
//! stripped binary sizes per target, each against DESIGN.md §8's budget.
//!
//! Run with `scripts/bench.sh` (builds release and cross binaries first), or
//! `cargo bench -p e2e --bench footprint` after `cargo build --release --bins`.
//! `FOOTPRINT_SECS` sets how long edgecore stays connected before measuring [default: 30].

use std::time::{Duration, Instant};

use e2e::{fd_count, proc_status, target_root, Cloud, Edge};

fn row(what: &str, value: String, budget: &str, ok: Option<bool>) {
    let verdict = match ok {
        Some(true) => "within",
        Some(false) => "OVER",
        None => "",
    };
    println!("| {what:<48} | {value:>12} | {budget:>10} | {verdict:<6} |");
}

/// Starts a cloud and an edge, waits `secs` connected, returns the edge's
/// `[VmRSS, RssAnon, VmHWM, Threads]`, its fd count, join time and run→Ready time.
fn measure(secs: u64, broker: bool) -> ([u64; 4], usize, Duration, Duration) {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("bench-edge");
    let t = Instant::now();
    edge.join_ok(&cloud);
    let join = t.elapsed();
    if !broker {
        edge.set_config("modules", serde_json::json!({ "edged": true, "metamanager": true, "eventbus": false, "devicetwin": false }));
    }
    let run = edge.run_with(&["--log-level", "warn"]);
    let t = Instant::now();
    cloud.wait_ready("bench-edge", true, Duration::from_secs(60));
    let ready = t.elapsed();
    std::thread::sleep(Duration::from_secs(secs));
    assert!(
        cloud.ready("bench-edge").as_deref() == Some("True"),
        "edge fell off during the run"
    );
    (proc_status(run.pid()), fd_count(run.pid()), join, ready)
}

fn main() {
    let secs: u64 = std::env::var("FOOTPRINT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    eprintln!("measuring edgecore after {secs} s connected, broker off, then on");
    let ([rss, anon, hwm, threads], fds, join, ready) = measure(secs, false);
    let ([rss_b, anon_b, _, threads_b], fds_b, _, _) = measure(secs, true);

    println!("\nedgecore footprint (x86_64 host, release, idle, connected {secs} s, no pods)\n");
    println!(
        "| {:<48} | {:>12} | {:>10} | {:<6} |",
        "what", "value", "budget", ""
    );
    println!("|{:-<50}|{:->14}|{:->12}|{:-<8}|", "", "", "", "");
    row(
        "VmRSS, broker off",
        format!("{:.2} MiB", rss as f64 / 1024.0),
        "6 MiB",
        Some(rss <= 6 * 1024),
    );
    row(
        "RssAnon, broker off",
        format!("{:.2} MiB", anon as f64 / 1024.0),
        "",
        None,
    );
    row(
        "VmHWM (peak RSS), broker off",
        format!("{:.2} MiB", hwm as f64 / 1024.0),
        "",
        None,
    );
    row(
        "threads, broker off",
        threads.to_string(),
        "2",
        Some(threads <= 2),
    );
    row(
        "open file descriptors, broker off",
        fds.to_string(),
        "",
        None,
    );
    row(
        "VmRSS, embedded broker on (no clients)",
        format!("{:.2} MiB", rss_b as f64 / 1024.0),
        "12 MiB",
        Some(rss_b <= 12 * 1024),
    );
    row(
        "RssAnon, embedded broker on",
        format!("{:.2} MiB", anon_b as f64 / 1024.0),
        "",
        None,
    );
    row(
        "threads, embedded broker on",
        threads_b.to_string(),
        "",
        None,
    );
    row(
        "open file descriptors, embedded broker on",
        fds_b.to_string(),
        "",
        None,
    );
    row(
        "edgecore join (CA fetch, CSR, signing)",
        format!("{} ms", join.as_millis()),
        "",
        None,
    );
    row(
        "edgecore run start to node Ready in cloud",
        format!("{} ms", ready.as_millis()),
        "",
        None,
    );
    let root = target_root();
    for (label, path, budget) in [
        (
            "edgecore x86_64-unknown-linux-gnu",
            root.join("release/edgecore"),
            None,
        ),
        (
            "cloudcore x86_64-unknown-linux-gnu",
            root.join("release/cloudcore"),
            None,
        ),
        (
            "edgecore aarch64-unknown-linux-musl (static)",
            root.join("aarch64-unknown-linux-musl/release/edgecore"),
            Some(4u64 << 20),
        ),
        (
            "edgecore armv7-unknown-linux-gnueabihf (static)",
            root.join("armv7-unknown-linux-gnueabihf/release/edgecore"),
            None,
        ),
        (
            "edgecore riscv64gc-unknown-linux-gnu (static)",
            root.join("riscv64gc-unknown-linux-gnu/release/edgecore"),
            None,
        ),
    ] {
        match std::fs::metadata(&path) {
            Ok(m) => row(
                label,
                format!("{:.2} MiB", m.len() as f64 / (1u64 << 20) as f64),
                if budget.is_some() { "4 MiB" } else { "" },
                budget.map(|b| m.len() <= b),
            ),
            Err(_) => row(label, "not built".into(), "", None),
        }
    }
    println!();
}
