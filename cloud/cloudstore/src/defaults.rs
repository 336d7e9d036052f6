//! The defaults kube-apiserver fills in when it stores an object (Kubernetes v1.32), so what
//! cloudcore relays to an edge is what a kubelet expects to find: an upstream kubelet refuses
//! a configMap volume without `defaultMode`, ignores `hostNetwork` without a
//! `securityContext`, cannot build service environment variables without
//! `enableServiceLinks`, and would tick a probe without `periodSeconds` at zero.
//!
//! Written from core/v1's defaulting functions (`SetDefaults_*` and the generated
//! `+default` markers), the mutating admission plugins that are on by default and act without
//! other objects (Priority without a default class, DefaultTolerationSeconds), and the pod
//! strategy's create-time status. Like the apiserver, defaults are applied on every write
//! (create, update, and the result of a patch), and only fill what is empty.
//!
//! Not applied, and why: the ServiceAccount admission plugin (cloudcore serves no
//! ServiceAccount objects yet, and upstream refuses pods whose account does not exist);
//! TaintNodesByCondition (no node-lifecycle controller here would ever lift the taint);
//! quantity canonicalisation (`0.5` → `500m`), which changes spelling, not meaning.

use serde_json::{json, Map, Value};

use crate::Kind;

/// `0644`, the mode of projected, secret, configMap and downwardAPI files.
pub const DEFAULT_MODE: u64 = 420;
/// Seconds a pod tolerates a not-ready or unreachable node (DefaultTolerationSeconds).
pub const DEFAULT_TOLERATION_SECONDS: u64 = 300;

fn obj(v: &mut Value) -> Option<&mut Map<String, Value>> {
    v.as_object_mut()
}

/// Sets `m[k] = v` when the key is absent or null.
fn fill(m: &mut Map<String, Value>, k: &str, v: Value) {
    if m.get(k).is_none_or(Value::is_null) {
        m.insert(k.to_owned(), v);
    }
}

/// Sets `m[k] = v` when absent, null, or an empty string.
fn fill_str(m: &mut Map<String, Value>, k: &str, v: &str) {
    if m.get(k)
        .is_none_or(|x| x.is_null() || x.as_str() == Some(""))
    {
        m.insert(k.to_owned(), json!(v));
    }
}

/// Sets a numeric field when absent, null or zero (Go's zero value means "unset").
fn fill_nonzero(m: &mut Map<String, Value>, k: &str, v: u64) {
    if m.get(k)
        .is_none_or(|x| x.is_null() || x.as_i64() == Some(0))
    {
        m.insert(k.to_owned(), json!(v));
    }
}

fn each<'a>(v: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    v.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// Applies the defaults of `kind` to `object` in place. `create` adds what only creation
/// does (a pod's initial status).
pub fn apply(kind: Kind, object: &mut Value, create: bool) {
    match kind {
        Kind::Pod => pod(object, create),
        Kind::Secret => {
            if let Some(m) = obj(object) {
                fill_str(m, "type", "Opaque");
            }
        }
        // ConfigMap: `data = {}` when nil, invisible on the wire. CRDs: no schema defaults.
        Kind::ConfigMap | Kind::Device | Kind::DeviceModel => {}
    }
}

/// Node defaults: `allocatable` is `capacity` when the node reports none.
pub fn node(object: &mut Value) {
    let Some(status) = object.get_mut("status").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(cap) = status.get("capacity").filter(|c| c.is_object()).cloned() {
        fill(status, "allocatable", cap);
    }
}

/// `imagePullPolicy` from the image reference: `Always` only when it has neither a tag nor a
/// digest (or the tag is `latest`), as `SetDefaults_Container` decides with ParseImageName.
pub fn pull_policy(image: &str) -> &'static str {
    // Names must be lower case; an unparseable reference gets IfNotPresent.
    let name_part = image.split('@').next().unwrap_or("");
    if image.is_empty() || name_part.chars().any(|c| c.is_ascii_uppercase()) {
        return "IfNotPresent";
    }
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        None => "Always",
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn pod(pod: &mut Value, create: bool) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let host_network = spec.get("hostNetwork") == Some(&json!(true));
    // SetDefaults_PodSpec.
    fill_str(spec, "dnsPolicy", "ClusterFirst");
    fill_str(spec, "restartPolicy", "Always");
    fill(spec, "securityContext", json!({}));
    match spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
    {
        None => {
            spec.insert("terminationGracePeriodSeconds".into(), json!(30));
        }
        // The v1 conversion forces a negative grace period to 1.
        Some(n) if n < 0 => {
            spec.insert("terminationGracePeriodSeconds".into(), json!(1));
        }
        Some(_) => {}
    }
    fill_str(spec, "schedulerName", "default-scheduler");
    // SetDefaults_Pod.
    fill(spec, "enableServiceLinks", json!(true));
    // The deprecated serviceAccount mirrors serviceAccountName (v1 conversion).
    let sa = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| spec.get("serviceAccount").and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    if let Some(sa) = sa {
        spec.insert("serviceAccountName".into(), json!(sa));
        spec.insert("serviceAccount".into(), json!(sa));
    }
    // Priority admission without a global default PriorityClass.
    if spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        fill(spec, "priority", json!(0));
        fill_str(spec, "preemptionPolicy", "PreemptLowerPriority");
    }
    tolerations(spec);
    let mut spec_v = Value::Object(std::mem::take(spec));
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        let pod_level = list != "ephemeralContainers";
        for c in each(&mut spec_v, list) {
            container(c, pod_level, host_network);
        }
    }
    for v in each(&mut spec_v, "volumes") {
        volume(v);
    }
    *spec = match spec_v {
        Value::Object(m) => m,
        _ => unreachable!("made from a map above"),
    };
    if create {
        // The pod strategy replaces the status on create (a client's qosClass survives).
        let qos = pod["status"]["qosClass"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| qos_class(&pod["spec"]).to_owned());
        pod["status"] = json!({ "phase": "Pending", "qosClass": qos });
    }
}

/// DefaultTolerationSeconds: tolerate not-ready and unreachable nodes for 300 s unless the
/// pod already tolerates them (an empty key or effect counts as matching).
fn tolerations(spec: &mut Map<String, Value>) {
    let list = spec.entry("tolerations").or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    let items = list.as_array_mut().expect("made a list above");
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let present = items.iter().any(|t| {
            let k = t["key"].as_str().unwrap_or("");
            let e = t["effect"].as_str().unwrap_or("");
            (k.is_empty() || k == key) && (e.is_empty() || e == "NoExecute")
        });
        if !present {
            items.push(
                json!({ "key": key, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS }),
            );
        }
    }
}

fn probe(p: &mut Map<String, Value>) {
    fill_nonzero(p, "timeoutSeconds", 1);
    fill_nonzero(p, "periodSeconds", 10);
    fill_nonzero(p, "successThreshold", 1);
    fill_nonzero(p, "failureThreshold", 3);
    http_get(p);
    if let Some(g) = p.get_mut("grpc").and_then(Value::as_object_mut) {
        fill(g, "service", json!(""));
    }
}

fn http_get(handler: &mut Map<String, Value>) {
    if let Some(h) = handler.get_mut("httpGet").and_then(Value::as_object_mut) {
        fill_str(h, "path", "/");
        fill_str(h, "scheme", "HTTP");
    }
}

fn container(c: &mut Map<String, Value>, pod_level: bool, host_network: bool) {
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    fill_str(c, "imagePullPolicy", pull_policy(&image));
    fill_str(c, "terminationMessagePath", "/dev/termination-log");
    fill_str(c, "terminationMessagePolicy", "File");
    let res = c.entry("resources").or_insert_with(|| json!({}));
    if pod_level {
        // Limits without requests: the request is the limit.
        if let Some(limits) = res.get("limits").and_then(Value::as_object).cloned() {
            let req = res
                .as_object_mut()
                .map(|r| r.entry("requests").or_insert_with(|| json!({})));
            if let Some(Value::Object(req)) = req {
                for (k, v) in limits {
                    req.entry(k).or_insert(v);
                }
            }
        }
    }
    let mut cv = Value::Object(std::mem::take(c));
    for port in each(&mut cv, "ports") {
        fill_str(port, "protocol", "TCP");
        if pod_level
            && host_network
            && port.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0
        {
            if let Some(cp) = port.get("containerPort").cloned() {
                port.insert("hostPort".into(), cp);
            }
        }
    }
    for e in each(&mut cv, "env") {
        if let Some(f) = e
            .get_mut("valueFrom")
            .and_then(|v| v.get_mut("fieldRef"))
            .and_then(Value::as_object_mut)
        {
            fill_str(f, "apiVersion", "v1");
        }
    }
    for name in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = cv.get_mut(name).and_then(Value::as_object_mut) {
            probe(p);
        }
    }
    if let Some(l) = cv.get_mut("lifecycle").and_then(Value::as_object_mut) {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = l.get_mut(hook).and_then(Value::as_object_mut) {
                http_get(h);
            }
        }
    }
    *c = match cv {
        Value::Object(m) => m,
        _ => unreachable!("made from a map above"),
    };
}

fn field_ref_items(source: &mut Value) {
    for item in each(source, "items") {
        if let Some(f) = item.get_mut("fieldRef").and_then(Value::as_object_mut) {
            fill_str(f, "apiVersion", "v1");
        }
    }
}

fn volume(v: &mut Map<String, Value>) {
    const SOURCES: &[&str] = &[
        "hostPath",
        "emptyDir",
        "gcePersistentDisk",
        "awsElasticBlockStore",
        "gitRepo",
        "secret",
        "nfs",
        "iscsi",
        "glusterfs",
        "persistentVolumeClaim",
        "rbd",
        "flexVolume",
        "cinder",
        "cephfs",
        "flocker",
        "downwardAPI",
        "fc",
        "azureFile",
        "configMap",
        "vsphereVolume",
        "quobyte",
        "azureDisk",
        "photonPersistentDisk",
        "projected",
        "portworxVolume",
        "scaleIO",
        "storageos",
        "csi",
        "ephemeral",
        "image",
    ];
    if !SOURCES
        .iter()
        .any(|s| v.get(*s).is_some_and(|x| !x.is_null()))
    {
        v.insert("emptyDir".into(), json!({}));
    }
    for src in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = v.get_mut(src).and_then(Value::as_object_mut) {
            fill(s, "defaultMode", json!(DEFAULT_MODE));
        }
    }
    if let Some(d) = v.get_mut("downwardAPI") {
        field_ref_items(d);
    }
    if let Some(p) = v.get_mut("projected") {
        for s in each(p, "sources") {
            if let Some(d) = s.get_mut("downwardAPI") {
                field_ref_items(d);
            }
            if let Some(t) = s
                .get_mut("serviceAccountToken")
                .and_then(Value::as_object_mut)
            {
                fill_nonzero(t, "expirationSeconds", 3600);
            }
        }
    }
    if let Some(h) = v.get_mut("hostPath").and_then(Value::as_object_mut) {
        fill(h, "type", json!(""));
    }
}

/// Whether a quantity is given and above zero (as `ComputePodQOS` counts it).
fn positive(q: Option<&Value>) -> bool {
    match q {
        Some(Value::String(s)) => proto::quantity::parse(s).is_some_and(|v| v > 0.0),
        Some(Value::Number(n)) => n.as_f64().is_some_and(|v| v > 0.0),
        _ => false,
    }
}

/// The pod's QoS class from its containers' and init containers' cpu and memory.
pub fn qos_class(spec: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            let (req, lim) = (&c["resources"]["requests"], &c["resources"]["limits"]);
            for r in ["cpu", "memory"] {
                let (has_req, has_lim) = (positive(req.get(r)), positive(lim.get(r)));
                any |= has_req || has_lim;
                if !has_lim {
                    guaranteed = false;
                } else if has_req {
                    let parse = |v: &Value| v.as_str().and_then(proto::quantity::parse);
                    if parse(&req[r]) != parse(&lim[r]) {
                        guaranteed = false;
                    }
                }
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_pod_gets_what_the_apiserver_gives_it() {
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        apply(Kind::Pod, &mut p, true);
        let spec = &p["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["enableServiceLinks"], true);
        assert_eq!(spec["priority"], 0);
        assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
        assert_eq!(
            spec["tolerations"],
            json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ])
        );
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["resources"], json!({}));
        assert_eq!(
            p["status"],
            json!({"phase": "Pending", "qosClass": "BestEffort"})
        );
    }

    #[test]
    fn containers_probes_ports_and_volumes() {
        let mut p = json!({"spec": {"hostNetwork": true,
            "containers": [{"name": "c", "image": "localhost:5000/app:v1",
                "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP", "hostPort": 5353}],
                "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "livenessProbe": {"httpGet": {"port": 80}},
                "readinessProbe": {"grpc": {"port": 9}, "periodSeconds": 5},
                "lifecycle": {"preStop": {"httpGet": {"port": 80}}}}],
            "volumes": [{"name": "a"}, {"name": "b", "configMap": {"name": "x"}},
                {"name": "c", "secret": {"secretName": "s", "defaultMode": 256}},
                {"name": "d", "hostPath": {"path": "/x"}},
                {"name": "e", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}},
                    {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}]}});
        apply(Kind::Pod, &mut p, true);
        let c = &p["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(
            c["resources"]["requests"],
            json!({"cpu": "500m", "memory": "64Mi"})
        );
        assert_eq!(
            c["ports"][0],
            json!({"containerPort": 80, "protocol": "TCP", "hostPort": 80})
        );
        assert_eq!(c["ports"][1]["hostPort"], 5353, "a given hostPort stays");
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(c["readinessProbe"]["periodSeconds"], 5);
        assert_eq!(c["readinessProbe"]["grpc"]["service"], "");
        assert_eq!(c["lifecycle"]["preStop"]["httpGet"]["scheme"], "HTTP");
        let v = &p["spec"]["volumes"];
        assert_eq!(
            v[0]["emptyDir"],
            json!({}),
            "a volume without a source is an emptyDir"
        );
        assert_eq!(v[1]["configMap"]["defaultMode"], 420);
        assert_eq!(v[2]["secret"]["defaultMode"], 256);
        assert_eq!(v[3]["hostPath"]["type"], "");
        assert_eq!(v[4]["projected"]["defaultMode"], 420);
        assert_eq!(
            v[4]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            3600
        );
        assert_eq!(
            v[4]["projected"]["sources"][1]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"],
            "v1"
        );
        assert_eq!(
            p["status"]["qosClass"], "Guaranteed",
            "cpu and memory limits, requests copied from them"
        );
    }

    #[test]
    fn pull_policy_follows_the_tag_rule() {
        for (image, want) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("localhost:5000/nginx", "Always"),
            ("nginx:LATEST", "IfNotPresent"),
            ("nginx@sha256:abc", "IfNotPresent"),
            ("nginx:1.2@sha256:abc", "IfNotPresent"),
            ("localhost:5000/nginx:v1", "IfNotPresent"),
            ("NGINX", "IfNotPresent"),
            ("", "IfNotPresent"),
        ] {
            assert_eq!(pull_policy(image), want, "{image}");
        }
    }

    #[test]
    fn existing_values_tolerations_and_status_are_kept_where_they_should_be() {
        let mut p = json!({"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": -5,
            "serviceAccount": "robot", "priorityClassName": "high",
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "c", "image": "i:1", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]},
            "status": {"phase": "Running", "qosClass": "Guaranteed"}});
        apply(Kind::Pod, &mut p, false);
        assert_eq!(p["spec"]["restartPolicy"], "Never");
        assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 1);
        assert_eq!(p["spec"]["serviceAccountName"], "robot");
        assert!(
            p["spec"].get("priority").is_none(),
            "a named priority class is not defaulted"
        );
        assert_eq!(
            p["spec"]["tolerations"].as_array().unwrap().len(),
            1,
            "a toleration with an empty key and effect already covers both"
        );
        assert_eq!(p["status"]["phase"], "Running", "updates keep the status");
        let mut g = p.clone();
        g["status"] = json!({});
        apply(Kind::Pod, &mut g, true);
        assert_eq!(g["status"]["qosClass"], "Guaranteed");
    }

    #[test]
    fn secrets_and_nodes() {
        let mut s = json!({"data": {}});
        apply(Kind::Secret, &mut s, true);
        assert_eq!(s["type"], "Opaque");
        let mut n = json!({"status": {"capacity": {"cpu": "4"}}});
        node(&mut n);
        assert_eq!(n["status"]["allocatable"], json!({"cpu": "4"}));
    }
}
