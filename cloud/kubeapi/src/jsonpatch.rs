//! RFC 6902 JSON patch (`application/json-patch+json`, `kubectl patch --type json`): a list
//! of `add`, `remove`, `replace`, `move`, `copy` and `test` operations on RFC 6901 pointers,
//! applied in order to a copy (all or nothing). Errors are worded as the apiserver's patch
//! library words them; the caller answers a malformed patch 400 and one that does not apply
//! 422, as kube-apiserver does.

use serde_json::Value;

/// Most operations in one patch (kube-apiserver's `maxJSONPatchOperations`).
pub const MAX_OPERATIONS: usize = 10_000;

/// Why a patch failed: `false` if it is malformed (400), `true` if it does not apply (422).
#[derive(Debug, PartialEq)]
pub struct PatchError {
    pub applies: bool,
    pub message: String,
}

fn malformed(m: impl Into<String>) -> PatchError {
    PatchError {
        applies: false,
        message: m.into(),
    }
}

fn fails(m: impl Into<String>) -> PatchError {
    PatchError {
        applies: true,
        message: m.into(),
    }
}

/// The reference tokens of a pointer (`""` is the whole document).
fn tokens(pointer: &str) -> Result<Vec<String>, PatchError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(malformed(format!(
            "invalid JSON pointer {pointer:?}: must start with /"
        )));
    };
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn index(token: &str, len: usize, inserting: bool) -> Result<usize, PatchError> {
    if inserting && token == "-" {
        return Ok(len);
    }
    let i: usize = token
        .parse()
        .map_err(|_| fails(format!("invalid array index {token:?}")))?;
    let max = if inserting {
        len
    } else {
        len.saturating_sub(1)
    };
    if i > max || (!inserting && len == 0) {
        return Err(fails(format!("array index {i} out of bounds")));
    }
    Ok(i)
}

/// The container holding the last token, and that token.
fn parent<'a>(doc: &'a mut Value, path: &str) -> Result<(&'a mut Value, String), PatchError> {
    let mut t = tokens(path)?;
    let Some(last) = t.pop() else {
        return Err(fails("the whole document cannot be the target here"));
    };
    let mut cur = doc;
    for tok in &t {
        cur = match cur {
            Value::Object(m) => m.get_mut(tok),
            Value::Array(a) => {
                let i = index(tok, a.len(), false)?;
                a.get_mut(i)
            }
            _ => None,
        }
        .ok_or_else(|| fails(format!("doc is missing path: {path:?}")))?;
    }
    Ok((cur, last))
}

fn get<'a>(doc: &'a Value, path: &str) -> Result<&'a Value, PatchError> {
    let mut cur = doc;
    for tok in tokens(path)? {
        cur = match cur {
            Value::Object(m) => m.get(&tok),
            Value::Array(a) => a.get(index(&tok, a.len(), false)?),
            _ => None,
        }
        .ok_or_else(|| fails(format!("doc is missing path: {path:?}")))?;
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &str, v: Value) -> Result<(), PatchError> {
    if path.is_empty() {
        *doc = v;
        return Ok(());
    }
    let (p, last) = parent(doc, path)?;
    match p {
        Value::Object(m) => {
            m.insert(last, v);
        }
        Value::Array(a) => {
            let i = index(&last, a.len(), true)?;
            a.insert(i, v);
        }
        _ => return Err(fails(format!("doc is missing path: {path:?}"))),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, PatchError> {
    let (p, last) = parent(doc, path)?;
    let missing = || fails(format!("doc is missing path: {path:?}"));
    match p {
        Value::Object(m) => m.remove(&last).ok_or_else(missing),
        Value::Array(a) => {
            let i = index(&last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

/// Applies `patch` (the request body, parsed) to `doc`.
pub fn apply(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Some(ops) = patch.as_array() else {
        return Err(malformed(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch",
        ));
    };
    if ops.len() > MAX_OPERATIONS {
        return Err(fails(format!(
            "The allowed maximum operations in a JSON patch is {MAX_OPERATIONS}, got {}",
            ops.len()
        )));
    }
    let mut out = doc.clone();
    for op in ops {
        let path = op["path"]
            .as_str()
            .ok_or_else(|| malformed("operation has no path"))?;
        let value = || {
            op.get("value").cloned().ok_or_else(|| {
                malformed(format!("operation {} at {path:?} has no value", op["op"]))
            })
        };
        let from = || {
            op["from"]
                .as_str()
                .ok_or_else(|| malformed(format!("operation {} at {path:?} has no from", op["op"])))
        };
        match op["op"].as_str() {
            Some("add") => add(&mut out, path, value()?)?,
            Some("remove") => {
                remove(&mut out, path)?;
            }
            Some("replace") => {
                get(&out, path)?;
                if path.is_empty() {
                    out = value()?;
                } else {
                    remove(&mut out, path)?;
                    add(&mut out, path, value()?)?;
                }
            }
            Some("move") => {
                let v = remove(&mut out, from()?)?;
                add(&mut out, path, v)?;
            }
            Some("copy") => {
                let v = get(&out, from()?)?.clone();
                add(&mut out, path, v)?;
            }
            Some("test") => {
                if *get(&out, path)? != value()? {
                    return Err(fails(format!("testing value {path} failed: test failed")));
                }
            }
            other => {
                return Err(malformed(format!(
                    "Unexpected kind: {}",
                    other.unwrap_or("(none)")
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_operation_and_its_failures() {
        let doc = json!({"metadata": {"labels": {"a": "1"}}, "list": [1, 2, 3], "x/y": 0});
        let p = json!([
            {"op": "add", "path": "/metadata/labels/b", "value": "2"},
            {"op": "remove", "path": "/metadata/labels/a"},
            {"op": "replace", "path": "/list/0", "value": 9},
            {"op": "add", "path": "/list/-", "value": 4},
            {"op": "add", "path": "/list/1", "value": 8},
            {"op": "move", "from": "/x~1y", "path": "/moved"},
            {"op": "copy", "from": "/metadata/labels", "path": "/copied"},
            {"op": "test", "path": "/moved", "value": 0},
        ]);
        assert_eq!(
            apply(&doc, &p).unwrap(),
            json!({"metadata": {"labels": {"b": "2"}}, "list": [9, 8, 2, 3, 4], "moved": 0, "copied": {"b": "2"}})
        );
        let e = apply(&doc, &json!([{"op": "test", "path": "/x~1y", "value": 1}])).unwrap_err();
        assert!(e.applies && e.message.contains("test failed"), "{e:?}");
        let e = apply(&doc, &json!([{"op": "remove", "path": "/nope"}])).unwrap_err();
        assert!(e.applies && e.message.contains("missing path"), "{e:?}");
        let e = apply(
            &doc,
            &json!([{"op": "replace", "path": "/list/3", "value": 1}]),
        )
        .unwrap_err();
        assert!(e.applies, "{e:?}");
        assert!(!apply(&doc, &json!({"op": "add"})).unwrap_err().applies);
        assert!(
            !apply(&doc, &json!([{"op": "frob", "path": "/a"}]))
                .unwrap_err()
                .applies
        );
        // All or nothing: the failing second operation leaves no trace of the first.
        assert!(apply(
            &doc,
            &json!([{"op": "add", "path": "/n", "value": 1}, {"op": "remove", "path": "/zz"}])
        )
        .is_err());
    }
}
