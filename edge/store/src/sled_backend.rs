//! The sled backend: every batch is applied atomically and flushed before returning.
//!
//! Kept so both backends can be measured side by side (DESIGN.md §4). Unlike the redb
//! backend it does not reopen after a failed write: sled keeps its own threads and state,
//! and its next flush retries what is buffered.

use std::path::Path;

use crate::{Engine, Op, Pairs, StoreError, WriteFault, CACHE_BYTES};

fn fault(e: sled::Error) -> WriteFault {
    let no_space = matches!(&e, sled::Error::Io(io) if crate::is_no_space(io));
    WriteFault {
        message: e.to_string(),
        no_space,
    }
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

pub(crate) struct SledEngine {
    db: sled::Db,
}

impl SledEngine {
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES as u64)
            .flush_every_ms(None)
            .open()
            .map_err(|e| StoreError::Open {
                path: path.to_owned(),
                msg: e.to_string(),
            })?;
        Ok(SledEngine { db })
    }
}

impl Engine for SledEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    fn scan(&self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        self.db
            .scan_prefix(prefix)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(io))
            .collect()
    }

    fn apply(&self, ops: &[Op]) -> Result<(), WriteFault> {
        let mut b = sled::Batch::default();
        for op in ops {
            match op {
                Op::Put(k, v) => b.insert(k.as_slice(), v.as_slice()),
                Op::Delete(k) => b.remove(k.as_slice()),
            }
        }
        self.db.apply_batch(b).map_err(fault)?;
        self.db.flush().map_err(fault)?;
        Ok(())
    }
}
