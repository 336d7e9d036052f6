//! First-boot provisioning end to end: `edgecore run` with only a provisioning file (what a
//! gateway image carries) against a real `cloudcore serve`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::{bin, Cloud, Edge, TempDir};

const READY: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A provisioning file for `cloud` with `token` given as `"token"` or `"token_file"`.
fn provisioning(cloud: &Cloud, node: &str, token: (&str, &str)) -> serde_json::Value {
    let broker = format!("127.0.0.1:{}", free_port());
    serde_json::json!({
        "cloud": "127.0.0.1",
        "ws_port": cloud.ws.port(),
        "cert_port": cloud.cert.port(),
        token.0: token.1,
        "node_name": node,
        "cri_endpoint": "",
        "config": { "eventbus": { "embedded": true, "broker": broker }, "heartbeat": "1s",
                    "status_interval": "1s", "lease_interval": "1s" },
    })
}

fn run(edge: &Edge, file: &Path) -> e2e::Proc {
    let file = file.to_str().unwrap();
    edge.run_with(&["--provision", file, "--log-level", "debug"])
}

fn stop(mut p: e2e::Proc) -> String {
    p.signal(rustix::process::Signal::TERM);
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0), "{}", p.log());
    p.log()
}

#[test]
fn a_provisioning_file_enrolls_once_and_its_token_is_removed() {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("gw-1");
    let boot = TempDir::new("boot");
    let file = boot.path().join("edgecore-provision.json");
    let token = boot.path().join("edgecore.token");
    std::fs::write(&token, format!("{}\n", cloud.token())).unwrap();
    let p = provisioning(&cloud, "gw-1", ("token_file", "edgecore.token"));
    std::fs::write(&file, p.to_string()).unwrap();

    let first = run(&edge, &file);
    cloud.wait_ready("gw-1", true, READY);
    let log = stop(first);
    assert!(log.contains("provisioning from"), "{log}");
    assert!(
        !token.exists(),
        "the token file must be gone after the join"
    );
    let cert = std::fs::read(edge.dir.path().join("pki/edge.crt")).unwrap();

    // Second boot: the file is still there (without its token); edgecore connects on the
    // same certificate, with no join.
    let second = run(&edge, &file);
    second.wait_log("connected to cloud", READY);
    cloud.wait_ready("gw-1", true, READY);
    let log = stop(second);
    assert!(!log.contains("provisioning from"), "joined again: {log}");
    assert_eq!(
        std::fs::read(edge.dir.path().join("pki/edge.crt")).unwrap(),
        cert
    );

    // `join` over this working enrollment is refused, and changes nothing.
    let cfg = std::fs::read(edge.config_path()).unwrap();
    let out = Command::new(bin("edgecore"))
        .args(["join", "--cloud", "127.0.0.1", "--token", &cloud.token()])
        .args(["--node-name", "gw-1", "--cri-endpoint", ""])
        .args(["--ws-port", &cloud.ws.port().to_string()])
        .args(["--cert-port", &cloud.cert.port().to_string()])
        .arg("--data-dir")
        .arg(edge.dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("already holds a working enrollment") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(edge.config_path()).unwrap(), cfg);
    assert_eq!(
        std::fs::read(edge.dir.path().join("pki/edge.crt")).unwrap(),
        cert
    );
    // With --force edgecore goes ahead; this cloud then refuses a second certificate for a
    // name already enrolled (tests/identity.rs), and the enrollment stays as it was.
    let out = edge.join(&cloud, &cloud.token());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("requesting a certificate for node gw-1"),
        "{err}"
    );
    assert!(!err.contains("already holds a working enrollment"), "{err}");
    assert_eq!(std::fs::read(edge.config_path()).unwrap(), cfg);
}

#[test]
fn an_inline_token_is_removed_from_the_file_and_a_bad_file_exits_2() {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("gw-2");
    let boot = TempDir::new("boot");
    let file = boot.path().join("provision.json");
    let good = provisioning(&cloud, "gw-2", ("token", &cloud.token()));

    // A bad file first: exit 2, nothing written, the file as it was.
    let mut bad = good.clone();
    bad.as_object_mut().unwrap().remove("node_name");
    bad["node_name_from"] = serde_json::json!("serial");
    std::fs::write(&file, bad.to_string()).unwrap();
    let mut p = run(&edge, &file);
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(2), "{}", p.log());
    assert!(p.log().contains("is not a rule"), "{}", p.log());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), bad.to_string());
    assert_eq!(std::fs::read_dir(edge.dir.path()).unwrap().count(), 0);

    std::fs::write(&file, good.to_string()).unwrap();
    let first = run(&edge, &file);
    cloud.wait_ready("gw-2", true, READY);
    stop(first);
    let left: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(left.get("token"), None, "{left}");
    assert_eq!(left["node_name"], "gw-2");
}
