//! Limits that hold across the wire and what a node may write, with real processes: an
//! upstream-shaped test edge ([`e2e::upstream_edge::TestEdge`]) sends what a hostile edgecore
//! could send; a real edgecore beside it stands for everyone else.
//!
//! - Growth: node and pod status reports that would grow an object past 1.5 MiB, or nest it
//!   past 64 levels, are refused (413 / 422), the stored objects stay small, and `get nodes`
//!   and `get pods` keep working for every user.
//! - A 5 MiB ConfigMap is refused at apply with the limit named; one already in the store
//!   (written before the limit) is reported and skipped, and its node gets everything else.
//! - A node may not rename itself, change its spec or labels, or touch another node.

use std::time::Duration;

use e2e::upstream_edge::TestEdge;
use e2e::{wait_for, Cloud, Edge};
use proto::objresp::Reply;
use proto::{Group, Message, ModuleName, Operation};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);
const MIB: usize = 1 << 20;
const LIMIT: usize = proto::limits::MAX_OBJECT_BYTES;

/// Sends `m` and returns the cloud's answer to it.
fn ask(e: &mut TestEdge, m: Message) -> Reply {
    let id = m.header.msg_id.clone();
    e.send(&m);
    let r = e.wait("the answer", T, |a| a.header.parent_msg_id == id);
    Reply::from_content(&r.content)
}

fn edged(op: Operation, resource: &str, content: Value) -> Message {
    Message::new(ModuleName::Edged, Group::Meta, op, resource, content, 0)
}

fn register(e: &mut TestEdge, node: &str, labels: Value) {
    let n = json!({"metadata": {"name": node, "labels": labels}, "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}});
    let r = ask(e, edged(Operation::Insert, &format!("null/node/{node}"), n));
    assert!(matches!(r, Reply::Object(_)), "registration: {r:?}");
}

fn node_patch(e: &mut TestEdge, node: &str, patch: String) -> Reply {
    ask(
        e,
        edged(
            Operation::Patch,
            &format!("null/nodepatch/{node}"),
            Value::String(patch),
        ),
    )
}

fn pod_patch(e: &mut TestEdge, pod: &str, patch: String) -> Reply {
    ask(
        e,
        edged(
            Operation::Patch,
            &format!("default/podpatch/{pod}"),
            Value::String(patch),
        ),
    )
}

fn code(r: &Reply) -> Option<u16> {
    match r {
        Reply::Failed { code, .. } => Some(*code),
        _ => None,
    }
}

fn message(r: &Reply) -> &str {
    match r {
        Reply::Failed { message, .. } => message,
        _ => "",
    }
}

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

fn get_json(cloud: &Cloud, what: &str) -> Value {
    let out = cloud.cli(&["get", what, "-o", "json"]);
    assert!(
        out.status.success(),
        "get {what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a list")
}

fn store_bytes(cloud: &Cloud) -> u64 {
    std::fs::metadata(cloud.dir.path().join("cloudcore.redb"))
        .map(|m| m.len())
        .unwrap_or(0)
}

#[test]
fn growing_and_deeply_nested_status_reports_are_refused_and_every_list_keeps_working() {
    let cloud = Cloud::start(&[]);
    let (_good, _good_run) = good_edge(&cloud, "good");
    let bad = Edge::new("bad");
    bad.join_ok(&cloud);
    let mut e = TestEdge::connect(&cloud, &bad);
    register(&mut e, "bad", json!({"site": "a"}));
    cloud.apply_ok(&pod("web", "bad", None));
    let p = e.wait("the pod", T, |m| m.route.resource == "default/pod/web");
    e.ack(&p);

    // What the finding did: 25 node patches of 4 MiB with new label keys, 10 pod status
    // patches of 4 MiB. Each is over the object limit on its own.
    for i in 0..25 {
        let labels = json!({ format!("k{i}"): "v".repeat(4 * MIB) });
        let r = node_patch(
            &mut e,
            "bad",
            json!({"metadata": {"labels": labels}}).to_string(),
        );
        assert_eq!(code(&r), Some(413), "{r:?}");
        assert!(
            message(&r).contains(&LIMIT.to_string()),
            "the limit is named: {r:?}"
        );
    }
    for i in 0..10 {
        let st = json!({"status": {"message": format!("{i}{}", "m".repeat(4 * MIB))}});
        let r = pod_patch(&mut e, "web", st.to_string());
        assert_eq!(code(&r), Some(413), "{r:?}");
    }
    // Growth in steps each under the limit: 1 MiB under a new key each time. The first fits;
    // every later one would make the object larger than the limit.
    for i in 0..4 {
        let grow = json!({"status": {format!("x{i}"): "y".repeat(MIB)}}).to_string();
        let (n, p) = (
            node_patch(&mut e, "bad", grow.clone()),
            pod_patch(&mut e, "web", grow),
        );
        let want = if i == 0 { None } else { Some(413) };
        assert_eq!((code(&n), code(&p)), (want, want), "{i}: {n:?} {p:?}");
    }
    // The status nested 124 levels deep that broke `get nodes` for everyone.
    let deep = format!(
        "{{\"status\":{{\"nodeInfo\":{{\"x\":{}1{}}}}}}}",
        "[".repeat(124),
        "]".repeat(124)
    );
    let r = node_patch(&mut e, "bad", deep.clone());
    assert_eq!(
        (code(&r), message(&r).contains("64 levels")),
        (Some(422), true),
        "{r:?}"
    );
    let r = pod_patch(&mut e, "web", deep);
    assert_eq!(code(&r), Some(422), "{r:?}");
    // A frame nested past the frame limit is dropped as malformed, the session goes on.
    e.send_text(&format!(
        "{{\"header\":{{\"msg_id\":\"deep\"}},\"route\":{{}},\"content\":{}1{}}}",
        "[".repeat(200),
        "]".repeat(200)
    ));
    let r = node_patch(
        &mut e,
        "bad",
        json!({"status": {"phase": "Running"}}).to_string(),
    );
    assert!(matches!(r, Reply::Object(_)), "{r:?}");

    // Everyone's lists work, and what is stored stayed under the limit.
    let nodes = get_json(&cloud, "nodes");
    let bad_node = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["metadata"]["name"] == "bad")
        .unwrap();
    let node_bytes = bad_node.to_string().len();
    assert!(node_bytes <= LIMIT, "{node_bytes}");
    assert_eq!(bad_node["metadata"]["labels"], json!({"site": "a"}));
    let pods = get_json(&cloud, "pods");
    let pod_bytes = pods["items"][0].to_string().len();
    assert!(pod_bytes <= LIMIT, "{pod_bytes}");
    assert!(cloud.cli(&["get", "nodes"]).status.success());
    assert!(cloud.cli(&["get", "pods"]).status.success());
    cloud.wait_ready("good", true, T);
    let [rss, ..] = e2e::proc_status(cloud.proc.pid());
    eprintln!(
        "after the growth attempts: node {node_bytes} B, pod {pod_bytes} B, store {} B, cloudcore VmRSS {rss} KiB",
        store_bytes(&cloud)
    );
}

#[test]
fn a_node_writes_only_its_status_and_its_labels_only_when_allowed() {
    let cloud = Cloud::start(&[]);
    let evil = Edge::new("evil");
    evil.join_ok(&cloud);
    let mut e = TestEdge::connect(&cloud, &evil);
    register(&mut e, "evil", json!({"site": "a"}));
    cloud.apply_ok(&pod("theirs", "other", None));

    for (patch, want, msg) in [
        (
            json!({"metadata": {"name": "good", "labels": {"trusted": "yes"}}}),
            400,
            "the name of the object (good) does not match the name on the URL (evil)",
        ),
        (
            json!({"metadata": {"labels": {"trusted": "yes"}}}),
            403,
            "nodes \"evil\" is forbidden: is not allowed to modify labels: trusted (cloudcore serve --allow-node-labels lets a node change its own)",
        ),
        (
            json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
            403,
            "nodes \"evil\" is forbidden: node \"evil\" is not allowed to modify taints",
        ),
        (
            json!({"spec": {"podCIDR": "10.0.0.0/24"}}),
            403,
            "nodes \"evil\" is forbidden: node \"evil\" is not allowed to modify spec.podCIDR",
        ),
    ] {
        let r = node_patch(&mut e, "evil", patch.to_string());
        assert_eq!((code(&r), message(&r)), (Some(want), msg), "{patch}");
    }
    // Other nodes' objects, as the node authorizer and NodeRestriction answer.
    let r = ask(
        &mut e,
        edged(
            Operation::Insert,
            "null/node/good",
            json!({"metadata": {"name": "good"}}),
        ),
    );
    assert_eq!(
        message(&r),
        "nodes \"good\" is forbidden: node \"evil\" is not allowed to modify node \"good\""
    );
    let r = node_patch(&mut e, "good", "{}".into());
    assert_eq!(code(&r), Some(403));
    let r = pod_patch(
        &mut e,
        "theirs",
        json!({"status": {"phase": "Failed"}}).to_string(),
    );
    assert_eq!(message(&r), "pods \"theirs\" is forbidden: User \"system:node:evil\" cannot patch resource \"pods/status\" in API group \"\" in the namespace \"default\": no relationship found between node 'evil' and this object");
    let r = ask(
        &mut e,
        edged(Operation::Update, "kube-node-lease/lease/good", json!({})),
    );
    assert_eq!(code(&r), Some(403));
    // Status still goes.
    let r = node_patch(
        &mut e,
        "evil",
        json!({"status": {"phase": "Running"}}).to_string(),
    );
    assert!(matches!(r, Reply::Object(_)), "{r:?}");

    let names = |cloud: &Cloud| -> Vec<(String, Value)> {
        cloud.nodes()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["metadata"]["name"].as_str().unwrap().to_owned(),
                    n["metadata"]["labels"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(names(&cloud), [("evil".to_owned(), json!({"site": "a"}))]);
    let (_, p) = cloud.admin("GET", "/api/v1/pods/default/theirs", b"");
    assert_ne!(p["status"]["phase"], "Failed");

    // With --allow-node-labels: its own labels and annotations, within NodeRestriction's rules.
    drop(e);
    let cloud = cloud.stop(false).start(&["--allow-node-labels"]);
    let mut e = TestEdge::connect(&cloud, &evil);
    let r = node_patch(
        &mut e,
        "evil",
        json!({"metadata": {"labels": {"site": "b", "kubernetes.io/arch": "arm64"}, "annotations": {"note": "x"}}})
            .to_string(),
    );
    assert!(matches!(r, Reply::Object(_)), "{r:?}");
    let r = node_patch(
        &mut e,
        "evil",
        json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}}).to_string(),
    );
    assert_eq!(
        message(&r),
        "nodes \"evil\" is forbidden: is not allowed to modify labels: node-role.kubernetes.io/control-plane"
    );
    let r = node_patch(
        &mut e,
        "evil",
        json!({"metadata": {"name": "good"}}).to_string(),
    );
    assert_eq!(code(&r), Some(400), "renaming stays refused");
    assert_eq!(
        names(&cloud),
        [(
            "evil".to_owned(),
            json!({"site": "b", "kubernetes.io/arch": "arm64"})
        )]
    );
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
