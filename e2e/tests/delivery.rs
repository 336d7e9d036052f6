//! Workloads reach the edge reliably and the edge keeps them offline: real cloudcore and
//! edgecore processes, the CLI a user types, and the edge's store read with `edgecore meta`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::{wait_for, Cloud, Edge};
use rustix::process::Signal;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

fn pod(name: &str, node: &str, rev: u32, configmap: Option<&str>) -> String {
    let vols = configmap
        .map(|c| format!("\n  volumes: [{{name: cfg, configMap: {{name: {c}}}}}]"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations: {{rev: \"{rev}\"}}\nspec:\n  nodeName: {node}\n  containers: [{{name: app, image: busybox}}]{vols}\n"
    )
}

fn rev(obj: &Value) -> Option<u32> {
    obj["metadata"]["annotations"]["rev"].as_str()?.parse().ok()
}

fn edge_with_cloud(cloud: &Cloud) -> (Edge, e2e::Proc) {
    let edge = Edge::new("edge0");
    edge.join_ok(cloud);
    let run = edge.run("1s");
    cloud.wait_ready("edge0", true, T);
    (edge, run)
}

#[test]
fn apply_get_describe_delete_and_refuse_invalid_manifests() {
    let cloud = Cloud::start(&[]);
    let (edge, _run) = edge_with_cloud(&cloud);
    let cm =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-config}\ndata: {greeting: hello}\n";
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: app-secret}\nstringData: {password: s3cret}\n";
    let mut p = pod("web", "edge0", 1, Some("app-config"));
    p.push_str("  imagePullSecrets: [{name: app-secret}]\n");
    let out = cloud.apply(&format!("{cm}---\n{secret}---\n{p}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("configmap/app-config created") && text.contains("pod/web created"),
        "{text}"
    );

    wait_for("pod, configmap and secret on the edge", T, || {
        (edge.meta().len() == 3).then_some(())
    });
    assert_eq!(
        edge.stored("ConfigMap", "app-config").unwrap()["data"]["greeting"],
        "hello"
    );
    assert_eq!(
        edge.stored("Secret", "app-secret").unwrap()["data"]["password"],
        "czNjcmV0"
    );

    // This edge has no container runtime: its pod status says so, as a kubelet's would say
    // why a container is not created.
    let reason = wait_for("the edge's pod status", T, || {
        let (_, p) = cloud.admin("GET", "/api/v1/pods/default/web", b"");
        p["status"]["containerStatuses"][0]["state"]["waiting"]
            .as_object()
            .cloned()
    });
    assert_eq!(reason["reason"], "ContainerCreating");
    assert!(
        reason["message"]
            .as_str()
            .unwrap()
            .contains("no container runtime is configured"),
        "{reason:?}"
    );
    let table = String::from_utf8(cloud.cli(&["get", "pods"]).stdout).unwrap();
    let row = table.lines().nth(1).unwrap_or_default().to_owned();
    assert!(
        row.starts_with("web")
            && row.contains("0/1")
            && row.contains("ContainerCreating")
            && row.ends_with("edge0"),
        "{table}"
    );
    let yaml = String::from_utf8(cloud.cli(&["get", "pod", "web", "-o", "yaml"]).stdout).unwrap();
    assert!(
        yaml.contains("kind: Pod") && yaml.contains("nodeName: edge0"),
        "{yaml}"
    );
    let describe = String::from_utf8(cloud.cli(&["describe", "pod", "web"]).stdout).unwrap();
    assert!(
        describe.contains("Applied")
            && describe.contains("Delivered")
            && describe.contains("node edge0 stored version"),
        "{describe}"
    );

    // Invalid manifests: a clear error naming the field, and nothing stored, not even the
    // valid document before the bad one.
    let before = cloud.admin("GET", "/api/v1/configmaps", b"").1["items"]
        .as_array()
        .unwrap()
        .len();
    for (manifest, needle) in [
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: nocontainers}\nspec: {containers: []}\n", "spec.containers"),
        ("apiVersion: v1\nkind: Widget\nmetadata: {name: w}\n", "kind: \"Widget\""),
        ("apiVersion: v1\nkind: Pod\nmetadata: {}\nspec: {containers: [{name: a, image: b}]}\n", "metadata.name"),
        ("key: [unclosed\n", "not valid YAML"),
    ] {
        let out = cloud.apply(manifest);
        assert_eq!(out.status.code(), Some(1), "{manifest}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{needle} not in {err}");
    }
    assert_eq!(
        cloud.admin("GET", "/api/v1/configmaps", b"").1["items"]
            .as_array()
            .unwrap()
            .len(),
        before
    );

    // Delete: the pod goes, and with it the configmap and secret no other pod uses.
    let out = cloud.cli(&["delete", "pod", "web"]);
    assert!(out.status.success());
    wait_for("edge store emptied", T, || {
        edge.meta().is_empty().then_some(())
    });
    let out = cloud.cli(&["delete", "pod", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[test]
fn changes_made_while_the_edge_is_away_arrive_when_it_returns() {
    let cloud = Cloud::start(&[]);
    let (edge, mut run) = edge_with_cloud(&cloud);
    cloud.apply_ok(&pod("old", "edge0", 1, None));
    cloud.apply_ok(&pod("changed", "edge0", 1, None));
    wait_for("two pods on the edge", T, || {
        (edge.meta().len() == 2).then_some(())
    });
    run.signal(Signal::TERM);
    assert_eq!(run.wait_exit(T), Some(0));

    cloud.apply_ok(&pod("new", "edge0", 1, None));
    cloud.apply_ok(&pod("changed", "edge0", 2, None));
    // The edge is away: the graceful deletion waits for it (kubectl would wait too).
    assert!(cloud
        .cli(&["delete", "pod", "old", "--wait=false"])
        .status
        .success());
    // The stopped edge still has the old state.
    assert!(edge.stored("Pod", "old").is_some());
    assert_eq!(rev(&edge.stored("Pod", "changed").unwrap()), Some(1));

    let _run = edge.run("1s");
    wait_for("offline changes on the edge", T, || {
        let ok = edge.stored("Pod", "old").is_none()
            && edge.stored("Pod", "new").is_some()
            && edge.stored("Pod", "changed").as_ref().and_then(rev) == Some(2);
        ok.then_some(())
    });
}

#[test]
fn a_burst_of_fifty_updates_leaves_the_last_version() {
    let cloud = Cloud::start(&[]);
    let (edge, _run) = edge_with_cloud(&cloud);
    for i in 0..50 {
        let (status, body) = cloud.admin(
            "POST",
            "/api/v1/apply",
            pod("hot", "edge0", i, None).as_bytes(),
        );
        assert_eq!(status, 200, "{body}");
    }
    let final_rv: u64 = cloud.admin("GET", "/api/v1/pods/default/hot", b"").1["metadata"]
        ["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    wait_for("the last version on the edge", T, || {
        (edge.stored("Pod", "hot").as_ref().and_then(rev) == Some(49)).then_some(())
    });
    wait_for("the cloud to record it acknowledged", T, || {
        (cloud.synced("edge0", "Pod").get("hot") == Some(&final_rv)).then_some(())
    });
}

#[test]
fn cloudcore_killed_mid_burst_loses_nothing() {
    let cloud = Cloud::start(&[]);
    let (edge, _run) = edge_with_cloud(&cloud);
    let apply = |cloud: &Cloud, pods: std::ops::Range<u32>| {
        for i in pods {
            let manifest = pod(&format!("p{i}"), "edge0", 1, None);
            assert_eq!(
                cloud.admin("POST", "/api/v1/apply", manifest.as_bytes()).0,
                200
            );
        }
    };
    apply(&cloud, 0..100);
    // Every apply above was answered, so every one must survive a kill at any instant.
    let cloud = cloud.stop(true).start(&[]);
    let pods = cloud.admin("GET", "/api/v1/pods", b"").1;
    assert_eq!(
        pods["items"].as_array().unwrap().len(),
        100,
        "acknowledged writes lost in the crash"
    );
    apply(&cloud, 100..200);
    wait_for("all 200 pods on the edge", Duration::from_secs(60), || {
        (edge.meta().len() == 200).then_some(())
    });
    wait_for("all 200 acknowledged", T, || {
        (cloud.synced("edge0", "Pod").len() == 200).then_some(())
    });
}

#[test]
fn edge_restarted_without_a_cloud_still_serves_its_objects() {
    let cloud = Cloud::start(&[]);
    let (edge, mut run) = edge_with_cloud(&cloud);
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-config}\ndata: {k: v}\n";
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: app-secret}\ndata: {k: dg==}\n";
    let mut p = pod("web", "edge0", 1, Some("app-config"));
    p.push_str("  imagePullSecrets: [{name: app-secret}]\n");
    cloud.apply_ok(&format!("{cm}---\n{secret}---\n{p}"));
    wait_for("three objects on the edge", T, || {
        (edge.meta().len() == 3).then_some(())
    });
    drop(cloud); // the cloud is gone for good
    run.signal(Signal::TERM);
    run.wait_exit(T);
    let run = edge.run("1s");
    run.wait_log("cannot reach cloud", T);
    // Running, offline, and serving everything from its store.
    assert_eq!(edge.meta().len(), 3);
    let out = std::process::Command::new(e2e::bin("edgecore"))
        .args([
            "meta",
            "get",
            "configmap",
            "default/app-config",
            "--data-dir",
        ])
        .arg(edge.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cm: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cm["data"]["k"], "v");
}

/// Power cuts: SIGKILL at random moments during a stream of 1,000 updates. Each time, the
/// store must open and hold, for every object, a version that was really sent (never torn)
/// and no older than what the cloud recorded as acknowledged.
#[test]
fn sigkill_during_a_stream_of_a_thousand_updates_never_loses_acknowledged_state() {
    const PODS: u32 = 5;
    const UPDATES: u32 = 1000;
    let cloud = Arc::new(Cloud::start(&[]));
    let edge = Edge::new("edge0");
    edge.join_ok(&cloud);
    let mut run = edge.run("1s");
    cloud.wait_ready("edge0", true, T);

    // resourceVersion → (pod, rev) of every update the cloud accepted.
    let sent: Arc<Mutex<std::collections::HashMap<u64, (String, u32)>>> = Arc::default();
    let stream = {
        let (cloud, sent) = (cloud.clone(), sent.clone());
        std::thread::spawn(move || {
            for i in 0..UPDATES {
                let name = format!("p{}", i % PODS);
                // Held from the apply to its record: the edge may store an update before
                // the apply's answer is back here.
                let mut sent = sent.lock().unwrap();
                let (status, body) = cloud.admin(
                    "POST",
                    "/api/v1/apply",
                    pod(&name, "edge0", i, None).as_bytes(),
                );
                assert_eq!(status, 200, "{body}");
                let rv: u64 = body["results"][0]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                sent.insert(rv, (name, i));
                drop(sent);
                // Paced so the stream spans many kills.
                std::thread::sleep(Duration::from_millis(8));
            }
        })
    };

    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut kills = 0;
    let started = Instant::now();
    while !stream.is_finished() || kills < 20 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // A random moment to cut power: choosing it is the point of the wait.
        std::thread::sleep(Duration::from_millis(60 + rng % 240));
        run.signal(Signal::KILL);
        run.wait_exit(T);
        kills += 1;
        let acked = cloud.synced("edge0", "Pod");
        let stored = edge.meta(); // opens the store: must work after every cut
                                  // Taken after the store was read, so an apply in flight then is recorded now.
        let sent = sent.lock().unwrap().clone();
        for obj in &stored {
            let name = obj["metadata"]["name"].as_str().unwrap();
            let rv: u64 = obj["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            // The edge's pod reports move a pod's resourceVersion past the apply's, and a
            // resend carries the newer one: what must hold is that the record is an update
            // that was sent (never torn), at or after the version its apply got.
            let applied = sent
                .iter()
                .find(|(_, (n, r))| n == name && Some(*r) == rev(obj))
                .map(|(rv, _)| *rv);
            match applied {
                Some(applied) => assert!(
                    rv >= applied,
                    "{name} at rv {rv} holds an update applied later, at rv {applied}: {obj}"
                ),
                None => {
                    panic!("torn record or an update never sent: {name} at rv {rv} holds {obj}")
                }
            }
        }
        for (name, acked_rv) in &acked {
            let have = stored
                .iter()
                .find(|o| o["metadata"]["name"] == name.as_str());
            let have_rv: u64 = have
                .map(|o| {
                    o["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap()
                })
                .unwrap_or(0);
            assert!(
                have_rv >= *acked_rv,
                "cut {kills}: {name} stored at rv {have_rv}, older than acknowledged rv {acked_rv}"
            );
        }
        run = edge.run("1s");
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "power-cut test ran too long"
        );
    }
    stream.join().unwrap();
    assert!(kills >= 20);
    let last: std::collections::HashMap<String, u32> = (0..PODS)
        .map(|p| {
            (
                format!("p{p}"),
                (0..UPDATES).filter(|i| i % PODS == p).max().unwrap(),
            )
        })
        .collect();
    wait_for(
        "the final versions on the edge",
        Duration::from_secs(60),
        || {
            let stored = edge.meta();
            let done = last.iter().all(|(n, r)| {
                stored
                    .iter()
                    .any(|o| o["metadata"]["name"] == n.as_str() && rev(o) == Some(*r))
            });
            done.then_some(())
        },
    );
    eprintln!("{kills} power cuts survived");
}
