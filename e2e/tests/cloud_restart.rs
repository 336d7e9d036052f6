//! Nodes survive a cloudcore restart: they are listed at once (not only when their edges
//! reconnect), keep their identity, and one whose edge is gone turns NotReady instead of
//! vanishing from `get nodes`. `describe` keeps the events from before the restart.

use std::time::Duration;

use e2e::{wait_for, Cloud, Edge};
use rustix::process::Signal;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

fn uid(cloud: &Cloud, name: &str) -> Option<Value> {
    cloud.nodes()["items"]
        .as_array()?
        .iter()
        .find(|n| n["metadata"]["name"] == name)
        .map(|n| n["metadata"]["uid"].clone())
}

/// Restarts `cloud` on the same ports and data dir; `kill` picks a crash over a clean stop.
fn restart(cloud: Cloud, kill: bool) -> Cloud {
    cloud.stop(kill).start(&["--node-grace-period", "3s"])
}

#[test]
fn nodes_are_listed_after_a_clean_restart_and_a_dead_edge_turns_not_ready() {
    let cloud = Cloud::start(&["--node-grace-period", "3s"]);
    let (alive, dead) = (Edge::new("alive"), Edge::new("dead"));
    alive.join_ok(&cloud);
    dead.join_ok(&cloud);
    let _alive_run = alive.run("1s");
    let mut dead_run = dead.run("1s");
    cloud.wait_ready("alive", true, T);
    cloud.wait_ready("dead", true, T);
    cloud.apply_ok(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: \"1\"}\n",
    );
    let (alive_uid, dead_uid) = (uid(&cloud, "alive"), uid(&cloud, "dead"));
    dead_run.signal(Signal::KILL);
    dead_run.wait_exit(T);

    let cloud = restart(cloud, false);
    // Listed at once, from the store: its edge is dead and will never re-register.
    assert_eq!(uid(&cloud, "dead"), dead_uid);
    cloud.wait_ready("dead", false, T);
    cloud.wait_ready("alive", true, T);
    assert_eq!(
        uid(&cloud, "alive"),
        alive_uid,
        "identity kept across the restart"
    );
    let described =
        String::from_utf8(cloud.cli(&["describe", "configmap", "settings"]).stdout).unwrap();
    assert!(
        described.contains("Applied") && described.contains("created at version"),
        "events from before the restart: {described}"
    );
    let wide = String::from_utf8(cloud.cli(&["get", "nodes"]).stdout).unwrap();
    assert!(
        wide.lines()
            .any(|l| l.starts_with("dead") && l.contains("NotReady")),
        "{wide}"
    );
}

#[test]
fn nodes_saved_before_a_crash_are_listed_after_it() {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    edge.join_ok(&cloud);
    let mut run = edge.run("1s");
    cloud.wait_ready("edge0", true, T);
    // Changed records are saved every 10 s; wait for that, then the edge and the cloud die.
    cloud.proc.wait_log("saved 1 node record(s)", T);
    run.signal(Signal::KILL);
    run.wait_exit(T);
    let cloud = restart(cloud, true);
    wait_for("edge0 listed NotReady", T, || {
        (cloud.ready("edge0").as_deref() == Some("False")).then_some(())
    });
}
