//! Recent events about objects (what `cloudcore describe` shows): applied, delivered to a
//! node, status reported, deleted. A bounded ring in memory; the oldest fall off. CloudHub
//! saves the ring with the node records when it changed ([`Events::take_changed`]) and
//! restores it at start, so `describe` keeps its history across a restart.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::time::SystemTime;

use cloudstore::ObjectKey;
use serde_json::{json, Value};

/// Events kept at most, over all objects.
pub const CAPACITY: usize = 2000;

#[derive(Clone, Debug)]
pub struct Event {
    pub key: ObjectKey,
    /// Unix milliseconds: benchmarks measure delivery latency from these.
    pub unix_ms: i64,
    pub reason: Cow<'static, str>,
    pub message: String,
}

#[derive(Default)]
pub struct Events {
    ring: VecDeque<Event>,
    /// Recorded since the last [`Events::take_changed`].
    changed: bool,
}

impl Events {
    pub fn record(
        &mut self,
        key: &ObjectKey,
        at: SystemTime,
        reason: &'static str,
        message: String,
    ) {
        let unix_ms = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        if self.ring.len() >= CAPACITY {
            self.ring.pop_front();
        }
        self.ring.push_back(Event {
            key: key.clone(),
            unix_ms,
            reason: Cow::Borrowed(reason),
            message,
        });
        self.changed = true;
    }

    /// The whole ring serialized, if anything was recorded since the last call.
    pub fn take_changed(&mut self) -> Option<Vec<u8>> {
        if !std::mem::take(&mut self.changed) {
            return None;
        }
        let items: Vec<Value> = self
            .ring
            .iter()
            .map(|e| json!([e.key.db_key(), e.unix_ms, e.reason, e.message]))
            .collect();
        Some(Value::Array(items).to_string().into_bytes())
    }

    /// Marks the ring changed again (its save failed).
    pub fn mark_changed(&mut self) {
        self.changed = true;
    }

    /// Puts back a ring saved by [`Events::take_changed`], before anything new is recorded.
    /// Entries that cannot be read are skipped; returns how many were restored.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<usize, String> {
        let items: Vec<Value> =
            serde_json::from_slice(bytes).map_err(|e| format!("saved events: {e}"))?;
        for item in items.iter().rev().take(CAPACITY).rev() {
            let (Some(key), Some(unix_ms), Some(reason), Some(message)) = (
                item[0].as_str().and_then(ObjectKey::from_db_key),
                item[1].as_i64(),
                item[2].as_str(),
                item[3].as_str(),
            ) else {
                continue;
            };
            self.ring.push_back(Event {
                key,
                unix_ms,
                reason: Cow::Owned(reason.to_owned()),
                message: message.to_owned(),
            });
        }
        Ok(self.ring.len())
    }

    /// Every event kept, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Event> {
        self.ring.iter()
    }

    /// The events of one object, oldest first, as JSON.
    pub fn for_object(&self, key: &ObjectKey) -> Vec<Value> {
        self.ring
            .iter()
            .filter(|e| e.key == *key)
            .map(|e| json!({ "time": proto::time::rfc3339(e.unix_ms / 1000), "timeMs": e.unix_ms, "reason": e.reason, "message": e.message }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudstore::Kind;

    #[test]
    fn saved_rings_restore_in_order() {
        let mut ev = Events::default();
        assert!(ev.take_changed().is_none(), "nothing recorded");
        let a = ObjectKey::new(Kind::Pod, "default", "a");
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(7);
        ev.record(&a, t, "Applied", "created".into());
        ev.record(&a, t, "Delivered", "node e stored it".into());
        let saved = ev.take_changed().unwrap();
        assert!(ev.take_changed().is_none(), "saved rings are clean");
        let mut back = Events::default();
        assert_eq!(back.restore(&saved), Ok(2));
        assert_eq!(back.for_object(&a), ev.for_object(&a));
        assert!(back.restore(b"{not json").is_err());
        // Unreadable entries are skipped, the rest kept.
        let mut partly = Events::default();
        assert_eq!(
            partly.restore(br#"[["nosuch/x/y",1,"A","m"],["pods/default/a",1,"A","m"]]"#),
            Ok(1)
        );
    }

    #[test]
    fn bounded_and_filtered() {
        let mut ev = Events::default();
        let a = ObjectKey::new(Kind::Pod, "default", "a");
        let b = ObjectKey::new(Kind::Pod, "default", "b");
        for i in 0..CAPACITY + 5 {
            ev.record(
                if i % 2 == 0 { &a } else { &b },
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(i as u64),
                "Applied",
                format!("{i}"),
            );
        }
        assert_eq!(ev.ring.len(), CAPACITY);
        let ea = ev.for_object(&a);
        assert!(ea
            .iter()
            .all(|e| e["message"].as_str().unwrap().parse::<usize>().unwrap() % 2 == 0));
        assert_eq!(ea.last().unwrap()["message"], format!("{}", CAPACITY + 4));
    }
}
