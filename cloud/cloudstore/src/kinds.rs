//! The object kinds cloudcore stores, their names on the wire and on the command line, and
//! what makes an object of each kind valid. Errors name the offending field.

use serde_json::Value;

use crate::limits;

/// Stored kinds. Nodes live in CloudHub's registry; Device and DeviceModel come with devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pod,
    ConfigMap,
    Secret,
    Device,
    DeviceModel,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Pod,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::Device,
        Kind::DeviceModel,
    ];

    /// `apiVersion` of the kind.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Device | Kind::DeviceModel => "devices.kubeedge.io/v1beta1",
            _ => "v1",
        }
    }

    /// The module that sends this kind to edges (§2.5).
    pub fn source(self) -> proto::ModuleName {
        match self {
            Kind::Device | Kind::DeviceModel => proto::ModuleName::DeviceController,
            _ => proto::ModuleName::EdgeController,
        }
    }

    /// `kind` in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::Device => "Device",
            Kind::DeviceModel => "DeviceModel",
        }
    }

    /// The resource type token in wire paths (§2.2).
    pub fn wire(self) -> proto::ResourceKind {
        match self {
            Kind::Pod => proto::ResourceKind::Pod,
            Kind::ConfigMap => proto::ResourceKind::ConfigMap,
            Kind::Secret => proto::ResourceKind::Secret,
            Kind::Device => proto::ResourceKind::Device,
            Kind::DeviceModel => proto::ResourceKind::DeviceModel,
        }
    }

    /// Lower-case plural, as in URLs and `cloudcore get`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::ConfigMap => "configmaps",
            Kind::Secret => "secrets",
            Kind::Device => "devices",
            Kind::DeviceModel => "devicemodels",
        }
    }

    pub fn from_manifest(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == kind)
    }

    /// Accepts what kubectl accepts: `pod`, `pods`, `po`, `Pod`, `configmap`, `cm`, ...
    pub fn from_cli(s: &str) -> Option<Kind> {
        match s.to_ascii_lowercase().as_str() {
            "pod" | "pods" | "po" => Some(Kind::Pod),
            "configmap" | "configmaps" | "cm" => Some(Kind::ConfigMap),
            "secret" | "secrets" => Some(Kind::Secret),
            "device" | "devices" | "dev" => Some(Kind::Device),
            "devicemodel" | "devicemodels" => Some(Kind::DeviceModel),
            _ => None,
        }
    }
}

/// A manifest problem, located by field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

fn err(field: impl Into<String>, problem: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Kubernetes object names: DNS-1123 subdomain.
pub fn validate_name(field: &str, name: &str) -> Result<(), FieldError> {
    proto::validate_node_name(name).map_err(|e| err(field, e.replace("node name", "name")))
}

fn string_map(field: &str, v: &Value) -> Result<(), FieldError> {
    match v {
        Value::Null => Ok(()),
        Value::Object(m) => {
            for (k, val) in m {
                if !val.is_string() {
                    return Err(err(format!("{field}.{k}"), "must be a string"));
                }
            }
            Ok(())
        }
        _ => Err(err(field, "must be a map of strings")),
    }
}

fn is_base64(s: &str) -> bool {
    let t = s.trim_end_matches('=');
    s.len().is_multiple_of(4)
        && s.len() - t.len() <= 2
        && t.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

/// Checks a manifest object of `kind`.
pub fn validate(kind: Kind, obj: &Value) -> Result<(), FieldError> {
    if obj.get("apiVersion").and_then(Value::as_str) != Some(kind.api_version()) {
        return Err(err(
            "apiVersion",
            format!("must be {:?} for {}", kind.api_version(), kind.name()),
        ));
    }
    let meta = obj
        .get("metadata")
        .ok_or_else(|| err("metadata", "required"))?;
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| err("metadata.name", "required"))?;
    validate_name("metadata.name", name)?;
    if let Some(ns) = meta.get("namespace") {
        validate_name(
            "metadata.namespace",
            ns.as_str()
                .ok_or_else(|| err("metadata.namespace", "must be a string"))?,
        )?;
    }
    limits::validate_labels(
        "metadata.labels",
        meta.get("labels").unwrap_or(&Value::Null),
    )?;
    limits::validate_annotations(
        "metadata.annotations",
        meta.get("annotations").unwrap_or(&Value::Null),
    )?;
    match kind {
        Kind::Pod => {
            let spec = obj.get("spec").ok_or_else(|| err("spec", "required"))?;
            let containers = spec
                .get("containers")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    err(
                        "spec.containers",
                        "required: a pod needs at least one container",
                    )
                })?;
            if containers.is_empty() {
                return Err(err("spec.containers", "a pod needs at least one container"));
            }
            let mut names = std::collections::HashSet::new();
            for (i, c) in containers.iter().enumerate() {
                let f = |x: &str| format!("spec.containers[{i}].{x}");
                let n = c
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| err(f("name"), "required"))?;
                validate_name(&f("name"), n)?;
                if !names.insert(n) {
                    return Err(err(f("name"), format!("duplicate container name {n:?}")));
                }
                match c.get("image").and_then(Value::as_str) {
                    Some(img) if !img.trim().is_empty() => {}
                    _ => return Err(err(f("image"), "required")),
                }
            }
            if let Some(node) = spec.get("nodeName") {
                validate_name(
                    "spec.nodeName",
                    node.as_str()
                        .ok_or_else(|| err("spec.nodeName", "must be a string"))?,
                )?;
            }
        }
        Kind::ConfigMap => {
            string_map("data", obj.get("data").unwrap_or(&Value::Null))?;
            string_map("binaryData", obj.get("binaryData").unwrap_or(&Value::Null))?;
            limits::check_data_size(obj, false)?;
        }
        Kind::Device => {
            let spec = obj.get("spec").ok_or_else(|| err("spec", "required"))?;
            spec["deviceModelRef"]["name"]
                .as_str()
                .ok_or_else(|| err("spec.deviceModelRef.name", "required"))?;
            if let Some(node) = spec.get("nodeName") {
                validate_name(
                    "spec.nodeName",
                    node.as_str()
                        .ok_or_else(|| err("spec.nodeName", "must be a string"))?,
                )?;
            }
            for (i, p) in spec["properties"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let n = p["name"]
                    .as_str()
                    .ok_or_else(|| err(format!("spec.properties[{i}].name"), "required"))?;
                if n.is_empty() || n.len() >= 128 {
                    return Err(err(
                        format!("spec.properties[{i}].name"),
                        "must be 1 to 127 characters",
                    ));
                }
                match &p["desired"]["value"] {
                    Value::Null => {}
                    Value::String(v) if v.len() <= 512 => {}
                    _ => {
                        return Err(err(
                            format!("spec.properties[{i}].desired.value"),
                            "must be a string of at most 512 bytes",
                        ))
                    }
                }
            }
        }
        Kind::DeviceModel => {}
        Kind::Secret => {
            string_map("stringData", obj.get("stringData").unwrap_or(&Value::Null))?;
            match obj.get("data") {
                None | Some(Value::Null) => {}
                Some(Value::Object(m)) => {
                    for (k, v) in m {
                        match v.as_str() {
                            Some(s) if is_base64(s) => {}
                            _ => return Err(err(format!("data.{k}"), "must be a base64 string")),
                        }
                    }
                }
                Some(_) => return Err(err("data", "must be a map of base64 strings")),
            }
            limits::check_data_size(obj, true)?;
        }
    }
    Ok(())
}

/// Names of the configmaps and secrets a pod uses (volumes, env, envFrom, projected sources,
/// image pull secrets): the ones that must reach its node with it.
pub fn pod_references(pod: &Value) -> (Vec<String>, Vec<String>) {
    let mut cms = Vec::new();
    let mut secrets = Vec::new();
    let spec = &pod["spec"];
    let push = |v: &mut Vec<String>, s: Option<&str>| {
        if let Some(s) = s {
            if !v.iter().any(|x| x == s) {
                v.push(s.to_owned());
            }
        }
    };
    for vol in spec["volumes"].as_array().into_iter().flatten() {
        push(&mut cms, vol["configMap"]["name"].as_str());
        push(&mut secrets, vol["secret"]["secretName"].as_str());
        for src in vol["projected"]["sources"].as_array().into_iter().flatten() {
            push(&mut cms, src["configMap"]["name"].as_str());
            push(&mut secrets, src["secret"]["name"].as_str());
        }
    }
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                push(&mut cms, e["valueFrom"]["configMapKeyRef"]["name"].as_str());
                push(
                    &mut secrets,
                    e["valueFrom"]["secretKeyRef"]["name"].as_str(),
                );
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                push(&mut cms, e["configMapRef"]["name"].as_str());
                push(&mut secrets, e["secretRef"]["name"].as_str());
            }
        }
    }
    for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
        push(&mut secrets, s["name"].as_str());
    }
    (cms, secrets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
               "spec": {"containers": [{"name": "app", "image": "busybox"}]}})
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(validate(Kind::Pod, &pod()), Ok(()));
        let mut p = pod();
        p["spec"]["containers"] = json!([]);
        assert_eq!(
            validate(Kind::Pod, &p).unwrap_err().field,
            "spec.containers"
        );
        let mut p = pod();
        p["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("image");
        assert_eq!(
            validate(Kind::Pod, &p).unwrap_err().field,
            "spec.containers[0].image"
        );
        let mut p = pod();
        p["metadata"].as_object_mut().unwrap().remove("name");
        assert_eq!(validate(Kind::Pod, &p).unwrap_err().field, "metadata.name");
        let mut p = pod();
        p["metadata"]["name"] = json!("Bad_Name");
        assert_eq!(validate(Kind::Pod, &p).unwrap_err().field, "metadata.name");
        let mut p = pod();
        p["apiVersion"] = json!("v2");
        assert_eq!(validate(Kind::Pod, &p).unwrap_err().field, "apiVersion");
        let cm = json!({"apiVersion": "v1", "metadata": {"name": "c"}, "data": {"k": 1}});
        assert_eq!(validate(Kind::ConfigMap, &cm).unwrap_err().field, "data.k");
        let s =
            json!({"apiVersion": "v1", "metadata": {"name": "s"}, "data": {"k": "not base64!"}});
        assert_eq!(validate(Kind::Secret, &s).unwrap_err().field, "data.k");
        let s = json!({"apiVersion": "v1", "metadata": {"name": "s"}, "data": {"k": "aGVsbG8="}});
        assert_eq!(validate(Kind::Secret, &s), Ok(()));
    }

    #[test]
    fn finds_every_reference() {
        let p = json!({"spec": {
            "volumes": [{"configMap": {"name": "cm1"}}, {"secret": {"secretName": "s1"}},
                        {"projected": {"sources": [{"configMap": {"name": "cm2"}}, {"secret": {"name": "s2"}}]}}],
            "containers": [{"env": [{"valueFrom": {"configMapKeyRef": {"name": "cm3"}}}, {"valueFrom": {"secretKeyRef": {"name": "s1"}}}],
                            "envFrom": [{"configMapRef": {"name": "cm4"}}, {"secretRef": {"name": "s3"}}]}],
            "imagePullSecrets": [{"name": "s4"}]}});
        let (cms, secrets) = pod_references(&p);
        assert_eq!(cms, ["cm1", "cm2", "cm3", "cm4"]);
        assert_eq!(secrets, ["s1", "s2", "s3", "s4"]);
    }

    #[test]
    fn cli_names() {
        assert_eq!(Kind::from_cli("po"), Some(Kind::Pod));
        assert_eq!(Kind::from_cli("ConfigMaps"), Some(Kind::ConfigMap));
        assert_eq!(Kind::from_cli("widgets"), None);
        assert_eq!(Kind::from_manifest("Secret"), Some(Kind::Secret));
    }
}
