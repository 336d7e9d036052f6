//! Membership messages in upstream's shapes (`cloud/pkg/devicecontroller/types/device.go`,
//! `downstream.go`), detail answers, and reports.

use super::*;

fn store(name: &str) -> CloudStore {
    let p = std::env::temp_dir().join(format!("devctl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    CloudStore::open(&p).unwrap()
}

fn device(name: &str, node: &str, desired: Option<&str>) -> (Kind, Value) {
    let mut props = json!([{"name": "temperature"}]);
    if let Some(d) = desired {
        props[0]["desired"] = json!({"value": d, "metadata": {"type": "int"}});
    }
    (
        Kind::Device,
        json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": name, "labels": {"description": "livingroom"}},
            "spec": {"deviceModelRef": {"name": "thermo"}, "nodeName": node, "properties": props}}),
    )
}

fn model() -> (Kind, Value) {
    (
        Kind::DeviceModel,
        json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
            "metadata": {"name": "thermo"}, "spec": {"properties": [{"name": "temperature", "type": "INT"}]}}),
    )
}

#[test]
fn membership_is_announced_in_upstreams_shape_and_follows_changes() {
    let mut s = store("announce");
    s.apply(
        &[
            model(),
            device("t1", "edge0", Some("20")),
            device("t2", "edge1", None),
        ],
        0,
    )
    .unwrap();
    let mut c = DeviceController::new();
    assert!(c.plan("edge0", &s, 1).is_empty(), "no session, nothing");
    c.connected("edge0");
    let msgs = c.plan("edge0", &s, 1);
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(
        (
            m.route.source.as_str(),
            m.route.group.as_str(),
            m.route.operation.as_str(),
            m.route.resource.as_str()
        ),
        ("devicecontroller", "twin", "update", "membership")
    );
    assert!(
        m.header.resourceversion.is_empty(),
        "membership has no version and needs no ACK"
    );
    let added = m.content["added_devices"].as_array().unwrap();
    assert_eq!(
        added.len(),
        1,
        "the model and the other node's device are not members"
    );
    assert_eq!(added[0]["id"], "default/t1");
    assert_eq!(added[0]["name"], "t1");
    assert_eq!(added[0]["description"], "livingroom");
    let twin = &added[0]["twin"]["temperature"];
    assert_eq!(twin["expected"]["value"], "20");
    assert_eq!(twin["metadata"]["type"], "int");
    assert!(twin["expected_version"]["cloud"].as_u64().unwrap() > 0);
    assert!(m.content["removed_devices"].is_null());
    assert!(m.content["event_id"].is_string());
    assert!(
        c.plan("edge0", &s, 2).is_empty(),
        "nothing changed, nothing sent"
    );

    // A desired change re-announces the device with a newer cloud version.
    let v1 = twin["expected_version"]["cloud"].as_u64().unwrap();
    s.apply(&[device("t1", "edge0", Some("25"))], 0).unwrap();
    let msgs = c.plan("edge0", &s, 3);
    let twin = &msgs[0].content["added_devices"][0]["twin"]["temperature"];
    assert_eq!(twin["expected"]["value"], "25");
    assert!(twin["expected_version"]["cloud"].as_u64().unwrap() > v1);

    // Re-bound elsewhere: removed from this node.
    s.apply(&[device("t1", "edge1", Some("25"))], 0).unwrap();
    let msgs = c.plan("edge0", &s, 4);
    assert!(msgs[0].content["added_devices"].is_null());
    assert_eq!(
        msgs[0].content["removed_devices"],
        json!([{"id": "default/t1", "name": "t1", "description": "livingroom"}])
    );
}

#[test]
fn detail_is_answered_with_everything_and_confirmed() {
    let mut s = store("detail");
    s.apply(
        &[
            model(),
            device("t1", "edge0", None),
            device("t3", "edge0", None),
        ],
        0,
    )
    .unwrap();
    let mut c = DeviceController::new();
    c.connected("edge0");
    c.detail_requested("edge0", "req-1");
    let msgs = c.plan("edge0", &s, 1);
    assert_eq!(msgs.len(), 2);
    let detail = &msgs[0];
    assert_eq!(detail.route.group, Group::Twin);
    assert_eq!(detail.route.resource, "membership/detail");
    assert!(
        detail.header.parent_msg_id.is_empty(),
        "upstream's edge takes a parent id as a confirm"
    );
    let ids: Vec<&str> = detail.content["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["default/t1", "default/t3"]);
    let confirm = &msgs[1];
    assert_eq!(confirm.header.parent_msg_id, "req-1");
    assert_eq!(confirm.route.resource, "twin");
    assert_eq!(confirm.content, json!("OK"));
    assert!(
        c.plan("edge0", &s, 2).is_empty(),
        "the detail counts as announced"
    );
}

#[test]
fn edge_versions_are_followed_and_a_refused_sync_is_retried() {
    let mut s = store("versions");
    s.apply(&[model(), device("t1", "edge0", Some("20"))], 0)
        .unwrap();
    let mut c = DeviceController::new();
    c.connected("edge0");
    c.plan("edge0", &s, 1);
    // The edge reports its twin with a newer edge counter and an old expected value: it
    // refused the sync, so it is sent again with the edge's counter.
    let report = json!({"twin": {"temperature": {"expected": {"value": "19"},
        "expected_version": {"cloud": 1, "edge": 7}, "actual": {"value": "18"}}}});
    c.observe_report("edge0", "default", "t1", &report);
    let msgs = c.plan("edge0", &s, 2);
    assert_eq!(msgs.len(), 1);
    let twin = &msgs[0].content["added_devices"][0]["twin"]["temperature"];
    assert_eq!(twin["expected_version"]["edge"], 7);
    assert_eq!(twin["expected"]["value"], "20");
    // A report that agrees with the cloud sends nothing.
    let agree = json!({"twin": {"temperature": {"expected": {"value": "20"},
        "expected_version": {"cloud": 1, "edge": 7}}}});
    c.observe_report("edge0", "default", "t1", &agree);
    assert!(c.plan("edge0", &s, 3).is_empty());
}

#[test]
fn reports_go_into_the_device_status_and_only_declared_properties_count() {
    let mut s = store("report");
    s.apply(&[model(), device("t1", "edge0", Some("20"))], 0)
        .unwrap();
    let msg = Message::new(
        ModuleName::Twin,
        Group::Resource,
        Operation::Update,
        "device/default/t1/twin/edge_updated",
        json!({"twin": {
            "temperature": {"actual": {"value": "21", "metadata": {"timestamp": 1700}}, "expected": {"value": "20"}, "metadata": {"type": "string"}},
            "junk": {"actual": {"value": "x"}}}}),
        0,
    );
    report(&mut s, "edge0", "default", "t1", "twin/edge_updated", &msg).unwrap();
    let d = s
        .get(&ObjectKey::new(Kind::Device, "default", "t1"))
        .unwrap();
    let twins = d.object["status"]["twins"].as_array().unwrap();
    assert_eq!(twins.len(), 1);
    assert_eq!(twins[0]["propertyName"], "temperature");
    assert_eq!(twins[0]["reported"]["value"], "21");
    assert_eq!(twins[0]["reported"]["metadata"]["timestamp"], "1700");
    assert_eq!(twins[0]["observedDesired"]["value"], "20");
    assert_eq!(
        report(&mut s, "edge9", "default", "t1", "twin/edge_updated", &msg),
        Err(ReportError::NotBoundHere)
    );
    assert_eq!(
        report(
            &mut s,
            "edge0",
            "default",
            "nope",
            "twin/edge_updated",
            &msg
        ),
        Err(ReportError::UnknownDevice)
    );
    let state = Message::new(
        ModuleName::Twin,
        Group::Resource,
        Operation::Update,
        "device/default/t1/state/update",
        json!(
            r#"{"event_id":"e","timestamp":1,"device":{"name":"t1","state":"online","lastOnlineTime":"2026-01-01T00:00:00Z"}}"#
        ),
        0,
    );
    report(&mut s, "edge0", "default", "t1", "state/update", &state).unwrap();
    let d = s
        .get(&ObjectKey::new(Kind::Device, "default", "t1"))
        .unwrap();
    assert_eq!(d.object["status"]["state"], "online");
    assert_eq!(d.object["status"]["lastOnlineTime"], "2026-01-01T00:00:00Z");
    let reply = report_reply(&state, 5);
    assert_eq!(reply.header.parent_msg_id, state.header.msg_id);
    assert_eq!(
        (reply.route.group.as_str(), reply.route.resource.as_str()),
        ("twin", "twin")
    );
}

/// A frame of `proto/tests/golden/upstream-shapes.jsonl`, written from upstream's source.
fn golden(name: &str) -> Message {
    const SHAPES: &str = include_str!("../../../proto/tests/golden/upstream-shapes.jsonl");
    let line = SHAPES
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["name"] == name)
        .unwrap();
    serde_json::from_value(line["frame"].clone()).unwrap()
}

/// The same keys at every level of objects (values may differ: ids, times, versions).
fn same_keys(a: &Value, b: &Value, at: &str) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let (kx, ky): (Vec<&String>, Vec<&String>) = (x.keys().collect(), y.keys().collect());
            assert_eq!(kx, ky, "keys at {at}");
            for k in x.keys() {
                same_keys(&x[k], &y[k], &format!("{at}.{k}"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if let (Some(p), Some(q)) = (x.first(), y.first()) {
                same_keys(p, q, &format!("{at}[0]"));
            }
        }
        (x, y) => assert_eq!(
            std::mem::discriminant(x),
            std::mem::discriminant(y),
            "kind of value at {at}: {x} vs {y}"
        ),
    }
}

#[test]
fn membership_detail_and_confirmations_have_upstreams_golden_shapes() {
    let mut s = store("golden");
    s.apply(&[model(), device("thermo", "edge0", Some("20"))], 0)
        .unwrap();
    let mut c = DeviceController::new();
    c.connected("edge0");
    let m = &c.plan("edge0", &s, 1)[0];
    let want = golden("membership-update");
    assert_eq!(m.route, want.route);
    same_keys(&m.content, &want.content, "content");
    c.detail_requested("edge0", "66ff0000-0000-4000-8000-000000000001");
    let out = c.plan("edge0", &s, 2);
    let want = golden("membership-detail");
    assert_eq!(out[0].route, want.route);
    assert_eq!(
        out[0].content["devices"][0]["id"],
        want.content["devices"][0]["id"]
    );
    let want = golden("device-report-confirmation");
    assert_eq!(out[1].route, want.route);
    assert_eq!(out[1].content, want.content);
    assert_eq!(out[1].header.parent_msg_id, want.header.parent_msg_id);
}
