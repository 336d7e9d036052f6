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

fn main() {
    let secs: u64 = std::env::var("FOOTPRINT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("bench-edge");
    let t = Instant::now();
    edge.join_ok(&cloud);
    let join = t.elapsed();
    let run = edge.run_with(&["--log-level", "warn"]);
    let t = Instant::now();
    cloud.wait_ready("bench-edge", true, Duration::from_secs(60));
    let ready = t.elapsed();
    eprintln!("connected; measuring after {secs} s");
    std::thread::sleep(Duration::from_secs(secs));
    assert!(
        cloud.ready("bench-edge").as_deref() == Some("True"),
        "edge fell off during the run"
    );
    let [rss, anon, hwm, threads] = proc_status(run.pid());
    let fds = fd_count(run.pid());

    println!("\nedgecore footprint (x86_64 host, release, idle, connected {secs} s, no pods, broker off)\n");
    println!(
        "| {:<44} | {:>12} | {:>10} | {:<6} |",
        "what", "value", "budget", ""
    );
    println!("|{:-<50}|{:->14}|{:->12}|{:-<8}|", "", "", "", "");
    row(
        "VmRSS",
        format!("{:.2} MiB", rss as f64 / 1024.0),
        "6 MiB",
        Some(rss <= 6 * 1024),
    );
    row(
        "RssAnon",
        format!("{:.2} MiB", anon as f64 / 1024.0),
        "",
        None,
    );
    row(
        "VmHWM (peak RSS)",
        format!("{:.2} MiB", hwm as f64 / 1024.0),
        "",
        None,
    );
    row("threads", threads.to_string(), "2", Some(threads <= 2));
    row("open file descriptors", fds.to_string(), "", None);
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
