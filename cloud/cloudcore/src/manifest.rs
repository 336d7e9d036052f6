//! Manifests as users write them: YAML or JSON, one or many documents (`---`), or a `List`.
//! Every document is validated before anything is stored; the first problem is reported with
//! the document's position, kind and name, and the field at fault. Each object is held to the
//! limits every stored object keeps (`cloudstore::limits`: 1.5 MiB, 64 levels deep, labels and
//! annotations as Kubernetes validates them), named in the error.

use cloudstore::{kinds, limits, Kind};
use proto::limits::MAX_JSON_DEPTH;
use serde::Deserialize;
use serde_json::Value;

/// Largest manifest accepted by the admin API.
pub const MAX_MANIFEST_BYTES: usize = 8 << 20;

/// Parses and validates `text` into objects ready for the store.
pub fn parse(text: &str) -> Result<Vec<(Kind, Value)>, String> {
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(doc).map_err(|e| {
            // serde_yaml stops at 128 levels: past our limit either way, so say that.
            if e.to_string().contains("recursion limit exceeded") {
                too_deep(i + 1)
            } else {
                format!("document {}: not valid YAML or JSON: {e}", i + 1)
            }
        })?;
        if proto::limits::depth(&v) > MAX_JSON_DEPTH {
            return Err(too_deep(i + 1));
        }
        match v {
            Value::Null => {}
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                let items = m
                    .get("items")
                    .and_then(Value::as_array)
                    .ok_or_else(|| format!("document {}: items: a List needs items", i + 1))?;
                docs.extend(items.iter().cloned().map(|it| (i + 1, it)));
            }
            other => docs.push((i + 1, other)),
        }
    }
    if docs.is_empty() {
        return Err("the manifest holds no objects".into());
    }
    let mut out = Vec::with_capacity(docs.len());
    for (n, doc) in docs {
        if !doc.is_object() {
            return Err(format!(
                "document {n}: must be a mapping with apiVersion, kind and metadata"
            ));
        }
        let kind_text = doc.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = doc["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let what = if name.is_empty() {
            format!("document {n} ({kind_text})")
        } else {
            format!("document {n} ({kind_text} {name:?})")
        };
        let Some(kind) = Kind::from_manifest(kind_text) else {
            let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
            return Err(format!(
                "{what}: kind: {kind_text:?} is not a kind cloudcore stores (known: {})",
                known.join(", ")
            ));
        };
        limits::check_stored(&doc, None).map_err(|e| format!("{what}: {e}"))?;
        kinds::validate(kind, &doc).map_err(|e| format!("{what}: {e}"))?;
        out.push((kind, doc));
    }
    Ok(out)
}

fn too_deep(n: usize) -> String {
    format!(
        "document {n}: nested deeper than the limit of {MAX_JSON_DEPTH} levels (MAX_JSON_DEPTH)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_json_and_lists() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n---\n---\n{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"p\"},\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"i\"}]}}\n";
        let objs = parse(text).unwrap();
        assert_eq!(
            objs.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            [Kind::ConfigMap, Kind::Pod]
        );
        let list = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: s}}\n";
        assert_eq!(parse(list).unwrap()[0].0, Kind::Secret);
    }

    #[test]
    fn errors_say_where() {
        let e = parse("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: []}\n")
            .unwrap_err();
        assert!(
            e.contains("document 1 (Pod \"web\")") && e.contains("spec.containers"),
            "{e}"
        );
        let e = parse("apiVersion: v1\nkind: Widget\nmetadata: {name: w}\n").unwrap_err();
        assert!(e.contains("kind: \"Widget\""), "{e}");
        let e = parse("a: [unclosed\n").unwrap_err();
        assert!(e.contains("not valid YAML"), "{e}");
        let e = parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: Pod\nmetadata: {}\n").unwrap_err();
        assert!(
            e.contains("document 2") && e.contains("metadata.name"),
            "{e}"
        );
        assert!(parse("").is_err());
        assert!(parse("- 1\n- 2\n").is_err());
    }

    #[test]
    fn objects_over_the_limits_are_refused_with_the_limit_named() {
        let cm = |bytes: usize| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata: {{k: {}}}\n",
                "x".repeat(bytes)
            )
        };
        let e = parse(&cm(5 << 20)).unwrap_err();
        assert!(
            e.contains("document 1 (ConfigMap \"big\")") && e.contains("1572864 bytes"),
            "{e}"
        );
        let e = parse(&cm(1 << 20)).unwrap_err();
        assert!(e.contains("must have at most 1048576 bytes"), "{e}");
        assert!(parse(&cm(1000)).is_ok());
        // As deep as allowed, one more level, and past serde_yaml's own limit.
        let deep = |levels: usize| {
            format!(
                "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"d\",\"annotations\":{{\"a\":\"b\"}}}},\"x\":{}1{}}}",
                "[".repeat(levels),
                "]".repeat(levels)
            )
        };
        assert!(parse(&deep(MAX_JSON_DEPTH - 1)).is_ok());
        for levels in [MAX_JSON_DEPTH, 500] {
            let e = parse(&deep(levels)).unwrap_err();
            assert!(e.contains("deeper than the limit of 64 levels"), "{e}");
        }
        let e = parse("apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {\"-x\": a}}\nspec: {containers: [{name: c, image: i}]}\n").unwrap_err();
        assert!(e.contains("metadata.labels: Invalid value: \"-x\""), "{e}");
    }
}
