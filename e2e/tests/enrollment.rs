//! Enrollment end to end: `edgecore join` against a real `cloudcore serve`.

use std::time::{Duration, SystemTime};

use e2e::{Cloud, Edge};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn snapshot(edge: &Edge) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for sub in ["", "pki"] {
        let dir = edge.dir.path().join(sub);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            if e.path().is_file() {
                files.push((
                    e.path().display().to_string(),
                    std::fs::read(e.path()).unwrap(),
                ));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn good_token_enrolls_and_writes_config_and_owner_only_key() {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    let out = edge.join(&cloud, &cloud.token());
    assert!(out.status.success(), "{}", stderr(&out));
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(edge.config_path()).unwrap()).unwrap();
    assert_eq!(cfg["node_name"], "edge0");
    assert_eq!(
        cfg["cloud"]["server"],
        format!("127.0.0.1:{}", cloud.ws.port())
    );
    let key = edge.dir.path().join("pki/edge.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "private key must be owner-only");
    let cert = pki::pem_to_der(
        &std::fs::read_to_string(edge.dir.path().join("pki/edge.crt")).unwrap(),
        "CERTIFICATE",
    )
    .unwrap();
    assert_eq!(
        pki::common_name(&cert).as_deref(),
        Some("system:node:edge0")
    );
}

#[test]
fn bad_tokens_are_refused_with_clear_errors_and_leave_state_intact() {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    edge.join_ok(&cloud);
    let before = snapshot(&edge);
    assert!(before.len() >= 4);

    // A token from another cloud: its CA hash does not match what this server sends.
    let other = Cloud::start(&[]);
    let out = edge.join(&cloud, &other.token());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("CA does not match the token"),
        "{}",
        stderr(&out)
    );

    // Right CA hash, forged signature.
    let good = cloud.token();
    let (head, sig) = good.rsplit_once('.').unwrap();
    let forged = format!(
        "{head}.{}",
        if sig.starts_with('A') {
            sig.replacen('A', "B", 1)
        } else {
            format!("A{}", &sig[1..])
        }
    );
    let out = edge.join(&cloud, &forged);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "refused enrollment: invalid enrollment token: token signature does not match"
        ),
        "{}",
        stderr(&out)
    );

    // Expired: signed by this cloud's CA, exp in the past.
    let ca = pki::Ca::load_or_create(&cloud.dir.path().join("pki")).unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expired = ca
        .issue_token(&pki::TokenClaims::expiring(now - 60))
        .to_string();
    let out = edge.join(&cloud, &expired);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("token expired"), "{}", stderr(&out));

    // Not a token at all.
    let out = edge.join(&cloud, "hello");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a cloudcore enrollment token"),
        "{}",
        stderr(&out)
    );

    assert_eq!(
        snapshot(&edge),
        before,
        "a failed join must not touch the existing enrollment"
    );
}

#[test]
fn a_certificate_for_another_node_is_refused_by_the_tunnel() {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    edge.join_ok(&cloud);
    // Keep edge0's certificate but claim to be edge1.
    let path = edge.config_path();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"edge0\"", "\"edge1\"");
    std::fs::write(&path, text).unwrap();
    let run = edge.run("1s");
    cloud.proc.wait_log(
        "client certificate is for node \"edge0\", not \"edge1\"",
        Duration::from_secs(20),
    );
    run.wait_log("403", Duration::from_secs(20));
    let list = cloud.nodes();
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        0,
        "no node may register: {list}"
    );
}

#[test]
fn command_line_errors_exit_2_with_help_pointer() {
    for args in [
        &["join"][..],
        &["join", "--cloud", "x"],
        &["frobnicate"],
        &["run", "--heartbeat", "soon"],
        &["run", "--data-dir", "/nonexistent-e2e"],
    ] {
        let out = std::process::Command::new(e2e::bin("edgecore"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("--help"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = std::process::Command::new(e2e::bin("edgecore"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("edgecore join --cloud"));
    let out = std::process::Command::new(e2e::bin("cloudcore"))
        .args(["get", "widgets"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
