//! What every object the cloud stores must satisfy, whoever wrote it (a manifest, a status
//! report, a node registering): at most [`proto::limits::MAX_OBJECT_BYTES`] as JSON, at most
//! [`proto::limits::MAX_JSON_DEPTH`] levels deep, labels and annotations as Kubernetes
//! validates them (apimachinery's `ValidateLabels` and `ValidateAnnotations`), plus counts of
//! our own. Checked on the object as it would be stored, so no sequence of patches grows one
//! past the limits.
//!
//! Refusals carry the HTTP status and reason kube-apiserver answers with: 413
//! `RequestEntityTooLarge` for size, 422 `Invalid` for the rest. Both are final for the
//! content: sending the same thing again gets the same answer.

use proto::limits::{depth, json_len, MAX_JSON_DEPTH, MAX_OBJECT_BYTES};
use serde_json::{json, Value};

use crate::kinds::FieldError;

/// Most labels on one object. Kubernetes has no count (its per-label rules bound each label
/// to 380 bytes); 256 bounds a label map to ~95 KiB and is far above what nodes and pods
/// carry (a cloud node has ~30).
pub const MAX_LABELS: usize = 256;
/// Most annotations on one object (ours, as [`MAX_LABELS`]).
pub const MAX_ANNOTATIONS: usize = 256;
/// Keys plus values of all annotations, at most (apimachinery's `TotalAnnotationSizeLimitB`).
pub const MAX_ANNOTATION_BYTES: usize = 256 << 10;
/// A label value, and the name part of a label or annotation key (`qualifiedNameMaxLength`).
pub const MAX_NAME_PART: usize = 63;
/// A key's DNS subdomain prefix (`DNS1123SubdomainMaxLength`).
pub const MAX_PREFIX: usize = 253;
/// ConfigMap `data` + `binaryData`, Secret `data` (decoded), at most (`core.MaxSecretSize`).
pub const MAX_DATA_BYTES: usize = 1 << 20;

/// Why an object may not be stored, as the apiserver would answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: u16,
    pub reason: &'static str,
    /// What is wrong, without the object's name (see [`Refusal::status`]).
    pub message: String,
}

impl Refusal {
    pub fn invalid(message: impl Into<String>) -> Refusal {
        Refusal {
            code: 422,
            reason: "Invalid",
            message: message.into(),
        }
    }

    pub fn too_large(bytes: usize) -> Refusal {
        Refusal {
            code: 413,
            reason: "RequestEntityTooLarge",
            message: format!(
                "the object would be {bytes} bytes; the limit is {MAX_OBJECT_BYTES} bytes (1.5 MiB, MAX_OBJECT_BYTES)"
            ),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Refusal {
        Refusal {
            code: 403,
            reason: "Forbidden",
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
        }
    }

    /// The message as the apiserver words it for object `name` of `kind` (`Pod`) whose
    /// resource is `plural` (`pods`).
    pub fn full_message(&self, kind: &str, plural: &str, name: &str) -> String {
        match self.code {
            422 => format!("{kind} {name:?} is invalid: {}", self.message),
            413 => format!("Request entity too large: {}", self.message),
            403 => format!("{plural} {name:?} is forbidden: {}", self.message),
            _ => self.message.clone(),
        }
    }

    /// A Kubernetes `Status` for the refusal.
    pub fn status(&self, kind: &str, plural: &str, name: &str) -> Value {
        proto::objresp::status(
            self.code,
            self.reason,
            &self.full_message(kind, plural, name),
            json!({ "name": name, "kind": plural }),
        )
    }
}

impl From<FieldError> for Refusal {
    fn from(e: FieldError) -> Refusal {
        Refusal::invalid(e.to_string())
    }
}

/// Checks an object as it would be stored: size, depth, labels, annotations. `before` is
/// the stored version it replaces, if any: labels and annotations are checked only where they
/// differ from it, so an object stored before these rules (a node registered with a label
/// they refuse) keeps taking status reports; size and depth are checked always.
pub fn check_stored(obj: &Value, before: Option<&Value>) -> Result<(), Refusal> {
    // Depth first: it bounds the work the other checks do.
    if depth(obj) > MAX_JSON_DEPTH {
        return Err(Refusal::invalid(format!(
            "the object is nested deeper than the limit of {MAX_JSON_DEPTH} levels (MAX_JSON_DEPTH)"
        )));
    }
    let bytes = json_len(obj);
    if bytes > MAX_OBJECT_BYTES {
        return Err(Refusal::too_large(bytes));
    }
    let meta = &obj["metadata"];
    let changed = |field: &str| before.is_none_or(|b| b["metadata"][field] != meta[field]);
    if changed("labels") {
        validate_labels("metadata.labels", &meta["labels"])?;
    }
    if changed("annotations") {
        validate_annotations("metadata.annotations", &meta["annotations"])?;
    }
    Ok(())
}

fn err(field: &str, problem: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, the name part of a qualified name and a
/// non-empty label value.
fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter()
            .all(|&c| alnum(c) || c == b'-' || c == b'_' || c == b'.')
}

/// A DNS-1123 subdomain: dot-separated labels of lower-case letters, digits and `-`, each
/// starting and ending with a letter or digit, 253 characters at most.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= MAX_PREFIX
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// apimachinery's `IsQualifiedName`: `[prefix/]name`, the first problem found.
fn qualified_name_problem(key: &str) -> Option<String> {
    const NAME_RULE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
    let (prefix, name) = match key.split_once('/') {
        None => (None, key),
        Some((p, n)) if !n.contains('/') => (Some(p), n),
        Some(_) => {
            return Some(format!(
                "a qualified name {NAME_RULE}, with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ))
        }
    };
    match prefix {
        Some("") => return Some("prefix part must be non-empty".into()),
        Some(p) if !is_dns1123_subdomain(p) => {
            return Some(format!(
            "prefix part must be a lowercase RFC 1123 subdomain of at most {MAX_PREFIX} characters"
        ))
        }
        _ => {}
    }
    if name.is_empty() {
        return Some("name part must be non-empty".into());
    }
    if name.len() > MAX_NAME_PART {
        return Some(format!(
            "name part must be no more than {MAX_NAME_PART} characters"
        ));
    }
    if !is_qualified_part(name) {
        return Some(format!("name part {NAME_RULE}"));
    }
    None
}

fn string_map<'a>(
    field: &str,
    v: &'a Value,
) -> Result<Option<&'a serde_json::Map<String, Value>>, FieldError> {
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => {
            for (k, val) in m {
                if !val.is_string() {
                    return Err(err(&format!("{field}.{k}"), "must be a string"));
                }
            }
            Ok(Some(m))
        }
        _ => Err(err(field, "must be a map of strings")),
    }
}

/// `metadata.labels`: keys are qualified names, values empty or qualified name parts of at
/// most 63 characters, at most [`MAX_LABELS`] of them.
pub fn validate_labels(field: &str, labels: &Value) -> Result<(), FieldError> {
    let Some(m) = string_map(field, labels)? else {
        return Ok(());
    };
    if m.len() > MAX_LABELS {
        return Err(err(
            field,
            format!(
                "Too many: {}: must have at most {MAX_LABELS} labels",
                m.len()
            ),
        ));
    }
    for (k, v) in m {
        if let Some(p) = qualified_name_problem(k) {
            return Err(err(field, format!("Invalid value: {k:?}: {p}")));
        }
        let v = v.as_str().unwrap_or("");
        if v.len() > MAX_NAME_PART {
            return Err(err(
                field,
                format!("Invalid value: {v:?}: must be no more than {MAX_NAME_PART} characters"),
            ));
        }
        if !v.is_empty() && !is_qualified_part(v) {
            return Err(err(field, format!("Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")));
        }
    }
    Ok(())
}

/// `metadata.annotations`: keys are qualified names (case aside), keys and values together
/// at most [`MAX_ANNOTATION_BYTES`], at most [`MAX_ANNOTATIONS`] of them.
pub fn validate_annotations(field: &str, annotations: &Value) -> Result<(), FieldError> {
    let Some(m) = string_map(field, annotations)? else {
        return Ok(());
    };
    if m.len() > MAX_ANNOTATIONS {
        return Err(err(
            field,
            format!(
                "Too many: {}: must have at most {MAX_ANNOTATIONS} annotations",
                m.len()
            ),
        ));
    }
    let mut total = 0;
    for (k, v) in m {
        if let Some(p) = qualified_name_problem(&k.to_ascii_lowercase()) {
            return Err(err(field, format!("Invalid value: {k:?}: {p}")));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > MAX_ANNOTATION_BYTES {
        return Err(err(
            field,
            format!("Too long: must have at most {MAX_ANNOTATION_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// ConfigMap `data` and `binaryData` together, or Secret `data` (base64, counted decoded),
/// at most [`MAX_DATA_BYTES`] (the apiserver's `Too long` on field `""`).
pub fn check_data_size(obj: &Value, base64: bool) -> Result<(), FieldError> {
    let mut total = 0usize;
    for field in ["data", "binaryData"] {
        for (k, v) in obj[field].as_object().into_iter().flatten() {
            let len = v.as_str().map_or(0, str::len);
            total += k.len()
                + if base64 || field == "binaryData" {
                    len / 4 * 3
                } else {
                    len
                };
        }
    }
    if total > MAX_DATA_BYTES {
        return Err(err(
            "[]",
            format!("Too long: must have at most {MAX_DATA_BYTES} bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_meta(meta: Value) -> Value {
        json!({ "metadata": meta })
    }

    #[test]
    fn labels_follow_kubernetes_rules() {
        let ok = |l: Value| validate_labels("metadata.labels", &l).is_ok();
        assert!(ok(json!({
            "app": "web", "example.com/tier": "", "kubernetes.io/hostname": "edge-0",
            "a_b.c-d": "x_y.z-1", "A": "B"
        })));
        for bad in [
            json!({ "a".repeat(64): "" }),
            json!({ format!("{}/a", "p".repeat(254)): "" }),
            json!({ "/a": "" }),
            json!({ "a/": "" }),
            json!({ "a/b/c": "" }),
            json!({ "Example.com/a": "" }),
            json!({ "a..b/c": "" }),
            json!({ "-a": "" }),
            json!({ "a": "v".repeat(64) }),
            json!({ "a": "-v" }),
            json!({ "a": "v w" }),
            json!({ "a": 1 }),
            json!(["a"]),
        ] {
            assert!(!ok(bad.clone()), "{bad}");
        }
        let many: serde_json::Map<String, Value> = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), json!("")))
            .collect();
        let e = validate_labels("metadata.labels", &Value::Object(many)).unwrap_err();
        assert!(e.problem.contains("at most 256 labels"), "{e}");
        let e = validate_labels("metadata.labels", &json!({ "a".repeat(64): "" })).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "metadata.labels: Invalid value: {:?}: name part must be no more than 63 characters",
                "a".repeat(64)
            )
        );
    }

    #[test]
    fn annotations_are_bounded_in_total_bytes_and_count() {
        let ok = |a: Value| validate_annotations("metadata.annotations", &a).is_ok();
        assert!(ok(
            json!({ "Example.com/Any": "anything at all, {\"json\": true}" })
        ));
        assert!(ok(json!({ "a": "x".repeat(MAX_ANNOTATION_BYTES - 1) })));
        assert!(!ok(json!({ "a": "x".repeat(MAX_ANNOTATION_BYTES) })));
        assert!(!ok(json!({ "a b": "" })));
        let many: serde_json::Map<String, Value> = (0..=MAX_ANNOTATIONS)
            .map(|i| (format!("k{i}"), json!("")))
            .collect();
        assert!(!ok(Value::Object(many)));
    }

    #[test]
    fn stored_objects_are_bounded_in_size_depth_and_metadata() {
        assert_eq!(
            check_stored(&with_meta(json!({ "name": "a" })), None),
            Ok(())
        );
        let big = json!({ "data": { "k": "x".repeat(MAX_OBJECT_BYTES) } });
        let e = check_stored(&big, None).unwrap_err();
        assert_eq!((e.code, e.reason), (413, "RequestEntityTooLarge"));
        assert!(e.message.contains("1572864"), "the limit is named: {e}");
        assert!(
            e.full_message("ConfigMap", "configmaps", "big")
                .starts_with("Request entity too large: "),
            "{e}"
        );
        let mut deep = json!(1);
        for _ in 0..MAX_JSON_DEPTH {
            deep = json!([deep]);
        }
        assert!(check_stored(&deep, None).is_ok(), "exactly at the limit");
        assert_eq!(
            check_stored(&json!({ "status": deep }), None)
                .unwrap_err()
                .code,
            422
        );
        let bad_label = with_meta(json!({ "labels": { "a b": "" } }));
        let e = check_stored(&bad_label, None).unwrap_err();
        assert_eq!(
            e.full_message("Node", "nodes", "n"),
            "Node \"n\" is invalid: metadata.labels: Invalid value: \"a b\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        );
        // Stored before the rules: a status report still goes, a label change is checked.
        let mut reported = bad_label.clone();
        reported["status"] = json!({ "phase": "Running" });
        assert_eq!(check_stored(&reported, Some(&bad_label)), Ok(()));
        reported["metadata"]["labels"]["b c"] = json!("");
        assert_eq!(
            check_stored(&reported, Some(&bad_label)).unwrap_err().code,
            422
        );
        let mut big_status = bad_label.clone();
        big_status["status"] = json!({ "x": "y".repeat(MAX_OBJECT_BYTES) });
        assert_eq!(
            check_stored(&big_status, Some(&bad_label))
                .unwrap_err()
                .code,
            413
        );
    }

    #[test]
    fn data_is_at_most_one_mebibyte() {
        let cm = |n: usize| json!({ "data": { "k": "x".repeat(n) } });
        assert!(check_data_size(&cm(MAX_DATA_BYTES - 1), false).is_ok());
        assert!(check_data_size(&cm(MAX_DATA_BYTES), false).is_err());
        // Secrets count decoded bytes: 4 base64 characters are 3 bytes.
        let s = json!({ "data": { "k": "QUFB".repeat(MAX_DATA_BYTES / 3 - 1) } });
        assert!(check_data_size(&s, true).is_ok());
        assert!(check_data_size(&s, false).is_err());
    }

    #[test]
    fn no_sequence_of_status_reports_grows_a_stored_object_past_the_limits() {
        let path = std::env::temp_dir().join(format!("limits-grow-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut s = crate::CloudStore::open(&path).unwrap();
        let pod = json!({"apiVersion": "v1", "metadata": {"name": "p"},
            "spec": {"nodeName": "edge0", "containers": [{"name": "c", "image": "i"}]}});
        let key = s.apply(&[(crate::Kind::Pod, pod)], 0).unwrap()[0].0.clone();
        // 10 reports of 400 KiB each under a new key: the first three fit, then the
        // object would pass 1.5 MiB and every further one is refused.
        let mut refused = 0;
        for i in 0..10 {
            let patch = json!({"status": {format!("x{i}"): "y".repeat(400 << 10)}});
            match s.patch_status(&key, &patch) {
                Ok(_) => {}
                Err(crate::StoreError::Refused(r, k)) => {
                    assert_eq!((r.code, k.name.as_str()), (413, "p"));
                    refused += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(refused, 7);
        let stored = &s.get(&key).unwrap().object;
        assert!(json_len(stored) <= MAX_OBJECT_BYTES);
        let before = stored.clone();
        let mut deep = json!(1);
        for _ in 0..MAX_JSON_DEPTH {
            deep = json!([deep]);
        }
        let e = s
            .patch_status(&key, &json!({"status": {"d": deep}}))
            .unwrap_err();
        assert!(matches!(
            e,
            crate::StoreError::Refused(Refusal { code: 422, .. }, _)
        ));
        assert_eq!(s.get(&key).unwrap().object, before, "state intact");
        // Nor can apply store what a manifest check would have let through.
        let big = json!({"apiVersion": "v1", "metadata": {"name": "big"},
            "data": {"k": "x".repeat(MAX_OBJECT_BYTES)}});
        assert!(matches!(
            s.apply(&[(crate::Kind::ConfigMap, big)], 0),
            Err(crate::StoreError::Refused(Refusal { code: 413, .. }, _))
        ));
        assert_eq!(s.len(), 1);
    }
}
