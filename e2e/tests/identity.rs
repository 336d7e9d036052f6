//! Node identity end to end, with real `cloudcore serve` and `edgecore` processes: a token is
//! no master key (an enrolled, online node cannot be taken over), `cloudcore delete node`
//! revokes what the node holds and frees its name and slot, and tokens keep their TTL, use
//! count (across a restart, and under racing joins) and node binding.

use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use e2e::{upstream_edge, wait_for, Cloud, Edge};
use futures_rustls::rustls::{ClientConnection, StreamOwned};
use rustls_pki_types::ServerName;

const T: Duration = Duration::from_secs(60);

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `cloudcore token` with `args`.
fn token(cloud: &Cloud, args: &[&str]) -> String {
    let mut a = vec!["token"];
    a.extend_from_slice(args);
    let out = cloud.cli(&a);
    assert!(out.status.success(), "cloudcore token: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A token shaped exactly as upstream's cloudcore makes them: claims `{"exp":N}` only.
fn upstream_shaped_token(cloud: &Cloud) -> String {
    let ca = pki::Ca::load_or_create(&cloud.dir.path().join("pki")).unwrap();
    ca.issue_token(&pki::TokenClaims::expiring(unix_now() + 600))
        .to_string()
}

/// The claims of a token, decoded (the test reads what `cloudcore token` wrote).
fn claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let part = token.split('.').nth(2).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Asks the certificate port for a renewal as edgecore does: mutual TLS with the
/// certificate in `edge`'s data dir, no token. The body is no CSR: a request whose
/// credential passes is refused for that (400), one whose credential fails earlier.
fn renewal_request(cloud: &Cloud, edge: &Edge) -> (u16, String) {
    let tls = upstream_edge::tls(edge);
    let tcp = TcpStream::connect(cloud.cert).unwrap();
    tcp.set_read_timeout(Some(T)).unwrap();
    let conn = ClientConnection::new(tls, ServerName::try_from("127.0.0.1").unwrap()).unwrap();
    let mut s = StreamOwned::new(conn, tcp);
    let r = support::http::exchange(
        &mut s,
        "GET",
        &cloud.cert.to_string(),
        "/edge.crt",
        &[("NodeName", &edge.name)],
        b"not a csr",
    )
    .unwrap();
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

fn serial_of(edge: &Edge) -> String {
    let pem = std::fs::read_to_string(edge.dir.path().join("pki/edge.crt")).unwrap();
    pki::cert_facts(&pki::pem_to_der(&pem, "CERTIFICATE").unwrap())
        .unwrap()
        .serial
}

const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},
  "spec":{"nodeName":"edge0","containers":[{"name":"c","image":"busybox"}]}}"#;

#[test]
fn a_token_cannot_take_over_an_enrolled_online_node() {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    edge.join_ok(&cloud);
    let run = edge.run("1s");
    cloud.wait_ready("edge0", true, T);

    // Both shapes of token: ours (jti, iat) and upstream's (exp only).
    for (n, token) in [cloud.token(), upstream_shaped_token(&cloud)]
        .iter()
        .enumerate()
    {
        let intruder = Edge::new("edge0");
        let out = intruder.join(&cloud, token);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("node name \"edge0\" is taken"), "{err}");
        assert!(err.contains("cloudcore delete node edge0"), "{err}");
        assert!(!intruder.dir.path().join("pki/edge.crt").exists());
        assert!(!intruder.config_path().exists());
        // The cloud answered it (so the attempt had its chance) with 409.
        wait_for("the refusal in the cloud's log", T, || {
            (cloud.proc.log().matches("refused (409)").count() == n + 1).then_some(())
        });
    }
    let log = cloud.proc.log();
    assert_eq!(
        log.matches("issued a certificate for node edge0").count(),
        1,
        "only the real node's enrollment: {log}"
    );

    // The real node's session was never replaced, and it alone is served: a pod applied now
    // is delivered to it over the session it opened first.
    cloud.apply_ok(POD);
    wait_for("web delivered to the real edge0", T, || {
        cloud
            .synced("edge0", "Pod")
            .contains_key("web")
            .then_some(())
    });
    let log = cloud.proc.log();
    assert_eq!(log.matches("node edge0 connected").count(), 1, "{log}");
    assert!(!log.contains("node edge0 disconnected"), "{log}");
    assert!(!run.log().contains("disconnected"), "{}", run.log());
    assert_eq!(cloud.ready("edge0").as_deref(), Some("True"));

    // An upstream-shaped token still enrolls a free name.
    let other = Edge::new("edge1");
    let out = other.join(&cloud, &upstream_shaped_token(&cloud));
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_deleted_node_is_refused_everywhere_and_its_name_enrolls_again() {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    edge.join_ok(&cloud);
    let run = edge.run("1s");
    cloud.wait_ready("edge0", true, T);
    cloud.apply_ok(POD);
    wait_for("web delivered", T, || {
        cloud
            .synced("edge0", "Pod")
            .contains_key("web")
            .then_some(())
    });
    // Renewal with the current certificate passes its credential check.
    let (status, body) = renewal_request(&cloud, &edge);
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("not a valid DER certificate signing request"),
        "{body}"
    );

    // A copy of everything edge0 holds now, to try after the delete.
    let ghost = Edge::new("edge0");
    std::fs::create_dir_all(ghost.dir.path().join("pki")).unwrap();
    for f in [
        "pki/ca.crt",
        "pki/edge.crt",
        "pki/edge.key",
        "edgecore.json",
    ] {
        std::fs::copy(edge.dir.path().join(f), ghost.dir.path().join(f)).unwrap();
    }
    ghost.set_config("data_dir", serde_json::json!(ghost.dir.path()));
    ghost.private_broker();
    let old_serial = serial_of(&edge);

    let out = cloud.cli(&["delete", "node", "edge0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("node \"edge0\" deleted"), "{said}");
    assert!(
        said.contains(&format!("certificates revoked: {old_serial}")),
        "{said}"
    );
    assert!(said.contains("pods deleted: default/web"), "{said}");
    assert!(said.contains("its session was closed"), "{said}");

    // Its session ended, its node, lease and pod are gone.
    cloud.proc.wait_log("node edge0 disconnected", T);
    assert!(cloud.ready("edge0").is_none(), "{}", cloud.nodes());
    assert_eq!(cloud.admin("GET", "/api/v1/pods/default/web", b"").0, 404);
    assert_eq!(cloud.admin("GET", "/api/v1/nodes/edge0", b"").0, 404);
    // The edge, still running, redials with its revoked certificate: refused at the tunnel.
    let revoked = format!("certificate {old_serial} of node \"edge0\" was revoked");
    cloud.proc.wait_log(&revoked, T);
    run.wait_log("403", T);
    // And at the certificate port.
    let (status, body) = renewal_request(&cloud, &edge);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("revoked"), "{body}");
    drop(run);
    let refusals = cloud.proc.log().matches(&revoked).count();

    // The name is free: the same gateway joins again, leaving its old store behind, and is
    // Ready with a new certificate.
    let out = edge.join(&cloud, &cloud.token());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("edgecore.redb of the earlier enrollment"),
        "{}",
        stderr(&out)
    );
    assert_ne!(serial_of(&edge), old_serial);
    let _run = edge.run("1s");
    cloud.wait_ready("edge0", true, T);
    let (status, body) = renewal_request(&cloud, &edge);
    assert_eq!(status, 400, "the new certificate renews: {body}");

    // The old certificate stays refused, and does not replace the new session.
    let ghost_run = ghost.run("1s");
    wait_for("the old certificate refused again", T, || {
        (cloud.proc.log().matches(&revoked).count() > refusals).then_some(())
    });
    ghost_run.wait_log("403", T);
    let log = cloud.proc.log();
    assert_eq!(log.matches("node edge0 connected").count(), 2, "{log}");
    assert_eq!(cloud.ready("edge0").as_deref(), Some("True"));

    let out = cloud.cli(&["delete", "node", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("node \"nobody\" not found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn tokens_keep_their_use_count_across_a_restart_binding_and_ttl() {
    let cloud = Cloud::start(&[]);
    let two = token(&cloud, &["--uses", "2"]);
    for name in ["a", "b"] {
        let out = Edge::new(name).join(&cloud, &two);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
    }
    let used_up = |cloud: &Cloud| {
        let out = Edge::new("c").join(cloud, &two);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("good for 2 enrollment(s) and has been used for all of them"),
            "{}",
            stderr(&out)
        );
    };
    used_up(&cloud);
    let cloud = cloud.stop(false).start(&[]);
    used_up(&cloud);

    let bound = token(&cloud, &["--node-name", "gw-1"]);
    assert_eq!(claims(&bound)["node"], "gw-1");
    let out = Edge::new("gw-2").join(&cloud, &bound);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("this token may only enroll node \"gw-1\", not \"gw-2\""),
        "{}",
        stderr(&out)
    );
    assert!(Edge::new("gw-1").join(&cloud, &bound).status.success());

    // The TTL is the token's expiry; past it the cloud refuses it.
    let short = token(&cloud, &["--ttl", "1s"]);
    let c = claims(&short);
    let exp = c["exp"].as_i64().unwrap();
    assert_eq!(exp - c["iat"].as_i64().unwrap(), 1);
    let c = claims(&token(&cloud, &["--ttl", "90s"]));
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 90);
    // Waiting for a deadline, not for an event: the cloud compares whole seconds.
    while unix_now() < exp + 1 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = Edge::new("late").join(&cloud, &short);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("token expired"), "{}", stderr(&out));
}

#[test]
fn one_use_goes_to_exactly_one_of_racing_joins() {
    let cloud = Cloud::start(&[]);
    let once = token(&cloud, &["--uses", "1"]);
    let edges: Vec<Edge> = (0..6).map(|i| Edge::new(&format!("racer-{i}"))).collect();
    let outs: Vec<std::process::Output> = std::thread::scope(|s| {
        let joins: Vec<_> = edges
            .iter()
            .map(|e| s.spawn(|| e.join(&cloud, &once)))
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    });
    let won = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(won, 1, "{:?}", outs.iter().map(stderr).collect::<Vec<_>>());
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert!(stderr(o).contains("used for all of them"), "{}", stderr(o));
    }
}

#[test]
fn the_node_limit_counts_enrolled_names_and_a_delete_frees_a_slot() {
    let cloud = Cloud::start(&["--node-limit", "2"]);
    for name in ["junk-1", "junk-2"] {
        assert!(Edge::new(name)
            .join(&cloud, &cloud.token())
            .status
            .success());
    }
    // Two names enrolled and never connected fill the limit.
    let real = Edge::new("real");
    let out = real.join(&cloud, &cloud.token());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("node limit of 2 reached"),
        "{}",
        stderr(&out)
    );
    let list = cloud.cli(&["get", "enrollments"]);
    let table = String::from_utf8_lossy(&list.stdout);
    assert!(
        table.contains("junk-1") && table.contains("junk-2"),
        "{table}"
    );
    assert!(table.contains("2 of 2 slots used"), "{table}");

    let out = cloud.cli(&["delete", "node", "junk-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    real.join_ok(&cloud);
    let _run = real.run("1s");
    cloud.wait_ready("real", true, T);
}
