//! Kubernetes' protobuf encoding, read for the bodies kubectl's typed clients send as
//! protobuf only (`kubectl create configmap|secret generic`: a server answering 415 makes
//! them fail, not fall back to JSON). The envelope is `k8s\0` and a `runtime.Unknown`
//! (type meta, raw bytes); the raw bytes are read for ConfigMap and Secret, with the
//! ObjectMeta fields a create carries (name, generateName, namespace, labels, annotations).
//! Field numbers are those of `k8s.io/api/core/v1/generated.proto` and apimachinery's
//! `generated.proto`. Anything else is refused with the protobuf media type named.

use serde_json::{json, Map, Value};

/// `application/vnd.kubernetes.protobuf`.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// One field's value.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl Wire<'_> {
    /// `Fixed` (ignored) for an empty string field other than a map entry (11, 12).
    fn filter_empty(self, field: u64) -> Self {
        match self {
            Wire::Bytes(x) if x.is_empty() && field < 11 => Wire::Fixed,
            w => w,
        }
    }
}

fn varint(b: &[u8], i: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i).ok_or("truncated varint")?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint over 64 bits".into())
}

/// The fields of a message, in order.
fn fields(b: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let key = varint(b, &mut i)?;
        let value = match key & 7 {
            0 => Wire::Varint(varint(b, &mut i)?),
            2 => {
                let len = usize::try_from(varint(b, &mut i)?).map_err(|_| "length too large")?;
                let end = i
                    .checked_add(len)
                    .filter(|e| *e <= b.len())
                    .ok_or("truncated field")?;
                let v = &b[i..end];
                i = end;
                Wire::Bytes(v)
            }
            1 => {
                i += 8;
                Wire::Fixed
            }
            5 => {
                i += 4;
                Wire::Fixed
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        if i > b.len() {
            return Err("truncated field".into());
        }
        out.push((key >> 3, value));
    }
    Ok(out)
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string is not UTF-8".to_owned())
}

/// A `map<string, string>` (or bytes values, base64 as JSON carries them) entry.
fn entry(b: &[u8], bytes: bool) -> Result<(String, Value), String> {
    let (mut k, mut v) = (String::new(), json!(""));
    for (f, w) in fields(b)? {
        match (f, w) {
            (1, Wire::Bytes(x)) => k = text(x)?,
            (2, Wire::Bytes(x)) if bytes => v = json!(cloudstore::base64(x)),
            (2, Wire::Bytes(x)) => v = json!(text(x)?),
            _ => {}
        }
    }
    Ok((k, v))
}

fn insert(obj: &mut Value, field: &str, (k, v): (String, Value)) {
    if !obj[field].is_object() {
        obj[field] = Value::Object(Map::new());
    }
    obj[field][k] = v;
}

fn object_meta(b: &[u8]) -> Result<Value, String> {
    let mut m = json!({});
    for (f, w) in fields(b)? {
        // Go writes unset strings as empty ones: absent in JSON.
        if let Wire::Bytes(x) = w.filter_empty(f) {
            match f {
                1 => m["name"] = json!(text(x)?),
                2 => m["generateName"] = json!(text(x)?),
                3 => m["namespace"] = json!(text(x)?),
                6 => m["resourceVersion"] = json!(text(x)?),
                11 => insert(&mut m, "labels", entry(x, false)?),
                12 => insert(&mut m, "annotations", entry(x, false)?),
                _ => {}
            }
        }
    }
    Ok(m)
}

/// Decodes a protobuf body into the JSON object it encodes.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let unknown = body.strip_prefix(MAGIC).ok_or("no k8s protobuf envelope")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (f, w) in fields(unknown)? {
        match (f, w) {
            (1, Wire::Bytes(tm)) => {
                for (f, w) in fields(tm)? {
                    match (f, w) {
                        (1, Wire::Bytes(x)) => api_version = text(x)?,
                        (2, Wire::Bytes(x)) => kind = text(x)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(x)) => raw = x,
            _ => {}
        }
    }
    let mut obj = json!({ "apiVersion": api_version, "kind": kind });
    for (f, w) in fields(raw)? {
        match (kind.as_str(), f, w) {
            (_, 1, Wire::Bytes(x)) => obj["metadata"] = object_meta(x)?,
            ("ConfigMap", 2, Wire::Bytes(x)) => insert(&mut obj, "data", entry(x, false)?),
            ("ConfigMap", 3, Wire::Bytes(x)) => insert(&mut obj, "binaryData", entry(x, true)?),
            ("ConfigMap", 4, Wire::Varint(v)) | ("Secret", 5, Wire::Varint(v)) => {
                obj["immutable"] = json!(v != 0)
            }
            ("Secret", 2, Wire::Bytes(x)) => insert(&mut obj, "data", entry(x, true)?),
            ("Secret", 3, Wire::Bytes(x)) => obj["type"] = json!(text(x)?),
            ("Secret", 4, Wire::Bytes(x)) => insert(&mut obj, "stringData", entry(x, false)?),
            ("ConfigMap" | "Secret", _, _) => {}
            _ => return Err(format!("{kind} is read only as JSON here")),
        }
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(n << 3 | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    fn entry(k: &str, v: &[u8]) -> Vec<u8> {
        [field(1, k.as_bytes()), field(2, v)].concat()
    }

    #[test]
    fn configmaps_and_secrets_as_kubectl_encodes_them() {
        let meta = [
            field(1, b"lit"),
            field(2, b""),
            field(11, &entry("app", b"x")),
        ]
        .concat();
        let cm = [
            field(1, &meta),
            field(2, &entry("a", b"b")),
            vec![4 << 3, 1],
        ]
        .concat();
        let tm = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [MAGIC.to_vec(), field(1, &tm), field(2, &cm)].concat();
        assert_eq!(
            decode(&body).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "immutable": true,
                   "metadata": {"name": "lit", "labels": {"app": "x"}}, "data": {"a": "b"}})
        );
        let secret = [
            field(1, &field(1, b"s")),
            field(2, &entry("pw", b"hello")),
            field(3, b"Opaque"),
        ]
        .concat();
        let tm = [field(1, b"v1"), field(2, b"Secret")].concat();
        let body = [MAGIC.to_vec(), field(1, &tm), field(2, &secret)].concat();
        let s = decode(&body).unwrap();
        assert_eq!(
            (&s["data"]["pw"], &s["type"]),
            (&json!("aGVsbG8="), &json!("Opaque"))
        );
        // Truncated, unknown kinds, no envelope: refused.
        assert!(decode(&body[..body.len() - 3]).is_err());
        let tm = [field(1, b"v1"), field(2, b"Pod")].concat();
        assert!(
            decode(&[MAGIC.to_vec(), field(1, &tm), field(2, &field(2, b"x"))].concat()).is_err()
        );
        assert!(decode(b"{}").is_err());
    }
}
