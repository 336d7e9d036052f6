//! Our cloudcore with an upstream-shaped test edge ([`e2e::upstream_edge::TestEdge`], standing
//! for an unmodified upstream edgecore): device membership, desired values and detail as
//! upstream's DeviceTwin needs them; pods delivered with the apiserver's defaults; graceful
//! deletion confirmed the way upstream's kubelet confirms it; a WebSocket Close for every
//! tunnel on SIGTERM; upstream's empty shutdown frame taken quietly.

use std::time::Duration;

use e2e::upstream_edge::{Frame, TestEdge};
use e2e::{wait_for, Cloud, Edge};
use proto::objresp::Reply;
use proto::{Group, Message, ModuleName, Operation};
use rustix::process::Signal;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

fn joined() -> (Cloud, Edge) {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    edge.join_ok(&cloud);
    (cloud, edge)
}

/// Upstream DeviceTwin's `membership/detail` request, sent on every connect (golden frame 2).
fn detail_request() -> Message {
    let content =
        json!({"event_type": "group_membership_event", "event_id": "e1", "group_id": "edge0",
        "operation": "detail", "timestamp": 1})
        .to_string();
    Message::new(
        ModuleName::Twin,
        Group::Resource,
        Operation::Get,
        "membership/detail",
        Value::String(content),
        1,
    )
}

fn device(desired: &str) -> String {
    format!(
        "apiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceModel\nmetadata: {{name: thermo-model}}\nspec:\n  properties: [{{name: temperature, type: INT}}]\n---\n\
         apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {{name: thermo, labels: {{description: livingroom}}}}\nspec:\n  deviceModelRef: {{name: thermo-model}}\n  nodeName: edge0\n  \
         properties: [{{name: temperature, desired: {{value: \"{desired}\", metadata: {{type: int}}}}}}]\n"
    )
}

fn is(m: &Message, op: &str, resource: &str) -> bool {
    m.route.operation.as_str() == op && m.route.resource == resource
}

#[test]
fn an_upstream_edge_learns_its_devices_and_desired_values_from_membership() {
    let (cloud, edge) = joined();
    let mut e = TestEdge::connect(&cloud, &edge);
    e.send(&detail_request());
    let detail = e.wait("the detail answer", T, |m| {
        m.route.resource == "membership/detail"
    });
    assert_eq!(
        (detail.route.source.as_str(), detail.route.group.as_str()),
        ("devicecontroller", "twin")
    );
    assert!(
        detail.header.parent_msg_id.is_empty(),
        "not a confirm: upstream's edge would drop it"
    );
    assert_eq!(detail.content["devices"], json!([]));
    let confirm = e.wait("the detail confirmed", T, |m| {
        m.route.resource == "twin" && m.route.operation == Operation::Response
    });
    assert!(!confirm.header.parent_msg_id.is_empty());

    cloud.apply_ok(&device("20"));
    let added = e.wait("membership with the device", T, |m| {
        is(m, "update", "membership")
    });
    assert_eq!(
        (added.route.source.as_str(), added.route.group.as_str()),
        ("devicecontroller", "twin")
    );
    let d = &added.content["added_devices"][0];
    assert_eq!(
        (
            d["id"].as_str(),
            d["name"].as_str(),
            d["description"].as_str()
        ),
        (Some("default/thermo"), Some("thermo"), Some("livingroom"))
    );
    assert_eq!(
        added.content["added_devices"].as_array().unwrap().len(),
        1,
        "the model is not a member"
    );
    let twin = &d["twin"]["temperature"];
    assert_eq!(twin["expected"]["value"], "20");
    assert_eq!(twin["metadata"]["type"], "int");
    let v1 = twin["expected_version"]["cloud"].as_u64().unwrap();
    // The model before the device (upstream's DMI needs it first), both from devicecontroller.
    let model = e.wait("the model", T, |m| {
        m.route.resource == "default/devicemodel/thermo-model"
    });
    assert_eq!(model.route.source.as_str(), "devicecontroller");
    assert_eq!(model.content["apiVersion"], "devices.kubeedge.io/v1beta1");
    e.ack(&model);
    let dev = e.wait("the device object", T, |m| {
        m.route.resource == "default/device/thermo"
    });
    assert_eq!(dev.route.operation, Operation::Insert);
    e.ack(&dev);
    // The ACK is recorded before the next change (a late ACK of a superseded send counts
    // for nothing).
    wait_for("the device acknowledged", T, || {
        cloud
            .synced("edge0", "Device")
            .contains_key("thermo")
            .then_some(())
    });

    // A desired change: the device again, with the new expected value at a newer version.
    cloud.apply_ok(&device("25"));
    let again = e.wait("membership with the new desired value", T, |m| {
        is(m, "update", "membership")
            && m.content["added_devices"][0]["twin"]["temperature"]["expected"]["value"] == "25"
    });
    assert!(
        again.content["added_devices"][0]["twin"]["temperature"]["expected_version"]["cloud"]
            .as_u64()
            .unwrap()
            > v1
    );
    let upd = e.wait("the device update", T, |m| {
        is(m, "update", "default/device/thermo")
    });
    e.ack(&upd);

    // Upstream DeviceTwin's report: confirmed as upstream's cloud confirms it, and stored.
    let report = Message::new(
        ModuleName::Twin,
        Group::Resource,
        Operation::Update,
        "device/default/thermo/twin/edge_updated",
        json!({"event_id": "r1", "timestamp": 1700, "twin": {"temperature": {
            "actual": {"value": "24", "metadata": {"timestamp": 1700}}, "expected": {"value": "25"},
            "metadata": {"type": "int"}, "actual_version": {"cloud": 0, "edge": 3}, "expected_version": {"cloud": 9, "edge": 3}}}}),
        1700,
    );
    e.send(&report);
    let ok = e.wait("the report confirmed", T, |m| {
        m.header.parent_msg_id == report.header.msg_id
    });
    assert_eq!(
        (
            ok.route.group.as_str(),
            ok.route.resource.as_str(),
            &ok.content
        ),
        ("twin", "twin", &json!("OK"))
    );
    wait_for("the reported value in the Device status", T, || {
        (cloud.reported_twin("thermo", "temperature").as_deref() == Some("24")).then_some(())
    });

    // Deleted: removed from the membership, then the objects go.
    assert!(cloud.cli(&["delete", "device", "thermo"]).status.success());
    let removed = e.wait("membership without the device", T, |m| {
        is(m, "update", "membership") && !m.content["removed_devices"].is_null()
    });
    assert_eq!(
        removed.content["removed_devices"][0]["id"],
        "default/thermo"
    );
    let del = e.wait("the device delete", T, |m| {
        is(m, "delete", "default/device/thermo")
    });
    assert_eq!(del.content["kind"], "Device", "deletes carry the object");
    e.ack(&del);

    // A new session: the detail it asks for no longer lists the device.
    drop(e);
    let mut e = TestEdge::connect(&cloud, &edge);
    e.send(&detail_request());
    let detail = e.wait("the detail answer", T, |m| {
        m.route.resource == "membership/detail"
    });
    assert_eq!(detail.content["devices"], json!([]));
}

#[test]
fn pods_arrive_with_the_apiservers_defaults_and_a_graceful_delete_completes_with_the_edge() {
    let (cloud, edge) = joined();
    let mut e = TestEdge::connect(&cloud, &edge);
    cloud.apply_ok(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {k: v}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  nodeName: edge0\n  hostNetwork: true\n  \
         containers:\n  - name: app\n    image: busybox\n    ports: [{containerPort: 8080}]\n    \
         livenessProbe: {httpGet: {port: 8080}}\n    volumeMounts: [{name: c, mountPath: /c}]\n  \
         volumes: [{name: c, configMap: {name: cfg}}]\n",
    );
    let cm = e.wait("the configmap", T, |m| {
        m.route.resource == "default/configmap/cfg"
    });
    e.ack(&cm);
    let p = e.wait("the pod", T, |m| is(m, "insert", "default/pod/web"));
    e.ack(&p);
    wait_for("the pod acknowledged", T, || {
        cloud
            .synced("edge0", "Pod")
            .contains_key("web")
            .then_some(())
    });
    let spec = &p.content["spec"];
    // What upstream's kubelet refuses or mis-handles without.
    assert_eq!(spec["volumes"][0]["configMap"]["defaultMode"], 420);
    assert_eq!(spec["enableServiceLinks"], true);
    assert_eq!(spec["securityContext"], json!({}));
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["schedulerName"], "default-scheduler");
    let c = &spec["containers"][0];
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(
        c["ports"][0],
        json!({"containerPort": 8080, "protocol": "TCP", "hostPort": 8080})
    );
    let probe = &c["livenessProbe"];
    assert_eq!(
        (
            probe["periodSeconds"].as_u64(),
            probe["timeoutSeconds"].as_u64(),
            probe["failureThreshold"].as_u64()
        ),
        (Some(10), Some(1), Some(3))
    );
    assert_eq!(probe["httpGet"]["path"], "/");
    assert_eq!(p.content["status"]["qosClass"], "BestEffort");
    let uid = p.content["metadata"]["uid"].as_str().unwrap().to_owned();

    // kubectl delete: the pod is marked, not removed, and its node is told.
    assert!(cloud
        .cli(&["delete", "pod", "web", "--wait=false"])
        .status
        .success());
    let marked = e.wait("the deletion mark", T, |m| {
        is(m, "update", "default/pod/web")
    });
    assert!(marked.content["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(marked.content["metadata"]["deletionGracePeriodSeconds"], 30);
    e.ack(&marked);
    let table = String::from_utf8(cloud.cli(&["get", "pods"]).stdout).unwrap();
    assert!(table.contains("Terminating"), "{table}");
    // The kubelet stops it, reports the terminal status, then confirms.
    let status = json!({"metadata": {"uid": uid}, "status": {"phase": "Succeeded",
        "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0, "image": "busybox", "imageID": "",
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
    let patch = Message::new(
        ModuleName::Edged,
        Group::Meta,
        Operation::Patch,
        "default/podpatch/web",
        Value::String(status.to_string()),
        1,
    );
    e.send(&patch);
    e.wait("the status answer", T, |m| {
        m.header.parent_msg_id == patch.header.msg_id
    });
    let confirm = Message::new(
        ModuleName::Edged,
        Group::Meta,
        Operation::Delete,
        "default/pod/web",
        json!({"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}),
        2,
    );
    e.send(&confirm);
    let ok = e.wait("the confirmation's answer", T, |m| {
        m.header.parent_msg_id == confirm.header.msg_id
    });
    assert_eq!(
        Reply::from_content(&ok.content),
        Reply::Ok,
        "upstream's kubelet accepts only \"OK\""
    );
    let gone = e.wait("the delete push", T, |m| is(m, "delete", "default/pod/web"));
    assert_eq!(
        gone.content["kind"], "Pod",
        "the whole pod, as the apiserver's watch delivers it"
    );
    assert_eq!(gone.content["spec"]["containers"][0]["name"], "app");
    e.ack(&gone);
    let (code, _) = cloud.admin("GET", "/api/v1/pods/default/web", b"");
    assert_eq!(code, 404);

    // --force deletes at once, whatever the node does.
    cloud.apply_ok("apiVersion: v1\nkind: Pod\nmetadata: {name: stuck}\nspec:\n  nodeName: edge0\n  containers: [{name: app, image: busybox}]\n");
    let p = e.wait("the pod", T, |m| is(m, "insert", "default/pod/stuck"));
    e.ack(&p);
    let out = cloud.cli(&["delete", "pod", "stuck", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Immediate deletion"));
    e.wait("the delete push", T, |m| {
        is(m, "delete", "default/pod/stuck")
    });
}

#[test]
fn sigterm_closes_every_tunnel_with_a_close_frame_and_the_empty_frame_is_quiet() {
    let (mut cloud, edge) = joined();
    let mut e = TestEdge::connect(&cloud, &edge);
    // Upstream edgecore's last frame when it shuts down.
    e.send_text("{\"header\":{\"msg_id\":\"\",\"timestamp\":0},\"route\":{},\"content\":null}\n");
    // Processed in order: once this query is answered, the empty frame was handled.
    let probe = Message::new(
        ModuleName::Edged,
        Group::Meta,
        Operation::Query,
        "kube-node-lease/lease/edge0",
        Value::Null,
        0,
    );
    e.send(&probe);
    e.wait("the probe's answer", T, |m| {
        m.header.parent_msg_id == probe.header.msg_id
    });
    let log = cloud.proc.log();
    assert!(log.contains("is shutting down (empty frame)"), "{log}");
    assert!(!log.contains("malformed frame"), "{log}");
    cloud.proc.signal(Signal::TERM);
    loop {
        match e.next(T) {
            Frame::Close => break,
            Frame::Msg(_) => continue,
            Frame::Timeout => panic!("no Close frame after SIGTERM"),
        }
    }
    assert_eq!(cloud.proc.wait_exit(T), Some(0));
}
