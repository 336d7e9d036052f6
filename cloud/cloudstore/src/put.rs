//! One object written as the Kubernetes API writes it: a create that must not find the name
//! taken, an update that must find it and, when it names a resourceVersion, that version
//! (optimistic concurrency). The object is validated ([`kinds::validate`]) and prepared as
//! [`CloudStore::apply`] prepares it (the same defaults, limits and kept fields), so the admin
//! API and the Kubernetes API store the same thing for the same manifest.

use serde_json::Value;

use crate::{key_of, kinds, prepare, Change, CloudStore, Entry, Kind, StoreError};

/// What a single-object write expects to find.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put<'a> {
    /// The name is free.
    Create,
    /// The object exists, at this resourceVersion if one is given.
    Update(Option<&'a str>),
}

impl CloudStore {
    /// Validates and writes one object; returns what changed and the object as stored (with
    /// `dry_run`, as it would be stored: nothing is written).
    pub fn put(
        &mut self,
        kind: Kind,
        manifest: &Value,
        expect: Put,
        now_unix: i64,
        dry_run: bool,
    ) -> Result<(Change, Value), StoreError> {
        let key = key_of(kind, manifest);
        kinds::validate(kind, manifest).map_err(|e| StoreError::Refused(e.into(), key.clone()))?;
        let current = self.objects.get(&key);
        match (expect, current) {
            (Put::Create, Some(_)) => return Err(StoreError::AlreadyExists(key)),
            (Put::Update(_), None) => return Err(StoreError::NotFound(key.to_string())),
            (Put::Update(Some(rv)), Some(cur)) if rv != cur.rv().to_string() => {
                return Err(StoreError::Conflict(key, rv.to_owned()))
            }
            _ => {}
        }
        let rv = self.last_rv + 1;
        let prepared = prepare(kind, manifest, current, rv, now_unix)
            .map_err(|r| StoreError::Refused(r, key.clone()))?;
        let Some((obj, change)) = prepared else {
            let cur = current.expect("only an update finds nothing to change");
            return Ok((Change::Unchanged, cur.object.clone()));
        };
        if !dry_run {
            let entry = Entry {
                object: obj.clone(),
                push_rv: rv,
            };
            self.write_entry(&key, entry, rv)?;
        }
        Ok((change, obj))
    }
}

impl CloudStore {
    /// Replaces an object's status (the `/status` subresource), at `expect_rv` if given.
    /// Moves its resourceVersion, not its push version: a status is the edge's to report, not
    /// something to send it. Returns the object as stored (with `dry_run`, as it would be).
    pub fn put_status(
        &mut self,
        key: &crate::ObjectKey,
        status: &Value,
        expect_rv: Option<&str>,
        dry_run: bool,
    ) -> Result<Value, StoreError> {
        let Some(cur) = self.objects.get(key) else {
            return Err(StoreError::NotFound(key.to_string()));
        };
        if let Some(rv) = expect_rv.filter(|rv| *rv != cur.rv().to_string()) {
            return Err(StoreError::Conflict(key.clone(), rv.to_owned()));
        }
        if cur.object.get("status").unwrap_or(&Value::Null) == status {
            return Ok(cur.object.clone());
        }
        let mut obj = cur.object.clone();
        obj["status"] = status.clone();
        let rv = self.last_rv + 1;
        obj["metadata"]["resourceVersion"] = serde_json::json!(rv.to_string());
        crate::limits::check_stored(&obj, Some(&cur.object))
            .map_err(|r| StoreError::Refused(r, key.clone()))?;
        if !dry_run {
            let entry = Entry {
                object: obj.clone(),
                push_rv: cur.push_rv,
            };
            self.write_entry(key, entry, rv)?;
        }
        Ok(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store(name: &str) -> CloudStore {
        let p = std::env::temp_dir().join(format!("cloudstore-put-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        CloudStore::open(&p).unwrap()
    }

    fn cm(data: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": data}})
    }

    #[test]
    fn create_refuses_a_taken_name_and_update_a_stale_version() {
        let mut s = store("conflict");
        let (change, created) = s
            .put(Kind::ConfigMap, &cm("1"), Put::Create, 0, false)
            .unwrap();
        assert_eq!(change, Change::Created);
        assert!(matches!(
            s.put(Kind::ConfigMap, &cm("2"), Put::Create, 0, false),
            Err(StoreError::AlreadyExists(_))
        ));
        let rv = created["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned();
        let (change, updated) = s
            .put(Kind::ConfigMap, &cm("2"), Put::Update(Some(&rv)), 0, false)
            .unwrap();
        assert_eq!(change, Change::Configured);
        assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
        // The version the first update was based on is stale now.
        assert!(matches!(
            s.put(Kind::ConfigMap, &cm("3"), Put::Update(Some(&rv)), 0, false),
            Err(StoreError::Conflict(_, _))
        ));
        assert_eq!(
            s.get(&key_of(Kind::ConfigMap, &cm("x"))).unwrap().object["data"]["k"],
            "2"
        );
        // No version given: unconditional, as the apiserver allows for these kinds.
        s.put(Kind::ConfigMap, &cm("4"), Put::Update(None), 0, false)
            .unwrap();
        let mut other = cm("1");
        other["metadata"]["name"] = json!("missing");
        assert!(matches!(
            s.put(Kind::ConfigMap, &other, Put::Update(None), 0, false),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn dry_run_and_invalid_objects_store_nothing() {
        let mut s = store("dry");
        let rv = s.last_rv();
        let (_, would) = s
            .put(Kind::ConfigMap, &cm("1"), Put::Create, 0, true)
            .unwrap();
        assert_eq!(would["data"]["k"], "1");
        assert!(s.is_empty());
        assert_eq!(s.last_rv(), rv);
        let bad = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": 1}});
        match s.put(Kind::ConfigMap, &bad, Put::Create, 0, false) {
            Err(StoreError::Refused(r, _)) => {
                assert_eq!(
                    (r.code, r.message.as_str()),
                    (422, "data.k: must be a string")
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(s.is_empty());
    }
}
