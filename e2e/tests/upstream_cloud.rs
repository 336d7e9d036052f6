//! Our edgecore against an upstream-shaped cloud ([`e2e::upstream_cloud`]: upstream
//! cloudcore's EdgeController on a kube-apiserver, where it differs from ours), with a real
//! containerd: configmaps that existed before their pod are queried, acknowledged and used;
//! a missing one is reported as kubelet reports it; a graceful delete stops the containers
//! with SIGTERM and is confirmed with upstream's DeleteOptions; the kube-api-access volume
//! gets its token, CA and namespace; an existing node object is refreshed with the whole
//! status; refused status reports back off and a NotFound ends them; DeviceModels are not
//! devices.

use std::time::{Duration, Instant};

use e2e::containerd::Containerd;
use e2e::mqtt::Subscriber;
use e2e::upstream_cloud::{PatchAnswer, UpstreamCloud};
use e2e::{wait_for, Cloud, Edge, Proc};
use proto::Operation;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

/// An edge enrolled with a real cloudcore (for its certificates), then pointed at an
/// upstream-shaped test cloud using the same CA.
struct Setup {
    _cloud: Cloud,
    up: UpstreamCloud,
    edge: Edge,
    run: Proc,
}

fn setup(ctrd: Option<&Containerd>) -> Setup {
    setup_with(ctrd, |_| {})
}

fn setup_with(ctrd: Option<&Containerd>, before_run: impl FnOnce(&UpstreamCloud)) -> Setup {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    let cri = ctrd.map(|c| c.endpoint()).unwrap_or_default();
    let out = edge.join_with(&cloud, &cloud.token(), &cri);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    edge.set_config("crash_backoff", json!("1s"));
    edge.set_config("pod_sync_period", json!("300ms"));
    let up = UpstreamCloud::start(&cloud.dir.path().join("pki"));
    edge.use_cloud(up.addr);
    before_run(&up);
    let run = edge.run("1s");
    wait_for("the edge's lease in the test cloud", T, || {
        up.state.lock().unwrap().lease.is_some().then_some(())
    });
    Setup {
        _cloud: cloud,
        up,
        edge,
        run,
    }
}

fn pod(name: &str, spec: Value) -> Value {
    let mut p = json!({"metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": "edge0", "hostNetwork": true, "terminationGracePeriodSeconds": 30}});
    for (k, v) in spec.as_object().unwrap() {
        p["spec"][k] = v.clone();
    }
    p
}

fn status_of(up: &UpstreamCloud, name: &str) -> Value {
    up.pod("default", name)
        .map(|p| p["status"].clone())
        .unwrap_or(Value::Null)
}

fn running(up: &UpstreamCloud, name: &str) -> bool {
    let s = status_of(up, name);
    s["phase"] == "Running" && s["containerStatuses"][0]["ready"] == true
}

/// `cat`s a file in the pod's container through CRI.
fn exec(ctrd: &Containerd, up: &UpstreamCloud, pod: &str, cmd: &[&str]) -> String {
    let id = status_of(up, pod)["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("containerd://")
        .to_owned();
    let c = cri::CriClient::new(&ctrd.endpoint()).unwrap();
    let out = smol::block_on(c.with(c.exec_sync(
        &id,
        cmd.iter().map(|s| s.to_string()).collect(),
        Duration::from_secs(5),
    )))
    .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn configmaps_that_existed_before_the_pod_are_queried_acknowledged_and_used() {
    let ctrd = Containerd::start();
    let s = setup(Some(&ctrd));
    // The configmap existed before the pod: upstream never pushes it.
    s.up.put_configmap(
        json!({"metadata": {"name": "app-config"}, "data": {"greeting": "hello from upstream"}}),
        false,
    );
    s.up.put_pod(pod(
        "web",
        json!({"containers": [{"name": "app", "image": e2e::containerd::BUSYBOX, "command": ["sh", "-c", "sleep 3600"],
            "env": [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "greeting"}}}],
            "volumeMounts": [{"name": "config", "mountPath": "/config", "readOnly": true}]}],
            "volumes": [{"name": "config", "configMap": {"name": "app-config", "defaultMode": 420}}]}),
    ));
    let query = wait_for("the edge to ask for the configmap", T, || {
        s.up.sent("query", "default/configmap/app-config")
            .into_iter()
            .next()
    });
    assert_eq!(query.route.source.as_str(), "edged");
    assert_eq!(query.route.group.as_str(), "meta");
    assert!(query.content.is_null());
    let answer = wait_for("the query's answer", T, || {
        s.up.state.lock().unwrap().answers.first().cloned()
    });
    wait_for("the answer acknowledged once stored", T, || {
        s.up.acked(&answer.1).then_some(())
    });
    wait_for("web Running and Ready", T, || {
        running(&s.up, "web").then_some(())
    });
    assert_eq!(
        exec(&ctrd, &s.up, "web", &["cat", "/config/greeting"]),
        "hello from upstream"
    );
    assert_eq!(
        exec(
            &ctrd,
            &s.up,
            "web",
            &["sh", "-c", "printf %s \"$GREETING\""]
        ),
        "hello from upstream"
    );
    assert_eq!(
        s.edge.stored("ConfigMap", "app-config").unwrap()["data"]["greeting"],
        "hello from upstream",
        "stored like a push"
    );
    // A change upstream pushes reaches the volume of the running pod.
    s.up.put_configmap(
        json!({"metadata": {"name": "app-config"}, "data": {"greeting": "changed"}}),
        true,
    );
    wait_for("the changed configmap in the volume", T, || {
        (exec(&ctrd, &s.up, "web", &["cat", "/config/greeting"]) == "changed").then_some(())
    });

    // A configmap that does not exist: the pod says so, as kubelet does.
    s.up.put_pod(pod(
        "broken",
        json!({"containers": [{"name": "app", "image": e2e::containerd::BUSYBOX, "command": ["sleep", "3600"],
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}]}]}),
    ));
    let waiting = wait_for("broken's waiting reason", T, || {
        let w = status_of(&s.up, "broken")["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "CreateContainerConfigError").then_some(w)
    });
    assert_eq!(waiting["message"], "configmap \"nope\" not found");
    assert!(
        s.edge.stored("ConfigMap", "nope").is_none(),
        "an error is not stored as an object"
    );
}

#[test]
fn a_graceful_delete_stops_with_sigterm_reports_terminal_and_is_confirmed() {
    let ctrd = Containerd::start();
    let s = setup(Some(&ctrd));
    // Exits 0 on SIGTERM: the pod ends Succeeded only if SIGTERM, not SIGKILL, stopped it.
    s.up.put_pod(pod(
        "web",
        json!({"containers": [{"name": "app", "image": e2e::containerd::BUSYBOX,
            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]}]}),
    ));
    wait_for("web Running", T, || running(&s.up, "web").then_some(()));
    let uid = s.up.pod("default", "web").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let asked = Instant::now();
    s.up.delete_pod("default", "web", 20);
    let confirm = wait_for("the edge to confirm the deletion", T, || {
        s.up.sent("delete", "default/pod/web").into_iter().next()
    });
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "stopped by SIGTERM well inside the grace period: {took:?}"
    );
    assert_eq!(
        (confirm.route.source.as_str(), confirm.route.group.as_str()),
        ("edged", "meta")
    );
    assert_eq!(
        confirm.content,
        json!({"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}),
        "upstream kubelet's DeleteOptions"
    );
    // The status before the confirmation was terminal.
    let patches = s.up.sent("patch", "default/podpatch/web");
    let last: Value = serde_json::from_slice(&patches.last().unwrap().content_bytes()).unwrap();
    assert_eq!(last["status"]["phase"], "Succeeded", "{last}");
    assert_eq!(
        last["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    // The cloud deleted it and pushed the delete: the edge drops it and its containers.
    wait_for("web gone from the edge's store", T, || {
        s.edge.stored("Pod", "web").is_none().then_some(())
    });
    let c = cri::CriClient::new(&ctrd.endpoint()).unwrap();
    wait_for("web's containers and sandbox removed", T, || {
        // A transport error (the client's connection is redialled on the next call) is
        // only "not yet".
        let (cs, sbs) = smol::block_on(c.with(async {
            Some((
                c.list_containers(None).await.ok()?,
                c.list_pod_sandbox(None).await.ok()?,
            ))
        }))?;
        let mine = |l: &std::collections::HashMap<String, String>| {
            l.get("io.kubernetes.pod.name").map(String::as_str) == Some("web")
        };
        (!cs.iter().any(|x| mine(&x.labels)) && !sbs.iter().any(|x| mine(&x.labels))).then_some(())
    });
}

#[test]
fn the_kube_api_access_volume_gets_its_token_ca_and_namespace() {
    let ctrd = Containerd::start();
    let s = setup(Some(&ctrd));
    s.up.put_configmap(
        json!({"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nTEST\n"}}),
        false,
    );
    // The pod as a real apiserver admits it (ServiceAccount admission's volume and mount).
    s.up.put_pod(pod(
        "api",
        json!({"serviceAccountName": "default",
            "containers": [{"name": "app", "image": e2e::containerd::BUSYBOX, "command": ["sleep", "3600"],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                        {"name": "NODE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}}],
                "volumeMounts": [{"name": "kube-api-access-x7k2q", "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
            "volumes": [{"name": "kube-api-access-x7k2q", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}]}),
    ));
    wait_for("api Running", T, || running(&s.up, "api").then_some(()));
    let q = s.up.sent("query", "default/serviceaccounttoken/default");
    assert!(!q.is_empty(), "the token was asked for");
    let tr = &q[0].content;
    assert_eq!(tr["spec"]["expirationSeconds"], 3607);
    assert_eq!(tr["spec"]["boundObjectRef"]["kind"], "Pod");
    assert_eq!(tr["spec"]["boundObjectRef"]["name"], "api");
    let dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    assert!(exec(&ctrd, &s.up, "api", &["cat", &format!("{dir}/token")]).starts_with("test-token-"));
    assert_eq!(
        exec(&ctrd, &s.up, "api", &["cat", &format!("{dir}/ca.crt")]),
        "-----BEGIN CERTIFICATE-----\nTEST\n"
    );
    assert_eq!(
        exec(&ctrd, &s.up, "api", &["cat", &format!("{dir}/namespace")]),
        "default"
    );
    assert_eq!(
        exec(
            &ctrd,
            &s.up,
            "api",
            &["sh", "-c", "printf %s-%s \"$POD_NAME\" \"$NODE\""]
        ),
        "api-edge0"
    );
    let st = status_of(&s.up, "api");
    assert!(
        !st["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "EdgeUnsupportedFields"),
        "nothing unsupported in a standard pod: {st}"
    );
}

#[test]
fn an_existing_node_object_gets_the_whole_current_status() {
    let ctrd = Containerd::start();
    let s = setup_with(Some(&ctrd), |up| {
        // Registered before, by an older edgecore: stale facts and no runtime version.
        up.put_node(json!({"kind": "Node", "apiVersion": "v1",
            "metadata": {"name": "edge0", "uid": "old-uid", "resourceVersion": "1"},
            "status": {"nodeInfo": {"containerRuntimeVersion": "", "kubeletVersion": "v1.0.0"},
                "addresses": [{"type": "InternalIP", "address": "192.0.2.99"}, {"type": "Hostname", "address": "old-host"}]}}));
    });
    let node = wait_for("the node refreshed", T, || {
        let n = s.up.state.lock().unwrap().node.clone()?;
        n["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .filter(|v| v.starts_with("containerd://"))
            .map(|_| n.clone())
    });
    let st = &node["status"];
    assert_eq!(
        st["addresses"],
        json!([{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": "edge0"}]),
        "the address list replaced whole"
    );
    assert!(st["nodeInfo"]["kubeletVersion"]
        .as_str()
        .unwrap()
        .starts_with("v1.32.10-kubeedge-"));
    assert_eq!(st["capacity"]["pods"], "110");
    let q = |v: &Value| proto::quantity::parse(v.as_str().unwrap()).unwrap();
    assert!(q(&st["allocatable"]["memory"]) < q(&st["capacity"]["memory"]));
    let ready = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("True"), Some("EdgeReady"))
    );
    assert_eq!(
        node["metadata"]["uid"], "old-uid",
        "the existing object was patched, not replaced"
    );
}

#[test]
fn refused_status_reports_back_off_and_not_found_ends_them() {
    let s = setup(None);
    s.up.set_patch_answer(PatchAnswer::Fail);
    s.up.put_pod(pod(
        "web",
        json!({"containers": [{"name": "app", "image": "busybox:1"}]}),
    ));
    let patches = wait_for("four refused reports", T, || {
        let p = s.up.sent("patch", "default/podpatch/web");
        (p.len() >= 4).then_some(p)
    });
    let at: Vec<i64> = patches.iter().map(|m| m.header.timestamp).collect();
    let gaps: Vec<i64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, g) in gaps.iter().take(3).enumerate() {
        let want = 1000i64 << i;
        assert!(
            *g >= want - 150,
            "gap {i} is {g} ms, expected back-off of about {want} ms: {gaps:?}"
        );
    }
    // The status says why: this edge has no runtime.
    let report: Value = serde_json::from_slice(&patches[0].content_bytes()).unwrap();
    assert!(
        report["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .contains("no container runtime")
    );
    // NotFound is final: a pod whose first report is answered NotFound gets no other,
    // though the edge had the time to retry (1 s after an error; its lease renews every
    // second, and five renewals pass).
    s.up.set_patch_answer(PatchAnswer::NotFound);
    s.up.put_pod(pod(
        "fresh",
        json!({"containers": [{"name": "app", "image": "busybox:1"}]}),
    ));
    wait_for("fresh's report answered NotFound", T, || {
        (!s.up.sent("patch", "default/podpatch/fresh").is_empty()).then_some(())
    });
    let leases = s.up.sent("update", "kube-node-lease/").len();
    wait_for("five more lease renewals", T, || {
        (s.up.sent("update", "kube-node-lease/").len() >= leases + 5).then_some(())
    });
    assert_eq!(
        s.up.sent("patch", "default/podpatch/fresh").len(),
        1,
        "no report after NotFound"
    );
    drop(s.run);
}

#[test]
fn device_models_are_not_devices() {
    let s = setup(None);
    s.run.wait_log("MQTT: connected", T);
    let port: u16 = {
        let cfg: Value =
            serde_json::from_slice(&std::fs::read(s.edge.config_path()).unwrap()).unwrap();
        cfg["eventbus"]["broker"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let sub = Subscriber::start(port, &["$hw/events/node/edge0/membership/updated"]);
    let model = json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
        "metadata": {"name": "thermo-model", "namespace": "default", "resourceVersion": "5"},
        "spec": {"properties": [{"name": "temperature", "type": "INT"}]}});
    let device = json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
        "metadata": {"name": "thermo", "namespace": "default", "resourceVersion": "6"},
        "spec": {"deviceModelRef": {"name": "thermo-model"}, "nodeName": "edge0", "properties": [{"name": "temperature"}]}});
    let m_id =
        s.up.push(Operation::Insert, "default/devicemodel/thermo-model", model);
    let d_id =
        s.up.push(Operation::Insert, "default/device/thermo", device);
    wait_for("both acknowledged", T, || {
        (s.up.acked(&m_id) && s.up.acked(&d_id)).then_some(())
    });
    let m = sub.wait("$hw/events/node/edge0/membership/updated", T, |v| {
        !v["added_devices"].is_null()
    });
    let ids: Vec<&str> = m["added_devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["default/thermo"],
        "only the device joins the membership"
    );
    let announced: Vec<String> = sub
        .messages()
        .into_iter()
        .filter(|(t, _)| t.ends_with("membership/updated"))
        .map(|(_, p)| p)
        .collect();
    assert!(
        !announced.iter().any(|p| p.contains("thermo-model")),
        "the model was never announced: {announced:?}"
    );
}
