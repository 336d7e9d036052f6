//! Cases and expected results from the reference implementation (apimachinery's
//! strategicpatch at Kubernetes v1.32, run against the same inputs), one test per strategy
//! and directive.

use super::schema::{self, POD};
use super::*;
use serde_json::json;

fn pod_patch(original: Value, patch: Value) -> Value {
    apply(&original, &patch, &POD).unwrap()
}

fn containers(names: &[&str]) -> Value {
    json!({"spec": {"containers": names.iter().map(|n| json!({"name": n, "image": "i"})).collect::<Vec<_>>()}})
}

fn names(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn maps_merge_and_null_deletes() {
    let p = pod_patch(
        json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
        json!({"metadata": {"labels": {"a": null, "b": "3", "c": "4"}, "annotations": {"x": null}}}),
    );
    assert_eq!(p["metadata"]["labels"], json!({"b": "3", "c": "4"}));
    assert!(
        p["metadata"]
            .get("annotations")
            .is_some_and(|a| a == &json!({})),
        "a null for an absent key does nothing but the new map is taken, nulls dropped: {p}"
    );
}

#[test]
fn merge_by_key_orders_as_upstream() {
    let p = pod_patch(
        containers(&["a", "b", "c"]),
        json!({"spec": {"containers": [{"name": "b", "image": "ib2"}, {"name": "d"}]}}),
    );
    assert_eq!(names(&p, "containers"), ["a", "b", "d", "c"]);
    assert_eq!(p["spec"]["containers"][1]["image"], "ib2");
    let p = pod_patch(
        containers(&["a", "b", "c"]),
        json!({"spec": {"containers": [{"name": "d"}]}}),
    );
    assert_eq!(
        names(&p, "containers"),
        ["d", "a", "b", "c"],
        "a new element with no known neighbour goes first"
    );
    let p = pod_patch(
        containers(&["a", "b", "c"]),
        json!({"spec": {"containers": [{"name": "c", "image": "x"}, {"name": "a", "image": "y"}]}}),
    );
    assert_eq!(names(&p, "containers"), ["b", "c", "a"]);
}

#[test]
fn list_directives_delete_and_replace() {
    let p = pod_patch(
        containers(&["a", "b", "c"]),
        json!({"spec": {"containers": [{"name": "b", "$patch": "delete"}]}}),
    );
    assert_eq!(names(&p, "containers"), ["a", "c"]);
    let p = pod_patch(
        containers(&["a", "b", "c"]),
        json!({"spec": {"containers": [{"name": "z"}, {"$patch": "replace"}]}}),
    );
    assert_eq!(names(&p, "containers"), ["z"]);
    let e = apply(
        &containers(&["a"]),
        &json!({"spec": {"containers": [{"$patch": "merge"}]}}),
        &POD,
    )
    .unwrap_err();
    assert!(
        e.message.contains("merging lists cannot yet be specified"),
        "{e}"
    );
    let e = apply(
        &containers(&["a"]),
        &json!({"spec": {"containers": [{"$patch": "delete"}]}}),
        &POD,
    )
    .unwrap_err();
    assert!(
        e.message
            .contains("does not contain declared merge key: name"),
        "{e}"
    );
}

#[test]
fn map_directives() {
    let p = pod_patch(
        json!({"metadata": {"labels": {"a": "1"}}}),
        json!({"metadata": {"labels": {"$patch": "delete"}}}),
    );
    assert_eq!(p["metadata"]["labels"], json!({}));
    let p = pod_patch(
        json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
        json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}}),
    );
    assert_eq!(p["metadata"]["labels"], json!({"c": "3"}));
    let p = pod_patch(
        json!({"metadata": {}}),
        json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}}),
    );
    assert!(
        p["metadata"].get("labels").is_none(),
        "a replace map for an absent field disappears: {p}"
    );
    let e = apply(&json!({}), &json!({"$patch": "merge"}), &POD).unwrap_err();
    assert!(e.message.contains("unknown patch type"), "{e}");
}

#[test]
fn untagged_lists_are_replaced_whole() {
    let status = |states: Value| json!({"status": {"containerStatuses": states}});
    let p = pod_patch(
        status(json!([
            {"name": "a", "state": {"waiting": {"reason": "ContainerCreating"}}},
            {"name": "b", "ready": true}
        ])),
        status(json!([{"name": "a", "state": {"running": {"startedAt": "t"}}}])),
    );
    assert_eq!(
        p["status"]["containerStatuses"],
        json!([{"name": "a", "state": {"running": {"startedAt": "t"}}}]),
        "no stale waiting beside running, no merge by name"
    );
    let p = pod_patch(
        json!({"spec": {"tolerations": [{"key": "a"}]}}),
        json!({"spec": {"tolerations": []}}),
    );
    assert_eq!(p["spec"]["tolerations"], json!([]));
}

#[test]
fn primitive_sets_and_delete_lists() {
    let fin = |l: Value| json!({"metadata": {"finalizers": l}});
    assert_eq!(
        pod_patch(fin(json!(["a", "b"])), fin(json!(["c", "a"])))["metadata"]["finalizers"],
        json!(["c", "a", "b"])
    );
    assert_eq!(
        pod_patch(fin(json!(["a"])), fin(json!(["b", "b", "a"])))["metadata"]["finalizers"],
        json!(["b", "a"])
    );
    assert_eq!(
        pod_patch(fin(json!(["a", "b"])), fin(json!([])))["metadata"]["finalizers"],
        json!(["a", "b"]),
        "an empty patch list changes nothing"
    );
    let p = pod_patch(
        json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"], "finalizers": ["d"]}}),
    );
    assert_eq!(p["metadata"]["finalizers"], json!(["d", "a", "c"]));
    // Delete lists work on untagged lists too, removing every occurrence.
    let p = pod_patch(
        json!({"spec": {"containers": [{"name": "c", "args": ["x", "y", "x"]}]}}),
        json!({"spec": {"containers": [{"name": "c", "$deleteFromPrimitiveList/args": ["x"]}]}}),
    );
    assert_eq!(p["spec"]["containers"][0]["args"], json!(["y"]));
}

#[test]
fn retain_keys_switches_a_volume_source() {
    let orig = json!({"spec": {"volumes": [{"name": "v", "emptyDir": {"medium": "Memory"}}]}});
    let p = pod_patch(
        orig.clone(),
        json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["hostPath", "name"], "hostPath": {"path": "/x"}}]}}),
    );
    assert_eq!(
        p["spec"]["volumes"],
        json!([{"hostPath": {"path": "/x"}, "name": "v"}])
    );
    let p = pod_patch(
        orig.clone(),
        json!({"spec": {"volumes": [{"name": "v", "hostPath": {"path": "/x"}}]}}),
    );
    assert!(
        p["spec"]["volumes"][0].get("emptyDir").is_some(),
        "without $retainKeys both sources stay"
    );
    let e = apply(
        &orig,
        &json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["name"], "hostPath": {"path": "/x"}}]}}),
        &POD,
    )
    .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (400, "invalid patch format of retainKeys")
    );
}

#[test]
fn set_element_order() {
    let abc = containers(&["a", "b", "c"]);
    let order = |keys: &[&str]| keys.iter().map(|k| json!({"name": k})).collect::<Vec<_>>();
    let p = pod_patch(
        abc.clone(),
        json!({"spec": {"$setElementOrder/containers": order(&["c", "a"]), "containers": [{"name": "a", "image": "new"}]}}),
    );
    assert_eq!(names(&p, "containers"), ["b", "c", "a"]);
    let p = pod_patch(
        abc.clone(),
        json!({"spec": {"$setElementOrder/containers": order(&["c", "d", "a"]), "containers": [{"name": "d"}]}}),
    );
    assert_eq!(names(&p, "containers"), ["b", "c", "d", "a"]);
    let p = pod_patch(
        abc.clone(),
        json!({"spec": {"$setElementOrder/containers": order(&["c", "a"]), "containers": [{"name": "b", "$patch": "delete"}]}}),
    );
    assert_eq!(names(&p, "containers"), ["c", "a"]);
    let p = pod_patch(
        abc.clone(),
        json!({"spec": {"$setElementOrder/containers": order(&["b", "zz", "a"])}}),
    );
    assert_eq!(
        names(&p, "containers"),
        ["b", "a", "c"]
            .iter()
            .filter(|_| true)
            .take(3)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()[..3]
            .iter()
            .filter(|n| *n != "zz")
            .cloned()
            .collect::<Vec<_>>()
    );
    for bad_order in [order(&["a"]), order(&["a", "c"])] {
        let patch = if bad_order.len() == 1 {
            json!([{"name": "d"}])
        } else {
            json!([{"name": "c"}, {"name": "a"}])
        };
        let e = apply(
            &abc,
            &json!({"spec": {"$setElementOrder/containers": bad_order, "containers": patch}}),
            &POD,
        )
        .unwrap_err();
        assert!(e.message.contains("doesn't match $setElementOrder"), "{e}");
    }
    // Primitives.
    let p = pod_patch(
        json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
        json!({"metadata": {"$setElementOrder/finalizers": ["c", "d", "a"], "finalizers": ["d"]}}),
    );
    assert_eq!(p["metadata"]["finalizers"], json!(["b", "c", "d", "a"]));
    let p = pod_patch(
        json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
        json!({"metadata": {"$setElementOrder/finalizers": ["c", "b", "a"]}}),
    );
    assert_eq!(p["metadata"]["finalizers"], json!(["c", "b", "a"]));
}

#[test]
fn kubelet_status_patches() {
    // Pending → Running, as a kubelet diffs it: conditions by type, ordered by the directive.
    let pod = json!({"status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}]}});
    let p = pod_patch(
        pod,
        json!({"metadata": {"uid": "u1"}, "status": {
            "$setElementOrder/conditions": [{"type": "PodScheduled"}, {"type": "Initialized"}, {"type": "Ready"}],
            "conditions": [{"status": "True", "type": "Initialized"}, {"status": "True", "type": "Ready"}],
            "phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}]}}),
    );
    let types: Vec<&str> = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["PodScheduled", "Initialized", "Ready"]);
    assert_eq!(p["status"]["conditions"][2]["status"], "True");
    assert_eq!(p["status"]["podIPs"], json!([{"ip": "10.0.0.5"}]));
    // Node addresses: kubelet's workaround for the merge-by-type tag.
    let node = json!({"status": {"addresses": [
        {"type": "InternalIP", "address": "10.0.0.1"}, {"type": "InternalIP", "address": "10.0.0.3"},
        {"type": "Hostname", "address": "gw"}]}});
    let merged = apply(
        &node,
        &json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}}),
        &schema::NODE,
    )
    .unwrap();
    assert_eq!(merged["status"]["addresses"][0]["address"], "10.0.0.2");
    assert_eq!(merged["status"]["addresses"][1]["address"], "10.0.0.3");
    let replaced = apply(
        &node,
        &json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}, {"$patch": "replace"}]}}),
        &schema::NODE,
    )
    .unwrap();
    assert_eq!(
        replaced["status"]["addresses"],
        json!([{"type": "InternalIP", "address": "10.0.0.2"}])
    );
}

#[test]
fn client_side_apply_patch() {
    // kubectl apply's three-way patch: a label and an env var removed, the image changed.
    let live = json!({"metadata": {"labels": {"a": "1", "b": "2", "x": "server"}},
        "spec": {"containers": [{"name": "c", "image": "i1", "imagePullPolicy": "IfNotPresent",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}});
    let p = pod_patch(
        live,
        json!({"metadata": {"labels": {"a": null, "b": "2"}}, "spec": {
            "$setElementOrder/containers": [{"name": "c"}],
            "containers": [{"$setElementOrder/env": [{"name": "A"}], "env": [{"$patch": "delete", "name": "B"}], "image": "i2", "name": "c"}]}}),
    );
    assert_eq!(p["metadata"]["labels"], json!({"b": "2", "x": "server"}));
    let c = &p["spec"]["containers"][0];
    assert_eq!(c["image"], "i2");
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["env"], json!([{"name": "A", "value": "1"}]));
}

#[test]
fn bad_patches_are_errors_with_upstreams_codes() {
    let e = apply(&json!({}), &json!([1]), &POD).unwrap_err();
    assert_eq!(e.code, 400);
    let e = apply(
        &json!({"spec": {"containers": [{"image": "x"}]}}),
        &json!({"spec": {"containers": [{"name": "a"}]}}),
        &POD,
    )
    .unwrap_err();
    assert_eq!(
        e.code, 500,
        "an original element without the merge key: {e}"
    );
    let e = apply(
        &json!({"metadata": {}}),
        &json!({"metadata": {"$setElementOrder/finalizers": "a"}}),
        &POD,
    )
    .unwrap_err();
    assert_eq!(e.code, 500);
    let e = apply(
        &json!({"metadata": {}}),
        &json!({"metadata": {"$retainKeys": "a"}}),
        &POD,
    )
    .unwrap_err();
    assert_eq!(e.code, 400);
    let e = apply(
        &json!({"metadata": {"finalizers": ["a"]}}),
        &json!({"metadata": {"finalizers": [["x"]]}}),
        &POD,
    )
    .unwrap_err();
    assert_eq!(e.code, 422);
    let e = apply(
        &json!({"spec": {"tolerations": [{"key": "a"}]}}),
        &json!({"spec": {"$setElementOrder/tolerations": [{"key": "a"}]}}),
        &POD,
    )
    .unwrap_err();
    assert_eq!(e.code, 500);
}

#[test]
fn json_merge_patch_replaces_lists() {
    let mut t = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
    json_merge_patch(&mut t, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
    assert_eq!(t, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
}
