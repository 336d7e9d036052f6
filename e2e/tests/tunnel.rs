//! The tunnel end to end: registration, readiness, edge death and return, half-open links,
//! clean shutdown.

use std::time::Duration;

use e2e::proxy::Proxy;
use e2e::{Cloud, Edge};
use rustix::process::Signal;

const T: Duration = Duration::from_secs(30);

#[test]
fn edge_registers_and_shows_ready_in_table_and_json() {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    edge.join_ok(&cloud);
    let _run = edge.run("1s");
    cloud.wait_ready("edge0", true, T);
    let list = cloud.nodes();
    assert_eq!(list["kind"], "NodeList");
    let node = &list["items"][0];
    assert_eq!(
        node["metadata"]["labels"]["node-role.kubernetes.io/edge"],
        ""
    );
    assert!(node["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| u.len() == 36));
    assert!(node["status"]["capacity"]["memory"]
        .as_str()
        .unwrap()
        .ends_with("Ki"));
    assert_eq!(node["status"]["nodeInfo"]["operatingSystem"], "linux");
    let out = cloud.cli(&["get", "nodes"]);
    let table = String::from_utf8(out.stdout).unwrap();
    let row = table.lines().nth(1).unwrap_or_default().to_owned();
    assert!(
        row.starts_with("edge0") && row.contains(" Ready ") && row.contains("agent,edge"),
        "{table}"
    );
}

#[test]
fn killed_edge_turns_not_ready_and_restarted_edge_ready_again() {
    let mut cloud = Cloud::start(&["--node-grace-period", "3s", "--keepalive-timeout", "3s"]);
    let edge = Edge::new("edge0");
    edge.join_ok(&cloud);
    let mut run = edge.run("1s");
    cloud.wait_ready("edge0", true, T);
    run.signal(Signal::KILL);
    run.wait_exit(T);
    cloud.wait_ready("edge0", false, T);
    let list = cloud.nodes();
    let ready = list["items"][0]["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    // Same cloud process, new edge process.
    let _again = edge.run("1s");
    cloud.wait_ready("edge0", true, T);
    assert!(
        cloud.proc.child.try_wait().unwrap().is_none(),
        "cloudcore must not have restarted"
    );
}

#[test]
fn blackholed_link_is_detected_and_reestablished() {
    let cloud = Cloud::start(&["--node-grace-period", "20s"]);
    let proxy = Proxy::start(cloud.ws);
    let edge = Edge::new("edge0");
    edge.join_ok(&cloud);
    let path = edge.config_path();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&cloud.ws.to_string(), &proxy.addr.to_string());
    std::fs::write(&path, text).unwrap();
    let run = edge.run("1s");
    cloud.wait_ready("edge0", true, T);
    // A healthy but quiet link must survive: pongs and lease answers keep it alive across
    // several liveness windows. (Sleeping is the point here: nothing may happen.)
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        proxy.accepted(),
        1,
        "a healthy link was dropped: {}",
        run.log()
    );
    assert!(!run.log().contains("tunnel lost"), "{}", run.log());
    proxy.blackhole_existing();
    // Two heartbeats of silence (2 s), checked every quarter heartbeat, then a back-off of at
    // most 0.5 s: a new connection well within 10 s. Upstream would wait minutes.
    e2e::wait_for(
        "a new connection through the proxy",
        Duration::from_secs(10),
        || (proxy.accepted() >= 2).then_some(()),
    );
    run.wait_log("no traffic from the cloud", Duration::from_secs(5));
    run.wait_log("node edge0 registered", Duration::from_secs(5));
    cloud.wait_ready("edge0", true, T);
}

#[test]
fn sigterm_closes_the_tunnel_cleanly_and_exits_zero() {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    edge.join_ok(&cloud);
    let mut run = edge.run("1s");
    cloud.wait_ready("edge0", true, T);
    run.signal(Signal::TERM);
    assert_eq!(run.wait_exit(Duration::from_secs(10)), Some(0));
    cloud
        .proc
        .wait_log("node edge0 disconnected: closed by the edge", T);
    assert!(run.log().contains("tunnel closed for shutdown"));
}

#[test]
fn edge_keeps_retrying_while_the_cloud_is_down_and_connects_when_it_starts() {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    edge.join_ok(&cloud);
    let stopped = cloud.stop(true); // cloud down
    let run = edge.run("1s");
    run.wait_log("cannot reach cloud", T);
    run.wait_log("reconnecting in", T);
    // Same data dir (same CA), same ports.
    let cloud = stopped.start(&[]);
    cloud.wait_ready("edge0", true, Duration::from_secs(60));
}
