//! The broker as a state machine, with no IO and no clock of its own (quinn-proto's model):
//! the runner feeds it accepted sockets, received bytes, written bytes, closed sockets and the
//! time; it hands back bytes to write, connections to close, how much it may read from each,
//! and when it next wants to be woken.
//!
//! Reading input (packets, the large-packet pool, publishers that wait) is in `input.rs`,
//! packet handling in `handle.rs`, routing and delivery in `route.rs`.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use mqtt::{Packet, Publish, Will};

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
    /// Closed by the broker: the writer writes what is queued (a refusing CONNACK, the answers
    /// to what came before), then closes. Nothing the client sends any more is read
    /// [MQTT-3.1.4-5].
    Closing,
}

/// A QoS 1/2 PUBLISH that waits for room at a live subscriber. While it waits the client's
/// other packets (its acknowledgements, pings) are still handled; its next PUBLISH is not.
#[derive(Debug)]
pub(crate) struct Parked {
    pub publish: Publish,
    /// When it started waiting: the longest waiting goes first when room appears.
    pub since: Instant,
    /// When it was last checked: rechecked `publish_wait` later even if nothing wakes it.
    pub checked: Instant,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub phase: Phase,
    pub accepted: Instant,
    /// Bytes received and not yet handled: at most one packet being assembled and one read.
    pub input: Vec<u8>,
    /// Bytes of the large-packet pool this connection holds for the packet it assembles.
    pub reserved: usize,
    /// Since when the packet being assembled has been incomplete (for large packets).
    pub partial_since: Option<Instant>,
    /// Waits for room in the large-packet pool.
    pub pool_wait: bool,
    pub parked: Option<Parked>,
    /// Decoding stopped at a PUBLISH because an earlier one is parked.
    pub stopped: bool,
    /// Bytes to write, and how many the runner has taken and is writing.
    pub out: Vec<u8>,
    pub writing: usize,
    /// When output last went from empty to waiting, or was last written.
    pub wrote_at: Instant,
    /// When the last whole packet arrived: keepalive is measured from received packets only.
    pub last_rx: Instant,
    pub will: Option<Will>,
}

impl Conn {
    pub fn out_len(&self) -> usize {
        self.out.len() + self.writing
    }

    /// Call before appending output: the write timeout runs from when output started to wait.
    pub fn start_output(&mut self, now: Instant) {
        if self.out_len() == 0 {
            self.wrote_at = now;
        }
    }
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
    /// Connections closed because a large packet did not complete, or nothing could be written
    /// to them, in time.
    pub io_timeouts: u64,
    /// Connections closed for a protocol violation or a packet over the size limit.
    pub violations: u64,
    pub takeovers: u64,
    pub wills_published: u64,
    pub published: u64,
    /// QoS 0 messages not sent because the client's write buffer was over its budget.
    pub dropped_qos0: u64,
    /// QoS 1/2 messages not queued because a session (stalled or offline) or the broker's
    /// total was full, or evicted from an offline session to make room for a connected one.
    pub dropped_queue_full: u64,
    pub retained_refused: u64,
    /// Filters refused for the per-client or total subscription byte budget.
    pub subscriptions_refused: u64,
    pub sessions_expired: u64,
    pub sessions_evicted: u64,
    /// Times a QoS 1/2 publisher waited for room at a subscriber.
    pub publisher_waits: u64,
}

/// The broker's whole state.
pub struct Broker {
    pub(crate) limits: Limits,
    pub(crate) credentials: Option<(String, Vec<u8>)>,
    /// edgecore's own client: its id needs this secret as password, it is exempt from the deny
    /// list and from `max_clients`, so no local client can take its place or lock it out.
    pub(crate) reserved: Option<(String, Vec<u8>)>,
    pub(crate) deny_subscribe: Vec<String>,
    pub(crate) conns: BTreeMap<ConnId, Conn>,
    pub(crate) sessions: HashMap<SessionId, Session>,
    pub(crate) by_client: HashMap<Rc<str>, SessionId>,
    pub(crate) index: Index,
    pub(crate) retained: Retained,
    /// Bytes in all session queues and in-flight windows.
    pub(crate) queued_bytes: usize,
    /// Bytes of the large-packet pool reserved.
    pub(crate) large_bytes: usize,
    /// Bytes of will messages held.
    pub(crate) will_bytes: usize,
    /// Subscription bytes held over all sessions.
    pub(crate) sub_bytes: usize,
    /// Bytes waiting to be written (or being written) over all connections.
    pub(crate) out_total: usize,
    pub(crate) stats: Stats,
    next_conn: u64,
    next_session: u64,
    /// Connections with something new for the runner: bytes to write, a close, or a change in
    /// what it may read.
    pub(crate) wakes: Vec<ConnId>,
    /// Room appeared (an acknowledgement, a write, a dropped session): parked publishers are
    /// tried again, oldest first, before the call returns.
    pub(crate) room_freed: bool,
    /// The time of the call being handled (every entry point sets it).
    pub(crate) now: Instant,
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
            reserved: None,
            deny_subscribe: Vec::new(),
            conns: BTreeMap::new(),
            sessions: HashMap::new(),
            by_client: HashMap::new(),
            index: Index::default(),
            queued_bytes: 0,
            large_bytes: 0,
            will_bytes: 0,
            sub_bytes: 0,
            out_total: 0,
            stats: Stats::default(),
            next_conn: 0,
            next_session: 0,
            wakes: Vec::new(),
            room_freed: false,
            now: Instant::now(),
        }
    }

    /// Topic filters clients may not subscribe to: a requested filter that one of these
    /// patterns matches as written is refused with SUBACK 0x80 ([MQTT-3.9.3-2] allows a
    /// refusal per filter), and a message whose topic one of them matches is delivered to no
    /// one through a broader filter (`#`) either. The reserved client is exempt.
    pub fn deny_subscribe(&mut self, patterns: Vec<String>) {
        self.deny_subscribe = patterns;
    }

    /// Reserves `client_id` for the client that knows `secret` (sent as its password).
    pub fn reserve_client(&mut self, client_id: &str, secret: &[u8]) {
        self.reserved = Some((client_id.to_owned(), secret.to_vec()));
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

    /// Subscriptions held over all sessions, and what they cost in bytes.
    pub fn subscriptions(&self) -> (usize, usize) {
        (self.index.len(), self.sub_bytes)
    }

    /// Bytes waiting in (and in flight to) all sessions.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Bytes held in connection buffers: input not yet handled, output not yet written.
    pub fn buffered_bytes(&self) -> (usize, usize) {
        let input = self.conns.values().map(|c| c.input.len()).sum();
        (input, self.out_total)
    }

    /// A socket was accepted. Counted from here, not from CONNECT: when `max_handshaking`
    /// sockets are already waiting for their CONNECT, the oldest is closed to make room.
    pub fn accept(&mut self, now: Instant) -> ConnId {
        self.now = now;
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
                reserved: 0,
                partial_since: None,
                pool_wait: false,
                parked: None,
                stopped: false,
                out: Vec::new(),
                writing: 0,
                wrote_at: now,
                last_rx: now,
                will: None,
            },
        );
        id
    }

    /// The socket closed (EOF or error) or the runner gave up on it. Publishes the will unless
    /// the client said DISCONNECT; forgets the connection.
    pub fn on_closed(&mut self, id: ConnId, now: Instant) {
        self.now = now;
        self.close(id, Close::Abnormal, now);
        if let Some(c) = self.conns.remove(&id) {
            self.release_pool(&c);
            self.out_total -= c.out_len();
        }
        self.settle(now);
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
    /// messages move, its reader may read again, and waiting publishers are tried.
    pub fn written(&mut self, id: ConnId, now: Instant) {
        self.now = now;
        let session = match self.conns.get_mut(&id) {
            Some(c) => {
                self.out_total -= c.writing;
                c.writing = 0;
                c.wrote_at = now;
                match c.phase {
                    Phase::Connected { session, .. } => Some(session),
                    _ => None,
                }
            }
            None => return,
        };
        // The reader may have stopped for the budget: it must look again.
        self.wake(id);
        if let Some(s) = session {
            if let Some(sess) = self.sessions.get_mut(&s) {
                // Reading is progress only for a client that owes no acknowledgement: one
                // that reads and never acknowledges must still count as stalled.
                if sess.inflight.is_empty() {
                    sess.progress_at = now;
                }
            }
            self.pump(s, now);
        }
        self.room_freed = true;
        self.process_input(id, now);
        self.settle(now);
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

    /// Connections the runner should look at again (output, close, what it may read).
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
                // A client whose PUBLISH waits on us is not silent: no keepalive meanwhile.
                let ka = keepalive
                    .filter(|_| c.parked.is_none())
                    .map(|k| c.last_rx + k);
                let recheck = c.parked.as_ref().map(|p| p.checked + l.publish_wait);
                let partial = c.partial_since.map(|p| p + l.packet_timeout);
                let write = (c.out_len() > 0).then_some(c.wrote_at + l.write_timeout);
                [ka, recheck, partial, write].into_iter().flatten().min()
            }
            Phase::Closing => None,
        });
        let sessions = self
            .sessions
            .values()
            .filter_map(|s| s.disconnected_at.map(|d| d + l.session_expiry));
        conns.chain(sessions).min()
    }

    /// CONNECT deadlines, keepalives [MQTT-3.1.2-24], large packets and writes that do not
    /// finish, publishers to recheck, and expired persistent sessions.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        let l = self.limits.clone();
        let mut close = Vec::new();
        let mut recheck = Vec::new();
        for (id, c) in &self.conns {
            match c.phase {
                Phase::Handshake if now >= c.accepted + l.connect_timeout => {
                    close.push((*id, "connect"))
                }
                Phase::Connected { keepalive, .. } => {
                    if c.parked.is_none() && keepalive.is_some_and(|k| now >= c.last_rx + k) {
                        close.push((*id, "keepalive"));
                    } else if c.partial_since.is_some_and(|p| now >= p + l.packet_timeout)
                        || (c.out_len() > 0 && now >= c.wrote_at + l.write_timeout)
                    {
                        close.push((*id, "io"));
                    } else if c
                        .parked
                        .as_ref()
                        .is_some_and(|p| now >= p.checked + l.publish_wait)
                    {
                        recheck.push(*id);
                    }
                }
                _ => {}
            }
        }
        for (id, why) in close {
            match why {
                "connect" => self.stats.connect_timeouts += 1,
                "keepalive" => self.stats.keepalive_timeouts += 1,
                _ => self.stats.io_timeouts += 1,
            }
            self.close(id, Close::Abnormal, now);
        }
        for id in recheck {
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
        self.settle(now);
    }

    /// Appends a packet to `id`'s output.
    pub(crate) fn send(&mut self, id: ConnId, p: &Packet) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.start_output(self.now);
            let before = c.out.len();
            p.encode(&mut c.out);
            self.out_total += c.out.len() - before;
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
        c.parked = None;
        c.stopped = false;
        c.partial_since = None;
        let reserved = std::mem::take(&mut c.reserved);
        self.large_bytes -= reserved;
        self.wakes.push(id);
        if let Some(w) = &will {
            self.will_bytes -= w.topic.len() + w.payload.len();
        }
        if let Phase::Connected { session, .. } = phase {
            self.detach(session, now);
            if how == Close::Abnormal {
                if let Some(w) = will {
                    self.stats.wills_published += 1;
                    self.publish(&w.topic, &w.payload, w.qos, w.retain, now);
                }
            }
        }
        self.room_freed = true;
    }

    fn release_pool(&mut self, c: &Conn) {
        self.large_bytes -= c.reserved;
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
            self.sub_bytes -= sess.sub_bytes;
            if self.by_client.get(&sess.client_id) == Some(&s) {
                self.by_client.remove(&sess.client_id);
            }
            self.room_freed = true;
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
