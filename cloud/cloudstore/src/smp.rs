//! Strategic-merge patch, as far as edge status reports need it: objects merge recursively,
//! `null` deletes, lists of objects merge by their Kubernetes merge key (`type` for conditions
//! and addresses, `name` for container statuses), other lists are replaced, `$` directives are
//! ignored.

use serde_json::{Map, Value};

fn merge_key(items: &[Value]) -> Option<&'static str> {
    if items.is_empty() || !items.iter().all(Value::is_object) {
        return None;
    }
    ["type", "name"].into_iter().find(|k| {
        items
            .iter()
            .all(|i| i.get(*k).is_some_and(Value::is_string))
    })
}

/// Applies `patch` to `target` in place.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(_) => strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v),
            Value::Array(items) if merge_key(items).is_some() => {
                let key = merge_key(items).expect("checked in the guard");
                let list = t.entry(k.clone()).or_insert_with(|| Value::Array(vec![]));
                if !list.is_array() {
                    *list = Value::Array(vec![]);
                }
                let list = list.as_array_mut().expect("made an array above");
                for item in items {
                    match list.iter_mut().find(|e| e.get(key) == item.get(key)) {
                        Some(existing) => strategic_merge(existing, item),
                        None => list.push(item.clone()),
                    }
                }
            }
            other => {
                t.insert(k.clone(), other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_by_type_and_by_name() {
        let mut pod = json!({"status": {"phase": "Pending",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "a", "restartCount": 0}, {"name": "b", "restartCount": 1}]}});
        strategic_merge(
            &mut pod,
            &json!({"status": {"phase": "Running",
            "$setElementOrder/conditions": [{"type": "Ready"}],
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}],
            "containerStatuses": [{"name": "b", "restartCount": 2}], "podIP": null}}),
        );
        assert_eq!(pod["status"]["phase"], "Running");
        assert_eq!(pod["status"]["conditions"].as_array().unwrap().len(), 2);
        assert_eq!(pod["status"]["conditions"][0]["status"], "True");
        assert_eq!(pod["status"]["containerStatuses"][1]["restartCount"], 2);
        assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);
        let mut x = json!({"a": [1, 2]});
        strategic_merge(&mut x, &json!({"a": [3]}));
        assert_eq!(x, json!({"a": [3]}), "plain lists are replaced");
    }
}
