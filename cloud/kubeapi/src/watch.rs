//! Watches (`?watch=1`), sans-IO: each [`Watch::poll`] compares what is there now with what
//! the watcher was last told and returns the `WatchEvent`s (ADDED, MODIFIED, DELETED) that
//! bring it up to date. The runner polls when the store may have changed and streams the
//! events as newline-separated JSON in chunks, as kube-apiserver does.
//!
//! From a resourceVersion (what `kubectl get -w` sends after its list): objects at or below
//! it are taken as known, newer ones come as ADDED. Without one, every object comes as ADDED
//! first. What was deleted between the list and the watch start is not seen: there is no
//! history yet (and so no `410 Gone` and no bookmarks).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::selectors::{FieldSelector, LabelSelector};
use crate::table::{self, Include};
use crate::{Objects, Resource};

/// Objects one watch remembers at most (their last state, to tell MODIFIED and DELETED):
/// past it, the watch ends and the client lists and watches again.
pub const MAX_WATCHED_OBJECTS: usize = 10_000;
/// How long a watch runs unless `timeoutSeconds` says less (kube-apiserver's
/// `--min-request-timeout` default), and the most it may ask for.
pub const DEFAULT_TIMEOUT_SECS: u64 = 1800;
pub const MAX_TIMEOUT_SECS: u64 = 3600;

/// One watch's state.
#[derive(Debug)]
pub struct Watch {
    resource: Resource,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    table: bool,
    include: Include,
    since: Option<u64>,
    /// What the watcher was last told, by namespace/name.
    known: BTreeMap<(String, String), Value>,
    started: bool,
    headers_sent: bool,
    /// When the runner ends the watch (`timeoutSeconds`, bounded).
    pub timeout_secs: u64,
}

fn rv_of(o: &Value) -> u64 {
    o["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn key_of(o: &Value) -> (String, String) {
    let m = &o["metadata"];
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    (s(&m["namespace"]), s(&m["name"]))
}

impl Watch {
    pub fn new(
        resource: Resource,
        namespace: Option<&str>,
        labels: LabelSelector,
        fields: FieldSelector,
        table: bool,
        include: Include,
        since: Option<u64>,
    ) -> Watch {
        Watch {
            resource,
            namespace: namespace.map(str::to_owned),
            labels,
            fields,
            table,
            include,
            since,
            known: BTreeMap::new(),
            started: false,
            headers_sent: false,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
        }
    }

    fn event(&mut self, kind: &str, obj: &Value, now: i64) -> Value {
        let object = if self.table {
            let mut t = table::table(
                self.resource,
                std::slice::from_ref(obj),
                &rv_of(obj).to_string(),
                self.include,
                now,
            );
            // Column definitions go with the first event only, as the apiserver sends them.
            if self.headers_sent {
                t["columnDefinitions"] = json!([]);
            }
            self.headers_sent = true;
            t
        } else {
            obj.clone()
        };
        json!({ "type": kind, "object": object })
    }

    /// The events since the last poll; `Err` when the watch must end (too many objects).
    pub fn poll(&mut self, objects: &dyn Objects, now: i64) -> Result<Vec<Value>, Value> {
        let (items, _) = objects.list(self.resource, self.namespace.as_deref());
        let mut now_seen: BTreeMap<(String, String), Value> = BTreeMap::new();
        for o in items {
            if self.labels.matches(&o["metadata"]["labels"]) && self.fields.matches(&o) {
                now_seen.insert(key_of(&o), crate::typed(self.resource, o));
            }
        }
        if now_seen.len() > MAX_WATCHED_OBJECTS {
            return Err(crate::status(
                410,
                "Expired",
                &format!("a watch follows at most {MAX_WATCHED_OBJECTS} objects; list again"),
                Value::Null,
            )
            .body);
        }
        if !self.started {
            self.started = true;
            if let Some(since) = self.since {
                for (k, o) in &now_seen {
                    if rv_of(o) <= since {
                        self.known.insert(k.clone(), o.clone());
                    }
                }
            }
        }
        let mut out = Vec::new();
        let gone: Vec<(String, String)> = self
            .known
            .keys()
            .filter(|k| !now_seen.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(o) = self.known.remove(&k) {
                out.push(self.event("DELETED", &o, now));
            }
        }
        for (k, o) in now_seen {
            let kind = match self.known.get(&k) {
                None => "ADDED",
                Some(before) if *before != o => "MODIFIED",
                Some(_) => continue,
            };
            out.push(self.event(kind, &o, now));
            self.known.insert(k, o);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Live(RefCell<Vec<Value>>);

    impl Objects for Live {
        fn list(&self, _: Resource, _: Option<&str>) -> (Vec<Value>, String) {
            (self.0.borrow().clone(), "0".into())
        }
    }

    fn cm(name: &str, rv: u64, label: &str) -> Value {
        json!({ "metadata": { "name": name, "namespace": "default",
                              "resourceVersion": rv.to_string(), "labels": { "app": label } },
                "data": {} })
    }

    fn kinds(events: &[Value]) -> Vec<(String, String)> {
        events
            .iter()
            .map(|e| {
                let o = &e["object"];
                let name = o["metadata"]["name"]
                    .as_str()
                    .or(o["rows"][0]["cells"][0].as_str())
                    .unwrap_or("");
                (e["type"].as_str().unwrap().to_owned(), name.to_owned())
            })
            .collect()
    }

    fn pair(t: &str, n: &str) -> (String, String) {
        (t.into(), n.into())
    }

    #[test]
    fn watches_tell_additions_changes_and_deletions_once() {
        let live = Live(RefCell::new(vec![cm("a", 5, "x"), cm("b", 9, "x")]));
        let labels = LabelSelector::parse("app=x").unwrap();
        let mut w = Watch::new(
            Resource::ConfigMaps,
            None,
            labels,
            FieldSelector::default(),
            false,
            Include::Metadata,
            Some(5),
        );
        // From resourceVersion 5: `a` was listed already, `b` is news.
        assert_eq!(kinds(&w.poll(&live, 0).unwrap()), [pair("ADDED", "b")]);
        assert!(
            w.poll(&live, 0).unwrap().is_empty(),
            "nothing changed, nothing told"
        );
        live.0.borrow_mut()[0] = cm("a", 10, "x");
        live.0.borrow_mut().push(cm("other", 11, "y"));
        assert_eq!(kinds(&w.poll(&live, 0).unwrap()), [pair("MODIFIED", "a")]);
        live.0.borrow_mut().remove(1);
        let ev = w.poll(&live, 0).unwrap();
        assert_eq!(kinds(&ev), [pair("DELETED", "b")]);
        assert_eq!(ev[0]["object"]["kind"], "ConfigMap");
        // A label change out of the selector reads as a deletion, as the apiserver says it.
        live.0.borrow_mut()[0] = cm("a", 12, "z");
        assert_eq!(kinds(&w.poll(&live, 0).unwrap()), [pair("DELETED", "a")]);
    }

    #[test]
    fn without_a_resource_version_everything_comes_as_added_and_tables_carry_columns_once() {
        let live = Live(RefCell::new(vec![cm("a", 5, "x"), cm("b", 9, "x")]));
        let mut w = Watch::new(
            Resource::ConfigMaps,
            None,
            LabelSelector::default(),
            FieldSelector::default(),
            true,
            Include::Metadata,
            None,
        );
        let ev = w.poll(&live, 0).unwrap();
        assert_eq!(kinds(&ev), [pair("ADDED", "a"), pair("ADDED", "b")]);
        assert_eq!(ev[0]["object"]["kind"], "Table");
        assert_eq!(
            ev[0]["object"]["columnDefinitions"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        assert_eq!(ev[1]["object"]["columnDefinitions"], json!([]));
    }

    #[test]
    fn a_watch_over_its_bound_ends() {
        let many = (0..=MAX_WATCHED_OBJECTS as u64)
            .map(|i| cm(&format!("c{i}"), i, "x"))
            .collect();
        let mut w = Watch::new(
            Resource::ConfigMaps,
            None,
            LabelSelector::default(),
            FieldSelector::default(),
            false,
            Include::Metadata,
            None,
        );
        let err = w.poll(&Live(RefCell::new(many)), 0).unwrap_err();
        assert_eq!(err["code"], 410);
    }
}
