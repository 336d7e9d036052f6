//! The redb backend, and the read-only view inspection tools use while edgecore runs.
//!
//! redb latches the first failed write (a full disk, say): from then on every operation on
//! that `Database`, reads included, fails with "Previous I/O error occurred. Please close and
//! re-open the database." So after a failed write this backend drops the handle and opens the
//! file again (redb's recovery rolls back to the last commit), at once and, if that fails
//! too, at every later call, which is how a store recovers without a restart once space
//! returns.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::frame::{self, CorruptRecord};
use crate::{Engine, Op, Pairs, StoreError, WriteFault, CACHE_BYTES};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
type ReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

fn fault(e: impl Into<redb::Error>) -> WriteFault {
    let e: redb::Error = e.into();
    let no_space = matches!(&e, redb::Error::Io(io) if crate::is_no_space(io));
    WriteFault {
        message: e.to_string(),
        no_space,
    }
}

fn io(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Io(e.into().to_string())
}

/// Opens `path` as the writer, creating the file and the table if needed.
fn open_db(path: &Path) -> Result<redb::Database, redb::Error> {
    // SingleWriter: this process writes, inspection tools (`edgecore meta`) may read
    // concurrently from other processes.
    let db = redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
        .create(path)?;
    // Make sure the table exists so readers never see "table does not exist"; only a new
    // file needs the write, so a reopen on a full disk does not depend on it.
    let exists = match db.begin_read()?.open_table(KV) {
        Ok(_) => true,
        Err(redb::TableError::TableDoesNotExist(_)) => false,
        Err(e) => return Err(e.into()),
    };
    if !exists {
        let tx = db.begin_write()?;
        tx.open_table(KV)?;
        tx.commit()?;
    }
    Ok(db)
}

fn scan<T: ReadableTable<&'static [u8], &'static [u8]>>(
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

pub(crate) struct RedbEngine {
    path: PathBuf,
    /// `None` after a failed write until the file opens again.
    db: RefCell<Option<redb::Database>>,
}

impl RedbEngine {
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let db = open_db(path).map_err(|e| StoreError::Open {
            path: path.to_owned(),
            msg: e.to_string(),
        })?;
        Ok(RedbEngine {
            path: path.to_owned(),
            db: RefCell::new(Some(db)),
        })
    }

    /// Runs `f` on the open database, opening it again first if a failed write closed it.
    fn with<T>(&self, f: impl FnOnce(&redb::Database) -> T) -> Result<T, WriteFault> {
        if self.db.borrow().is_none() {
            let db = open_db(&self.path).map_err(|e| {
                let f = fault(e);
                WriteFault {
                    message: format!("cannot reopen after a failed write: {}", f.message),
                    no_space: f.no_space,
                }
            })?;
            *self.db.borrow_mut() = Some(db);
        }
        let db = self.db.borrow();
        Ok(f(db.as_ref().expect("opened above")))
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&ReadTable) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with(|db| {
            let tx = db.begin_read().map_err(io)?;
            let t = tx.open_table(KV).map_err(io)?;
            f(&t)
        })
        .map_err(|f| StoreError::Io(f.message))?
    }
}

fn write(db: &redb::Database, ops: &[Op]) -> Result<(), WriteFault> {
    // Durability::Immediate (the default): commit returns after fsync.
    let tx = db.begin_write().map_err(fault)?;
    {
        let mut t = tx.open_table(KV).map_err(fault)?;
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    t.insert(k.as_slice(), v.as_slice()).map_err(fault)?;
                }
                Op::Delete(k) => {
                    t.remove(k.as_slice()).map_err(fault)?;
                }
            }
        }
    }
    tx.commit().map_err(fault)
}

impl Engine for RedbEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|t| Ok(t.get(key).map_err(io)?.map(|v| v.value().to_vec())))
    }

    fn scan(&self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        self.read(|t| scan(t, prefix))
    }

    fn apply(&self, ops: &[Op]) -> Result<(), WriteFault> {
        let r = self.with(|db| write(db, ops)).and_then(|r| r);
        if r.is_err() {
            // The handle is unusable after a failed write (see the module comment): close it
            // and try the file again now, so reads work at once if it opens.
            drop(self.db.borrow_mut().take());
            let _ = self.with(|_| ());
        }
        r
    }
}

/// A read-only view for inspection tools, usable while edgecore runs (redb supports several
/// processes on one file). Values are checked as [`crate::Store`] checks them.
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

    /// The table, or `None` in a file that edgecore is creating this moment (it holds
    /// nothing yet).
    fn table(&self) -> Result<Option<ReadTable>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        match tx.open_table(KV) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    /// Good pairs under `prefix` and the records that failed their check, from one snapshot.
    pub fn scan_checked(&self, prefix: &[u8]) -> Result<(Pairs, Vec<CorruptRecord>), StoreError> {
        let Some(t) = self.table()? else {
            return Ok(Default::default());
        };
        // A store from before checksums (not yet opened by a newer edgecore) holds bare values.
        let framed = t.get(frame::FORMAT_KEY).map_err(io)?.is_some();
        Ok(frame::check_pairs(scan(&t, prefix)?, framed))
    }

    /// Every pair under `prefix`; the first corrupt record is an error naming its key.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        crate::strict(self.scan_checked(prefix)?)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(t) = self.table()? else {
            return Ok(None);
        };
        let framed = t.get(frame::FORMAT_KEY).map_err(io)?.is_some();
        let Some(v) = t.get(key).map_err(io)? else {
            return Ok(None);
        };
        let v = v.value();
        Ok(Some(if framed {
            frame::unframe(key, v)?.to_vec()
        } else {
            v.to_vec()
        }))
    }
}
