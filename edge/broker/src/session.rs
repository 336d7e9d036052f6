//! A client's session (§4.1): its subscriptions, the QoS 1/2 messages in flight to it, the
//! messages waiting for a free in-flight slot (or for it to come back, when the session is
//! persistent), and the QoS 2 packet identifiers it has sent but not yet released.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use mqtt::QoS;

use crate::core::ConnId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// Bytes a queued message costs beyond its topic and payload (the entry, the `Rc` headers):
/// so a flood of empty messages is bounded too.
pub const MSG_OVERHEAD: usize = 64;

/// A message as the broker holds it: one copy shared by every queue it waits in.
#[derive(Clone, Debug)]
pub struct Msg {
    pub topic: Rc<str>,
    pub payload: Rc<[u8]>,
}

impl Msg {
    pub fn new(topic: &str, payload: &[u8]) -> Msg {
        Msg {
            topic: topic.into(),
            payload: payload.into(),
        }
    }

    /// What holding it costs, for byte budgets.
    pub fn weight(&self) -> usize {
        self.topic.len() + self.payload.len() + MSG_OVERHEAD
    }
}

/// A message waiting to be sent, at the QoS it will be sent with.
#[derive(Clone, Debug)]
pub struct Queued {
    pub msg: Msg,
    pub qos: QoS,
    /// Sent because it is retained and the subscription is new [MQTT-3.3.1-6], not because it
    /// was just published.
    pub retain: bool,
}

/// An outgoing QoS 1 or 2 message not yet completed.
#[derive(Clone, Debug)]
pub enum Outgoing {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Sent(Queued),
    /// PUBREL sent; waiting for PUBCOMP.
    Released,
}

#[derive(Debug)]
pub struct Session {
    pub client_id: Rc<str>,
    /// CleanSession=1: the session ends with the connection [MQTT-3.1.2-6].
    pub clean: bool,
    pub conn: Option<ConnId>,
    /// Filter → granted QoS.
    pub subs: BTreeMap<String, QoS>,
    /// What `subs` costs in the subscription byte budget.
    pub sub_bytes: usize,
    /// The reserved client's session (edgecore's own EventBus).
    pub reserved: bool,
    /// In the order sent, which is the order they are re-sent in [MQTT-4.6.0-1].
    pub inflight: VecDeque<(u16, Outgoing)>,
    pub queue: VecDeque<Queued>,
    /// Weight of everything in `inflight` and `queue`.
    pub bytes: usize,
    /// QoS 2 messages received (and routed) whose PUBREL has not arrived: a re-sent PUBLISH
    /// with one of these ids is not routed again [MQTT-4.3.3-2].
    pub incoming_qos2: BTreeSet<u16>,
    pub disconnected_at: Option<Instant>,
    /// When it last acknowledged something or was (re)connected: a session whose queue is full
    /// and that has not moved for a while is stalled, and publishers stop waiting for it.
    pub progress_at: Instant,
    next_pid: u16,
}

impl Session {
    pub fn new(client_id: Rc<str>, clean: bool, now: Instant) -> Session {
        Session {
            client_id,
            clean,
            conn: None,
            subs: BTreeMap::new(),
            sub_bytes: 0,
            reserved: false,
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            bytes: 0,
            incoming_qos2: BTreeSet::new(),
            disconnected_at: None,
            progress_at: now,
            next_pid: 0,
        }
    }

    /// A packet identifier not used by any message in flight [MQTT-2.3.1-2]. The in-flight
    /// window is far below 65,535, so one is always free.
    pub fn next_pid(&mut self) -> u16 {
        loop {
            self.next_pid = self.next_pid.wrapping_add(1);
            if self.next_pid != 0 && !self.inflight.iter().any(|(p, _)| *p == self.next_pid) {
                return self.next_pid;
            }
        }
    }

    /// Removes the in-flight entry `pid` if `pred` accepts it; returns what it held.
    pub fn take_inflight(
        &mut self,
        pid: u16,
        pred: impl Fn(&Outgoing) -> bool,
    ) -> Option<Outgoing> {
        let i = self
            .inflight
            .iter()
            .position(|(p, o)| *p == pid && pred(o))?;
        self.inflight.remove(i).map(|(_, o)| o)
    }
}
