//! The store's recent changes, for watches (what kube-apiserver's watch cache keeps): every
//! write appends one [`Event`] at the resourceVersion it moved the store to, and a watch from
//! resourceVersion R is served the events after R. The history lives in memory and is bounded
//! (bytes and count), so it is complete only from [`History::start`] on: R below it is "too
//! old" (the API's `410 Gone`, upon which clients list again). A restart starts it afresh at
//! the store's last resourceVersion, which is durable, so versions never repeat.

use std::collections::VecDeque;

use serde_json::Value;

use crate::ObjectKey;

/// Bytes of objects the history keeps at most (each event counts its object and the one it
/// replaced, serialized), and events at most (kube-apiserver's watch cache keeps 100 to a
/// few thousand per kind).
pub const MAX_HISTORY_BYTES: usize = 8 << 20;
pub const MAX_HISTORY_EVENTS: usize = 10_000;

/// What one write did to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change: the object after it (a deleted one as it was, at the deletion's version) and
/// before it, so a watch with a selector can tell an object leaving it from one changing in it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub rv: u64,
    pub key: ObjectKey,
    pub kind: EventType,
    pub object: Value,
    pub prev: Option<Value>,
}

/// A watch's starting version is older than what is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooOld {
    /// The oldest version a watch may start from now.
    pub oldest: u64,
}

#[derive(Debug)]
pub struct History {
    /// Every change after this version is kept.
    start: u64,
    events: VecDeque<(Event, usize)>,
    bytes: usize,
}

fn size_of(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(0, |b| b.len())
}

impl History {
    pub fn new(start: u64) -> History {
        History {
            start,
            events: VecDeque::new(),
            bytes: 0,
        }
    }

    /// The oldest version a watch may start from.
    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub(crate) fn record(&mut self, event: Event) {
        let size = size_of(&event.object) + event.prev.as_ref().map_or(0, size_of);
        self.bytes += size;
        self.events.push_back((event, size));
        while self.events.len() > MAX_HISTORY_EVENTS || self.bytes > MAX_HISTORY_BYTES {
            let Some((old, size)) = self.events.pop_front() else {
                break;
            };
            self.bytes -= size;
            // What was at or below the dropped version can no longer be served.
            self.start = old.rv;
        }
    }

    /// The events after version `rv`, oldest first.
    pub fn since(&self, rv: u64) -> Result<impl Iterator<Item = &Event>, TooOld> {
        if rv < self.start {
            return Err(TooOld { oldest: self.start });
        }
        let from = self.events.partition_point(|(e, _)| e.rv <= rv);
        Ok(self.events.range(from..).map(|(e, _)| e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;
    use serde_json::json;

    fn ev(rv: u64, bytes: usize) -> Event {
        Event {
            rv,
            key: ObjectKey::new(Kind::ConfigMap, "default", "c"),
            kind: EventType::Modified,
            object: json!({ "data": { "k": "x".repeat(bytes) } }),
            prev: None,
        }
    }

    #[test]
    fn serves_what_follows_a_version_and_refuses_what_it_no_longer_has() {
        let mut h = History::new(10);
        assert!(
            h.since(9).is_err(),
            "from before the start nothing is known"
        );
        for rv in 11..=13 {
            h.record(ev(rv, 1));
        }
        let rvs = |h: &History, from| h.since(from).unwrap().map(|e| e.rv).collect::<Vec<_>>();
        assert_eq!(rvs(&h, 10), [11, 12, 13]);
        assert_eq!(rvs(&h, 12), [13]);
        assert_eq!(rvs(&h, 13), [] as [u64; 0]);
        // Over the byte bound the oldest go, and with them the versions they covered.
        h.record(ev(14, MAX_HISTORY_BYTES / 2));
        h.record(ev(15, MAX_HISTORY_BYTES / 2));
        assert_eq!(h.since(12).err(), Some(TooOld { oldest: 14 }));
        assert_eq!(rvs(&h, 14), [15]);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn the_count_is_bounded_too() {
        let mut h = History::new(0);
        for rv in 1..=(MAX_HISTORY_EVENTS as u64 + 5) {
            h.record(ev(rv, 0));
        }
        assert_eq!(h.len(), MAX_HISTORY_EVENTS);
        assert_eq!(h.start(), 5);
        assert!(h.since(4).is_err());
        assert_eq!(h.since(5).unwrap().count(), MAX_HISTORY_EVENTS);
    }
}
