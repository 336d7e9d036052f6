//! Reply shapes (§4.6): `ObjectResp` `{"Object":<obj|null>,"Err":<null|{"ErrStatus":Status}>}`
//! for node, lease and patch requests, and Kubernetes `Status` errors.

use serde_json::{json, Value};

/// `{"Object":obj,"Err":null}`.
pub fn ok(object: Value) -> Value {
    json!({ "Object": object, "Err": null })
}

/// `{"Object":null,"Err":{"ErrStatus":status}}`.
pub fn err(status: Value) -> Value {
    json!({ "Object": null, "Err": { "ErrStatus": status } })
}

/// A `metav1.Status` failure, as the apiserver writes it.
pub fn status(code: u16, reason: &str, message: &str, details: Value) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    })
}

/// The NotFound status for `<plural>.<group> "<name>"`.
pub fn not_found(plural: &str, group: &str, name: &str) -> Value {
    let what = if group.is_empty() {
        plural.to_owned()
    } else {
        format!("{plural}.{group}")
    };
    let mut details = json!({ "name": name, "kind": plural });
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    status(
        404,
        "NotFound",
        &format!("{what} \"{name}\" not found"),
        details,
    )
}

/// What an `ObjectResp` (or a bare object / `ErrStatus`) reply says.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Success with the returned object (`Value::Null` when the peer sent none).
    Object(Value),
    /// A Kubernetes `Status` failure.
    Failed {
        code: u16,
        reason: String,
        message: String,
    },
    /// The plain `"OK"` answer.
    Ok,
    /// Any other string: upstream's error strings.
    Text(String),
}

impl Reply {
    /// Reads a reply content in any of the shapes of §4.6.
    pub fn from_content(content: &Value) -> Reply {
        match content {
            Value::String(s) if s == "OK" => Reply::Ok,
            Value::String(s) => Reply::Text(s.clone()),
            Value::Object(map) if map.contains_key("Object") || map.contains_key("Err") => {
                match map.get("Err").and_then(|e| e.get("ErrStatus")) {
                    Some(st) => Self::failed(st),
                    None => Reply::Object(map.get("Object").cloned().unwrap_or(Value::Null)),
                }
            }
            Value::Object(map) if map.contains_key("ErrStatus") => Self::failed(&map["ErrStatus"]),
            other => Reply::Object(other.clone()),
        }
    }

    fn failed(st: &Value) -> Reply {
        Reply::Failed {
            code: st.get("code").and_then(Value::as_u64).unwrap_or(500) as u16,
            reason: st
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            message: st
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Reply::Failed { reason, .. } if reason == "NotFound")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_reply_shape() {
        assert_eq!(Reply::from_content(&json!("OK")), Reply::Ok);
        assert_eq!(
            Reply::from_content(&json!("boom")),
            Reply::Text("boom".into())
        );
        assert_eq!(
            Reply::from_content(&ok(json!({"a":1}))),
            Reply::Object(json!({"a":1}))
        );
        let nf = Reply::from_content(&err(not_found("leases", "coordination.k8s.io", "edge0")));
        assert!(nf.is_not_found());
        assert!(
            matches!(nf, Reply::Failed { code: 404, ref message, .. } if message == "leases.coordination.k8s.io \"edge0\" not found")
        );
        assert!(
            Reply::from_content(&json!({"ErrStatus": {"reason": "NotFound", "code": 404}}))
                .is_not_found()
        );
        assert_eq!(
            Reply::from_content(&json!({"kind":"ConfigMap"})),
            Reply::Object(json!({"kind":"ConfigMap"}))
        );
    }
}
