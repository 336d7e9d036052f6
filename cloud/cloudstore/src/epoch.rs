//! Edge store identities: each node's store epoch, as it last connected with it (our edge
//! sends it in the `edgecore-store-epoch` handshake header; upstream edges send none).
//!
//! A node's sync records say what its store holds. A store that was deleted, emptied or
//! moved aside holds none of it, and comes back with a new epoch; without this the cloud
//! would never send those objects again.

use redb::TableDefinition;

use crate::commit::Table;
use crate::{CloudStore, StoreError, SyncEntry};

/// Node name → the epoch of the store it last connected with.
pub(crate) const EPOCHS: TableDefinition<&str, &str> = TableDefinition::new("epochs");

/// What a node's epoch on connect says about its store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EpochSeen {
    /// First epoch recorded for the node (new, or upgraded from an edge without epochs):
    /// nothing says its store changed, so its records stand.
    First,
    Same,
    /// The store was replaced; `reset` acknowledgements now count as holding no version.
    Replaced {
        previous: String,
        reset: usize,
    },
}

impl CloudStore {
    /// Records that `node` connected with store `epoch`. When another epoch was recorded, the
    /// node's store is not the one that acknowledged: every acknowledgement of the node is
    /// reset to "no version held" (rv 0) in the same durable transaction, so delivery sends
    /// every object it must hold again. The records themselves stay, so objects it may still
    /// hold and must not (a store put back from elsewhere) are still deleted.
    pub fn note_store_epoch(&mut self, node: &str, epoch: &str) -> Result<EpochSeen, StoreError> {
        let previous = self.epochs.get(node).cloned();
        if previous.as_deref() == Some(epoch) {
            return Ok(EpochSeen::Same);
        }
        self.stage(
            Table::Epochs,
            node.to_owned(),
            Some(epoch.as_bytes().to_vec()),
        );
        self.epochs.insert(node.to_owned(), epoch.to_owned());
        let mut reset: Vec<(String, SyncEntry)> = Vec::new();
        if previous.is_some() {
            for (uid, e) in self.synced(node) {
                reset.push((uid.to_owned(), SyncEntry { rv: 0, ..e.clone() }));
            }
        }
        let n = reset.len();
        for (uid, e) in reset {
            let bytes = serde_json::to_vec(&e).unwrap_or_default();
            self.stage(Table::Synced, format!("{node}\0{uid}"), Some(bytes));
            self.synced.insert((node.to_owned(), uid), e);
        }
        self.finish()?;
        Ok(match previous {
            None => EpochSeen::First,
            Some(previous) => EpochSeen::Replaced { previous, reset: n },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    fn entry(name: &str, rv: u64) -> SyncEntry {
        SyncEntry {
            kind: Kind::Pod,
            namespace: "default".into(),
            name: name.into(),
            rv,
        }
    }

    #[test]
    fn a_new_epoch_resets_only_that_nodes_acknowledgements_durably() {
        let path = std::env::temp_dir().join(format!("cloudstore-epoch-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        {
            let mut s = CloudStore::open(&path).unwrap();
            s.record_sync("edge0", "u1", Some(entry("a", 105))).unwrap();
            s.record_sync("edge0", "u2", Some(entry("b", 107))).unwrap();
            s.record_sync("edge1", "u1", Some(entry("a", 105))).unwrap();
            assert_eq!(s.note_store_epoch("edge0", "e1").unwrap(), EpochSeen::First);
            assert_eq!(s.note_store_epoch("edge1", "f1").unwrap(), EpochSeen::First);
            assert_eq!(
                s.synced_entry("edge0", "u1").unwrap().rv,
                105,
                "first: kept"
            );
            assert_eq!(s.note_store_epoch("edge0", "e1").unwrap(), EpochSeen::Same);
            assert_eq!(s.synced_entry("edge0", "u2").unwrap().rv, 107);
            assert_eq!(
                s.note_store_epoch("edge0", "e2").unwrap(),
                EpochSeen::Replaced {
                    previous: "e1".into(),
                    reset: 2
                }
            );
            assert_eq!(s.synced_entry("edge0", "u1").unwrap().rv, 0);
            assert_eq!(
                s.synced_entry("edge1", "u1").unwrap().rv,
                105,
                "other nodes keep theirs"
            );
        }
        let mut s = CloudStore::open(&path).unwrap();
        assert_eq!(
            s.synced_entry("edge0", "u2").unwrap().rv,
            0,
            "the reset is durable"
        );
        assert_eq!(
            s.synced("edge0").count(),
            2,
            "the records stay, for deletes"
        );
        assert_eq!(s.note_store_epoch("edge0", "e2").unwrap(), EpochSeen::Same);
        let _ = std::fs::remove_file(&path);
    }
}
