//! Watches (`?watch=1`), sans-IO: each [`Watch::poll`] returns the `WatchEvent`s (ADDED,
//! MODIFIED, DELETED, BOOKMARK) since the last one. The runner polls when the store may have
//! changed and streams the events as newline-separated JSON in chunks, as kube-apiserver does.
//!
//! The stored kinds are watched from the store's history ([`Objects::changes`]): a watch from
//! resourceVersion R is told exactly the changes after R, in order, each at its version; R
//! older than the history keeps (or from before a restart, which starts it afresh) ends the
//! watch with an ERROR event whose Status is `410 Expired` "too old resource version", upon
//! which clients (kubectl's reflector, the Python client) list again. Without R the watch
//! starts with every object as ADDED, then follows the history. With a selector, an object
//! changing into it comes as ADDED and one changing out of it as DELETED, as the apiserver
//! tells them. `allowWatchBookmarks=true` adds a BOOKMARK (the version reached, no object)
//! after the catch-up and every [`BOOKMARK_INTERVAL_SECS`].
//!
//! Kinds without a history (nodes, leases, namespaces, events: derived, not stored) are
//! watched by diffing their list against what the watcher was told; from R, objects at or
//! below it count as known.

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
/// How often a watch that allows bookmarks gets one (kube-apiserver sends them about every
/// minute), so that a resumed watch starts from a recent version.
pub const BOOKMARK_INTERVAL_SECS: i64 = 60;

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
    /// The version the watcher has been told up to (history-served kinds).
    cursor: Option<u64>,
    last_bookmark: i64,
    /// When the runner ends the watch (`timeoutSeconds`, bounded).
    pub timeout_secs: u64,
    /// `allowWatchBookmarks=true` (not for Table watches: kubectl does not ask).
    pub bookmarks: bool,
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
            cursor: None,
            last_bookmark: 0,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            bookmarks: false,
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

    fn matches(&self, o: &Value) -> bool {
        self.labels.matches(&o["metadata"]["labels"]) && self.fields.matches(o)
    }

    /// The events since the last poll; `Err` (a Status) when the watch must end: too old a
    /// resourceVersion, or too many objects to diff.
    pub fn poll(&mut self, objects: &dyn Objects, now: i64) -> Result<Vec<Value>, Value> {
        let since = self.cursor.or(self.since);
        match objects.changes(self.resource, since) {
            None => self.poll_list(objects, now),
            Some(Err(too_old)) => Err(crate::status(
                410,
                "Expired",
                &format!(
                    "too old resource version: {} ({})",
                    since.unwrap_or(0),
                    too_old.oldest
                ),
                Value::Null,
            )
            .body),
            Some(Ok((changes, reached))) => Ok(self.tell(objects, changes, reached, now)),
        }
    }

    /// Events from the store's history (and, first without a version, the list as ADDED).
    fn tell(
        &mut self,
        objects: &dyn Objects,
        changes: Vec<cloudstore::history::Event>,
        reached: u64,
        now: i64,
    ) -> Vec<Value> {
        use cloudstore::history::EventType;
        let mut out = Vec::new();
        let first = self.cursor.is_none();
        if first && self.since.is_none() {
            let (items, _) = objects.list(self.resource, self.namespace.as_deref());
            for o in items {
                if !self.matches(&o) {
                    continue;
                }
                let o = crate::typed(self.resource, o);
                out.push(self.event("ADDED", &o, now));
            }
        }
        for c in changes {
            if Some(c.key.kind) != self.resource.kind()
                || self
                    .namespace
                    .as_deref()
                    .is_some_and(|ns| ns != c.key.namespace)
            {
                continue;
            }
            let now_in = c.kind != EventType::Deleted && self.matches(&c.object);
            let was_in = c.prev.as_ref().is_some_and(|p| self.matches(p));
            let kind = match (was_in, now_in) {
                (false, true) => "ADDED",
                (true, true) => "MODIFIED",
                (true, false) => "DELETED",
                (false, false) => continue,
            };
            let o = crate::typed(self.resource, c.object);
            out.push(self.event(kind, &o, now));
        }
        self.cursor = Some(reached);
        let due = first || now - self.last_bookmark >= BOOKMARK_INTERVAL_SECS;
        if self.bookmarks && !self.table && due {
            self.last_bookmark = now;
            out.push(json!({ "type": "BOOKMARK", "object": {
                "kind": self.resource.info().kind,
                "apiVersion": self.resource.api_version(),
                "metadata": { "resourceVersion": reached.to_string() },
            }}));
        }
        out
    }

    /// Events from diffing the list against what the watcher was told.
    fn poll_list(&mut self, objects: &dyn Objects, now: i64) -> Result<Vec<Value>, Value> {
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

    /// A store's history: the events kept, complete after `start`.
    struct Kept {
        live: Vec<Value>,
        start: u64,
        events: Vec<cloudstore::history::Event>,
        last: u64,
    }

    impl Objects for Kept {
        fn list(&self, _: Resource, _: Option<&str>) -> (Vec<Value>, String) {
            (self.live.clone(), self.last.to_string())
        }

        fn changes(
            &self,
            _: Resource,
            since: Option<u64>,
        ) -> Option<Result<(Vec<cloudstore::history::Event>, u64), cloudstore::history::TooOld>>
        {
            let since = since.unwrap_or(self.last);
            if since < self.start {
                return Some(Err(cloudstore::history::TooOld { oldest: self.start }));
            }
            let later = self.events.iter().filter(|e| e.rv > since).cloned();
            Some(Ok((later.collect(), self.last)))
        }
    }

    fn change(
        kind: cloudstore::history::EventType,
        object: Value,
        prev: Option<Value>,
    ) -> cloudstore::history::Event {
        let name = object["metadata"]["name"].as_str().unwrap();
        cloudstore::history::Event {
            rv: rv_of(&object),
            key: cloudstore::ObjectKey::new(cloudstore::Kind::ConfigMap, "default", name),
            kind,
            object,
            prev,
        }
    }

    fn kept() -> Kept {
        use cloudstore::history::EventType::*;
        Kept {
            live: vec![cm("a", 13, "z")],
            start: 10,
            events: vec![
                change(Added, cm("a", 11, "x"), None),
                change(Added, cm("b", 12, "x"), None),
                change(Modified, cm("a", 13, "z"), Some(cm("a", 11, "x"))),
                change(Deleted, cm("b", 14, "x"), Some(cm("b", 12, "x"))),
            ],
            last: 14,
        }
    }

    fn watch_from(since: Option<u64>) -> Watch {
        Watch::new(
            Resource::ConfigMaps,
            None,
            LabelSelector::parse("app=x").unwrap(),
            FieldSelector::default(),
            false,
            Include::Metadata,
            since,
        )
    }

    #[test]
    fn from_a_version_exactly_the_later_changes_are_told_deletions_included() {
        let store = kept();
        // From 11: `a`'s creation was seen; `b` came, `a` left the selector, `b` went.
        let mut w = watch_from(Some(11));
        let ev = w.poll(&store, 0).unwrap();
        assert_eq!(
            kinds(&ev),
            [
                pair("ADDED", "b"),
                pair("DELETED", "a"),
                pair("DELETED", "b")
            ]
        );
        assert_eq!(ev[2]["object"]["metadata"]["resourceVersion"], "14");
        assert!(
            w.poll(&store, 0).unwrap().is_empty(),
            "nothing is told twice"
        );
        // From the end, nothing; the list diff would have told `a` as ADDED (rv 13 > 12).
        assert!(watch_from(Some(14)).poll(&store, 0).unwrap().is_empty());
    }

    #[test]
    fn from_before_what_is_kept_the_watch_ends_410_gone() {
        let err = watch_from(Some(9)).poll(&kept(), 0).unwrap_err();
        assert_eq!(err["code"], 410);
        assert_eq!(err["reason"], "Expired");
        assert_eq!(err["message"], "too old resource version: 9 (10)");
    }

    #[test]
    fn bookmarks_tell_the_version_reached_when_asked_for() {
        let mut store = kept();
        let mut w = watch_from(Some(14));
        w.bookmarks = true;
        let ev = w.poll(&store, 100).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0]["type"], "BOOKMARK");
        assert_eq!(ev[0]["object"]["kind"], "ConfigMap");
        assert_eq!(ev[0]["object"]["metadata"]["resourceVersion"], "14");
        store.last = 20; // other kinds moved the store on
        assert!(
            w.poll(&store, 101).unwrap().is_empty(),
            "not before the interval"
        );
        let ev = w.poll(&store, 100 + BOOKMARK_INTERVAL_SECS).unwrap();
        assert_eq!(ev[0]["object"]["metadata"]["resourceVersion"], "20");
        assert!(watch_from(Some(14)).poll(&store, 100).unwrap().is_empty());
    }

    #[test]
    fn without_a_version_the_list_comes_first_then_the_history() {
        use cloudstore::history::EventType::*;
        let mut store = kept();
        store.live = vec![cm("a", 13, "x")];
        let mut w = watch_from(None);
        assert_eq!(kinds(&w.poll(&store, 0).unwrap()), [pair("ADDED", "a")]);
        store
            .events
            .push(change(Modified, cm("a", 15, "x"), Some(cm("a", 13, "x"))));
        store.last = 15;
        assert_eq!(kinds(&w.poll(&store, 0).unwrap()), [pair("MODIFIED", "a")]);
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
