//! Reading a client: how much the runner may read, packets out of the bytes, the pool that
//! bounds large packets being assembled, and QoS 1/2 publishers that wait for a subscriber.
//!
//! DoS notes. A packet over [`READ_CHUNK`] bytes is read only once its declared size is
//! reserved from the large-packet pool (`Limits::large_input_bytes`), and must then complete
//! within `packet_timeout`: so sockets trickling big packets hold at most the pool. A client
//! whose PUBLISH waits keeps having its acknowledgements and pings handled (they are what
//! frees the room it waits for, also when it subscribes to its own topics); decoding stops only
//! at its next PUBLISH, which keeps its publishes in order [MQTT-4.6.0-6].

use std::time::Instant;

use mqtt::{Packet, Publish, QoS};

use crate::core::{Broker, ConnId, Parked, Phase};
use crate::READ_CHUNK;

/// The whole size of the first packet in `buf`, once its fixed header has arrived.
fn declared_len(buf: &[u8]) -> Option<usize> {
    let mut len = 0usize;
    for i in 1..5 {
        let b = *buf.get(i)?;
        len |= ((b & 0x7F) as usize) << (7 * (i - 1));
        if b & 0x80 == 0 {
            return Some(i + 1 + len);
        }
    }
    None // over four bytes: the decoder refuses it
}

impl Broker {
    /// How many bytes the runner may read from `id` now: none while it closes, while its
    /// output is over budget, while its decoding is stopped behind a waiting PUBLISH, or while
    /// the large packet it assembles waits for room in the pool.
    pub fn read_budget(&mut self, id: ConnId) -> usize {
        let l = &self.limits;
        let Some(c) = self.conns.get_mut(&id) else {
            return 0;
        };
        if matches!(c.phase, Phase::Closing) || c.stopped || c.out_len() >= l.out_budget {
            return 0;
        }
        let Some(total) = declared_len(&c.input) else {
            return READ_CHUNK;
        };
        if total <= READ_CHUNK || total > l.max_packet {
            return READ_CHUNK;
        }
        if c.reserved < total {
            let need = total - c.reserved;
            if self.large_bytes + need > l.large_input_bytes {
                c.pool_wait = true;
                return 0;
            }
            self.large_bytes += need;
            c.reserved = total;
            c.pool_wait = false;
        }
        // Exactly the rest of this packet: what follows it is read when it is handled.
        total.saturating_sub(c.input.len()).clamp(1, READ_CHUNK)
    }

    /// Bytes arrived on `id`. Whole packets are handled; a partial one is kept.
    pub fn on_bytes(&mut self, id: ConnId, data: &[u8], now: Instant) {
        self.now = now;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if matches!(c.phase, Phase::Closing) {
            return;
        }
        c.input.extend_from_slice(data);
        self.process_input(id, now);
        self.settle(now);
    }

    /// Handles the whole packets in `id`'s input: a parked PUBLISH first if it may go now, then
    /// the rest, until the input is used up, a second PUBLISH meets a parked one, or the
    /// connection closes.
    pub(crate) fn process_input(&mut self, id: ConnId, now: Instant) {
        if self.conns.get(&id).is_some_and(|c| c.parked.is_some()) {
            self.try_unpark(id, now);
        }
        let mut used = 0;
        loop {
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            if matches!(c.phase, Phase::Closing) {
                return;
            }
            let (packet, n) = match mqtt::decode(&c.input[used..], self.limits.max_packet) {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => {
                    self.on_decode_error(id, e, now);
                    return;
                }
            };
            if c.parked.is_some() && matches!(packet, Packet::Publish(_)) {
                c.stopped = true;
                break;
            }
            used += n;
            c.last_rx = now;
            if let Packet::Publish(p) = packet {
                if self.must_wait(id, &p, now) {
                    self.stats.publisher_waits += 1;
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.parked = Some(Parked {
                            publish: p,
                            since: now,
                            checked: now,
                        });
                    }
                    continue;
                }
                self.handle(id, Packet::Publish(p), now);
            } else {
                self.handle(id, packet, now);
            }
        }
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.input.drain(..used);
        let large = declared_len(&c.input).is_some_and(|t| t > READ_CHUNK);
        if !large && c.reserved > 0 {
            self.large_bytes -= c.reserved;
            c.reserved = 0;
            self.room_freed = true;
        }
        c.partial_since = match (large && !c.stopped, c.partial_since) {
            (true, Some(t)) => Some(t),
            (true, None) => Some(now),
            (false, _) => None,
        };
        if used > 0 {
            self.wakes.push(id); // what it may read changed
        }
    }

    /// Whether the QoS 1/2 PUBLISH `p` from `id` must wait: a subscriber it goes to is live
    /// (making progress) and has no room, so acknowledging it now would mean dropping it. A
    /// subscriber that has not moved for `publish_wait` is stalled and not waited for.
    fn must_wait(&self, id: ConnId, p: &Publish, now: Instant) -> bool {
        if p.qos == QoS::AtMostOnce {
            return false;
        }
        let Some(Phase::Connected { session, .. }) = self.conns.get(&id).map(|c| &c.phase) else {
            return false;
        };
        if p.qos == QoS::ExactlyOnce
            && self
                .sessions
                .get(session)
                .is_some_and(|s| s.incoming_qos2.contains(&p.pid))
        {
            return false; // a repeat: it is not routed again, so it needs no room
        }
        self.full_live_subscriber(&p.topic, p.payload.len() + p.topic.len(), now)
    }

    /// Lets a parked PUBLISH go if it may; true if it went.
    fn try_unpark(&mut self, id: ConnId, now: Instant) -> bool {
        let Some(parked) = self.conns.get_mut(&id).and_then(|c| c.parked.take()) else {
            return false;
        };
        if self.must_wait(id, &parked.publish, now) {
            if let Some(c) = self.conns.get_mut(&id) {
                c.parked = Some(Parked {
                    checked: now,
                    ..parked
                });
            }
            return false;
        }
        if let Some(c) = self.conns.get_mut(&id) {
            c.stopped = false;
            c.last_rx = now;
        }
        self.wakes.push(id);
        self.handle(id, Packet::Publish(parked.publish), now);
        true
    }

    /// After a call changed what is held: while room was freed, parked publishers are tried
    /// again, those waiting longest first, and readers waiting for the large-packet pool are
    /// woken. Bounded rounds: what is left is tried at the next event or recheck.
    pub(crate) fn settle(&mut self, now: Instant) {
        for _ in 0..4 {
            if !std::mem::take(&mut self.room_freed) {
                return;
            }
            let mut parked: Vec<(Instant, ConnId)> = self
                .conns
                .iter()
                .filter_map(|(id, c)| c.parked.as_ref().map(|p| (p.since, *id)))
                .collect();
            parked.sort_unstable();
            for (_, id) in parked {
                self.process_input(id, now);
            }
            let pool: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| c.pool_wait)
                .map(|(id, _)| *id)
                .collect();
            for id in pool {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.pool_wait = false;
                }
                self.wakes.push(id);
            }
        }
    }
}
