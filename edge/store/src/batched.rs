//! A write-behind layer over a [`KvStore`]: writes collect in memory until
//! [`Batched::commit`] applies them in one atomic, durable transaction, and reads see them
//! meanwhile. A module handling a burst of messages pays one fsync for the burst instead of
//! one per message (latency, and flash wear on SD cards and eMMC), and must not answer any of
//! them before the commit returns.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::{KvStore, Op, Pairs, StoreError};

pub struct Batched {
    base: Rc<dyn KvStore>,
    /// The value each buffered key is left with (None: deleted). The commit writes only this
    /// end state: inside one atomic transaction the steps to it make no difference, and a key
    /// written several times in a burst reaches the disk once.
    pending: RefCell<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl Batched {
    pub fn new(base: Rc<dyn KvStore>) -> Batched {
        Batched {
            base,
            pending: RefCell::new(BTreeMap::new()),
        }
    }

    /// Keys waiting for [`Batched::commit`].
    pub fn pending(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Applies everything buffered in one durable transaction. On error nothing of it was
    /// applied and the buffer is dropped: the store is as before the batch.
    pub fn commit(&self) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        if pending.is_empty() {
            return Ok(());
        }
        let ops: Vec<Op> = pending
            .into_iter()
            .map(|(k, v)| match v {
                Some(v) => Op::Put(k, v),
                None => Op::Delete(k),
            })
            .collect();
        self.base.apply(&ops)
    }
}

impl KvStore for Batched {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.pending.borrow().get(key) {
            Some(v) => Ok(v.clone()),
            None => self.base.get(key),
        }
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        let pending = self.pending.borrow();
        if !pending.keys().any(|k| k.starts_with(prefix)) {
            return self.base.scan_prefix(prefix);
        }
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> =
            self.base.scan_prefix(prefix)?.into_iter().collect();
        for (k, v) in pending.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().collect())
    }

    /// Buffers `ops`; durable only after [`Batched::commit`].
    fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        let mut pending = self.pending.borrow_mut();
        for op in ops {
            let (k, v) = match op {
                Op::Put(k, v) => (k.clone(), Some(v.clone())),
                Op::Delete(k) => (k.clone(), None),
            };
            pending.insert(k, v);
        }
        Ok(())
    }

    fn bytes_written(&self) -> u64 {
        self.base.bytes_written()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{open, Backend};

    #[test]
    fn reads_see_the_batch_and_the_disk_sees_it_only_after_commit() {
        let dir = std::env::temp_dir().join(format!("batched-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.redb");
        let base: Rc<dyn KvStore> = Rc::from(open(&path, Backend::Redb).unwrap());
        base.put(b"a/1", b"one").unwrap();
        base.put(b"a/2", b"two").unwrap();
        base.put(b"b/1", b"other").unwrap();

        let b = Batched::new(base.clone());
        b.put(b"a/3", b"three").unwrap();
        b.delete(b"a/1").unwrap();
        b.put(b"a/2", b"TWO").unwrap();
        b.put(b"a/2", b"2").unwrap();
        assert_eq!(b.get(b"a/1").unwrap(), None);
        assert_eq!(b.get(b"a/2").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(b.get(b"b/1").unwrap().as_deref(), Some(&b"other"[..]));
        assert_eq!(
            b.scan_prefix(b"a/").unwrap(),
            vec![
                (b"a/2".to_vec(), b"2".to_vec()),
                (b"a/3".to_vec(), b"three".to_vec())
            ]
        );
        // Nothing reached the store yet.
        assert_eq!(base.get(b"a/1").unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(base.get(b"a/3").unwrap(), None);
        assert_eq!(b.pending(), 3, "a/2 written twice is one key to commit");

        let before = base.bytes_written();
        b.commit().unwrap();
        assert_eq!(b.pending(), 0);
        assert_eq!(base.get(b"a/1").unwrap(), None);
        assert_eq!(base.get(b"a/2").unwrap().as_deref(), Some(&b"2"[..]));
        assert!(base.bytes_written() > before);
        b.commit().unwrap(); // empty: a no-op
        drop((b, base));
        // Durable: a fresh open sees the batch.
        let again = open(&path, Backend::Redb).unwrap();
        assert_eq!(again.get(b"a/3").unwrap().as_deref(), Some(&b"three"[..]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
