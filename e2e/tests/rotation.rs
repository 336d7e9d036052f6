//! Edge certificate rotation end to end: with a cloud issuing short-lived certificates, the
//! edge renews its certificate (new key too) before it expires, presenting the current one
//! instead of a token, redials the tunnel with it, and keeps being able to connect after
//! every certificate it ever held before has expired.

use std::time::Duration;

use e2e::{wait_for, Cloud, Edge};

const T: Duration = Duration::from_secs(60);

#[test]
fn the_edge_renews_its_certificate_before_it_expires() {
    // 20 s certificates, back-dated 2 s: renewal falls 13–18 s after each issue.
    let cloud = Cloud::start(&["--edge-cert-validity", "20s"]);
    let edge = Edge::new("edge0");
    edge.join_ok(&cloud);
    let pki = edge.dir.path().join("pki");
    let read = |f: &str| std::fs::read(pki.join(f)).unwrap();
    let (cert0, key0) = (read("edge.crt"), read("edge.key"));
    let run = edge.run("1s");
    cloud.wait_ready("edge0", true, T);

    wait_for("a renewed certificate on disk", T, || {
        (read("edge.crt") != cert0).then_some(())
    });
    assert_ne!(read("edge.key"), key0, "renewal makes a new key");
    run.wait_log("renewed the edge certificate", T);
    cloud
        .proc
        .wait_log("issued a certificate for node edge0 (renewal)", T);
    // EdgeHub redialled with it, and the node never looked gone.
    run.wait_log("redialling with it", T);
    wait_for("the tunnel back after the redial", T, || {
        let log = run.log();
        let redial = log.find("redialling with it")?;
        log[redial..].contains("connected to cloud").then_some(())
    });
    assert_eq!(cloud.ready("edge0").as_deref(), Some("True"));
    assert!(!pki.join("edge.crt.next").exists() && !pki.join("edge.key.next").exists());

    // Past the first certificate's expiry (and its successor's), a restarted cloud still
    // accepts the edge: it always holds a valid certificate. An expired one would fail the
    // TLS handshake and the node would never turn Ready.
    wait_for("two more renewals", Duration::from_secs(90), || {
        (run.log().matches("renewed the edge certificate").count() >= 3).then_some(())
    });
    let cloud = cloud.stop(true).start(&["--edge-cert-validity", "20s"]);
    cloud.wait_ready("edge0", true, T);
    assert!(
        !run.log().contains("certificate renewal failed"),
        "{}",
        run.log()
    );
}

/// A renewal that fails (here the cloud was reinstalled with a new CA, so the edge no longer
/// trusts it) leaves the edge's pair untouched, says why, and is retried later.
#[test]
fn a_failed_renewal_keeps_the_old_pair() {
    let cloud = Cloud::start(&["--edge-cert-validity", "20s"]);
    let edge = Edge::new("edge0");
    edge.join_ok(&cloud);
    // The cloud forgets its CA: same ports, new data dir, so nothing the edge holds chains.
    let (ws, cert) = (cloud.ws.port().to_string(), cloud.cert.port().to_string());
    drop(cloud);
    let other = Cloud::start(&["--ws-port", &ws, "--cert-port", &cert]);
    let pki = edge.dir.path().join("pki");
    let before = std::fs::read(pki.join("edge.crt")).unwrap();
    let run = edge.run("1s");
    run.wait_log("certificate renewal failed, retrying in 30 s", T);
    assert!(
        run.log().contains("/edge.crt: invalid peer certificate"),
        "{}",
        run.log()
    );
    assert_eq!(std::fs::read(pki.join("edge.crt")).unwrap(), before);
    assert!(!pki.join("edge.crt.next").exists() && !pki.join("edge.key.next").exists());
    assert!(other.ready("edge0").is_none());
}
