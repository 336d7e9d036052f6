//! Retained messages (§3.3.1.3): the last retained message per topic, bounded in count and
//! bytes.

use std::collections::BTreeMap;

use mqtt::QoS;

use crate::session::Msg;

#[derive(Debug)]
pub struct Retained {
    by_topic: BTreeMap<String, (Msg, QoS)>,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
}

/// What [`Retained::publish`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Kept {
    Stored,
    Cleared,
    /// Over the count or byte bound: delivered, not retained.
    Full,
}

impl Retained {
    pub fn new(max_count: usize, max_bytes: usize) -> Self {
        Retained {
            by_topic: BTreeMap::new(),
            bytes: 0,
            max_count,
            max_bytes,
        }
    }

    pub fn len(&self) -> usize {
        self.by_topic.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// A PUBLISH with RETAIN=1: replaces the topic's retained message [MQTT-3.3.1-5] (QoS 0
    /// too, [MQTT-3.3.1-7]); an empty payload removes it and is not stored [MQTT-3.3.1-10],
    /// [MQTT-3.3.1-11].
    pub fn publish(&mut self, msg: &Msg, qos: QoS) -> Kept {
        let old = self.by_topic.remove(&*msg.topic);
        if let Some((m, _)) = &old {
            self.bytes -= m.weight();
        }
        if msg.payload.is_empty() {
            return Kept::Cleared;
        }
        if self.by_topic.len() >= self.max_count || self.bytes + msg.weight() > self.max_bytes {
            // Put back what was there: a refused replacement must not lose the old message.
            if let Some((m, q)) = old {
                self.bytes += m.weight();
                self.by_topic.insert(m.topic.to_string(), (m, q));
            }
            return Kept::Full;
        }
        self.bytes += msg.weight();
        self.by_topic
            .insert(msg.topic.to_string(), (msg.clone(), qos));
        Kept::Stored
    }

    /// Retained messages whose topic matches `filter`, in topic order.
    pub fn matching<'a>(&'a self, filter: &'a str) -> impl Iterator<Item = &'a (Msg, QoS)> + 'a {
        self.by_topic
            .iter()
            .filter(move |(t, _)| mqtt::topic::matches(filter, t))
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_clear_and_bounds() {
        let mut r = Retained::new(2, 1000);
        assert_eq!(
            r.publish(&Msg::new("a", b"1"), QoS::AtLeastOnce),
            Kept::Stored
        );
        assert_eq!(
            r.publish(&Msg::new("a", b"2"), QoS::AtMostOnce),
            Kept::Stored
        );
        assert_eq!(r.len(), 1);
        let (m, q) = r.matching("#").next().unwrap();
        assert_eq!((&*m.payload, *q), (&b"2"[..], QoS::AtMostOnce));
        assert_eq!(
            r.publish(&Msg::new("b", b"x"), QoS::AtMostOnce),
            Kept::Stored
        );
        assert_eq!(r.publish(&Msg::new("c", b"x"), QoS::AtMostOnce), Kept::Full);
        assert_eq!(r.len(), 2);
        // Clearing makes room and is never refused.
        assert_eq!(
            r.publish(&Msg::new("b", b""), QoS::AtMostOnce),
            Kept::Cleared
        );
        assert_eq!(
            r.publish(&Msg::new("c", b"x"), QoS::AtMostOnce),
            Kept::Stored
        );
        // A replacement too big for the byte bound keeps the old message.
        let mut r = Retained::new(10, 200);
        r.publish(&Msg::new("a", b"small"), QoS::AtMostOnce);
        assert_eq!(
            r.publish(&Msg::new("a", &[0; 300]), QoS::AtMostOnce),
            Kept::Full
        );
        assert_eq!(&*r.matching("a").next().unwrap().0.payload, b"small");
        assert_eq!(r.bytes(), Msg::new("a", b"small").weight());
    }
}
