//! Routing a message to the sessions whose filters match it, and moving each session's
//! messages through its in-flight window into its connection's write buffer.

use std::collections::HashMap;
use std::time::Instant;

use mqtt::QoS;

use crate::core::{Broker, ConnId, Phase};
use crate::retained::Kept;
use crate::session::{Msg, Outgoing, Queued, SessionId, MSG_OVERHEAD};

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
        // [MQTT-3.3.5-1]: one message per session, at the highest QoS of its matching filters.
        let mut targets: HashMap<SessionId, QoS> = HashMap::new();
        self.index.for_each_match(topic, |s, granted| {
            let e = targets.entry(s).or_insert(granted);
            *e = (*e).max(granted);
        });
        let mut targets: Vec<(SessionId, QoS)> = targets.into_iter().collect();
        targets.sort_unstable(); // deterministic order, for tests and fairness
        for (s, granted) in targets {
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
        let out_budget = self.limits.out_budget;
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let conn = s.conn.and_then(|c| self.conns.get_mut(&c).map(|x| (c, x)));
        if qos == QoS::AtMostOnce {
            // QoS 0 is never queued: sent if the client keeps up, else dropped; not kept for
            // an offline session (as mosquitto's default).
            if let Some((cid, c)) = conn {
                if c.out.len() + c.writing < out_budget {
                    mqtt::encode_publish(
                        &mut c.out,
                        &msg.topic,
                        &msg.payload,
                        qos,
                        0,
                        false,
                        retain,
                    );
                    self.wakes.push(cid);
                } else {
                    self.stats.dropped_qos0 += 1;
                }
            }
            return;
        }
        let w = msg.weight();
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

    /// Moves queued messages into free in-flight slots while the connection has room.
    pub(crate) fn pump(&mut self, session: SessionId, now: Instant) {
        let out_budget = self.limits.out_budget;
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
        while s.inflight.len() < max_inflight && c.out.len() + c.writing < out_budget {
            let Some(q) = s.queue.pop_front() else {
                break;
            };
            let pid = s.next_pid();
            mqtt::encode_publish(
                &mut c.out,
                &q.msg.topic,
                &q.msg.payload,
                q.qos,
                pid,
                false,
                q.retain,
            );
            s.inflight.push_back((pid, Outgoing::Sent(q)));
            sent = true;
        }
        if sent {
            self.wake(cid);
            self.resume_waiting_publishers(now);
        }
    }

    /// Whether a QoS 1/2 message of about `size` bytes for `topic` would find a live (connected,
    /// not stalled) subscriber without room: then its publisher waits.
    pub(crate) fn full_live_subscriber(&self, topic: &str, size: usize, now: Instant) -> bool {
        let w = size + MSG_OVERHEAD;
        let l = &self.limits;
        if self.queued_bytes + w > l.total_queued_bytes {
            return true;
        }
        let mut full = false;
        self.index.for_each_match(topic, |sid, granted| {
            if full || granted == QoS::AtMostOnce {
                return;
            }
            let Some(s) = self.sessions.get(&sid) else {
                return;
            };
            let no_room =
                s.queue.len() >= l.max_queued || (s.bytes > 0 && s.bytes + w > l.session_bytes);
            let live = s.conn.is_some() && now < s.progress_at + l.publish_wait;
            full = no_room && live;
        });
        full
    }

    /// Room appeared somewhere: publishers waiting for it try again.
    pub(crate) fn resume_waiting_publishers(&mut self, _now: Instant) {
        let waiting: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.blocked_since.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            // The runner calls `resume` for woken connections, which processes their input.
            self.wake(id);
        }
    }

    /// The runner's call for a woken connection whose input waited: handles it if it can.
    pub fn resume(&mut self, id: ConnId, now: Instant) {
        if self
            .conns
            .get(&id)
            .is_some_and(|c| c.blocked_since.is_some())
        {
            self.process_input(id, now);
        }
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
