//! The part of a Kubernetes pod spec Edged runs, read from the pod's JSON, and a list of
//! everything it does not support so that can be reported instead of silently ignored.

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
}

#[derive(Clone, Debug, PartialEq)]
pub enum Volume {
    ConfigMap { name: String, optional: bool },
    Secret { name: String, optional: bool },
    EmptyDir,
    HostPath { path: String },
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
    /// `envFrom`: whole configmaps (`true`) or secrets (`false`), with an optional prefix.
    pub env_from: Vec<(bool, String, String, bool)>,
    pub mounts: Vec<Mount>,
    pub pull: PullPolicy,
    pub cpu_millis_limit: Option<u64>,
    pub cpu_millis_request: Option<u64>,
    pub memory_limit: Option<u64>,
    pub liveness: Option<Probe>,
    pub readiness: Option<Probe>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PodSpec {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub host_network: bool,
    pub restart: RestartPolicy,
    pub containers: Vec<Container>,
    pub volumes: BTreeMap<String, Volume>,
    pub grace_secs: u64,
    /// Fields present in the pod that Edged does not act on, by path.
    pub unsupported: Vec<String>,
}

/// Parses a Kubernetes quantity (`100m`, `0.5`, `64Mi`, `1G`) as a number of base units;
/// `millis` returns thousandths (for CPU).
pub fn quantity(s: &str, millis: bool) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "m" => 0.001,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1048576.0,
        "Gi" => 1073741824.0,
        "Ti" => 1099511627776.0,
        _ => return None,
    };
    let v = n * mult * if millis { 1000.0 } else { 1.0 };
    (v.is_finite() && v >= 0.0).then(|| v.round() as u64)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn port(v: &Value) -> Option<u16> {
    v.as_u64().and_then(|p| u16::try_from(p).ok())
}

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
    let n = |k: &str, d: u64| v[k].as_u64().unwrap_or(d);
    Some(Probe {
        action,
        initial_delay_secs: n("initialDelaySeconds", 0),
        period_secs: n("periodSeconds", 10).max(1),
        timeout_secs: n("timeoutSeconds", 1).max(1),
        failure_threshold: n("failureThreshold", 3).max(1) as u32,
        success_threshold: n("successThreshold", 1).max(1) as u32,
    })
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
    "tolerations",
    "priority",
    "enableServiceLinks",
    "preemptionPolicy",
];

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
            let vol = if let Some(cm) = v.get("configMap") {
                if cm.get("items").is_some() {
                    unsupported.push(format!("spec.volumes[{i}].configMap.items"));
                }
                Volume::ConfigMap {
                    name: cm["name"].as_str().unwrap_or("").to_owned(),
                    optional: cm["optional"] == true,
                }
            } else if let Some(s) = v.get("secret") {
                if s.get("items").is_some() {
                    unsupported.push(format!("spec.volumes[{i}].secret.items"));
                }
                Volume::Secret {
                    name: s["secretName"].as_str().unwrap_or("").to_owned(),
                    optional: s["optional"] == true,
                }
            } else if v.get("emptyDir").is_some() {
                Volume::EmptyDir
            } else if let Some(p) = v["hostPath"]["path"].as_str() {
                Volume::HostPath { path: p.to_owned() }
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
            let tagged = image
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':') || last.contains('@'));
            let latest = !tagged || image.ends_with(":latest");
            let pull = match c["imagePullPolicy"].as_str() {
                Some("Always") => PullPolicy::Always,
                Some("Never") => PullPolicy::Never,
                Some("IfNotPresent") => PullPolicy::IfNotPresent,
                _ if latest => PullPolicy::Always,
                _ => PullPolicy::IfNotPresent,
            };
            let mut env = Vec::new();
            for (j, e) in c["env"].as_array().into_iter().flatten().enumerate() {
                let name = e["name"].as_str().unwrap_or("").to_owned();
                let src = if let Some(v) = e["value"].as_str() {
                    EnvSource::Value(v.to_owned())
                } else if let Some(r) = e["valueFrom"].get("configMapKeyRef") {
                    EnvSource::ConfigMapKey {
                        name: r["name"].as_str().unwrap_or("").into(),
                        key: r["key"].as_str().unwrap_or("").into(),
                        optional: r["optional"] == true,
                    }
                } else if let Some(r) = e["valueFrom"].get("secretKeyRef") {
                    EnvSource::SecretKey {
                        name: r["name"].as_str().unwrap_or("").into(),
                        key: r["key"].as_str().unwrap_or("").into(),
                        optional: r["optional"] == true,
                    }
                } else if e.get("valueFrom").is_some() {
                    unsupported.push(format!(
                        "{path}.env[{j}].valueFrom (only configMapKeyRef and secretKeyRef)"
                    ));
                    continue;
                } else {
                    EnvSource::Value(String::new())
                };
                env.push((name, src));
            }
            let mut env_from = Vec::new();
            for e in c["envFrom"].as_array().into_iter().flatten() {
                let prefix = e["prefix"].as_str().unwrap_or("").to_owned();
                if let Some(n) = e["configMapRef"]["name"].as_str() {
                    env_from.push((
                        true,
                        n.to_owned(),
                        prefix,
                        e["configMapRef"]["optional"] == true,
                    ));
                } else if let Some(n) = e["secretRef"]["name"].as_str() {
                    env_from.push((
                        false,
                        n.to_owned(),
                        prefix,
                        e["secretRef"]["optional"] == true,
                    ));
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
                cpu_millis_limit: res["limits"]["cpu"]
                    .as_str()
                    .and_then(|q| quantity(q, true))
                    .or_else(|| res["limits"]["cpu"].as_f64().map(|f| (f * 1000.0) as u64)),
                cpu_millis_request: res["requests"]["cpu"]
                    .as_str()
                    .and_then(|q| quantity(q, true))
                    .or_else(|| res["requests"]["cpu"].as_f64().map(|f| (f * 1000.0) as u64)),
                memory_limit: res["limits"]["memory"]
                    .as_str()
                    .and_then(|q| quantity(q, false))
                    .or_else(|| res["limits"]["memory"].as_u64()),
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
        Ok(PodSpec {
            uid,
            namespace: meta["namespace"].as_str().unwrap_or("default").to_owned(),
            name: meta["name"].as_str().unwrap_or("").to_owned(),
            host_network: spec["hostNetwork"] == true,
            restart,
            containers,
            volumes,
            grace_secs: spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30),
            unsupported,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities() {
        assert_eq!(quantity("100m", true), Some(100));
        assert_eq!(quantity("0.5", true), Some(500));
        assert_eq!(quantity("2", true), Some(2000));
        assert_eq!(quantity("64Mi", false), Some(64 << 20));
        assert_eq!(quantity("1G", false), Some(1_000_000_000));
        assert_eq!(quantity("12x", false), None);
    }

    #[test]
    fn reads_what_edged_runs_and_lists_what_it_does_not() {
        let pod = json!({"metadata": {"uid": "u1", "name": "web", "namespace": "default"},
            "spec": {"restartPolicy": "OnFailure", "hostNetwork": true, "initContainers": [{}],
                "volumes": [{"name": "cfg", "configMap": {"name": "app"}}, {"name": "data", "persistentVolumeClaim": {"claimName": "x"}}, {"name": "tmp", "emptyDir": {}}],
                "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sh"], "args": ["-c", "echo"],
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "k"}}}, {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "volumeMounts": [{"name": "cfg", "mountPath": "/config", "readOnly": true}],
                    "resources": {"limits": {"cpu": "250m", "memory": "32Mi"}},
                    "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 2},
                    "readinessProbe": {"grpc": {"port": 1}},
                    "stdin": true}]}});
        let p = PodSpec::parse(&pod).unwrap();
        assert_eq!(p.restart, RestartPolicy::OnFailure);
        assert!(p.host_network);
        let c = &p.containers[0];
        assert_eq!(c.pull, PullPolicy::IfNotPresent);
        assert_eq!(c.cpu_millis_limit, Some(250));
        assert_eq!(c.memory_limit, Some(32 << 20));
        assert_eq!(c.env.len(), 2);
        assert_eq!(c.liveness.as_ref().unwrap().period_secs, 2);
        assert!(c.readiness.is_none());
        assert_eq!(p.volumes.len(), 2);
        for want in [
            "spec.initContainers",
            "spec.volumes[1].persistentVolumeClaim",
            "spec.containers[0].env[2].valueFrom",
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
}
