//! edgecore's embedded key-value store (DESIGN.md §4): one narrow trait, [`KvStore`], with
//! redb as the default backend and sled behind the `sled` feature so the two can be measured
//! side by side.
//!
//! Guarantees every backend gives:
//! - [`KvStore::apply`] is atomic and durable: when it returns `Ok`, the whole batch survives a
//!   power cut, and a crash before that leaves none of it.
//! - A store that was cut off at any instant opens again and holds the last committed state.
//! - Every write counts the bytes it asked the backend to write ([`KvStore::bytes_written`]),
//!   because flash wears out.

#![forbid(unsafe_code)]

mod batched;

pub use batched::Batched;

use std::cell::Cell;
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

/// redb page cache. The store holds gateway metadata (hundreds of objects), so a small cache
/// keeps RSS low at little cost.
pub const CACHE_BYTES: usize = 2 << 20;

/// File name of the store inside the data dir, per backend.
pub fn file_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Redb => "edgecore.redb",
        Backend::Sled => "edgecore.sled",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Redb,
    Sled,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "redb" => Ok(Backend::Redb),
            "sled" => Ok(Backend::Sled),
            other => Err(format!("unknown store backend {other:?}; use redb or sled")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {msg}")]
    Open { path: PathBuf, msg: String },
    #[error("store: {0}")]
    Io(String),
    #[error("this edgecore was built without the {0} store backend (cargo feature {0})")]
    NotBuilt(&'static str),
}

fn io<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Io(e.to_string())
}

/// Key-value pairs from a scan, in key order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// One change in a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// The narrow interface every module uses.
pub trait KvStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every pair whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError>;
    /// Applies `ops` atomically and durably.
    fn apply(&self, ops: &[Op]) -> Result<(), StoreError>;
    /// Bytes of keys and values written since open.
    fn bytes_written(&self) -> u64;
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.apply(&[Op::Put(key.to_vec(), value.to_vec())])
    }
    fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        self.apply(&[Op::Delete(key.to_vec())])
    }
}

fn batch_bytes(ops: &[Op]) -> u64 {
    ops.iter()
        .map(|o| match o {
            Op::Put(k, v) => (k.len() + v.len()) as u64,
            Op::Delete(k) => k.len() as u64,
        })
        .sum()
}

/// Opens (creating if needed) the store at `path` with `backend`.
pub fn open(path: &Path, backend: Backend) -> Result<Box<dyn KvStore>, StoreError> {
    match backend {
        Backend::Redb => Ok(Box::new(RedbStore::open(path)?)),
        #[cfg(feature = "sled")]
        Backend::Sled => Ok(Box::new(sled_backend::SledStore::open(path)?)),
        #[cfg(not(feature = "sled"))]
        Backend::Sled => Err(StoreError::NotBuilt("sled")),
    }
}

/// The redb backend.
pub struct RedbStore {
    db: redb::Database,
    written: Cell<u64>,
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: path.to_owned(),
            msg: e.to_string(),
        };
        // SingleWriter: this process writes, inspection tools (`edgecore meta`) may read
        // concurrently from other processes.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
            .create(path)
            .map_err(|e| err(&e))?;
        // Make sure the table exists so readers never see "table does not exist".
        let tx = db.begin_write().map_err(|e| err(&e))?;
        tx.open_table(KV).map_err(|e| err(&e))?;
        tx.commit().map_err(|e| err(&e))?;
        Ok(RedbStore {
            db,
            written: Cell::new(0),
        })
    }
}

fn redb_scan<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &T,
    prefix: &[u8],
) -> Result<Pairs, StoreError> {
    let mut out = Vec::new();
    for item in t.range::<&[u8]>(prefix..).map_err(io)? {
        let (k, v) = item.map_err(io)?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push((k.value().to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

impl KvStore for RedbStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let t = tx.open_table(KV).map_err(io)?;
        Ok(t.get(key).map_err(io)?.map(|v| v.value().to_vec()))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let t = tx.open_table(KV).map_err(io)?;
        redb_scan(&t, prefix)
    }

    fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        // Durability::Immediate (the default): commit returns after fsync.
        let tx = self.db.begin_write().map_err(io)?;
        {
            let mut t = tx.open_table(KV).map_err(io)?;
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        t.insert(k.as_slice(), v.as_slice()).map_err(io)?;
                    }
                    Op::Delete(k) => {
                        t.remove(k.as_slice()).map_err(io)?;
                    }
                }
            }
        }
        tx.commit().map_err(io)?;
        self.written.set(self.written.get() + batch_bytes(ops));
        Ok(())
    }

    fn bytes_written(&self) -> u64 {
        self.written.get()
    }
}

/// A read-only view for inspection tools, usable while edgecore runs (redb supports several
/// processes on one file).
pub struct ReadOnly {
    db: redb::ReadOnlyDatabase,
}

impl ReadOnly {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
            .open_read_only(path)
            .map_err(|e| StoreError::Open {
                path: path.to_owned(),
                msg: e.to_string(),
            })?;
        Ok(ReadOnly { db })
    }

    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let t = tx.open_table(KV).map_err(io)?;
        redb_scan(&t, prefix)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let t = tx.open_table(KV).map_err(io)?;
        Ok(t.get(key).map_err(io)?.map(|v| v.value().to_vec()))
    }
}

#[cfg(feature = "sled")]
mod sled_backend {
    use super::*;

    /// The sled backend: every batch is applied atomically and flushed before returning.
    pub struct SledStore {
        db: sled::Db,
        written: Cell<u64>,
    }

    impl SledStore {
        pub fn open(path: &Path) -> Result<Self, StoreError> {
            let db = sled::Config::new()
                .path(path)
                .cache_capacity(CACHE_BYTES as u64)
                .flush_every_ms(None)
                .open()
                .map_err(|e| StoreError::Open {
                    path: path.to_owned(),
                    msg: e.to_string(),
                })?;
            Ok(SledStore {
                db,
                written: Cell::new(0),
            })
        }
    }

    impl KvStore for SledStore {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.db.get(key).map_err(io)?.map(|v| v.to_vec()))
        }

        fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError> {
            self.db
                .scan_prefix(prefix)
                .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(io))
                .collect()
        }

        fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
            let mut b = sled::Batch::default();
            for op in ops {
                match op {
                    Op::Put(k, v) => b.insert(k.as_slice(), v.as_slice()),
                    Op::Delete(k) => b.remove(k.as_slice()),
                }
            }
            self.db.apply_batch(b).map_err(io)?;
            self.db.flush().map_err(io)?;
            self.written.set(self.written.get() + batch_bytes(ops));
            Ok(())
        }

        fn bytes_written(&self) -> u64 {
            self.written.get()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        let _ = std::fs::remove_file(&p);
        p
    }

    fn contract(s: &dyn KvStore) {
        assert_eq!(s.get(b"a").unwrap(), None);
        s.apply(&[
            Op::Put(b"p/1".to_vec(), b"one".to_vec()),
            Op::Put(b"p/2".to_vec(), b"two".to_vec()),
            Op::Put(b"q/1".to_vec(), b"x".to_vec()),
        ])
        .unwrap();
        assert_eq!(s.get(b"p/1").unwrap().as_deref(), Some(&b"one"[..]));
        let scan = s.scan_prefix(b"p/").unwrap();
        assert_eq!(scan.len(), 2);
        assert_eq!(scan[1], (b"p/2".to_vec(), b"two".to_vec()));
        s.delete(b"p/1").unwrap();
        assert_eq!(s.scan_prefix(b"p/").unwrap().len(), 1);
        assert!(s.bytes_written() >= 16);
    }

    #[test]
    fn redb_meets_the_contract_and_persists() {
        let p = tmp("redb");
        {
            let s = RedbStore::open(&p).unwrap();
            contract(&s);
        }
        let s = RedbStore::open(&p).unwrap();
        assert_eq!(s.get(b"p/2").unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(s.get(b"p/1").unwrap(), None);
    }

    #[test]
    fn read_only_view_works_beside_a_writer() {
        let p = tmp("ro");
        let w = RedbStore::open(&p).unwrap();
        w.put(b"k", b"v1").unwrap();
        let r = ReadOnly::open(&p).unwrap();
        assert_eq!(r.get(b"k").unwrap().as_deref(), Some(&b"v1"[..]));
        w.put(b"k", b"v2").unwrap();
        assert_eq!(
            r.get(b"k").unwrap().as_deref(),
            Some(&b"v2"[..]),
            "reader sees later commits"
        );
    }

    #[test]
    fn a_truncated_file_is_a_clear_error() {
        let p = tmp("trunc");
        {
            let s = RedbStore::open(&p).unwrap();
            s.put(b"k", b"v").unwrap();
        }
        let len = std::fs::metadata(&p).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len / 3).unwrap();
        drop(f);
        match RedbStore::open(&p) {
            Err(e @ StoreError::Open { .. }) => {
                assert!(e.to_string().contains(&p.display().to_string()), "{e}")
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a file cut to a third must not open as if whole"),
        }
    }

    #[cfg(feature = "sled")]
    #[test]
    fn sled_meets_the_contract_and_persists() {
        let p = tmp("sled");
        {
            let s = sled_backend::SledStore::open(&p).unwrap();
            contract(&s);
        }
        let s = sled_backend::SledStore::open(&p).unwrap();
        assert_eq!(s.get(b"p/2").unwrap().as_deref(), Some(&b"two"[..]));
    }
}
