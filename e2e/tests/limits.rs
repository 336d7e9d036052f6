//! Limits that hold across the wire, with real processes.
//!
//! - A 5 MiB ConfigMap is refused at apply with the limit named; one already in the store
//!   (written before the limit) is reported and skipped, and its node gets everything else.

use std::time::Duration;

use e2e::{wait_for, Cloud, Edge};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);
const MIB: usize = 1 << 20;

fn pod(name: &str, node: &str, configmap: Option<&str>) -> String {
    let vols = configmap
        .map(|c| format!("\n  volumes: [{{name: cfg, configMap: {{name: {c}}}}}]"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  containers: [{{name: app, image: busybox}}]{vols}\n"
    )
}

/// A real edgecore, joined and Ready.
fn good_edge(cloud: &Cloud, name: &str) -> (Edge, e2e::Proc) {
    let edge = Edge::new(name);
    edge.join_ok(cloud);
    let run = edge.run("1s");
    cloud.wait_ready(name, true, T);
    (edge, run)
}

/// Puts `obj` into a stopped cloudcore's store file as an older cloudcore, without today's
/// object limit, would have stored it.
fn store_legacy_object(dir: &std::path::Path, db_key: &str, obj: &Value) {
    const OBJECTS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("objects");
    let db = redb::Database::create(dir.join("cloudcore.redb")).unwrap();
    let tx = db.begin_write().unwrap();
    let rv: u64 = obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut value = rv.to_le_bytes().to_vec();
    value.extend(serde_json::to_vec(obj).unwrap());
    tx.open_table(OBJECTS)
        .unwrap()
        .insert(db_key, value.as_slice())
        .unwrap();
    tx.commit().unwrap();
}

#[test]
fn a_5_mib_configmap_is_refused_at_apply_and_one_already_stored_never_wedges_its_node() {
    let cloud = Cloud::start(&[]);
    let (edge, run) = good_edge(&cloud, "edge0");
    let big_cm = |name: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata:\n  blob: {}\n",
            "x".repeat(5 * MIB)
        )
    };
    let out = cloud.apply(&format!(
        "{}---\n{}",
        big_cm("big"),
        pod("uses-big", "edge0", Some("big"))
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("document 1 (ConfigMap \"big\")") && err.contains("1572864 bytes (1.5 MiB"),
        "the limit is named: {err}"
    );
    let (_, cms) = cloud.admin("GET", "/api/v1/configmaps/default/big", b"");
    assert!(cms.get("metadata").is_none(), "nothing stored");

    // A store written before the limit may hold one: it is reported and skipped, everything
    // else reaches the node, and the tunnel stays up (a 5 MiB frame would break it on every
    // reconnect).
    let stopped = cloud.stop(false);
    let legacy = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "big", "namespace": "default", "uid": "legacy-big",
            "resourceVersion": "50", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "data": {"blob": "x".repeat(5 * MIB)}});
    store_legacy_object(stopped.dir.path(), "configmaps/default/big", &legacy);
    let cloud = stopped.start(&[]);
    cloud.wait_ready("edge0", true, T);
    cloud.apply_ok(&format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: small}}\ndata: {{k: v}}\n---\n{}",
        pod("uses-big", "edge0", Some("big")),
        pod("other", "edge0", Some("small"))
    ));
    wait_for("everything but the big ConfigMap on the edge", T, || {
        (edge.stored("Pod", "other").is_some()
            && edge.stored("ConfigMap", "small").is_some()
            && edge.stored("Pod", "uses-big").is_some())
        .then_some(())
    });
    let describe = String::from_utf8(cloud.cli(&["describe", "configmap", "big"]).stdout).unwrap();
    assert!(
        describe.contains("TooLargeForNode") && describe.contains("4194304"),
        "{describe}"
    );
    // Its pod asks for it (MetaManager queries what its pods reference): the answer is a
    // refusal, not a frame the edge cannot take.
    run.wait_log("failed: 413 RequestEntityTooLarge", T);
    assert!(edge.stored("ConfigMap", "big").is_none());
    cloud.wait_ready("edge0", true, T);
    let connects = cloud.proc.log().matches("node edge0 connected").count();
    assert_eq!(connects, 1, "the tunnel never broke: {}", cloud.proc.log());
    // Later changes still flow.
    cloud.apply_ok("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: small}\ndata: {k: v2}\n");
    wait_for("the update", T, || {
        (edge.stored("ConfigMap", "small")?["data"]["k"] == "v2").then_some(())
    });

    // Deleting it answers small and exits 0 (its 5 MiB answer used to fail the CLI).
    let out = cloud.cli(&["delete", "configmap", "big"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configmap \"big\" deleted"));
}
