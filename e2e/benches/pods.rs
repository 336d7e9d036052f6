//! Pods benchmark on a real containerd: time from `apply` to Running for one pod and for 20
//! at once, then edgecore's RSS and CPU use while it keeps 20 pods running.

use std::time::{Duration, Instant};

use e2e::containerd::Containerd;
use e2e::{proc_status, wait_for, Cloud, Edge};

fn running(cloud: &Cloud, names: &[String]) -> bool {
    let list = cloud.admin("GET", "/api/v1/pods", b"").1;
    names.iter().all(|n| {
        list["items"].as_array().unwrap().iter().any(|p| {
            p["metadata"]["name"] == n.as_str()
                && p["status"]["phase"] == "Running"
                && p["status"]["containerStatuses"][0]["ready"] == true
        })
    })
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

fn main() {
    let ctrd = Containerd::start();
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("bench-edge");
    let out = edge.join_with(&cloud, &cloud.token(), &ctrd.endpoint());
    assert!(out.status.success());
    let run = edge.run_with(&["--log-level", "warn"]);
    cloud.wait_ready("bench-edge", true, Duration::from_secs(60));

    let t = Instant::now();
    cloud.apply_ok(&e2e::pods::sleeping_pod("single", "bench-edge"));
    wait_for("one pod Running", Duration::from_secs(120), || {
        running(&cloud, &["single".to_owned()]).then_some(())
    });
    let one = t.elapsed();

    let names: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
    let manifest: Vec<String> = names
        .iter()
        .map(|n| e2e::pods::sleeping_pod(n, "bench-edge"))
        .collect();
    let t = Instant::now();
    cloud.apply_ok(&manifest.join("---\n"));
    wait_for("20 pods Running", Duration::from_secs(300), || {
        running(&cloud, &names).then_some(())
    });
    let twenty = t.elapsed();

    // Steady state with 21 pods: a quiet minute's worth of CPU, sampled over 20 s.
    std::thread::sleep(Duration::from_secs(3));
    let ticks0 = cpu_ticks(run.pid());
    let window = Duration::from_secs(20);
    std::thread::sleep(window);
    let ticks = cpu_ticks(run.pid()) - ticks0;
    let hz = 100.0; // USER_HZ on Linux
    let cpu_pct = ticks as f64 / hz / window.as_secs_f64() * 100.0;
    let [rss, anon, hwm, threads] = proc_status(run.pid());

    println!("\nedgecore running pods on containerd (release, x86_64, default 2 s pod sync)\n");
    println!("| what                                        | value        |");
    println!("|---------------------------------------------|--------------|");
    println!(
        "| apply → Running and Ready, 1 pod            | {:>9} ms |",
        one.as_millis()
    );
    println!(
        "| apply → Running and Ready, 20 pods at once  | {:>9} ms |",
        twenty.as_millis()
    );
    println!(
        "| VmRSS with 21 pods running                  | {:>8.2} MiB |",
        rss as f64 / 1024.0
    );
    println!(
        "| RssAnon                                     | {:>8.2} MiB |",
        anon as f64 / 1024.0
    );
    println!(
        "| VmHWM (peak)                                | {:>8.2} MiB |",
        hwm as f64 / 1024.0
    );
    println!(
        "| threads                                     | {:>12} |",
        threads
    );
    println!(
        "| CPU, steady state (% of one core)           | {:>11.2}% |",
        cpu_pct
    );
    println!();
}
