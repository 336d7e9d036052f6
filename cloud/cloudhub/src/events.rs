//! Recent events about objects (what `cloudcore describe` shows): applied, delivered to a
//! node, status reported, deleted. A bounded ring in memory; the oldest fall off.

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
    pub reason: &'static str,
    pub message: String,
}

#[derive(Default)]
pub struct Events {
    ring: VecDeque<Event>,
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
            reason,
            message,
        });
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
