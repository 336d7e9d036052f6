//! edgecore's embedded key-value store (DESIGN.md §4): one narrow trait, [`KvStore`], over
//! [`Store`], with redb as the default backend and sled behind the `sled` feature so the two
//! can be measured side by side.
//!
//! Guarantees every backend gives:
//! - [`KvStore::apply`] is atomic and durable: when it returns `Ok`, the whole batch survives a
//!   power cut, and a crash before that leaves none of it.
//! - A store that was cut off at any instant opens again and holds the last committed state.
//! - Every value carries a checksum (`frame.rs`); a record that fails it is an error naming
//!   its key ([`StoreError::Corrupt`]), never data.
//! - A failed write (a full disk) is [`StoreError::Write`] and makes the store
//!   [`Health::Unwritable`] until a write succeeds again; the store keeps serving reads and
//!   recovers by itself when space returns ([`Store::probe`] finds out when), no restart.
//! - The store has an identity, [`Store::epoch`]: random, made when the store is created, so a
//!   deleted or emptied store file comes back as a different store and the cloud knows to send
//!   everything again.
//! - Every write counts the bytes it asked the backend to write ([`KvStore::bytes_written`]),
//!   because flash wears out.
//!
//! No timers or threads here: whoever owns the store decides when to probe, and learns of
//! health changes through [`Store::on_health`].

#![forbid(unsafe_code)]

mod batched;
mod frame;
mod redb_backend;
#[cfg(feature = "sled")]
mod sled_backend;

pub use batched::Batched;
pub use frame::CorruptRecord;
pub use redb_backend::ReadOnly;

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};

/// Page cache. The store holds gateway metadata (hundreds of objects), so a small cache
/// keeps RSS low at little cost.
pub const CACHE_BYTES: usize = 2 << 20;

/// Largest write a probe makes. A store is writable again once it takes a write as large as
/// the smallest one that failed, up to this: on a full disk a small write can still succeed
/// (into pages the file already has) while the one that failed cannot, and a node that
/// flapped between the two would report nothing useful.
pub const PROBE_MAX_BYTES: u64 = 1 << 20;

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

/// Why a write failed. Nothing of the batch was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteFault {
    pub message: String,
    /// The filesystem is full (ENOSPC) or the quota is spent (EDQUOT).
    pub no_space: bool,
}

impl std::fmt::Display for WriteFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Whether the store can write, as of its last write.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Health {
    #[default]
    Writable,
    Unwritable(WriteFault),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {msg}")]
    Open { path: PathBuf, msg: String },
    #[error("store: {0}")]
    Io(String),
    #[error("store cannot write: {0}")]
    Write(WriteFault),
    #[error("store record {key} is corrupt: {why}")]
    Corrupt { key: String, why: String },
    #[error("this edgecore was built without the {0} store backend (cargo feature {0})")]
    NotBuilt(&'static str),
}

pub(crate) fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
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

/// What a backend does: raw bytes in and out, atomic durable batches.
pub(crate) trait Engine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn scan(&self, prefix: &[u8]) -> Result<Pairs, StoreError>;
    fn apply(&self, ops: &[Op]) -> Result<(), WriteFault>;
}

fn batch_bytes(ops: &[Op]) -> u64 {
    ops.iter()
        .map(|o| match o {
            Op::Put(k, v) => (k.len() + v.len()) as u64,
            Op::Delete(k) => k.len() as u64,
        })
        .sum()
}

/// The pairs of a checked scan, or the first corrupt record as an error.
pub(crate) fn strict((good, bad): (Pairs, Vec<CorruptRecord>)) -> Result<Pairs, StoreError> {
    match bad.into_iter().next() {
        None => Ok(good),
        Some(c) => Err(StoreError::Corrupt {
            key: String::from_utf8_lossy(&c.key).into_owned(),
            why: c.why,
        }),
    }
}

/// 128 random bits as hex. The bits come from std's `RandomState`, whose keys the OS's random
/// source seeds; unique enough for an identity, which is all an epoch is.
fn new_epoch() -> String {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut out = String::with_capacity(32);
    for half in 0..2u8 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u8(half);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// Opens (creating if needed) the store at `path` with `backend`.
pub fn open(path: &Path, backend: Backend) -> Result<Box<dyn KvStore>, StoreError> {
    Ok(Box::new(Store::open(path, backend)?))
}

type HealthCallback = Box<dyn Fn(&Health)>;

/// The store: a backend plus checksums, identity and write health.
pub struct Store {
    engine: Box<dyn Engine>,
    epoch: String,
    written: Cell<u64>,
    health: RefCell<Health>,
    on_health: RefCell<Option<HealthCallback>>,
    /// While unwritable: the size of the smallest failed write (at most
    /// [`PROBE_MAX_BYTES`]); a write at least this large must succeed to count as recovery.
    needed: Cell<u64>,
}

impl Store {
    /// Opens (creating if needed) the store at `path`. A new store gets its epoch here; a
    /// store written before checksums is migrated here (every value framed, in one
    /// transaction). Either write failing (a full disk) fails the open.
    pub fn open(path: &Path, backend: Backend) -> Result<Store, StoreError> {
        let engine: Box<dyn Engine> = match backend {
            Backend::Redb => Box::new(redb_backend::RedbEngine::open(path)?),
            #[cfg(feature = "sled")]
            Backend::Sled => Box::new(sled_backend::SledEngine::open(path)?),
            #[cfg(not(feature = "sled"))]
            Backend::Sled => return Err(StoreError::NotBuilt("sled")),
        };
        Store::on(engine, path)
    }

    fn on(engine: Box<dyn Engine>, path: &Path) -> Result<Store, StoreError> {
        let open_err = |msg: String| StoreError::Open {
            path: path.to_owned(),
            msg,
        };
        let mut ops = Vec::new();
        if engine.get(frame::FORMAT_KEY)?.is_none() {
            ops = frame::migration(engine.scan(b"")?);
        }
        let stored = engine.get(frame::EPOCH_KEY)?;
        let epoch = match stored
            .as_deref()
            .map(|v| frame::unframe(frame::EPOCH_KEY, v))
        {
            Some(Ok(e)) if !e.is_empty() => String::from_utf8_lossy(e).into_owned(),
            // An identity that cannot be read is no identity: a new one makes the cloud send
            // everything again, which is what a damaged store needs anyway.
            _ => {
                let e = new_epoch();
                ops.push(Op::Put(
                    frame::EPOCH_KEY.to_vec(),
                    frame::frame(e.as_bytes()),
                ));
                e
            }
        };
        let written = batch_bytes(&ops);
        if !ops.is_empty() {
            engine
                .apply(&ops)
                .map_err(|f| open_err(format!("cannot write its format and identity: {f}")))?;
        }
        Ok(Store {
            engine,
            epoch,
            written: Cell::new(written),
            health: RefCell::new(Health::Writable),
            on_health: RefCell::new(None),
            needed: Cell::new(0),
        })
    }

    /// This store's identity: made when the store was created, kept for its life.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    pub fn health(&self) -> Health {
        self.health.borrow().clone()
    }

    /// Calls `f` whenever [`Store::health`] changes.
    pub fn on_health(&self, f: impl Fn(&Health) + 'static) {
        *self.on_health.borrow_mut() = Some(Box::new(f));
    }

    fn set_health(&self, h: Health) {
        if *self.health.borrow() == h {
            return;
        }
        *self.health.borrow_mut() = h.clone();
        if let Some(f) = &*self.on_health.borrow() {
            f(&h);
        }
    }

    /// Tries one durable write as large as the failed one, to learn whether an unwritable
    /// store can write again (modules may have nothing to write meanwhile), then deletes it
    /// to give the space back. Health follows the result.
    pub fn probe(&self) -> Result<(), StoreError> {
        let size = self.needed.get().clamp(1, PROBE_MAX_BYTES) as usize;
        self.write(&[Op::Put(frame::PROBE_KEY.to_vec(), vec![0; size])])?;
        // Best effort: a probe left behind only takes space until the next probe.
        let _ = self.engine.apply(&[Op::Delete(frame::PROBE_KEY.to_vec())]);
        Ok(())
    }

    fn write(&self, ops: &[Op]) -> Result<(), StoreError> {
        let framed = frame::frame_ops(ops);
        let bytes = batch_bytes(&framed);
        match self.engine.apply(&framed) {
            Ok(()) => {
                self.written.set(self.written.get() + bytes);
                if bytes >= self.needed.get() {
                    self.needed.set(0);
                    self.set_health(Health::Writable);
                }
                Ok(())
            }
            Err(f) => {
                let bytes = bytes.min(PROBE_MAX_BYTES);
                let writable = *self.health.borrow() == Health::Writable;
                if writable {
                    self.needed.set(bytes);
                    // The first fault is the one reported until recovery: later ones (a
                    // reopen refused on the same full disk) would only make the node's
                    // condition flap between messages.
                    self.set_health(Health::Unwritable(f.clone()));
                } else {
                    self.needed.set(self.needed.get().min(bytes));
                }
                Err(StoreError::Write(f))
            }
        }
    }

    /// Good pairs under `prefix` and the records that failed their check.
    pub fn scan_checked(&self, prefix: &[u8]) -> Result<(Pairs, Vec<CorruptRecord>), StoreError> {
        Ok(frame::check_pairs(self.engine.scan(prefix)?, true))
    }
}

impl KvStore for Store {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.engine.get(key)? {
            Some(v) => Ok(Some(frame::unframe(key, &v)?.to_vec())),
            None => Ok(None),
        }
    }

    /// The first corrupt record under `prefix` is an error naming its key.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        strict(self.scan_checked(prefix)?)
    }

    fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        self.write(ops)
    }

    fn bytes_written(&self) -> u64 {
        self.written.get()
    }
}

#[cfg(test)]
mod tests;
