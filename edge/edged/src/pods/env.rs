//! A container's environment, as kubelet builds it (`makeEnvironmentVariables`): `envFrom`
//! sources first, then `env` in order (later names win), `$(VAR)` references expanded from
//! the variables defined before. A configmap or secret that is required and missing is
//! kubelet's `CreateContainerConfigError` with its message.

use std::collections::BTreeMap;

use bus::{DesiredPods, ObjectKind};

use super::spec::{Container, EnvSource, PodSpec};
use super::volumes::{field_value, object_data, resource_value, NodeResources};

/// Why the environment cannot be built: the text kubelet puts in the waiting message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvError {
    /// Not on the node yet (MetaManager is asking the cloud).
    Waiting(String),
    /// `CreateContainerConfigError`.
    Config(String),
}

/// Where the pod is: for `status.podIP` and `status.hostIP` references.
pub struct Addresses<'a> {
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
}

fn object<'a>(
    d: &'a DesiredPods,
    secret: bool,
    ns: &str,
    name: &str,
) -> Result<&'a serde_json::Value, EnvError> {
    let (map, kind, what) = if secret {
        (&d.secrets, ObjectKind::Secret, "secret")
    } else {
        (&d.configmaps, ObjectKind::ConfigMap, "configmap")
    };
    if let Some(o) = map.get(&(ns.to_owned(), name.to_owned())) {
        return Ok(o);
    }
    match d.missing.get(&(kind, ns.to_owned(), name.to_owned())) {
        Some(m) => Err(EnvError::Config(m.clone())),
        None => Err(EnvError::Waiting(format!(
            "waiting for {what} {ns}/{name} from the cloud"
        ))),
    }
}

/// Expands `$(NAME)` from `vars`; `$$` escapes a `$`; unknown references stay as written.
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&s[i..i + 3 + end]),
                    }
                    i += 3 + end;
                    continue;
                }
            }
        }
        let ch = s[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The environment of container `c`, in kubelet's order.
pub fn build(
    spec: &PodSpec,
    c: &Container,
    desired: &DesiredPods,
    node: &NodeResources,
    at: &Addresses,
) -> Result<Vec<(String, String)>, EnvError> {
    let ns = spec.namespace.as_str();
    let mut order: Vec<String> = Vec::new();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    fn set(vars: &mut BTreeMap<String, String>, order: &mut Vec<String>, k: String, v: String) {
        if !vars.contains_key(&k) {
            order.push(k.clone());
        }
        vars.insert(k, v);
    }
    for src in &c.env_from {
        let o = match object(desired, src.secret, ns, &src.name) {
            Ok(o) => o,
            Err(EnvError::Config(_)) if src.optional => continue,
            Err(e) => return Err(e),
        };
        for (k, v) in object_data(o, src.secret) {
            let key = format!("{}{k}", src.prefix);
            set(
                &mut vars,
                &mut order,
                key,
                String::from_utf8_lossy(&v).into_owned(),
            );
        }
    }
    for (key, src) in &c.env {
        let value = match src {
            EnvSource::Value(v) => Some(expand(v, &vars)),
            EnvSource::ConfigMapKey {
                name,
                key: k,
                optional,
            }
            | EnvSource::SecretKey {
                name,
                key: k,
                optional,
            } => {
                let secret = matches!(src, EnvSource::SecretKey { .. });
                let kind = if secret { "Secret" } else { "ConfigMap" };
                match object(desired, secret, ns, name) {
                    Ok(o) => match object_data(o, secret).remove(k) {
                        Some(v) => Some(String::from_utf8_lossy(&v).into_owned()),
                        None if *optional => None,
                        None => {
                            return Err(EnvError::Config(format!(
                                "couldn't find key {k} in {kind} {ns}/{name}"
                            )))
                        }
                    },
                    Err(EnvError::Config(_)) if *optional => None,
                    Err(e) => return Err(e),
                }
            }
            EnvSource::Field(path) => {
                Some(field_value(spec, path, at.pod_ip, at.host_ip).map_err(EnvError::Config)?)
            }
            EnvSource::Resource(r) => {
                Some(resource_value(spec, &c.name, r, node).map_err(EnvError::Config)?)
            }
        };
        if let Some(v) = value {
            set(&mut vars, &mut order, key.clone(), v);
        }
    }
    Ok(order
        .into_iter()
        .map(|k| {
            let v = vars.remove(&k).unwrap_or_default();
            (k, v)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(env: serde_json::Value, env_from: serde_json::Value) -> PodSpec {
        PodSpec::parse(&json!({"metadata": {"uid": "u1", "name": "web", "namespace": "default"},
            "spec": {"nodeName": "edge0", "containers": [{"name": "c", "image": "i:1", "env": env, "envFrom": env_from,
                "resources": {"limits": {"cpu": "500m"}}}]}}))
        .unwrap()
    }

    fn desired() -> DesiredPods {
        let mut d = DesiredPods::default();
        d.configmaps.insert(
            ("default".into(), "cfg".into()),
            std::rc::Rc::new(json!({"data": {"A": "from-cm", "B": "b"}})),
        );
        d.secrets.insert(
            ("default".into(), "s".into()),
            std::rc::Rc::new(json!({"data": {"PW": "aGVsbG8="}})),
        );
        d
    }

    const AT: Addresses = Addresses {
        pod_ip: "10.1.0.5",
        host_ip: "192.0.2.1",
    };

    #[test]
    fn order_overrides_expansion_and_downward_values() {
        let p = pod(
            json!([{"name": "A", "value": "override"}, {"name": "GREETING", "value": "hi $(B) $$(B) $(NOPE)"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "PW"}}}]),
            json!([{"configMapRef": {"name": "cfg"}, "prefix": ""}]),
        );
        let env = build(
            &p,
            &p.containers[0],
            &desired(),
            &NodeResources::default(),
            &AT,
        )
        .unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            env[0].0, "A",
            "envFrom first; a later env entry overrides in place"
        );
        assert_eq!(get("A"), Some("override"));
        assert_eq!(get("GREETING"), Some("hi b $(B) $(NOPE)"));
        assert_eq!(get("POD"), Some("web"));
        assert_eq!(get("IP"), Some("10.1.0.5"));
        assert_eq!(get("NODE"), Some("edge0"));
        assert_eq!(get("CPU"), Some("500"));
        assert_eq!(get("PW"), Some("hello"));
    }

    #[test]
    fn missing_objects_and_keys_are_kubelets_config_errors() {
        let key = pod(
            json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "Z"}}}]),
            json!([]),
        );
        assert_eq!(
            build(
                &key,
                &key.containers[0],
                &desired(),
                &NodeResources::default(),
                &AT
            ),
            Err(EnvError::Config(
                "couldn't find key Z in ConfigMap default/cfg".into()
            ))
        );
        let absent = pod(json!([]), json!([{"secretRef": {"name": "gone"}}]));
        assert!(matches!(
            build(
                &absent,
                &absent.containers[0],
                &desired(),
                &NodeResources::default(),
                &AT
            ),
            Err(EnvError::Waiting(_))
        ));
        let mut d = desired();
        d.missing.insert(
            (ObjectKind::Secret, "default".into(), "gone".into()),
            "secret \"gone\" not found".into(),
        );
        assert_eq!(
            build(
                &absent,
                &absent.containers[0],
                &d,
                &NodeResources::default(),
                &AT
            ),
            Err(EnvError::Config("secret \"gone\" not found".into()))
        );
        let optional = pod(
            json!([]),
            json!([{"secretRef": {"name": "gone", "optional": true}}]),
        );
        assert_eq!(
            build(
                &optional,
                &optional.containers[0],
                &d,
                &NodeResources::default(),
                &AT
            ),
            Ok(vec![])
        );
    }
}
