//! Pods as the cloud reports them, for the tests that run them on either runtime adapter.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Cloud;

/// Pod `default/<name>` as the cloud has it, if it exists.
pub fn pod(cloud: &Cloud, name: &str) -> Option<Value> {
    let (status, v) = cloud.admin("GET", &format!("/api/v1/pods/default/{name}"), b"");
    (status == 200).then_some(v)
}

/// The first container's status (`Null` while there is none).
pub fn container_status(cloud: &Cloud, name: &str) -> Value {
    pod(cloud, name)
        .map(|p| p["status"]["containerStatuses"][0].clone())
        .unwrap_or(Value::Null)
}

/// Running, with its first container ready.
pub fn running_and_ready(cloud: &Cloud, name: &str) -> bool {
    pod(cloud, name).is_some_and(|p| {
        p["status"]["phase"] == "Running" && p["status"]["containerStatuses"][0]["ready"] == true
    })
}

/// Waits (at most `within`) until pod `name`'s container was restarted `restarts` times,
/// noting when each restart was first seen; then asserts that its exit code `exit` is
/// reported and that the gaps between restarts grew (the crash back-off doubles).
pub fn assert_crash_backoff(cloud: &Cloud, name: &str, restarts: u64, exit: i64, within: Duration) {
    let mut seen: Vec<(u64, Instant)> = Vec::new();
    let started = Instant::now();
    while seen.last().is_none_or(|(n, _)| *n < restarts) {
        assert!(started.elapsed() < within, "restarts too slow: {seen:?}");
        if let Some(n) = container_status(cloud, name)["restartCount"].as_u64() {
            if seen.last().is_none_or(|(m, _)| n > *m) {
                seen.push((n, Instant::now()));
            }
        }
        // Polling the cloud's view: a restart is seen within this of being reported.
        std::thread::sleep(Duration::from_millis(100));
    }
    let cs = container_status(cloud, name);
    let last_exit = cs["lastState"]["terminated"]["exitCode"]
        .as_i64()
        .or(cs["state"]["terminated"]["exitCode"].as_i64());
    assert_eq!(last_exit, Some(exit), "{cs}");
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].1 - w[0].1).collect();
    assert!(
        gaps.len() >= 2 && gaps[gaps.len() - 1] > gaps[0],
        "back-off did not grow: {gaps:?}"
    );
}

/// A pod for `node` that sleeps an hour in the test busybox image, on the host's network.
pub fn sleeping_pod(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  hostNetwork: true\n  \
         containers: [{{name: app, image: localhost/busybox:test, command: [sleep, \"3600\"]}}]\n"
    )
}

/// The store commits and bytes written that edgecore logged when it stopped (`store: …
/// commits … bytes`), or (0, 0) from an edgecore that does not log them.
pub fn store_commits(log: &str) -> (u64, u64) {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("store: ") && l.contains("commits"))
        .unwrap_or_default();
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    match nums.len() {
        n if n >= 2 => (nums[n - 2], nums[n - 1]),
        _ => (0, 0),
    }
}
