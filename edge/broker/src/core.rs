//! The broker as a state machine, with no IO and no clock of its own (quinn-proto's model):
//! the runner feeds it accepted sockets, received bytes, closed sockets and the time; it
//! hands back bytes to write, connections to close, and when it next wants to be woken.
//!
//! Packet handling is in `handle.rs`, routing and delivery in `route.rs`.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use mqtt::{Packet, Will};

use crate::index::Index;
use crate::retained::Retained;
use crate::session::{Session, SessionId};
use crate::Limits;

/// One accepted socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

#[derive(Debug)]
pub(crate) enum Phase {
    /// Accepted; the first packet must be CONNECT [MQTT-3.1.0-1].
    Handshake,
    Connected {
        session: SessionId,
        /// 1.5 × the client's keepalive; `None` when it asked for 0 [MQTT-3.1.2-24].
        keepalive: Option<Duration>,
    },
    /// Closed by the broker: write what is queued (a refusing CONNACK), then close. Nothing
    /// it sends any more is read [MQTT-3.1.4-5].
    Closing,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub phase: Phase,
    pub accepted: Instant,
    /// Bytes received and not yet a whole packet (or not yet processed while the client's
    /// publishing waits for a full subscriber). At most one packet plus one read.
    pub input: Vec<u8>,
    /// Bytes to write, and how many the runner has taken and is writing.
    pub out: Vec<u8>,
    pub writing: usize,
    /// When the last whole packet arrived: keepalive is measured from received packets only.
    pub last_rx: Instant,
    pub will: Option<Will>,
    /// Since when this client's next QoS 1/2 PUBLISH waits for room at a subscriber.
    pub blocked_since: Option<Instant>,
}

/// Counters for logs, tests and benches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub accepted: u64,
    /// Handshaking sockets closed to make room for a newer one.
    pub evicted_handshakes: u64,
    pub connect_timeouts: u64,
    /// CONNECTs refused with a non-zero CONNACK.
    pub refused: u64,
    pub keepalive_timeouts: u64,
    /// Connections closed for a protocol violation or a packet over the size limit.
    pub violations: u64,
    pub takeovers: u64,
    pub wills_published: u64,
    pub published: u64,
    /// QoS 0 messages not sent because the client's write buffer was over its budget.
    pub dropped_qos0: u64,
    /// QoS 1/2 messages not queued because a session (stalled, offline, or past the wait) or
    /// the broker's total was full.
    pub dropped_queue_full: u64,
    pub retained_refused: u64,
    pub sessions_expired: u64,
    pub sessions_evicted: u64,
    /// Times a QoS 1/2 publisher waited for room at a subscriber.
    pub publisher_waits: u64,
}

/// The broker's whole state.
pub struct Broker {
    pub(crate) limits: Limits,
    pub(crate) credentials: Option<(String, Vec<u8>)>,
    pub(crate) deny_subscribe: Vec<String>,
    pub(crate) conns: BTreeMap<ConnId, Conn>,
    pub(crate) sessions: HashMap<SessionId, Session>,
    pub(crate) by_client: HashMap<Rc<str>, SessionId>,
    pub(crate) index: Index,
    pub(crate) retained: Retained,
    /// Bytes in all session queues and in-flight windows.
    pub(crate) queued_bytes: usize,
    pub(crate) stats: Stats,
    next_conn: u64,
    next_session: u64,
    pub(crate) next_auto_id: u64,
    /// Connections with something new for the runner: bytes to write, a close, or input that
    /// may be processed again.
    pub(crate) wakes: Vec<ConnId>,
}

/// Why the broker closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Close {
    /// The client sent DISCONNECT: its will is discarded [MQTT-3.14.4-3].
    Normal,
    /// Anything else publishes the will [MQTT-3.1.2-8].
    Abnormal,
}

impl Broker {
    /// A broker; `credentials` (user name, password), when set, are required of every client.
    pub fn new(limits: Limits, credentials: Option<(String, Vec<u8>)>) -> Broker {
        Broker {
            retained: Retained::new(limits.max_retained, limits.retained_bytes),
            limits,
            credentials,
            deny_subscribe: Vec::new(),
            conns: BTreeMap::new(),
            sessions: HashMap::new(),
            by_client: HashMap::new(),
            index: Index::default(),
            queued_bytes: 0,
            stats: Stats::default(),
            next_conn: 0,
            next_session: 0,
            next_auto_id: 0,
            wakes: Vec::new(),
        }
    }

    /// Topic filters clients may not subscribe to: a requested filter that one of these
    /// patterns matches as written is refused with SUBACK 0x80 ([MQTT-3.9.3-2] allows a
    /// refusal per filter). Broader filters (`#`) are not refused.
    pub fn deny_subscribe(&mut self, patterns: Vec<String>) {
        self.deny_subscribe = patterns;
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Connected clients.
    pub fn clients(&self) -> usize {
        self.conns
            .values()
            .filter(|c| matches!(c.phase, Phase::Connected { .. }))
            .count()
    }

    /// Open sockets the broker knows of (handshaking, connected or closing).
    pub fn sockets(&self) -> usize {
        self.conns.len()
    }

    /// Sessions held (connected and persistent).
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    pub fn retained_bytes(&self) -> usize {
        self.retained.bytes()
    }

    /// Subscriptions held over all sessions.
    pub fn subscriptions(&self) -> usize {
        self.index.len()
    }

    /// Bytes waiting in (and in flight to) all sessions.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// A socket was accepted. Counted from here, not from CONNECT: when `max_handshaking`
    /// sockets are already waiting for their CONNECT, the oldest is closed to make room.
    pub fn accept(&mut self, now: Instant) -> ConnId {
        let handshaking: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Handshake))
            .map(|(id, _)| *id)
            .collect();
        if handshaking.len() >= self.limits.max_handshaking {
            // Ids grow with time, so the first is the oldest.
            if let Some(oldest) = handshaking.first() {
                self.stats.evicted_handshakes += 1;
                self.close(*oldest, Close::Abnormal, now);
            }
        }
        self.next_conn += 1;
        let id = ConnId(self.next_conn);
        self.stats.accepted += 1;
        self.conns.insert(
            id,
            Conn {
                phase: Phase::Handshake,
                accepted: now,
                input: Vec::new(),
                out: Vec::new(),
                writing: 0,
                last_rx: now,
                will: None,
                blocked_since: None,
            },
        );
        id
    }

    /// Bytes arrived on `id`. Whole packets are handled; a partial one is kept.
    pub fn on_bytes(&mut self, id: ConnId, data: &[u8], now: Instant) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if matches!(c.phase, Phase::Closing) {
            return;
        }
        c.input.extend_from_slice(data);
        self.process_input(id, now);
    }

    /// Handles the whole packets in `id`'s input until it is empty, the client must wait for a
    /// full subscriber, or the connection closes.
    pub(crate) fn process_input(&mut self, id: ConnId, now: Instant) {
        let mut used = 0;
        loop {
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            if matches!(c.phase, Phase::Closing) {
                return;
            }
            let decoded = mqtt::decode(&c.input[used..], self.limits.max_packet);
            let (packet, n) = match decoded {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => {
                    self.on_decode_error(id, e, now);
                    return;
                }
            };
            if self.must_wait(id, &packet, now) {
                break;
            }
            used += n;
            if let Some(c) = self.conns.get_mut(&id) {
                c.last_rx = now;
            }
            self.handle(id, packet, now);
        }
        if let Some(c) = self.conns.get_mut(&id) {
            c.input.drain(..used);
        }
    }

    /// The socket closed (EOF or error) or the runner gave up on it. Publishes the will unless
    /// the client said DISCONNECT; forgets the connection.
    pub fn on_closed(&mut self, id: ConnId, now: Instant) {
        self.close(id, Close::Abnormal, now);
        self.conns.remove(&id);
    }

    /// Takes the bytes waiting for `id` (the runner writes them, then calls [`Broker::written`]).
    pub fn take_output(&mut self, id: ConnId) -> Vec<u8> {
        match self.conns.get_mut(&id) {
            Some(c) => {
                let out = std::mem::take(&mut c.out);
                c.writing += out.len();
                out
            }
            None => Vec::new(),
        }
    }

    /// The bytes last taken for `id` are written: its budget has room again, so queued
    /// messages move and waiting input is processed.
    pub fn written(&mut self, id: ConnId, now: Instant) {
        let session = match self.conns.get_mut(&id) {
            Some(c) => {
                c.writing = 0;
                match c.phase {
                    Phase::Connected { session, .. } => session,
                    _ => return,
                }
            }
            None => return,
        };
        self.pump(session, now);
        self.process_input(id, now);
    }

    /// Whether the runner should read more from `id`: not while it closes, while its write
    /// buffer is over budget, or while its last packet waits for a full subscriber.
    pub fn wants_input(&self, id: ConnId) -> bool {
        self.conns.get(&id).is_some_and(|c| {
            !matches!(c.phase, Phase::Closing)
                && c.out.len() + c.writing < self.limits.out_budget
                && c.blocked_since.is_none()
                && c.input.len() <= self.limits.max_packet
        })
    }

    pub fn has_output(&self, id: ConnId) -> bool {
        self.conns.get(&id).is_some_and(|c| !c.out.is_empty())
    }

    /// Whether the runner should close `id` once its output is written.
    pub fn is_closing(&self, id: ConnId) -> bool {
        self.conns
            .get(&id)
            .is_none_or(|c| matches!(c.phase, Phase::Closing))
    }

    /// Connections the runner should look at again (output, close, resumed input).
    pub fn drain_wakes(&mut self) -> Vec<ConnId> {
        let mut v = std::mem::take(&mut self.wakes);
        v.sort_unstable();
        v.dedup();
        v
    }

    pub(crate) fn wake(&mut self, id: ConnId) {
        self.wakes.push(id);
    }

    /// When [`Broker::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let l = &self.limits;
        let conns = self.conns.values().filter_map(|c| match c.phase {
            Phase::Handshake => Some(c.accepted + l.connect_timeout),
            Phase::Connected { keepalive, .. } => {
                let ka = keepalive.map(|k| c.last_rx + k);
                let wait = c.blocked_since.map(|b| b + l.publish_wait);
                ka.into_iter().chain(wait).min()
            }
            Phase::Closing => None,
        });
        let sessions = self
            .sessions
            .values()
            .filter_map(|s| s.disconnected_at.map(|d| d + l.session_expiry));
        conns.chain(sessions).min()
    }

    /// CONNECT deadlines, keepalives [MQTT-3.1.2-24], publishers waited long enough, and
    /// expired persistent sessions.
    pub fn handle_timeout(&mut self, now: Instant) {
        let l = self.limits.clone();
        let mut close = Vec::new();
        let mut resume = Vec::new();
        for (id, c) in &self.conns {
            match c.phase {
                Phase::Handshake if now >= c.accepted + l.connect_timeout => close.push(*id),
                Phase::Connected { keepalive, .. } => {
                    if keepalive.is_some_and(|k| now >= c.last_rx + k) {
                        close.push(*id);
                    } else if c.blocked_since.is_some_and(|b| now >= b + l.publish_wait) {
                        resume.push(*id);
                    }
                }
                _ => {}
            }
        }
        for id in close {
            if matches!(self.conns[&id].phase, Phase::Handshake) {
                self.stats.connect_timeouts += 1;
            } else {
                self.stats.keepalive_timeouts += 1;
            }
            self.close(id, Close::Abnormal, now);
        }
        for id in resume {
            self.process_input(id, now);
        }
        let expired: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.disconnected_at
                    .is_some_and(|d| now >= d + l.session_expiry)
            })
            .map(|(id, _)| *id)
            .collect();
        for s in expired {
            self.stats.sessions_expired += 1;
            self.drop_session(s);
        }
    }

    /// Bytes `id` will send next (tests and the runner's flush).
    pub(crate) fn send(&mut self, id: ConnId, p: &Packet) {
        if let Some(c) = self.conns.get_mut(&id) {
            p.encode(&mut c.out);
            self.wakes.push(id);
        }
    }

    /// The broker closes `id`: publishes its will unless `how` is normal, detaches its session
    /// (a clean one ends), and lets the runner flush and close the socket.
    pub(crate) fn close(&mut self, id: ConnId, how: Close, now: Instant) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let phase = std::mem::replace(&mut c.phase, Phase::Closing);
        let will = c.will.take();
        c.input = Vec::new();
        c.blocked_since = None;
        self.wakes.push(id);
        if let Phase::Connected { session, .. } = phase {
            self.detach(session, now);
            if how == Close::Abnormal {
                if let Some(w) = will {
                    self.stats.wills_published += 1;
                    self.publish(&w.topic, &w.payload, w.qos, w.retain, now);
                }
            }
        }
    }

    /// The session lost its connection: a clean session ends [MQTT-3.1.2-6]; a persistent one
    /// waits (bounded by `session_expiry`).
    fn detach(&mut self, s: SessionId, now: Instant) {
        let Some(sess) = self.sessions.get_mut(&s) else {
            return;
        };
        sess.conn = None;
        if sess.clean {
            self.drop_session(s);
        } else {
            sess.disconnected_at = Some(now);
        }
    }

    pub(crate) fn drop_session(&mut self, s: SessionId) {
        if let Some(sess) = self.sessions.remove(&s) {
            for f in sess.subs.keys() {
                self.index.remove(f, s);
            }
            self.queued_bytes -= sess.bytes;
            if self.by_client.get(&sess.client_id) == Some(&s) {
                self.by_client.remove(&sess.client_id);
            }
        }
    }

    /// A new session for `client_id`, making room by discarding the persistent session
    /// disconnected longest ago when `max_sessions` are held.
    pub(crate) fn new_session(
        &mut self,
        client_id: Rc<str>,
        clean: bool,
        now: Instant,
    ) -> SessionId {
        if self.sessions.len() >= self.limits.max_sessions {
            let oldest = self
                .sessions
                .iter()
                .filter_map(|(id, s)| s.disconnected_at.map(|d| (d, *id)))
                .min();
            if let Some((_, id)) = oldest {
                self.stats.sessions_evicted += 1;
                self.drop_session(id);
            }
        }
        self.next_session += 1;
        let id = SessionId(self.next_session);
        self.sessions
            .insert(id, Session::new(client_id.clone(), clean, now));
        self.by_client.insert(client_id, id);
        id
    }
}

#[cfg(test)]
mod tests;
