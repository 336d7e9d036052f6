//! Label and field selectors as `?labelSelector=` and `?fieldSelector=` carry them, with the
//! apiserver's syntax: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k` for
//! labels; `f=v`, `f==v`, `f!=v` on the fields each kind supports for fields.

use serde_json::Value;

use crate::resources::Resource;

/// Longest selector accepted, in bytes (the URL head limit bounds it anyway; this says so).
pub const MAX_SELECTOR_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSelector(Vec<Req>);

/// Splits at commas outside parentheses.
fn split_top(s: &str) -> Result<Vec<&str>, String> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err("unbalanced parentheses".into());
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".into());
    }
    out.push(&s[start..]);
    Ok(out)
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn set_of(rest: &str) -> Option<Vec<String>> {
    let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_owned()).collect())
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        if s.len() > MAX_SELECTOR_BYTES {
            return Err(format!("selector over {MAX_SELECTOR_BYTES} bytes"));
        }
        let mut reqs = Vec::new();
        for part in split_top(s)?.into_iter().map(str::trim) {
            if part.is_empty() {
                if s.trim().is_empty() {
                    continue;
                }
                return Err(format!(
                    "unable to parse requirement: empty requirement in {s:?}"
                ));
            }
            let bad = || format!("unable to parse requirement: {part:?}");
            let req = if let Some(k) = part.strip_prefix('!') {
                Req::NotExists(k.trim().to_owned())
            } else if let Some((k, v)) = part.split_once("!=") {
                Req::NotEq(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Req::Eq(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                Req::NotIn(k.trim().to_owned(), set_of(rest).ok_or_else(bad)?)
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Req::In(k.trim().to_owned(), set_of(rest).ok_or_else(bad)?)
            } else {
                Req::Exists(part.to_owned())
            };
            let (key, values): (&str, Vec<&String>) = match &req {
                Req::Eq(k, v) | Req::NotEq(k, v) => (k, vec![v]),
                Req::In(k, vs) | Req::NotIn(k, vs) => (k, vs.iter().collect()),
                Req::Exists(k) | Req::NotExists(k) => (k, vec![]),
            };
            if !valid_key(key) {
                return Err(format!("invalid label key {key:?}"));
            }
            if let Some(v) = values.into_iter().find(|v| !valid_value(v)) {
                return Err(format!("invalid label value: {v:?}"));
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object with `labels` (a JSON object, or null) is selected.
    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Req::NotIn(k, vs) => !get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

/// The fields a kind may be selected by beyond `metadata.name` and `metadata.namespace`
/// (the apiserver's field label conversion functions per kind).
fn extra_fields(r: Resource) -> &'static [&'static str] {
    match r {
        Resource::Pods => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        Resource::Nodes => &["spec.unschedulable"],
        Resource::Secrets => &["type"],
        Resource::Namespaces => &["status.phase"],
        Resource::Events => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "reason",
            "type",
            "source",
        ],
        _ => &[],
    }
}

/// A parsed field selector: `(field, value, equal)` terms, all must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldSelector(Vec<(String, String, bool)>);

impl FieldSelector {
    /// Parses `s` for resource `r`; an unsupported field is refused as the apiserver does.
    pub fn parse(s: &str, r: Resource) -> Result<FieldSelector, String> {
        if s.len() > MAX_SELECTOR_BYTES {
            return Err(format!("selector over {MAX_SELECTOR_BYTES} bytes"));
        }
        let mut terms = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, eq) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, v, true)
            } else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            if !["metadata.name", "metadata.namespace"].contains(&field)
                && !extra_fields(r).contains(&field)
            {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_owned(), value.trim().to_owned(), eq));
        }
        Ok(FieldSelector(terms))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, value, eq)| {
            let mut v = obj;
            for part in field.split('.') {
                v = &v[part];
            }
            // Absent fields compare as "" (so `spec.nodeName=` selects unscheduled pods);
            // `source` of an event is its component, booleans read as true/false.
            let v = if field == "source" {
                &v["component"]
            } else {
                v
            };
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Null => {
                    if field == "spec.unschedulable" {
                        "false".into()
                    } else {
                        String::new()
                    }
                }
                other => other.to_string(),
            };
            (text == *value) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_follow_the_apiserver_syntax() {
        let labels = json!({ "app": "x", "tier": "web" });
        let yes = [
            "",
            "app=x",
            "app==x",
            "app!=y",
            "app in (x, y)",
            "tier notin (db)",
            "app",
            "!missing",
            "app=x,tier=web",
            "app in (x),!missing",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(&labels), "{s}");
        }
        let no = [
            "app=y",
            "app!=x",
            "app in (y,z)",
            "tier notin (web)",
            "missing",
            "!app",
            "app=x,tier=db",
        ];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(&labels), "{s}");
        }
        assert!(LabelSelector::parse("app=x")
            .unwrap()
            .matches(&json!({"app": "x"})));
        assert!(!LabelSelector::parse("app=x").unwrap().matches(&Value::Null));
        for bad in ["app in (x", "a=b,,c=d", "=x", "app=x y", "a b c"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors_know_each_kinds_fields() {
        let pod = json!({ "metadata": { "name": "p", "namespace": "ns" },
                          "spec": { "nodeName": "edge-1" }, "status": { "phase": "Running" } });
        let sel = |s| FieldSelector::parse(s, Resource::Pods).unwrap();
        assert!(sel("spec.nodeName=edge-1").matches(&pod));
        assert!(sel("metadata.name==p,metadata.namespace=ns,status.phase=Running").matches(&pod));
        assert!(!sel("spec.nodeName!=edge-1").matches(&pod));
        assert!(!sel("status.phase=Pending").matches(&pod));
        assert!(
            sel("spec.nodeName=").matches(&json!({ "spec": {} })),
            "unscheduled"
        );
        assert_eq!(
            FieldSelector::parse("spec.nodeName=x", Resource::ConfigMaps),
            Err("field label not supported: spec.nodeName".into())
        );
        assert!(FieldSelector::parse("nonsense", Resource::Pods).is_err());
        let node = json!({ "metadata": { "name": "n" }, "spec": {} });
        assert!(
            FieldSelector::parse("spec.unschedulable=false", Resource::Nodes)
                .unwrap()
                .matches(&node)
        );
    }
}
