//! Group commit. Every write changes the in-memory mirror at once and adds its records to a
//! write set; [`CloudStore::commit`] makes the whole set durable in one redb transaction. A
//! key written many times between commits reaches the disk once.
//!
//! Two modes. Immediate (the default): each write call commits before it returns, for tools
//! and tests that want every call durable. Group ([`CloudStore::set_group_commit`]): writes
//! wait for the owner's `commit`, which cloudcore runs once per turn of its executor for
//! everything every session and the admin API wrote; each of them answers only after that
//! commit (`generation` / `durable_generation` tell which writes it covers).
//!
//! A failed commit leaves the file as it was; the mirror is then reloaded from the file, so
//! what was not made durable is forgotten everywhere, and the error goes to every waiter.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable};

use crate::{
    decode_entry, epoch, io, CloudStore, ObjectKey, StoreError, SyncEntry, META, NODES, OBJECTS,
    STATE, SYNCED, TOMBSTONES,
};

/// The tables a write set can touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Table {
    Objects,
    Synced,
    Nodes,
    State,
    Tombstones,
    Epochs,
}

/// Records written since the last commit: `None` removes the key.
#[derive(Default, Debug)]
pub(crate) struct WriteSet {
    writes: BTreeMap<(Table, String), Option<Vec<u8>>>,
    rv: Option<u64>,
    bytes: usize,
}

impl WriteSet {
    pub(crate) fn get(&self, t: Table, key: &str) -> Option<&Option<Vec<u8>>> {
        self.writes.get(&(t, key.to_owned()))
    }

    pub(crate) fn in_table(&self, t: Table) -> impl Iterator<Item = (&str, &Option<Vec<u8>>)> {
        self.writes
            .iter()
            .filter(move |((tt, _), _)| *tt == t)
            .map(|((_, k), v)| (k.as_str(), v))
    }
}

impl CloudStore {
    pub(crate) fn stage(&mut self, t: Table, key: String, value: Option<Vec<u8>>) {
        self.pending.bytes += key.len() + value.as_ref().map_or(0, Vec::len);
        self.pending.writes.insert((t, key), value);
    }

    pub(crate) fn stage_rv(&mut self, rv: u64) {
        self.pending.rv = Some(rv);
    }

    /// Ends one write call: durable now in immediate mode, at the next commit in group mode.
    pub(crate) fn finish(&mut self) -> Result<(), StoreError> {
        self.generation += 1;
        if self.group {
            Ok(())
        } else {
            self.commit()
        }
    }

    /// Whether writes wait for [`CloudStore::commit`] (group mode) or commit one by one.
    pub fn set_group_commit(&mut self, on: bool) {
        self.group = on;
    }

    /// Writes not yet durable.
    pub fn is_dirty(&self) -> bool {
        !self.pending.writes.is_empty() || self.pending.rv.is_some()
    }

    /// Counts write calls; everything up to [`CloudStore::durable_generation`] is on disk.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn durable_generation(&self) -> u64 {
        self.durable
    }

    /// Bytes waiting in the write set.
    pub fn pending_bytes(&self) -> usize {
        self.pending.bytes
    }

    /// Durable commits so far (for benches: writes per commit).
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// Makes every write so far durable in one transaction.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        if !self.is_dirty() {
            self.durable = self.generation;
            return Ok(());
        }
        let set = std::mem::take(&mut self.pending);
        let result = self.write_set(&set);
        match result {
            Ok(()) => {
                self.durable = self.generation;
                self.commits += 1;
                Ok(())
            }
            Err(e) => {
                // The file holds none of it: neither may the mirror.
                self.durable = self.generation;
                Err(match self.reload() {
                    Ok(()) => e,
                    Err(r) => StoreError::Io(format!("{e}; reloading the mirror failed too: {r}")),
                })
            }
        }
    }

    fn write_set(&self, set: &WriteSet) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(io)?;
        {
            let mut objects = tx.open_table(OBJECTS).map_err(io)?;
            let mut synced = tx.open_table(SYNCED).map_err(io)?;
            let mut nodes = tx.open_table(NODES).map_err(io)?;
            let mut state = tx.open_table(STATE).map_err(io)?;
            let mut tombstones = tx.open_table(TOMBSTONES).map_err(io)?;
            let mut epochs = tx.open_table(epoch::EPOCHS).map_err(io)?;
            for ((t, k), v) in &set.writes {
                let k = k.as_str();
                let t = match t {
                    Table::Objects => &mut objects,
                    Table::Synced => &mut synced,
                    Table::Nodes => &mut nodes,
                    Table::State => &mut state,
                    Table::Tombstones => &mut tombstones,
                    Table::Epochs => {
                        match v {
                            Some(v) => {
                                let s = std::str::from_utf8(v).map_err(io)?;
                                epochs.insert(k, s).map_err(io)?;
                            }
                            None => {
                                epochs.remove(k).map_err(io)?;
                            }
                        }
                        continue;
                    }
                };
                match v {
                    Some(v) => {
                        t.insert(k, v.as_slice()).map_err(io)?;
                    }
                    None => {
                        t.remove(k).map_err(io)?;
                    }
                }
            }
            if let Some(rv) = set.rv {
                tx.open_table(META)
                    .map_err(io)?
                    .insert("rv", rv)
                    .map_err(io)?;
            }
        }
        tx.commit().map_err(io)
    }

    /// Loads the mirror from the file (at open, and after a failed commit).
    pub(crate) fn reload(&mut self) -> Result<(), StoreError> {
        self.objects.clear();
        self.synced.clear();
        self.tombstones.clear();
        self.epochs.clear();
        let tx = self.db.begin_read().map_err(io)?;
        for item in tx.open_table(OBJECTS).map_err(io)?.iter().map_err(io)? {
            let (k, v) = item.map_err(io)?;
            let key = ObjectKey::from_db_key(k.value())
                .ok_or_else(|| StoreError::Corrupt(k.value().to_owned(), "bad key".into()))?;
            self.objects
                .insert(key, decode_entry(k.value(), v.value())?);
        }
        for item in tx.open_table(SYNCED).map_err(io)?.iter().map_err(io)? {
            let (k, v) = item.map_err(io)?;
            let (node, uid) = k
                .value()
                .split_once('\0')
                .ok_or_else(|| StoreError::Corrupt(k.value().to_owned(), "bad key".into()))?;
            let e: SyncEntry = serde_json::from_slice(v.value())
                .map_err(|e| StoreError::Corrupt(k.value().to_owned(), e.to_string()))?;
            self.synced.insert((node.to_owned(), uid.to_owned()), e);
        }
        for item in tx.open_table(TOMBSTONES).map_err(io)?.iter().map_err(io)? {
            let (k, v) = item.map_err(io)?;
            let obj = serde_json::from_slice(v.value())
                .map_err(|e| StoreError::Corrupt(k.value().to_owned(), e.to_string()))?;
            self.tombstones.insert(k.value().to_owned(), obj);
        }
        for item in tx
            .open_table(epoch::EPOCHS)
            .map_err(io)?
            .iter()
            .map_err(io)?
        {
            let (k, v) = item.map_err(io)?;
            self.epochs
                .insert(k.value().to_owned(), v.value().to_owned());
        }
        self.last_rv = tx
            .open_table(META)
            .map_err(io)?
            .get("rv")
            .map_err(io)?
            .map(|v| v.value())
            .unwrap_or(100);
        // What changed before is not known (a restart, or a failed commit rolled back).
        self.history = crate::history::History::new(self.last_rv);
        self.objects_version += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::{CloudStore, Kind, SyncEntry};

    fn pod(name: &str) -> (Kind, serde_json::Value) {
        (
            Kind::Pod,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                   "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
        )
    }

    #[test]
    fn group_mode_writes_reach_the_file_only_at_commit_and_all_in_one() {
        let path = std::env::temp_dir().join(format!("cloudstore-group-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        {
            let mut s = CloudStore::open(&path).unwrap();
            s.set_group_commit(true);
            for i in 0..100 {
                s.apply(&[pod(&format!("p{i}"))], 1).unwrap();
            }
            assert_eq!(s.len(), 100, "the mirror sees its writes at once");
            assert!(s.is_dirty());
            assert!(s.durable_generation() < s.generation());
        } // dropped without a commit
        {
            let mut s = CloudStore::open(&path).unwrap();
            assert_eq!(s.len(), 0, "nothing was made durable");
            s.set_group_commit(true);
            for i in 0..100 {
                s.apply(&[pod(&format!("p{i}"))], 1).unwrap();
                let uid = s
                    .get(&crate::ObjectKey::new(
                        Kind::Pod,
                        "default",
                        &format!("p{i}"),
                    ))
                    .unwrap()
                    .uid()
                    .to_owned();
                let e = SyncEntry {
                    kind: Kind::Pod,
                    namespace: "default".into(),
                    name: format!("p{i}"),
                    rv: 1,
                };
                s.record_sync("edge0", &uid, Some(e)).unwrap();
            }
            s.save_state("events", b"ring").unwrap();
            s.commit().unwrap();
            assert_eq!(s.commits(), 1, "200 writes, one transaction");
            assert_eq!(s.durable_generation(), s.generation());
            assert!(!s.is_dirty());
        }
        let s = CloudStore::open(&path).unwrap();
        assert_eq!(s.len(), 100);
        assert_eq!(s.synced("edge0").count(), 100);
        assert_eq!(
            s.load_state("events").unwrap().as_deref(),
            Some(&b"ring"[..])
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn immediate_mode_commits_every_call() {
        let path = std::env::temp_dir().join(format!("cloudstore-imm-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut s = CloudStore::open(&path).unwrap();
        s.apply(&[pod("a")], 1).unwrap();
        s.apply(&[pod("b")], 1).unwrap();
        assert!(!s.is_dirty());
        assert_eq!(s.commits(), 2);
        std::fs::remove_file(&path).unwrap();
    }
}
