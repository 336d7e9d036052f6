//! Routing a message to the sessions whose filters match it, and moving each session's
//! messages through its in-flight window into its connection's write buffer.

use std::collections::HashMap;
use std::time::Instant;

use mqtt::QoS;

use crate::core::{Broker, Phase};
use crate::retained::Kept;
use crate::session::{Msg, Outgoing, Queued, SessionId, MSG_OVERHEAD};

/// Bytes of a PUBLISH of `topic` and `payload` on the wire, at most (header, id).
fn publish_len(topic: &str, payload: &[u8]) -> usize {
    topic.len() + payload.len() + 9
}

impl Broker {
    /// Routes a message published by a client (or a will) to every matching subscription.
    pub(crate) fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        now: Instant,
    ) {
        self.stats.published += 1;
        let msg = Msg::new(topic, payload);
        if retain && self.retained.publish(&msg, qos) == Kept::Full {
            self.stats.retained_refused += 1;
        }
        let denied = self
            .deny_subscribe
            .iter()
            .any(|d| mqtt::topic::matches(d, topic));
        // [MQTT-3.3.5-1]: one message per session, at the highest QoS of its matching filters.
        let mut targets: HashMap<SessionId, QoS> = HashMap::new();
        self.index.for_each_match(topic, |s, granted| {
            let e = targets.entry(s).or_insert(granted);
            *e = (*e).max(granted);
        });
        let mut targets: Vec<(SessionId, QoS)> = targets.into_iter().collect();
        targets.sort_unstable(); // deterministic order, for tests and fairness
        for (s, granted) in targets {
            if denied && !self.sessions.get(&s).is_some_and(|s| s.reserved) {
                continue; // a denied topic reaches no one through a broader filter either
            }
            // [MQTT-3.3.1-9]: RETAIN=0 to established subscriptions.
            self.deliver(s, msg.clone(), qos.min(granted), false, now);
        }
    }

    /// Sends `msg` to `session` at `qos` now if it can, else queues it (QoS 1/2, bounded), else
    /// drops it (counted).
    pub(crate) fn deliver(
        &mut self,
        session: SessionId,
        msg: Msg,
        qos: QoS,
        retain: bool,
        now: Instant,
    ) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        if qos == QoS::AtMostOnce {
            // QoS 0 is never queued: sent if the client keeps up, else dropped; not kept for
            // an offline session (as mosquitto's default).
            let Some(cid) = s.conn else {
                return;
            };
            let Some(c) = self.conns.get_mut(&cid) else {
                return;
            };
            let len = publish_len(&msg.topic, &msg.payload);
            if c.out_len() + len <= self.limits.out_budget.saturating_sub(crate::ANSWER_ROOM)
                && self.out_total + len <= self.limits.total_out_bytes
            {
                c.start_output(now);
                let before = c.out.len();
                mqtt::encode_publish(&mut c.out, &msg.topic, &msg.payload, qos, 0, false, retain);
                self.out_total += c.out.len() - before;
                self.wakes.push(cid);
            } else {
                self.stats.dropped_qos0 += 1;
            }
            return;
        }
        let w = msg.weight();
        let online = s.conn.is_some();
        if online && self.queued_bytes + w > self.limits.total_queued_bytes {
            self.evict_offline(w);
        }
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let fits = s.queue.len() < self.limits.max_queued
            && (s.bytes == 0 || s.bytes + w <= self.limits.session_bytes)
            && self.queued_bytes + w <= self.limits.total_queued_bytes;
        if !fits {
            self.stats.dropped_queue_full += 1;
            return;
        }
        s.bytes += w;
        self.queued_bytes += w;
        s.queue.push_back(Queued { msg, qos, retain });
        self.pump(session, now);
    }

    /// Makes `need` bytes of the total free by dropping messages queued for persistent
    /// sessions that are not connected, oldest session first: a connected subscriber's room
    /// must not be held by clients that may never come back.
    fn evict_offline(&mut self, need: usize) {
        let mut offline: Vec<(Instant, SessionId)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.conn.is_none() && !s.queue.is_empty())
            .filter_map(|(id, s)| s.disconnected_at.map(|d| (d, *id)))
            .collect();
        offline.sort_unstable();
        for (_, id) in offline {
            let s = self.sessions.get_mut(&id).unwrap();
            while let Some(q) = s.queue.pop_front() {
                let w = q.msg.weight();
                s.bytes -= w;
                self.queued_bytes -= w;
                self.stats.dropped_queue_full += 1;
                if self.queued_bytes + need <= self.limits.total_queued_bytes {
                    return;
                }
            }
        }
    }

    /// Moves queued messages into free in-flight slots while the connection has room.
    pub(crate) fn pump(&mut self, session: SessionId, now: Instant) {
        let out_budget = self.limits.out_budget.saturating_sub(crate::ANSWER_ROOM);
        let max_inflight = self.limits.max_inflight;
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(cid) = s.conn else {
            return;
        };
        let Some(c) = self.conns.get_mut(&cid) else {
            return;
        };
        if !matches!(c.phase, Phase::Connected { .. }) {
            return;
        }
        let mut sent = false;
        while s.inflight.len() < max_inflight {
            let Some(q) = s.queue.front() else {
                break;
            };
            let len = publish_len(&q.msg.topic, &q.msg.payload);
            // One message may go over an empty budget, or a large message would never go.
            if (c.out_len() > 0 && c.out_len() + len > out_budget)
                || self.out_total + len > self.limits.total_out_bytes
            {
                break;
            }
            let q = s.queue.pop_front().unwrap();
            if s.inflight.is_empty() {
                // The clock for "stalled" starts with the first message it owes an answer to.
                s.progress_at = now;
            }
            let pid = s.next_pid();
            c.start_output(now);
            let before = c.out.len();
            mqtt::encode_publish(
                &mut c.out,
                &q.msg.topic,
                &q.msg.payload,
                q.qos,
                pid,
                false,
                q.retain,
            );
            self.out_total += c.out.len() - before;
            s.inflight.push_back((pid, Outgoing::Sent(q)));
            sent = true;
        }
        if sent {
            self.wake(cid);
        }
    }

    /// Whether a QoS 1/2 message of about `size` bytes for `topic` would find a live subscriber
    /// without room, so that its publisher must wait. Live: connected, and within
    /// `publish_wait` it acknowledged something, was sent its first unanswered message, or
    /// (owing nothing) read what it was sent. Offline and stalled
    /// sessions are not waited for; the broker's total is not waited on while offline sessions
    /// hold part of it (they give it up first).
    pub(crate) fn full_live_subscriber(&self, topic: &str, size: usize, now: Instant) -> bool {
        let w = size + MSG_OVERHEAD;
        let l = &self.limits;
        let denied = self
            .deny_subscribe
            .iter()
            .any(|d| mqtt::topic::matches(d, topic));
        let offline_bytes: usize = self
            .sessions
            .values()
            .filter(|s| s.conn.is_none())
            .map(|s| s.bytes)
            .sum();
        let total_full =
            self.queued_bytes - offline_bytes.min(self.queued_bytes) + w > l.total_queued_bytes;
        let mut full = false;
        self.index.for_each_match(topic, |sid, granted| {
            if full || granted == QoS::AtMostOnce {
                return;
            }
            let Some(s) = self.sessions.get(&sid) else {
                return;
            };
            if s.conn.is_none() || (denied && !s.reserved) {
                return;
            }
            let no_room = total_full
                || s.queue.len() >= l.max_queued
                || (s.bytes > 0 && s.bytes + w > l.session_bytes);
            let live = now < s.progress_at + l.publish_wait;
            full = no_room && live;
        });
        full
    }
}

/// For tests: a PUBLISH as a client sends it.
#[cfg(test)]
pub(crate) fn client_publish(
    topic: &str,
    payload: &[u8],
    qos: QoS,
    pid: u16,
    retain: bool,
) -> Vec<u8> {
    mqtt::Packet::Publish(mqtt::Publish {
        dup: false,
        qos,
        retain,
        topic: topic.into(),
        pid,
        payload: payload.to_vec(),
    })
    .to_bytes()
}
