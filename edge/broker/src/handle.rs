//! What the broker does with each packet a client sends.

use std::rc::Rc;
use std::time::{Duration, Instant};

use mqtt::{connack, Connect, Error, Level, Packet, Publish, QoS, SUBACK_FAILURE};

use crate::core::{Broker, Close, ConnId, Phase};
use crate::index::filter_cost;
use crate::session::{Outgoing, SessionId};

impl Broker {
    pub(crate) fn on_decode_error(&mut self, id: ConnId, e: Error, now: Instant) {
        let handshake = self
            .conns
            .get(&id)
            .is_some_and(|c| matches!(c.phase, Phase::Handshake));
        log::debug!("broker: closing connection {}: {e}", id.0);
        if let (Error::UnsupportedProtocol(_), true) = (&e, handshake) {
            // [MQTT-3.1.2-2]: CONNACK 0x01, then disconnect. (An MQTT 5 client reads this as
            // "unsupported protocol version" and may retry with 3.1.1.)
            self.refuse(id, connack::UNACCEPTABLE_PROTOCOL, now);
            return;
        }
        self.stats.violations += 1;
        self.close(id, Close::Abnormal, now);
    }

    pub(crate) fn handle(&mut self, id: ConnId, packet: Packet, now: Instant) {
        let phase = match self.conns.get(&id).map(|c| &c.phase) {
            Some(Phase::Handshake) => None,
            Some(Phase::Connected { session, .. }) => Some(*session),
            _ => return,
        };
        let Some(session) = phase else {
            match packet {
                Packet::Connect(c) => self.on_connect(id, *c, now),
                _ => {
                    // [MQTT-3.1.0-1]: the first packet must be CONNECT.
                    self.stats.violations += 1;
                    self.close(id, Close::Abnormal, now);
                }
            }
            return;
        };
        match packet {
            Packet::Publish(p) => self.on_publish(id, session, p, now),
            Packet::PubAck(pid) => self.complete(
                session,
                pid,
                |o| matches!(o, Outgoing::Sent(q) if q.qos == QoS::AtLeastOnce),
                now,
            ),
            Packet::PubRec(pid) => self.on_pubrec(id, session, pid, now),
            Packet::PubComp(pid) => {
                self.complete(session, pid, |o| matches!(o, Outgoing::Released), now)
            }
            Packet::PubRel(pid) => {
                // [MQTT-4.3.3-2]: release the id; PUBCOMP whether or not it was known.
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.incoming_qos2.remove(&pid);
                }
                self.send(id, &Packet::PubComp(pid));
            }
            Packet::Subscribe { pid, filters } => self.on_subscribe(id, session, pid, filters, now),
            Packet::Unsubscribe { pid, filters } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    for f in &filters {
                        // Compared character by character [MQTT-3.10.4-1].
                        if s.subs.remove(f).is_some() {
                            self.index.remove(f, session);
                            s.sub_bytes -= filter_cost(f);
                            self.sub_bytes -= filter_cost(f);
                        }
                    }
                }
                // Always answered, matched or not [MQTT-3.10.4-4], [MQTT-3.10.4-5].
                self.send(id, &Packet::UnsubAck(pid));
            }
            Packet::PingReq => self.send(id, &Packet::PingResp), // [MQTT-3.12.4-1]
            Packet::Disconnect => self.close(id, Close::Normal, now),
            Packet::Connect(_) => {
                // [MQTT-3.1.0-2]: a second CONNECT is a protocol violation.
                self.stats.violations += 1;
                self.close(id, Close::Abnormal, now);
            }
            Packet::ConnAck { .. }
            | Packet::SubAck { .. }
            | Packet::UnsubAck(_)
            | Packet::PingResp => {
                // Server-to-client packets from a client [MQTT-4.8.0-1].
                self.stats.violations += 1;
                self.close(id, Close::Abnormal, now);
            }
        }
    }

    fn refuse(&mut self, id: ConnId, code: u8, now: Instant) {
        self.stats.refused += 1;
        // [MQTT-3.2.2-4]: session present is 0 with a refusal; [MQTT-3.2.2-5]: then close.
        self.send(
            id,
            &Packet::ConnAck {
                session_present: false,
                code,
            },
        );
        self.close(id, Close::Abnormal, now);
    }

    fn on_connect(&mut self, id: ConnId, c: Connect, now: Instant) {
        let l = &self.limits;
        if c.client_id.is_empty() && !c.clean_session {
            // [MQTT-3.1.3-8]: a zero-byte id needs CleanSession=1.
            return self.refuse(id, connack::IDENTIFIER_REJECTED, now);
        }
        let id_ok = match c.level {
            // MQTT 3.1 allowed 1 to 23 characters only.
            Level::V31 => (1..=23).contains(&c.client_id.chars().count()),
            Level::V311 => c.client_id.len() <= l.max_client_id,
        };
        if !id_ok {
            return self.refuse(id, connack::IDENTIFIER_REJECTED, now);
        }
        let reserved = match &self.reserved {
            Some((rid, secret)) if *rid == c.client_id => {
                if c.password.as_deref() != Some(&secret[..]) {
                    // Only edgecore's own client may use its id.
                    return self.refuse(id, connack::NOT_AUTHORIZED, now);
                }
                true
            }
            _ => false,
        };
        if let (false, Some((user, pass))) = (reserved, &self.credentials) {
            match (&c.username, &c.password) {
                (None, _) => return self.refuse(id, connack::NOT_AUTHORIZED, now),
                (Some(u), p) if u != user || p.as_deref() != Some(&pass[..]) => {
                    return self.refuse(id, connack::BAD_CREDENTIALS, now)
                }
                _ => {}
            }
        }
        let will_cost = c
            .will
            .as_ref()
            .map_or(0, |w| w.topic.len() + w.payload.len());
        if self.will_bytes + will_cost > self.limits.will_bytes {
            return self.refuse(id, connack::SERVER_UNAVAILABLE, now);
        }
        let client_id: Rc<str> = if c.client_id.is_empty() {
            // [MQTT-3.1.3-6]: a unique id, and one no other client can guess and take over.
            loop {
                let cand = format!("auto-{:016x}", fastrand::u64(..));
                if !self.by_client.contains_key(cand.as_str()) {
                    break cand.into();
                }
            }
        } else {
            c.client_id.as_str().into()
        };
        let existing = self.by_client.get(&client_id).copied();
        let takeover = existing
            .and_then(|s| self.sessions.get(&s))
            .and_then(|s| s.conn);
        if takeover.is_none() && !reserved && self.clients() >= self.limits.max_clients {
            return self.refuse(id, connack::SERVER_UNAVAILABLE, now);
        }
        if let Some(old) = takeover {
            // [MQTT-3.1.4-2]: the existing client is disconnected (its will published: it did
            // not send DISCONNECT).
            self.stats.takeovers += 1;
            self.close(old, Close::Abnormal, now);
        }
        // The old connection's close may have ended a clean session; look again.
        let existing = self.by_client.get(&client_id).copied();
        let (session, present) = match existing {
            Some(s) if !c.clean_session => (s, true), // [MQTT-3.2.2-2]
            Some(s) => {
                // [MQTT-3.1.2-6]: CleanSession=1 discards any previous session.
                self.drop_session(s);
                (self.new_session(client_id, true, now), false)
            }
            None => (self.new_session(client_id, c.clean_session, now), false), // [MQTT-3.2.2-3]
        };
        let keepalive =
            (c.keepalive > 0).then(|| Duration::from_millis(u64::from(c.keepalive) * 1500));
        self.will_bytes += will_cost;
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.phase = Phase::Connected { session, keepalive };
            conn.will = c.will;
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.conn = Some(id);
            s.clean = c.clean_session;
            s.reserved = reserved;
            s.disconnected_at = None;
            s.progress_at = now;
        }
        self.send(
            id,
            &Packet::ConnAck {
                session_present: present,
                code: connack::ACCEPTED,
            },
        );
        if present {
            self.resend_inflight(session, id);
        }
        self.pump(session, now);
    }

    /// [MQTT-4.4.0-1]: on reconnect, unacknowledged PUBLISH packets (with DUP=1,
    /// [MQTT-3.3.1-1]) and PUBREL packets, in their original order, with their original ids.
    /// Not held to the output budget: it is bounded by the session's byte budget.
    fn resend_inflight(&mut self, session: SessionId, id: ConnId) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.start_output(self.now);
        let before = c.out.len();
        for (pid, o) in &s.inflight {
            match o {
                Outgoing::Sent(q) => mqtt::encode_publish(
                    &mut c.out,
                    &q.msg.topic,
                    &q.msg.payload,
                    q.qos,
                    *pid,
                    true,
                    q.retain,
                ),
                Outgoing::Released => Packet::PubRel(*pid).encode(&mut c.out),
            }
        }
        self.out_total += c.out.len() - before;
        self.wake(id);
    }

    fn on_publish(&mut self, id: ConnId, session: SessionId, p: Publish, now: Instant) {
        match p.qos {
            QoS::AtMostOnce => self.publish(&p.topic, &p.payload, p.qos, p.retain, now),
            QoS::AtLeastOnce => {
                self.publish(&p.topic, &p.payload, p.qos, p.retain, now);
                self.send(id, &Packet::PubAck(p.pid));
            }
            QoS::ExactlyOnce => {
                let Some(s) = self.sessions.get_mut(&session) else {
                    return;
                };
                // [MQTT-4.3.3-2]: route on the first PUBLISH with an id, not again until its
                // PUBREL; PUBREC every time.
                if !s.incoming_qos2.contains(&p.pid) {
                    if s.incoming_qos2.len() >= self.limits.max_incoming_qos2 {
                        log::debug!(
                            "broker: {} has {} QoS 2 messages unreleased; closing",
                            s.client_id,
                            s.incoming_qos2.len()
                        );
                        self.stats.violations += 1;
                        return self.close(id, Close::Abnormal, now);
                    }
                    s.incoming_qos2.insert(p.pid);
                    self.publish(&p.topic, &p.payload, p.qos, p.retain, now);
                }
                self.send(id, &Packet::PubRec(p.pid));
            }
        }
    }

    fn on_pubrec(&mut self, id: ConnId, session: SessionId, pid: u16, now: Instant) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let pos = s.inflight.iter().position(|(p, o)| {
            *p == pid && matches!(o, Outgoing::Sent(q) if q.qos == QoS::ExactlyOnce)
        });
        if let Some(i) = pos {
            // The message is delivered; only its id is held until PUBCOMP.
            if let (_, Outgoing::Sent(q)) = &s.inflight[i] {
                let w = q.msg.weight();
                s.bytes -= w;
                self.queued_bytes -= w;
            }
            s.inflight[i].1 = Outgoing::Released;
            s.progress_at = now;
            self.room_freed = true;
            self.send(id, &Packet::PubRel(pid));
        } else if s
            .inflight
            .iter()
            .any(|(p, o)| *p == pid && matches!(o, Outgoing::Released))
        {
            // A repeated PUBREC (our PUBREL crossed it): answer again.
            self.send(id, &Packet::PubRel(pid));
        }
    }

    /// PUBACK or PUBCOMP: the exchange for `pid` is over; its slot takes the next message.
    fn complete(
        &mut self,
        session: SessionId,
        pid: u16,
        pred: impl Fn(&Outgoing) -> bool,
        now: Instant,
    ) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if let Some(o) = s.take_inflight(pid, pred) {
            if let Outgoing::Sent(q) = o {
                let w = q.msg.weight();
                s.bytes -= w;
                self.queued_bytes -= w;
            }
            s.progress_at = now;
            self.room_freed = true;
            self.pump(session, now);
        }
    }

    fn on_subscribe(
        &mut self,
        id: ConnId,
        session: SessionId,
        pid: u16,
        filters: Vec<(String, QoS)>,
        now: Instant,
    ) {
        let l = self.limits.clone();
        let mut codes = Vec::with_capacity(filters.len());
        // Filters granted, each once with its last QoS: a SUBSCRIBE repeating one filter
        // thousands of times is handled in order ([MQTT-3.8.4-4]: as if one SUBSCRIBE per
        // filter) but sends the retained messages once, so it cannot multiply that work.
        let mut granted: Vec<(String, QoS)> = Vec::new();
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        for (f, qos) in filters {
            let denied = !s.reserved
                && self
                    .deny_subscribe
                    .iter()
                    .any(|d| mqtt::topic::matches(d, &f));
            let held = s.subs.contains_key(&f);
            let cost = if held { 0 } else { filter_cost(&f) };
            let over_budget = s.sub_bytes + cost > l.subscription_bytes_per_client
                || self.sub_bytes + cost > l.subscription_bytes;
            let refuse = denied
                || f.len() > l.max_filter_bytes
                || mqtt::topic::levels(&f) > l.max_filter_levels
                || (!held && s.subs.len() >= l.max_filters_per_client)
                || over_budget;
            if refuse {
                if over_budget {
                    self.stats.subscriptions_refused += 1;
                }
                codes.push(SUBACK_FAILURE);
                continue;
            }
            s.sub_bytes += cost;
            self.sub_bytes += cost;
            // [MQTT-3.8.4-3]: the same filter replaces the subscription (new QoS).
            s.subs.insert(f.clone(), qos);
            self.index.insert(&f, session, qos);
            codes.push(qos as u8); // [MQTT-3.8.4-5]: this server grants what was asked
            match granted.iter_mut().find(|(g, _)| *g == f) {
                Some(g) => g.1 = qos,
                None => granted.push((f, qos)),
            }
        }
        // [MQTT-3.8.4-1]: SUBACK with the same id, before the retained messages.
        self.send(id, &Packet::SubAck { pid, codes });
        // [MQTT-3.3.1-6], [MQTT-3.8.4-3]: retained messages for each new or replaced filter.
        for (f, qos) in granted {
            let matching: Vec<_> = self
                .retained
                .matching(&f)
                .map(|(m, q)| (m.clone(), (*q).min(qos)))
                .collect();
            for (m, q) in matching {
                self.deliver(session, m, q, true, now);
            }
        }
    }
}
