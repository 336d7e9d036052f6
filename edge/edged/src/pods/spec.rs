//! The part of a Kubernetes pod spec Edged runs, read from the pod's JSON once, and a list of
//! everything it does not support so that can be reported instead of silently ignored.
//!
//! Values the apiserver defaults (probe periods, volume modes, pull policy, grace period) are
//! defaulted here too, the same way, so a pod from a cloud that did not default it runs alike.

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// `resourceFieldRef`: a container's limit or request, in units of `divisor`.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceRef {
    /// Empty: the container the reference is in (env); volumes must name one.
    pub container: String,
    /// `limits.cpu`, `requests.memory`, …
    pub resource: String,
    pub divisor: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum EnvSource {
    Value(String),
    ConfigMapKey {
        name: String,
        key: String,
        optional: bool,
    },
    SecretKey {
        name: String,
        key: String,
        optional: bool,
    },
    /// `fieldRef.fieldPath`: `metadata.name`, `status.podIP`, …
    Field(String),
    Resource(ResourceRef),
}

/// An `envFrom` source.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvFrom {
    pub secret: bool,
    pub name: String,
    pub prefix: String,
    pub optional: bool,
}

/// A `KeyToPath` item of a configMap or secret volume.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyToPath {
    pub key: String,
    pub path: String,
    pub mode: Option<u32>,
}

/// A downward API item: a file holding a field or a resource value.
#[derive(Clone, Debug, PartialEq)]
pub struct DownwardItem {
    pub path: String,
    pub field: Option<String>,
    pub resource: Option<ResourceRef>,
    pub mode: Option<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ProjectedSource {
    ConfigMap {
        name: String,
        optional: bool,
        items: Option<Vec<KeyToPath>>,
    },
    Secret {
        name: String,
        optional: bool,
        items: Option<Vec<KeyToPath>>,
    },
    DownwardApi(Vec<DownwardItem>),
    Token {
        audience: String,
        expiration_secs: u64,
        path: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Volume {
    ConfigMap {
        name: String,
        optional: bool,
        items: Option<Vec<KeyToPath>>,
        mode: u32,
    },
    Secret {
        name: String,
        optional: bool,
        items: Option<Vec<KeyToPath>>,
        mode: u32,
    },
    EmptyDir,
    HostPath {
        path: String,
    },
    DownwardApi {
        items: Vec<DownwardItem>,
        mode: u32,
    },
    Projected {
        sources: Vec<ProjectedSource>,
        mode: u32,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Mount {
    pub volume: String,
    pub path: String,
    pub read_only: bool,
    pub sub_path: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ProbeAction {
    Exec(Vec<String>),
    Tcp { port: u16 },
    Http { port: u16, path: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub action: ProbeAction,
    pub initial_delay_secs: u64,
    pub period_secs: u64,
    pub timeout_secs: u64,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: String,
    pub env: Vec<(String, EnvSource)>,
    pub env_from: Vec<EnvFrom>,
    pub mounts: Vec<Mount>,
    pub pull: PullPolicy,
    pub cpu_millis_limit: Option<u64>,
    pub cpu_millis_request: Option<u64>,
    pub memory_limit: Option<u64>,
    pub memory_request: Option<u64>,
    pub liveness: Option<Probe>,
    pub readiness: Option<Probe>,
}

/// A deletion the cloud asked for (`metadata.deletionTimestamp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deletion {
    /// `deletionGracePeriodSeconds` (else the pod's grace period), at least 1 as kubelet
    /// clamps it.
    pub grace_secs: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PodSpec {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub node_name: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub host_network: bool,
    /// `imagePullSecrets` names.
    pub pull_secrets: Vec<String>,
    pub restart: RestartPolicy,
    pub containers: Vec<Container>,
    pub volumes: BTreeMap<String, Volume>,
    /// `terminationGracePeriodSeconds` (default 30).
    pub grace_secs: u64,
    pub deletion: Option<Deletion>,
    /// Fields present in the pod that Edged does not act on, by path.
    pub unsupported: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect()
}

fn port(v: &Value) -> Option<u16> {
    v.as_u64().and_then(|p| u16::try_from(p).ok())
}

fn mode(v: &Value) -> Option<u32> {
    v.as_u64()
        .and_then(|m| u32::try_from(m).ok())
        .filter(|m| *m <= 0o777)
}

/// `0644`, the apiserver's default file mode for these volumes.
pub const DEFAULT_MODE: u32 = 0o644;

fn probe(v: &Value, path: &str, unsupported: &mut Vec<String>) -> Option<Probe> {
    if v.is_null() {
        return None;
    }
    let action = if let Some(cmd) = v["exec"]["command"].as_array() {
        ProbeAction::Exec(strings(&Value::Array(cmd.clone())))
    } else if let Some(p) = port(&v["tcpSocket"]["port"]) {
        ProbeAction::Tcp { port: p }
    } else if let Some(p) = port(&v["httpGet"]["port"]) {
        ProbeAction::Http {
            port: p,
            path: v["httpGet"]["path"].as_str().unwrap_or("/").to_owned(),
        }
    } else {
        unsupported.push(format!(
            "{path} (only exec, tcpSocket and httpGet with a numeric port)"
        ));
        return None;
    };
    let n = |k: &str, d: u64| v[k].as_u64().filter(|x| *x > 0).unwrap_or(d);
    Some(Probe {
        action,
        initial_delay_secs: v["initialDelaySeconds"].as_u64().unwrap_or(0),
        period_secs: n("periodSeconds", 10),
        timeout_secs: n("timeoutSeconds", 1),
        failure_threshold: n("failureThreshold", 3) as u32,
        success_threshold: n("successThreshold", 1) as u32,
    })
}

fn items(v: &Value) -> Option<Vec<KeyToPath>> {
    v.as_array().map(|a| {
        a.iter()
            .map(|i| KeyToPath {
                key: i["key"].as_str().unwrap_or("").to_owned(),
                path: i["path"].as_str().unwrap_or("").to_owned(),
                mode: mode(&i["mode"]),
            })
            .collect()
    })
}

fn resource_ref(v: &Value) -> Option<ResourceRef> {
    v.as_object()?;
    Some(ResourceRef {
        container: v["containerName"].as_str().unwrap_or("").to_owned(),
        resource: v["resource"].as_str().unwrap_or("").to_owned(),
        divisor: match &v["divisor"] {
            Value::String(s) if !s.is_empty() && s != "0" => s.clone(),
            Value::Number(n) if n.as_f64().is_some_and(|x| x > 0.0) => n.to_string(),
            _ => "1".into(),
        },
    })
}

fn downward_items(v: &Value) -> Vec<DownwardItem> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|i| DownwardItem {
            path: i["path"].as_str().unwrap_or("").to_owned(),
            field: i["fieldRef"]["fieldPath"].as_str().map(str::to_owned),
            resource: resource_ref(&i["resourceFieldRef"]),
            mode: mode(&i["mode"]),
        })
        .collect()
}

const CONTAINER_FIELDS: &[&str] = &[
    "name",
    "image",
    "command",
    "args",
    "workingDir",
    "env",
    "envFrom",
    "volumeMounts",
    "imagePullPolicy",
    "resources",
    "livenessProbe",
    "readinessProbe",
    "ports",
    "terminationMessagePath",
    "terminationMessagePolicy",
];
const SPEC_FIELDS: &[&str] = &[
    "containers",
    "volumes",
    "restartPolicy",
    "hostNetwork",
    "nodeName",
    "terminationGracePeriodSeconds",
    "dnsPolicy",
    "schedulerName",
    "securityContext",
    "serviceAccountName",
    "serviceAccount",
    "automountServiceAccountToken",
    "tolerations",
    "priority",
    "enableServiceLinks",
    "preemptionPolicy",
];

/// The image pull policy the apiserver would default: `Always` without a tag or digest.
fn default_pull(image: &str) -> PullPolicy {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return PullPolicy::IfNotPresent;
    }
    match last.split_once(':') {
        None => PullPolicy::Always,
        Some((_, "latest")) => PullPolicy::Always,
        Some(_) => PullPolicy::IfNotPresent,
    }
}

fn quantity(v: &Value, millis: bool) -> Option<u64> {
    match v {
        Value::String(s) => proto::quantity::units(s, millis),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| *f >= 0.0)
            .map(|f| (f * if millis { 1000.0 } else { 1.0 }).ceil() as u64),
        _ => None,
    }
}

impl PodSpec {
    /// Reads a pod object. Fails only when the pod cannot be run at all.
    pub fn parse(pod: &Value) -> Result<PodSpec, String> {
        let meta = &pod["metadata"];
        let spec = &pod["spec"];
        let uid = meta["uid"]
            .as_str()
            .ok_or("metadata.uid missing")?
            .to_owned();
        let mut unsupported = Vec::new();
        if let Some(obj) = spec.as_object() {
            for k in obj.keys() {
                if !SPEC_FIELDS.contains(&k.as_str()) {
                    unsupported.push(format!("spec.{k}"));
                }
            }
        }
        let restart = match spec["restartPolicy"].as_str().unwrap_or("Always") {
            "OnFailure" => RestartPolicy::OnFailure,
            "Never" => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        };
        let mut volumes = BTreeMap::new();
        for (i, v) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
            let name = v["name"].as_str().unwrap_or("").to_owned();
            let default_mode = |src: &Value| mode(&src["defaultMode"]).unwrap_or(DEFAULT_MODE);
            let vol = if let Some(cm) = v.get("configMap") {
                Volume::ConfigMap {
                    name: cm["name"].as_str().unwrap_or("").to_owned(),
                    optional: cm["optional"] == true,
                    items: items(&cm["items"]),
                    mode: default_mode(cm),
                }
            } else if let Some(s) = v.get("secret") {
                Volume::Secret {
                    name: s["secretName"].as_str().unwrap_or("").to_owned(),
                    optional: s["optional"] == true,
                    items: items(&s["items"]),
                    mode: default_mode(s),
                }
            } else if let Some(d) = v.get("downwardAPI") {
                Volume::DownwardApi {
                    items: downward_items(&d["items"]),
                    mode: default_mode(d),
                }
            } else if let Some(p) = v.get("projected") {
                let mut sources = Vec::new();
                for (j, src) in p["sources"].as_array().into_iter().flatten().enumerate() {
                    if let Some(cm) = src.get("configMap") {
                        sources.push(ProjectedSource::ConfigMap {
                            name: cm["name"].as_str().unwrap_or("").to_owned(),
                            optional: cm["optional"] == true,
                            items: items(&cm["items"]),
                        });
                    } else if let Some(s) = src.get("secret") {
                        sources.push(ProjectedSource::Secret {
                            name: s["name"].as_str().unwrap_or("").to_owned(),
                            optional: s["optional"] == true,
                            items: items(&s["items"]),
                        });
                    } else if let Some(d) = src.get("downwardAPI") {
                        sources.push(ProjectedSource::DownwardApi(downward_items(&d["items"])));
                    } else if let Some(t) = src.get("serviceAccountToken") {
                        sources.push(ProjectedSource::Token {
                            audience: t["audience"].as_str().unwrap_or("").to_owned(),
                            expiration_secs: t["expirationSeconds"].as_u64().unwrap_or(3600),
                            path: t["path"].as_str().unwrap_or("").to_owned(),
                        });
                    } else {
                        let kind = src
                            .as_object()
                            .and_then(|o| o.keys().next().cloned())
                            .unwrap_or_default();
                        unsupported
                            .push(format!("spec.volumes[{i}].projected.sources[{j}].{kind}"));
                    }
                }
                Volume::Projected {
                    sources,
                    mode: default_mode(p),
                }
            } else if v.get("emptyDir").is_some() {
                Volume::EmptyDir
            } else if let Some(p) = v["hostPath"]["path"].as_str() {
                Volume::HostPath { path: p.to_owned() }
            } else if v.as_object().is_some_and(|o| o.len() == 1) {
                Volume::EmptyDir // no source: the apiserver's default
            } else {
                let kind = v
                    .as_object()
                    .and_then(|o| o.keys().find(|k| *k != "name").cloned())
                    .unwrap_or_default();
                unsupported.push(format!("spec.volumes[{i}].{kind}"));
                continue;
            };
            volumes.insert(name, vol);
        }
        let mut containers = Vec::new();
        for (i, c) in spec["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let path = format!("spec.containers[{i}]");
            if let Some(obj) = c.as_object() {
                for k in obj.keys() {
                    if !CONTAINER_FIELDS.contains(&k.as_str()) {
                        unsupported.push(format!("{path}.{k}"));
                    }
                }
            }
            let image = c["image"].as_str().unwrap_or("").to_owned();
            let pull = match c["imagePullPolicy"].as_str() {
                Some("Always") => PullPolicy::Always,
                Some("Never") => PullPolicy::Never,
                Some("IfNotPresent") => PullPolicy::IfNotPresent,
                _ => default_pull(&image),
            };
            let mut env = Vec::new();
            for (j, e) in c["env"].as_array().into_iter().flatten().enumerate() {
                let name = e["name"].as_str().unwrap_or("").to_owned();
                let from = &e["valueFrom"];
                let src = if let Some(v) = e["value"].as_str() {
                    EnvSource::Value(v.to_owned())
                } else if let Some(r) = from.get("configMapKeyRef") {
                    EnvSource::ConfigMapKey {
                        name: r["name"].as_str().unwrap_or("").into(),
                        key: r["key"].as_str().unwrap_or("").into(),
                        optional: r["optional"] == true,
                    }
                } else if let Some(r) = from.get("secretKeyRef") {
                    EnvSource::SecretKey {
                        name: r["name"].as_str().unwrap_or("").into(),
                        key: r["key"].as_str().unwrap_or("").into(),
                        optional: r["optional"] == true,
                    }
                } else if let Some(f) = from["fieldRef"]["fieldPath"].as_str() {
                    EnvSource::Field(f.to_owned())
                } else if let Some(r) = resource_ref(&from["resourceFieldRef"]) {
                    EnvSource::Resource(r)
                } else if e.get("valueFrom").is_some_and(|v| !v.is_null()) {
                    unsupported.push(format!("{path}.env[{j}].valueFrom"));
                    continue;
                } else {
                    EnvSource::Value(String::new())
                };
                env.push((name, src));
            }
            let mut env_from = Vec::new();
            for e in c["envFrom"].as_array().into_iter().flatten() {
                let prefix = e["prefix"].as_str().unwrap_or("").to_owned();
                for (key, secret) in [("configMapRef", false), ("secretRef", true)] {
                    if let Some(n) = e[key]["name"].as_str() {
                        env_from.push(EnvFrom {
                            secret,
                            name: n.to_owned(),
                            prefix: prefix.clone(),
                            optional: e[key]["optional"] == true,
                        });
                    }
                }
            }
            let mounts = c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| Mount {
                    volume: m["name"].as_str().unwrap_or("").to_owned(),
                    path: m["mountPath"].as_str().unwrap_or("").to_owned(),
                    read_only: m["readOnly"] == true,
                    sub_path: m["subPath"]
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                })
                .collect();
            let res = &c["resources"];
            // A limit without a request requests the limit (the apiserver's default).
            let limit_or = |kind: &str, millis: bool| quantity(&res["limits"][kind], millis);
            let request = |kind: &str, millis: bool| {
                quantity(&res["requests"][kind], millis).or_else(|| limit_or(kind, millis))
            };
            containers.push(Container {
                name: c["name"].as_str().unwrap_or("").to_owned(),
                image,
                command: strings(&c["command"]),
                args: strings(&c["args"]),
                working_dir: c["workingDir"].as_str().unwrap_or("").to_owned(),
                env,
                env_from,
                mounts,
                pull,
                cpu_millis_limit: limit_or("cpu", true),
                cpu_millis_request: request("cpu", true),
                memory_limit: limit_or("memory", false),
                memory_request: request("memory", false),
                liveness: probe(
                    &c["livenessProbe"],
                    &format!("{path}.livenessProbe"),
                    &mut unsupported,
                ),
                readiness: probe(
                    &c["readinessProbe"],
                    &format!("{path}.readinessProbe"),
                    &mut unsupported,
                ),
            });
        }
        if containers.is_empty() {
            return Err("spec.containers is empty".into());
        }
        let grace_secs = spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
        let deletion = meta
            .get("deletionTimestamp")
            .filter(|t| !t.is_null())
            .map(|_| Deletion {
                grace_secs: meta["deletionGracePeriodSeconds"]
                    .as_u64()
                    .unwrap_or(grace_secs)
                    .max(1),
            });
        Ok(PodSpec {
            uid,
            namespace: meta["namespace"].as_str().unwrap_or("default").to_owned(),
            name: meta["name"].as_str().unwrap_or("").to_owned(),
            node_name: spec["nodeName"].as_str().unwrap_or("").to_owned(),
            service_account: spec["serviceAccountName"]
                .as_str()
                .or(spec["serviceAccount"].as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or("default")
                .to_owned(),
            labels: string_map(&meta["labels"]),
            annotations: string_map(&meta["annotations"]),
            host_network: spec["hostNetwork"] == true,
            pull_secrets: spec["imagePullSecrets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["name"].as_str().map(str::to_owned))
                .collect(),
            restart,
            containers,
            volumes,
            grace_secs,
            deletion,
            unsupported,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_what_edged_runs_and_lists_what_it_does_not() {
        let pod = json!({"metadata": {"uid": "u1", "name": "web", "namespace": "default", "labels": {"app": "w"}},
            "spec": {"restartPolicy": "OnFailure", "hostNetwork": true, "initContainers": [{}],
                "volumes": [{"name": "cfg", "configMap": {"name": "app", "items": [{"key": "k", "path": "p", "mode": 256}]}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "x"}}, {"name": "tmp", "emptyDir": {}},
                    {"name": "kube-api-access-abcde", "projected": {"defaultMode": 420, "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                        {"clusterTrustBundle": {}}]}}],
                "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sh"], "args": ["-c", "echo"],
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "k"}}},
                        {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "D", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                        {"name": "E", "valueFrom": {"fileKeyRef": {}}}],
                    "volumeMounts": [{"name": "cfg", "mountPath": "/config", "readOnly": true}],
                    "resources": {"limits": {"cpu": "250m", "memory": "32Mi"}},
                    "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 2},
                    "readinessProbe": {"grpc": {"port": 1}},
                    "stdin": true}]}});
        let p = PodSpec::parse(&pod).unwrap();
        assert_eq!(p.restart, RestartPolicy::OnFailure);
        assert!(p.host_network);
        assert_eq!(p.labels["app"], "w");
        assert_eq!(p.service_account, "default");
        assert!(p.deletion.is_none());
        let c = &p.containers[0];
        assert_eq!(c.pull, PullPolicy::IfNotPresent);
        assert_eq!(c.cpu_millis_limit, Some(250));
        assert_eq!(c.cpu_millis_request, Some(250), "a limit requests itself");
        assert_eq!(c.memory_limit, Some(32 << 20));
        assert_eq!(c.env.len(), 4);
        assert_eq!(c.env[2].1, EnvSource::Field("metadata.name".into()));
        assert!(
            matches!(&c.env[3].1, EnvSource::Resource(r) if r.divisor == "1Mi" && r.resource == "limits.memory")
        );
        assert_eq!(c.liveness.as_ref().unwrap().period_secs, 2);
        assert!(c.readiness.is_none());
        assert_eq!(p.volumes.len(), 3);
        assert!(
            matches!(&p.volumes["cfg"], Volume::ConfigMap { items: Some(i), mode: 0o644, .. } if i[0].mode == Some(256))
        );
        match &p.volumes["kube-api-access-abcde"] {
            Volume::Projected { sources, mode } => {
                assert_eq!(*mode, 420);
                assert_eq!(sources.len(), 3);
                assert!(
                    matches!(&sources[0], ProjectedSource::Token { expiration_secs: 3607, path, .. } if path == "token")
                );
            }
            other => panic!("{other:?}"),
        }
        for want in [
            "spec.initContainers",
            "spec.volumes[1].persistentVolumeClaim",
            "spec.volumes[3].projected.sources[3].clusterTrustBundle",
            "spec.containers[0].env[4].valueFrom",
            "spec.containers[0].readinessProbe",
            "spec.containers[0].stdin",
        ] {
            assert!(
                p.unsupported.iter().any(|u| u.starts_with(want)),
                "{want} not reported in {:?}",
                p.unsupported
            );
        }
        let latest = json!({"metadata": {"uid": "u"}, "spec": {"containers": [{"name": "a", "image": "busybox"}]}});
        assert_eq!(
            PodSpec::parse(&latest).unwrap().containers[0].pull,
            PullPolicy::Always
        );
        assert!(
            PodSpec::parse(&json!({"metadata": {"uid": "u"}, "spec": {"containers": []}})).is_err()
        );
    }

    #[test]
    fn deletion_takes_the_grace_period_the_cloud_gave() {
        let pod = |meta: Value| json!({"metadata": meta, "spec": {"terminationGracePeriodSeconds": 20, "containers": [{"name": "a", "image": "i:1"}]}});
        let p = PodSpec::parse(&pod(json!({"uid": "u", "deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 5}))).unwrap();
        assert_eq!(p.deletion, Some(Deletion { grace_secs: 5 }));
        let p = PodSpec::parse(&pod(
            json!({"uid": "u", "deletionTimestamp": "2026-01-01T00:00:00Z"}),
        ))
        .unwrap();
        assert_eq!(p.deletion, Some(Deletion { grace_secs: 20 }));
        let p = PodSpec::parse(&pod(json!({"uid": "u", "deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 0}))).unwrap();
        assert_eq!(
            p.deletion,
            Some(Deletion { grace_secs: 1 }),
            "kubelet's floor"
        );
    }
}
