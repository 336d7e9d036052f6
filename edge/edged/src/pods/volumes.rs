//! What each volume of a pod holds, computed from the desired state alone ([`files`]), and
//! the writer that puts it on disk the way kubelet's AtomicWriter does ([`write_atomic`]).
//!
//! configMap, secret, downwardAPI and projected volumes become a set of files with modes;
//! emptyDir and hostPath are directories. A referenced object that is not on the node yet is
//! [`VolumeError::Waiting`] (MetaManager is asking the cloud for it); one the cloud said does
//! not exist is [`VolumeError::Missing`], with kubelet's message, unless it is `optional`.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use base64::Engine;
use bus::{DesiredPods, ObjectKind, TokenKey};
use serde_json::Value;

use super::spec::{DownwardItem, KeyToPath, PodSpec, ProjectedSource, ResourceRef, Volume};

/// What the downward API may read besides the pod itself: the node's allocatable resources
/// (a container without a limit reports the node's).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeResources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub ephemeral_bytes: u64,
}

/// One file of a volume: its path inside the volume, contents and mode.
#[derive(Clone, Debug, PartialEq)]
pub struct File {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// What a volume is on disk.
#[derive(Clone, Debug, PartialEq)]
pub enum Content {
    /// Files written under the pod's volume directory (atomically, as a set).
    Files(Vec<File>),
    /// An empty directory under the pod's volume directory.
    EmptyDir,
    /// A directory of the host.
    HostPath(String),
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum VolumeError {
    /// Not on the node yet: asked for, so the pod waits.
    #[error("waiting for {kind} {namespace}/{name} from the cloud")]
    Waiting {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    /// The cloud said it does not exist (kubelet: `MountVolume.SetUp failed for volume …`).
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {message}")]
    Missing { volume: String, message: String },
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {message}")]
    Invalid { volume: String, message: String },
}

/// Data of a configmap (`data`, plus decoded `binaryData`) or a secret (decoded `data`).
pub fn object_data(obj: &Value, secret: bool) -> BTreeMap<String, Vec<u8>> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s.trim());
    let mut out = BTreeMap::new();
    for (k, v) in obj["data"].as_object().into_iter().flatten() {
        let s = v.as_str().unwrap_or("");
        let bytes = if secret {
            match b64(s) {
                Ok(b) => b,
                Err(_) => continue, // the cloud validates secrets; a bad value is left out
            }
        } else {
            s.as_bytes().to_vec()
        };
        out.insert(k.clone(), bytes);
    }
    if !secret {
        for (k, v) in obj["binaryData"].as_object().into_iter().flatten() {
            if let Ok(b) = b64(v.as_str().unwrap_or("")) {
                out.insert(k.clone(), b);
            }
        }
    }
    out
}

/// A path inside a volume: relative, no `..`, not empty (the apiserver validates the same).
fn valid_path(p: &str) -> bool {
    !p.is_empty()
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        && !p.starts_with("..")
}

/// Looks up a configmap or secret the pod uses.
fn lookup<'a>(
    d: &'a DesiredPods,
    secret: bool,
    ns: &str,
    name: &str,
) -> Result<&'a Value, Option<String>> {
    let (map, kind) = if secret {
        (&d.secrets, ObjectKind::Secret)
    } else {
        (&d.configmaps, ObjectKind::ConfigMap)
    };
    match map.get(&(ns.to_owned(), name.to_owned())) {
        Some(o) => Ok(o),
        None => Err(d
            .missing
            .get(&(kind, ns.to_owned(), name.to_owned()))
            .cloned()),
    }
}

/// The files a configMap or secret projects: every key, or the listed items.
fn key_files(
    data: &BTreeMap<String, Vec<u8>>,
    items: &Option<Vec<KeyToPath>>,
    mode: u32,
    what: &str,
    optional: bool,
) -> Result<Vec<File>, String> {
    let mut out = Vec::new();
    match items {
        None => {
            for (k, v) in data {
                if valid_path(k) {
                    out.push(File {
                        path: k.clone(),
                        data: v.clone(),
                        mode,
                    });
                }
            }
        }
        Some(items) => {
            for i in items {
                if !valid_path(&i.path) {
                    return Err(format!("invalid path {:?}", i.path));
                }
                match data.get(&i.key) {
                    Some(v) => out.push(File {
                        path: i.path.clone(),
                        data: v.clone(),
                        mode: i.mode.unwrap_or(mode),
                    }),
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "configmap references non-existent config key: {}",
                            i.key
                        )
                        .replace("configmap", what))
                    }
                }
            }
        }
    }
    Ok(out)
}

/// kubelet's `FormatMap`: `key="value"` lines, sorted by key.
fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Go's `%q` for the strings labels hold.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A pod field as the downward API gives it, for volumes (`env` passes `pod_ip`/`host_ip`).
pub fn field_value(
    spec: &PodSpec,
    path: &str,
    pod_ip: &str,
    host_ip: &str,
) -> Result<String, String> {
    let bracket = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['"))
            .and_then(|r| r.strip_suffix("']"))
    };
    Ok(match path {
        "metadata.name" => spec.name.clone(),
        "metadata.namespace" => spec.namespace.clone(),
        "metadata.uid" => spec.uid.clone(),
        "metadata.labels" => format_map(&spec.labels),
        "metadata.annotations" => format_map(&spec.annotations),
        "spec.nodeName" => spec.node_name.clone(),
        "spec.serviceAccountName" => spec.service_account.clone(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_owned(),
        "status.podIP" | "status.podIPs" => pod_ip.to_owned(),
        _ => {
            if let Some(k) = bracket("metadata.labels") {
                spec.labels.get(k).cloned().unwrap_or_default()
            } else if let Some(k) = bracket("metadata.annotations") {
                spec.annotations.get(k).cloned().unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldPath: {path}"));
            }
        }
    })
}

/// A container's limit or request in `divisor` units, rounded up; a missing limit is the
/// node's allocatable (kubelet's rule).
pub fn resource_value(
    spec: &PodSpec,
    own: &str,
    r: &ResourceRef,
    node: &NodeResources,
) -> Result<String, String> {
    let name = if r.container.is_empty() {
        own
    } else {
        &r.container
    };
    let c = spec
        .containers
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| format!("container {name:?} not found"))?;
    let divisor = proto::quantity::parse(&r.divisor)
        .filter(|d| *d > 0.0)
        .ok_or_else(|| format!("invalid divisor {:?}", r.divisor))?;
    let cpu = |v: Option<u64>| v.unwrap_or(node.cpu_millis) as f64 / 1000.0;
    let bytes = |v: Option<u64>, n: u64| v.unwrap_or(n) as f64;
    let value = match r.resource.as_str() {
        "limits.cpu" => cpu(c.cpu_millis_limit),
        "requests.cpu" => c.cpu_millis_request.unwrap_or(0) as f64 / 1000.0,
        "limits.memory" => bytes(c.memory_limit, node.memory_bytes),
        "requests.memory" => c.memory_request.unwrap_or(0) as f64,
        "limits.ephemeral-storage" => node.ephemeral_bytes as f64,
        "requests.ephemeral-storage" => 0.0,
        other => return Err(format!("unsupported container resource: {other}")),
    };
    Ok(format!(
        "{}",
        (value / divisor - 1e-9).ceil().max(0.0) as u64
    ))
}

fn downward_files(
    spec: &PodSpec,
    items: &[DownwardItem],
    mode: u32,
    node: &NodeResources,
) -> Result<Vec<File>, String> {
    let mut out = Vec::new();
    for i in items {
        if !valid_path(&i.path) {
            return Err(format!("invalid path {:?}", i.path));
        }
        let value = match (&i.field, &i.resource) {
            (Some(f), _) => field_value(spec, f, "", "")?,
            (None, Some(r)) => resource_value(spec, "", r, node)?,
            (None, None) => {
                return Err(format!(
                    "item {} has no fieldRef or resourceFieldRef",
                    i.path
                ))
            }
        };
        out.push(File {
            path: i.path.clone(),
            data: value.into_bytes(),
            mode: i.mode.unwrap_or(mode),
        });
    }
    Ok(out)
}

/// What every volume of `spec` holds, by volume name.
pub fn files(
    spec: &PodSpec,
    desired: &DesiredPods,
    node: &NodeResources,
) -> Result<BTreeMap<String, Content>, VolumeError> {
    let mut out = BTreeMap::new();
    let ns = spec.namespace.as_str();
    for (vol_name, vol) in &spec.volumes {
        let invalid = |message: String| VolumeError::Invalid {
            volume: vol_name.clone(),
            message,
        };
        // Looks up an object, or says why not.
        let object = |secret: bool, name: &str| -> Result<Option<&Value>, VolumeError> {
            match lookup(desired, secret, ns, name) {
                Ok(o) => Ok(Some(o)),
                Err(Some(message)) => Err(VolumeError::Missing {
                    volume: vol_name.clone(),
                    message,
                }),
                Err(None) => Err(VolumeError::Waiting {
                    kind: if secret { "secret" } else { "configmap" },
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                }),
            }
        };
        // An optional source that is missing projects nothing.
        let optional_object = |secret: bool, name: &str, optional: bool| match object(secret, name)
        {
            Err(VolumeError::Missing { .. }) if optional => Ok(None),
            other => other,
        };
        let content = match vol {
            Volume::EmptyDir => Content::EmptyDir,
            Volume::HostPath { path } => Content::HostPath(path.clone()),
            Volume::ConfigMap {
                name,
                optional,
                items,
                mode,
            }
            | Volume::Secret {
                name,
                optional,
                items,
                mode,
            } => {
                let secret = matches!(vol, Volume::Secret { .. });
                let what = if secret { "secret" } else { "configmap" };
                match optional_object(secret, name, *optional)? {
                    None => Content::Files(Vec::new()),
                    Some(o) => Content::Files(
                        key_files(&object_data(o, secret), items, *mode, what, *optional)
                            .map_err(invalid)?,
                    ),
                }
            }
            Volume::DownwardApi { items, mode } => {
                Content::Files(downward_files(spec, items, *mode, node).map_err(invalid)?)
            }
            Volume::Projected { sources, mode } => {
                let mut all = Vec::new();
                for src in sources {
                    match src {
                        ProjectedSource::ConfigMap {
                            name,
                            optional,
                            items,
                        }
                        | ProjectedSource::Secret {
                            name,
                            optional,
                            items,
                        } => {
                            let secret = matches!(src, ProjectedSource::Secret { .. });
                            let what = if secret { "secret" } else { "configmap" };
                            if let Some(o) = optional_object(secret, name, *optional)? {
                                all.extend(
                                    key_files(
                                        &object_data(o, secret),
                                        items,
                                        *mode,
                                        what,
                                        *optional,
                                    )
                                    .map_err(invalid)?,
                                );
                            }
                        }
                        ProjectedSource::DownwardApi(items) => {
                            all.extend(downward_files(spec, items, *mode, node).map_err(invalid)?)
                        }
                        ProjectedSource::Token {
                            audience,
                            expiration_secs,
                            path,
                        } => {
                            if !valid_path(path) {
                                return Err(invalid(format!("invalid path {path:?}")));
                            }
                            let key = TokenKey {
                                pod_uid: spec.uid.clone(),
                                service_account: spec.service_account.clone(),
                                audience: audience.clone(),
                                expiration_secs: *expiration_secs,
                            };
                            let Some(t) = desired.tokens.get(&key) else {
                                return Err(VolumeError::Waiting {
                                    kind: "serviceaccount token for",
                                    namespace: ns.to_owned(),
                                    name: spec.service_account.clone(),
                                });
                            };
                            all.push(File {
                                path: path.clone(),
                                data: t.token.clone().into_bytes(),
                                mode: *mode,
                            });
                        }
                    }
                }
                Content::Files(all)
            }
        };
        out.insert(vol_name.clone(), content);
    }
    Ok(out)
}

/// Writes `files` into `dir` as kubelet's AtomicWriter does, so a reader never sees a mix of
/// old and new files: the data goes into a new `..<timestamp>` directory, the `..data`
/// symlink is switched to it with one rename, and each top-level name is a symlink into
/// `..data`. Nothing is rewritten when the contents are unchanged. Returns whether it wrote.
pub fn write_atomic(dir: &Path, files: &[File], now_unix: i64) -> std::io::Result<bool> {
    use std::os::unix::fs::{symlink, PermissionsExt};
    std::fs::create_dir_all(dir)?;
    let data_link = dir.join("..data");
    let unchanged = files.iter().all(|f| {
        let p = data_link.join(&f.path);
        std::fs::read(&p).ok().as_deref() == Some(f.data.as_slice())
            && std::fs::metadata(&p).is_ok_and(|m| m.permissions().mode() & 0o777 == f.mode)
    }) && std::fs::read_link(&data_link).is_ok()
        && entries(dir)?.len() == top_level(files).len();
    if unchanged {
        return Ok(false);
    }
    let old = std::fs::read_link(&data_link).ok();
    let stamp = format!(
        "..{}.{}",
        proto::time::rfc3339(now_unix).replace([':', '-'], "_"),
        fastrand::u32(..)
    );
    let ts_dir = dir.join(&stamp);
    std::fs::create_dir(&ts_dir)?;
    std::fs::set_permissions(&ts_dir, std::fs::Permissions::from_mode(0o755))?;
    for f in files {
        let p = ts_dir.join(&f.path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, &f.data)?;
        // The exact mode, whatever the umask.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(f.mode))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, &data_link)?;
    let wanted = top_level(files);
    for name in &wanted {
        let link = dir.join(name);
        if std::fs::read_link(&link).ok().as_deref()
            != Some(Path::new("..data").join(name).as_path())
        {
            let _ = std::fs::remove_file(&link);
            symlink(Path::new("..data").join(name), &link)?;
        }
    }
    for name in entries(dir)? {
        if !wanted.contains(&name) {
            let _ = std::fs::remove_file(dir.join(&name));
        }
    }
    if let Some(old) = old.filter(|o| o != Path::new(&stamp)) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

/// The first path component of every file: the names a reader sees.
fn top_level(files: &[File]) -> Vec<String> {
    let mut names: Vec<String> = files
        .iter()
        .filter_map(|f| f.path.split('/').next().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// User-visible entries of a volume directory (not the `..` internals).
fn entries(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") {
            out.push(name);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::Token;
    use serde_json::json;

    fn spec(volumes: Value) -> PodSpec {
        PodSpec::parse(
            &json!({"metadata": {"uid": "u1", "name": "web", "namespace": "default",
                "labels": {"b": "2", "a": "x\"y"}},
            "spec": {"volumes": volumes, "containers": [{"name": "c", "image": "i:1",
                "resources": {"limits": {"memory": "64Mi"}}}]}}),
        )
        .unwrap()
    }

    fn desired() -> DesiredPods {
        let mut d = DesiredPods::default();
        d.configmaps.insert(
            ("default".into(), "kube-root-ca.crt".into()),
            std::rc::Rc::new(json!({"data": {"ca.crt": "PEM"}})),
        );
        d.configmaps.insert(
            ("default".into(), "app".into()),
            std::rc::Rc::new(json!({"data": {"a": "1", "b": "2"}, "binaryData": {"bin": "AAE="}})),
        );
        d.secrets.insert(
            ("default".into(), "s".into()),
            std::rc::Rc::new(json!({"data": {"pw": "aGVsbG8=", "bad": "!!"}})),
        );
        d.tokens.insert(
            TokenKey {
                pod_uid: "u1".into(),
                service_account: "default".into(),
                audience: String::new(),
                expiration_secs: 3607,
            },
            Token {
                token: "eyJtoken".into(),
                expires_unix: 10,
            },
        );
        d
    }

    fn files_of(c: &Content) -> Vec<(String, String, u32)> {
        match c {
            Content::Files(f) => f
                .iter()
                .map(|f| {
                    (
                        f.path.clone(),
                        String::from_utf8_lossy(&f.data).into_owned(),
                        f.mode,
                    )
                })
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kube_api_access_projects_token_ca_and_namespace() {
        let s = spec(
            json!([{"name": "kube-api-access-x", "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}]),
        );
        let v = files(&s, &desired(), &NodeResources::default()).unwrap();
        assert_eq!(
            files_of(&v["kube-api-access-x"]),
            [
                ("token".into(), "eyJtoken".into(), 0o644),
                ("ca.crt".into(), "PEM".into(), 0o644),
                ("namespace".into(), "default".into(), 0o644)
            ]
        );
        // Without its token yet, the volume waits.
        let mut d = desired();
        d.tokens.clear();
        assert!(matches!(
            files(&s, &d, &NodeResources::default()),
            Err(VolumeError::Waiting { .. })
        ));
    }

    #[test]
    fn configmaps_secrets_items_modes_and_missing_objects() {
        let s = spec(json!([
            {"name": "all", "configMap": {"name": "app"}},
            {"name": "some", "configMap": {"name": "app", "items": [{"key": "b", "path": "dir/b.txt", "mode": 256}]}},
            {"name": "sec", "secret": {"secretName": "s", "defaultMode": 256}}]));
        let v = files(&s, &desired(), &NodeResources::default()).unwrap();
        assert_eq!(
            files_of(&v["all"]),
            [
                ("a".into(), "1".into(), 0o644),
                ("b".into(), "2".into(), 0o644),
                ("bin".into(), "\u{0}\u{1}".into(), 0o644)
            ]
        );
        assert_eq!(
            files_of(&v["some"]),
            [("dir/b.txt".into(), "2".into(), 0o400)]
        );
        assert_eq!(
            files_of(&v["sec"]),
            [("pw".into(), "hello".into(), 0o400)],
            "undecodable values are left out"
        );
        let bad_key = spec(
            json!([{"name": "v", "configMap": {"name": "app", "items": [{"key": "zz", "path": "z"}]}}]),
        );
        assert_eq!(
            files(&bad_key, &desired(), &NodeResources::default()).unwrap_err().to_string(),
            "MountVolume.SetUp failed for volume \"v\" : configmap references non-existent config key: zz"
        );
        let escape = spec(
            json!([{"name": "v", "configMap": {"name": "app", "items": [{"key": "a", "path": "../x"}]}}]),
        );
        assert!(matches!(
            files(&escape, &desired(), &NodeResources::default()),
            Err(VolumeError::Invalid { .. })
        ));
        let absent = spec(json!([{"name": "v", "configMap": {"name": "nope"}}]));
        assert!(matches!(
            files(&absent, &desired(), &NodeResources::default()),
            Err(VolumeError::Waiting {
                kind: "configmap",
                ..
            })
        ));
        let mut d = desired();
        d.missing.insert(
            (ObjectKind::ConfigMap, "default".into(), "nope".into()),
            "configmap \"nope\" not found".into(),
        );
        assert_eq!(
            files(&absent, &d, &NodeResources::default())
                .unwrap_err()
                .to_string(),
            "MountVolume.SetUp failed for volume \"v\" : configmap \"nope\" not found"
        );
        let optional =
            spec(json!([{"name": "v", "configMap": {"name": "nope", "optional": true}}]));
        assert_eq!(
            files(&optional, &d, &NodeResources::default()).unwrap()["v"],
            Content::Files(vec![])
        );
    }

    #[test]
    fn downward_api_fields_and_resources() {
        let s = spec(json!([{"name": "info", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
            {"path": "label-b", "fieldRef": {"fieldPath": "metadata.labels['b']"}},
            {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}},
            {"path": "cpu", "resourceFieldRef": {"containerName": "c", "resource": "limits.cpu"}}]}}]));
        let node = NodeResources {
            cpu_millis: 4000,
            memory_bytes: 1 << 30,
            ephemeral_bytes: 0,
        };
        let v = files(&s, &desired(), &node).unwrap();
        let f = files_of(&v["info"]);
        assert_eq!(f[0].1, "a=\"x\\\"y\"\nb=\"2\"", "FormatMap: sorted, quoted");
        assert_eq!(f[1].1, "web");
        assert_eq!(f[2].1, "2");
        assert_eq!(f[3].1, "64");
        assert_eq!(f[4].1, "4", "no cpu limit: the node's allocatable");
        let unknown = spec(
            json!([{"name": "i", "downwardAPI": {"items": [{"path": "x", "fieldRef": {"fieldPath": "spec.bogus"}}]}}]),
        );
        assert!(matches!(
            files(&unknown, &desired(), &node),
            Err(VolumeError::Invalid { .. })
        ));
    }

    #[test]
    fn atomic_writes_switch_data_and_keep_readers_consistent() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let f = |path: &str, data: &str| File {
            path: path.into(),
            data: data.as_bytes().to_vec(),
            mode: 0o644,
        };
        assert!(write_atomic(&dir, &[f("a", "1"), f("d/b", "2")], 1000).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("d/b")).unwrap(), "2");
        assert_eq!(
            std::fs::read_link(dir.join("a")).unwrap(),
            Path::new("..data/a")
        );
        let first = std::fs::read_link(dir.join("..data")).unwrap();
        assert_eq!(
            std::fs::metadata(dir.join("..data/a"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o644
        );
        assert!(
            !write_atomic(&dir, &[f("a", "1"), f("d/b", "2")], 1001).unwrap(),
            "unchanged: not rewritten"
        );
        assert!(write_atomic(&dir, &[f("a", "3")], 1002).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "3");
        assert!(!dir.join("d").exists(), "names no longer projected go");
        assert!(!dir.join(&first).exists(), "the old data directory goes");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
