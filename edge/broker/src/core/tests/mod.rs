//! The broker core against the MQTT 3.1.1 normative statements, one test per statement (or
//! per group of statements about one behaviour), on virtual time. Each test name carries the
//! statement's id.

use std::time::{Duration, Instant};

use mqtt::{connack, Connect, Level, Packet, Publish, QoS, Will};

use super::*;
use crate::route::client_publish;

mod flow;

pub(super) struct H {
    pub(super) b: Broker,
    pub(super) now: Instant,
    /// Packets read past what a helper asserted on, returned by the next `recv`.
    stash: std::collections::HashMap<ConnId, Vec<Packet>>,
}

pub(super) fn connect_packet(id: &str, clean: bool) -> Connect {
    Connect {
        level: Level::V311,
        clean_session: clean,
        keepalive: 60,
        client_id: id.into(),
        will: None,
        username: None,
        password: None,
    }
}

impl H {
    pub(super) fn new() -> H {
        H::with(Limits::default())
    }

    pub(super) fn with(l: Limits) -> H {
        H {
            b: Broker::new(l, None),
            now: Instant::now(),
            stash: Default::default(),
        }
    }

    pub(super) fn sock(&mut self) -> ConnId {
        self.b.accept(self.now)
    }

    pub(super) fn bytes(&mut self, id: ConnId, b: &[u8]) {
        self.b.on_bytes(id, b, self.now);
    }

    pub(super) fn send(&mut self, id: ConnId, p: Packet) {
        self.bytes(id, &p.to_bytes());
    }

    /// Everything the broker wrote to `id` since the last call, decoded; the bytes count as
    /// written.
    pub(super) fn recv(&mut self, id: ConnId) -> Vec<Packet> {
        let out = self.b.take_output(id);
        self.b.written(id, self.now);
        let mut v = self.stash.remove(&id).unwrap_or_default();
        let mut rest = &out[..];
        while let Some((p, n)) = mqtt::decode(rest, 1 << 24).unwrap() {
            v.push(p);
            rest = &rest[n..];
        }
        assert!(rest.is_empty());
        v
    }

    pub(super) fn connect_with(&mut self, c: Connect) -> (ConnId, Vec<Packet>) {
        let id = self.sock();
        self.send(id, Packet::Connect(Box::new(c)));
        let r = self.recv(id);
        (id, r)
    }

    /// A connected client; asserts CONNACK 0 with `present`.
    pub(super) fn client(&mut self, cid: &str, clean: bool, present: bool) -> ConnId {
        let (id, mut r) = self.connect_with(connect_packet(cid, clean));
        let rest = r.split_off(r.len().min(1));
        self.stash.insert(id, rest);
        assert_eq!(
            r,
            [Packet::ConnAck {
                session_present: present,
                code: 0
            }],
            "{cid}"
        );
        id
    }

    pub(super) fn subscribe(&mut self, id: ConnId, filters: &[(&str, QoS)]) -> Vec<u8> {
        self.send(
            id,
            Packet::Subscribe {
                pid: 1,
                filters: filters.iter().map(|(f, q)| (f.to_string(), *q)).collect(),
            },
        );
        let mut got = self.recv(id);
        let rest = got.split_off(got.len().min(1));
        self.stash.insert(id, rest);
        match got.first() {
            Some(Packet::SubAck { pid: 1, codes }) => codes.clone(),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub(super) fn publish(&mut self, id: ConnId, topic: &str, payload: &[u8], qos: QoS, pid: u16) {
        self.bytes(id, &client_publish(topic, payload, qos, pid, false));
    }

    pub(super) fn closing(&self, id: ConnId) -> bool {
        self.b.is_closing(id)
    }

    /// Whether the runner would read from `id` now.
    pub(super) fn wants(&mut self, id: ConnId) -> bool {
        self.b.read_budget(id) > 0
    }

    pub(super) fn advance(&mut self, d: Duration) {
        self.now += d;
        self.b.handle_timeout(self.now);
    }
}

pub(super) fn publishes(ps: &[Packet]) -> Vec<(String, Vec<u8>, QoS, bool, bool)> {
    ps.iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => {
                Some((p.topic.clone(), p.payload.clone(), p.qos, p.retain, p.dup))
            }
            _ => None,
        })
        .collect()
}

pub(super) fn pub_(topic: &str, payload: &[u8], qos: QoS) -> (String, Vec<u8>, QoS, bool, bool) {
    (topic.into(), payload.to_vec(), qos, false, false)
}

// ---- CONNECT (§3.1) ----

#[test]
fn first_packet_must_be_connect_mqtt_3_1_0_1() {
    let mut h = H::new();
    let id = h.sock();
    h.send(id, Packet::PingReq);
    assert!(h.closing(id));
    assert!(h.recv(id).is_empty(), "no PINGRESP, no CONNACK");
    assert_eq!(h.b.stats().violations, 1);
}

#[test]
fn second_connect_closes_mqtt_3_1_0_2() {
    let mut h = H::new();
    let id = h.client("a", true, false);
    h.send(id, Packet::Connect(Box::new(connect_packet("a", true))));
    assert!(h.closing(id));
    assert!(h.recv(id).is_empty());
}

#[test]
fn wrong_protocol_name_closes_without_connack_mqtt_3_1_2_1() {
    let mut h = H::new();
    let id = h.sock();
    let mut b = Packet::Connect(Box::new(connect_packet("a", true))).to_bytes();
    b[4..8].copy_from_slice(b"MQTX");
    h.bytes(id, &b);
    assert!(h.closing(id));
    assert!(h.recv(id).is_empty());
}

#[test]
fn mqtt5_client_gets_connack_1_and_close_mqtt_3_1_2_2() {
    let mut h = H::new();
    let id = h.sock();
    let mut b = Packet::Connect(Box::new(connect_packet("a", true))).to_bytes();
    b[8] = 5; // protocol level 5 (the rest of an MQTT 5 CONNECT is never parsed)
    h.bytes(id, &b);
    assert_eq!(
        h.recv(id),
        [Packet::ConnAck {
            session_present: false,
            code: connack::UNACCEPTABLE_PROTOCOL
        }]
    );
    assert!(h.closing(id));
}

#[test]
fn nothing_after_a_refused_connect_is_processed_mqtt_3_1_4_5() {
    let mut h = H::new();
    let id = h.sock();
    let mut b = Packet::Connect(Box::new(connect_packet("", false))).to_bytes();
    b.extend(client_publish("t", b"x", QoS::AtLeastOnce, 1, true));
    h.bytes(id, &b);
    assert_eq!(
        h.recv(id),
        [Packet::ConnAck {
            session_present: false,
            code: connack::IDENTIFIER_REJECTED
        }]
    );
    assert_eq!(h.b.stats().published, 0);
    assert_eq!(h.b.retained_count(), 0);
}

#[test]
fn empty_client_id_needs_clean_session_mqtt_3_1_3_8() {
    let mut h = H::new();
    let (id, r) = h.connect_with(connect_packet("", false));
    assert_eq!(
        r,
        [Packet::ConnAck {
            session_present: false,
            code: connack::IDENTIFIER_REJECTED
        }]
    );
    assert!(h.closing(id), "[MQTT-3.2.2-5]: a refusal closes");
    // [MQTT-3.1.3-6]: with CleanSession=1 the server assigns a unique id.
    let a = h.client("", true, false);
    let b = h.client("", true, false);
    assert!(
        !h.closing(a) && !h.closing(b),
        "two anonymous clients, two ids"
    );
    assert_eq!(h.b.sessions(), 2);
}

#[test]
fn over_long_client_id_is_rejected_mqtt_3_1_3_5() {
    let mut h = H::new();
    let long = "x".repeat(h.b.limits().max_client_id + 1);
    let (_, r) = h.connect_with(connect_packet(&long, true));
    assert_eq!(
        r,
        [Packet::ConnAck {
            session_present: false,
            code: connack::IDENTIFIER_REJECTED
        }]
    );
    // 1–23 alphanumerics are always allowed, and longer ones up to the bound.
    h.client("a1B2c3D4e5F6g7H8i9J0k1L", true, false);
    h.client(&"y".repeat(h.b.limits().max_client_id), true, false);
}

#[test]
fn mqtt31_ids_are_1_to_23_characters() {
    let mut h = H::new();
    let mut c = connect_packet(&"z".repeat(24), true);
    c.level = Level::V31;
    let (_, r) = h.connect_with(c.clone());
    assert!(matches!(
        r[..],
        [Packet::ConnAck {
            code: connack::IDENTIFIER_REJECTED,
            ..
        }]
    ));
    c.client_id = "z".repeat(23);
    let (_, r) = h.connect_with(c);
    assert!(matches!(r[..], [Packet::ConnAck { code: 0, .. }]));
}

#[test]
fn credentials_are_checked() {
    let mut h = H::new();
    h.b = Broker::new(Limits::default(), Some(("u".into(), b"p".to_vec())));
    let mut c = connect_packet("a", true);
    let (_, r) = h.connect_with(c.clone());
    assert!(matches!(
        r[..],
        [Packet::ConnAck {
            code: connack::NOT_AUTHORIZED,
            ..
        }]
    ));
    c.username = Some("u".into());
    c.password = Some(b"wrong".to_vec());
    let (_, r) = h.connect_with(c.clone());
    assert!(matches!(
        r[..],
        [Packet::ConnAck {
            code: connack::BAD_CREDENTIALS,
            ..
        }]
    ));
    c.password = Some(b"p".to_vec());
    let (_, r) = h.connect_with(c);
    assert!(matches!(r[..], [Packet::ConnAck { code: 0, .. }]));
}

#[test]
fn same_client_id_takes_over_mqtt_3_1_4_2() {
    let mut h = H::new();
    let watcher = h.client("w", true, false);
    h.subscribe(watcher, &[("will/a", QoS::AtMostOnce)]);
    let mut c = connect_packet("a", true);
    c.will = Some(Will {
        topic: "will/a".into(),
        payload: b"gone".to_vec(),
        qos: QoS::AtMostOnce,
        retain: false,
    });
    let (old, _) = h.connect_with(c);
    let new = h.client("a", true, false);
    assert!(h.closing(old), "the existing client is disconnected");
    assert!(!h.closing(new));
    assert_eq!(h.b.stats().takeovers, 1);
    // It did not send DISCONNECT, so its will is published.
    assert_eq!(
        publishes(&h.recv(watcher)),
        [pub_("will/a", b"gone", QoS::AtMostOnce)]
    );
}

#[test]
fn connack_session_present_mqtt_3_2_2_1_to_3() {
    let mut h = H::new();
    let a = h.client("p", false, false); // [MQTT-3.2.2-3]: no session yet
    h.subscribe(a, &[("t", QoS::AtLeastOnce)]);
    h.send(a, Packet::Disconnect);
    h.client("p", false, true); // [MQTT-3.2.2-2]: resumed
    let c = h.client("p", true, false); // [MQTT-3.2.2-1]: clean discards
    h.send(c, Packet::Disconnect);
    h.client("p", false, false);
}

#[test]
fn clean_session_discards_state_mqtt_3_1_2_6() {
    let mut h = H::new();
    let a = h.client("s", false, false);
    h.subscribe(a, &[("t", QoS::AtLeastOnce)]);
    h.send(a, Packet::Disconnect);
    let c = h.client("s", true, false);
    let p = h.client("pub", true, false);
    h.publish(p, "t", b"x", QoS::AtLeastOnce, 1);
    assert!(
        publishes(&h.recv(c)).is_empty(),
        "the old subscription is gone"
    );
    h.send(c, Packet::Disconnect);
    assert_eq!(
        h.b.sessions(),
        1,
        "the clean session ended with its connection"
    );
}

#[test]
fn persistent_session_keeps_subscriptions_and_queues_mqtt_3_1_2_4() {
    let mut h = H::new();
    let a = h.client("s", false, false);
    h.subscribe(a, &[("t/+", QoS::ExactlyOnce)]);
    h.send(a, Packet::Disconnect);
    let p = h.client("pub", true, false);
    h.publish(p, "t/0", b"q0", QoS::AtMostOnce, 0);
    h.publish(p, "t/1", b"q1", QoS::AtLeastOnce, 1);
    h.publish(p, "t/2", b"q2", QoS::ExactlyOnce, 2);
    let a = h.client("s", false, true);
    // QoS 1 and 2 were kept for the offline session; QoS 0 was not (as mosquitto).
    assert_eq!(
        publishes(&h.recv(a)),
        [
            pub_("t/1", b"q1", QoS::AtLeastOnce),
            pub_("t/2", b"q2", QoS::ExactlyOnce)
        ]
    );
}

#[test]
fn persistent_sessions_expire_and_are_bounded() {
    let mut h = H::with(Limits {
        max_sessions: 3,
        ..Limits::default()
    });
    for i in 0..3 {
        let c = h.client(&format!("s{i}"), false, false);
        h.send(c, Packet::Disconnect);
        h.now += Duration::from_secs(1);
    }
    h.client("s3", false, false);
    assert_eq!(h.b.sessions(), 3);
    assert_eq!(h.b.stats().sessions_evicted, 1);
    h.client("s0", false, false); // s0 was the oldest: evicted, so no session present
    h.advance(h.b.limits().session_expiry);
    assert!(h.b.stats().sessions_expired >= 1);
}

#[test]
fn connect_deadline_and_handshake_slots() {
    let mut h = H::with(Limits {
        max_handshaking: 2,
        ..Limits::default()
    });
    let a = h.sock();
    let b = h.sock();
    let c = h.sock();
    assert!(h.closing(a), "the oldest handshaking socket made room");
    assert!(!h.closing(b) && !h.closing(c));
    assert_eq!(h.b.stats().evicted_handshakes, 1);
    // A legitimate client still gets in while slots are being held.
    h.send(c, Packet::Connect(Box::new(connect_packet("ok", true))));
    assert!(matches!(h.recv(c)[..], [Packet::ConnAck { code: 0, .. }]));
    h.advance(h.b.limits().connect_timeout);
    assert!(h.closing(b), "no CONNECT in time");
    assert!(!h.closing(c));
    assert_eq!(h.b.stats().connect_timeouts, 1);
}

#[test]
fn client_limit_answers_server_unavailable() {
    let mut h = H::with(Limits {
        max_clients: 1,
        ..Limits::default()
    });
    h.client("a", true, false);
    let (id, r) = h.connect_with(connect_packet("b", true));
    assert_eq!(
        r,
        [Packet::ConnAck {
            session_present: false,
            code: connack::SERVER_UNAVAILABLE
        }]
    );
    assert!(h.closing(id));
    // A takeover does not need a free slot.
    h.client("a", true, false);
}

// ---- keepalive (§3.1.2.10) ----

#[test]
fn keepalive_is_one_and_a_half_times_from_received_packets_mqtt_3_1_2_24() {
    let mut h = H::new();
    let mut c = connect_packet("k", true);
    c.keepalive = 10;
    let (id, _) = h.connect_with(c);
    h.advance(Duration::from_millis(14_900));
    assert!(!h.closing(id));
    h.send(id, Packet::PingReq);
    assert_eq!(h.recv(id), [Packet::PingResp]); // [MQTT-3.12.4-1]
    h.advance(Duration::from_millis(14_900));
    assert!(!h.closing(id), "the ping moved the deadline");
    // Outgoing traffic does not count: a subscriber receiving messages still times out.
    h.subscribe(id, &[("t", QoS::AtMostOnce)]);
    let p = h.client("p", true, false);
    for _ in 0..15 {
        h.now += Duration::from_secs(1);
        h.publish(p, "t", b"x", QoS::AtMostOnce, 0);
        assert_eq!(h.recv(id).len(), 1);
        h.b.handle_timeout(h.now);
    }
    assert!(h.closing(id));
    assert_eq!(h.b.stats().keepalive_timeouts, 1);
    // Keepalive 0 turns the mechanism off.
    let mut c = connect_packet("z", true);
    c.keepalive = 0;
    let (z, _) = h.connect_with(c);
    h.advance(Duration::from_secs(100_000));
    assert!(!h.closing(z));
}

#[test]
fn a_partial_packet_does_not_keep_a_client_alive() {
    let mut h = H::new();
    let mut c = connect_packet("k", true);
    c.keepalive = 2;
    let (id, _) = h.connect_with(c);
    let big = client_publish("t", &[0; 100], QoS::AtMostOnce, 0, false);
    for b in &big[..50] {
        h.now += Duration::from_millis(100);
        h.bytes(id, &[*b]);
        h.b.handle_timeout(h.now);
    }
    assert!(h.closing(id), "one byte at a time is not a packet");
}

// ---- will (§3.1.2.5) ----

fn with_will(id: &str, qos: QoS, retain: bool) -> Connect {
    let mut c = connect_packet(id, true);
    c.will = Some(Will {
        topic: "will/t".into(),
        payload: b"bye".to_vec(),
        qos,
        retain,
    });
    c
}

#[test]
fn will_is_published_on_abnormal_close_mqtt_3_1_2_8() {
    let mut h = H::new();
    let w = h.client("w", true, false);
    h.subscribe(w, &[("will/#", QoS::ExactlyOnce)]);
    let (a, _) = h.connect_with(with_will("a", QoS::AtLeastOnce, false));
    h.b.on_closed(a, h.now); // the socket died
    assert_eq!(
        publishes(&h.recv(w)),
        [pub_("will/t", b"bye", QoS::AtLeastOnce)]
    );
    // A protocol violation publishes it too.
    let (b, _) = h.connect_with(with_will("b", QoS::AtMostOnce, false));
    h.bytes(b, &[0xF0, 0]);
    assert_eq!(publishes(&h.recv(w)).len(), 1);
    // And a keepalive timeout.
    let mut c = with_will("c", QoS::AtMostOnce, false);
    c.keepalive = 1;
    h.connect_with(c);
    h.advance(Duration::from_secs(2));
    assert_eq!(publishes(&h.recv(w)).len(), 1);
    assert_eq!(h.b.stats().wills_published, 3);
}

#[test]
fn will_is_discarded_on_disconnect_mqtt_3_14_4_3() {
    let mut h = H::new();
    let w = h.client("w", true, false);
    h.subscribe(w, &[("will/#", QoS::AtMostOnce)]);
    let (a, _) = h.connect_with(with_will("a", QoS::AtMostOnce, false));
    h.send(a, Packet::Disconnect);
    h.b.on_closed(a, h.now);
    assert!(publishes(&h.recv(w)).is_empty());
    assert_eq!(h.b.stats().wills_published, 0);
}

#[test]
fn will_retain_keeps_it_retained_mqtt_3_1_2_17() {
    let mut h = H::new();
    let (a, _) = h.connect_with(with_will("a", QoS::AtLeastOnce, true));
    h.b.on_closed(a, h.now);
    let late = h.client("late", true, false);
    h.subscribe(late, &[("will/t", QoS::AtLeastOnce)]);
    assert_eq!(
        publishes(&h.recv(late)),
        [(
            "will/t".into(),
            b"bye".to_vec(),
            QoS::AtLeastOnce,
            true,
            false
        )]
    );
}

// ---- PUBLISH (§3.3) ----

#[test]
fn qos_is_the_lower_of_published_and_granted_mqtt_3_8_4_6() {
    let mut h = H::new();
    let s0 = h.client("s0", true, false);
    let s2 = h.client("s2", true, false);
    h.subscribe(s0, &[("t", QoS::AtMostOnce)]);
    h.subscribe(s2, &[("t", QoS::ExactlyOnce)]);
    let p = h.client("p", true, false);
    h.publish(p, "t", b"1", QoS::AtLeastOnce, 1);
    assert_eq!(h.recv(p), [Packet::PubAck(1)]);
    assert_eq!(publishes(&h.recv(s0)), [pub_("t", b"1", QoS::AtMostOnce)]);
    assert_eq!(publishes(&h.recv(s2)), [pub_("t", b"1", QoS::AtLeastOnce)]);
}

#[test]
fn qos1_published_is_delivered_at_qos1_and_acknowledged_mqtt_4_3_2() {
    let mut h = H::new();
    let s = h.client("s", true, false);
    h.subscribe(s, &[("t", QoS::AtLeastOnce)]);
    let p = h.client("p", true, false);
    h.publish(p, "t", b"m", QoS::AtLeastOnce, 9);
    assert_eq!(h.recv(p), [Packet::PubAck(9)]);
    let got = h.recv(s);
    let Packet::Publish(m) = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!((m.qos, m.dup), (QoS::AtLeastOnce, false));
    assert_ne!(m.pid, 0);
    h.send(s, Packet::PubAck(m.pid));
    assert!(h.b.sessions[&h.b.by_client["s"]].inflight.is_empty());
}

#[test]
fn qos2_in_both_directions_mqtt_4_3_3() {
    let mut h = H::new();
    let s = h.client("s", true, false);
    h.subscribe(s, &[("t", QoS::ExactlyOnce)]);
    let p = h.client("p", true, false);
    h.publish(p, "t", b"m", QoS::ExactlyOnce, 5);
    assert_eq!(h.recv(p), [Packet::PubRec(5)]);
    // A re-sent PUBLISH (DUP) before PUBREL is not routed again [MQTT-4.3.3-2].
    let mut dup = client_publish("t", b"m", QoS::ExactlyOnce, 5, false);
    dup[0] |= 0x08;
    h.bytes(p, &dup);
    assert_eq!(h.recv(p), [Packet::PubRec(5)]);
    h.send(p, Packet::PubRel(5));
    assert_eq!(h.recv(p), [Packet::PubComp(5)]);
    // The subscriber gets it exactly once, and the outgoing exchange runs to PUBCOMP.
    let got = h.recv(s);
    assert_eq!(publishes(&got), [pub_("t", b"m", QoS::ExactlyOnce)]);
    let Packet::Publish(m) = &got[0] else {
        unreachable!()
    };
    h.send(s, Packet::PubRec(m.pid));
    assert_eq!(h.recv(s), [Packet::PubRel(m.pid)]);
    h.send(s, Packet::PubComp(m.pid));
    assert!(h.b.sessions[&h.b.by_client["s"]].inflight.is_empty());
    // After PUBREL the id is free again: the same id is a new message.
    h.publish(p, "t", b"again", QoS::ExactlyOnce, 5);
    assert_eq!(publishes(&h.recv(s)).len(), 1);
}

#[test]
fn unreleased_qos2_ids_are_bounded() {
    let mut h = H::with(Limits {
        max_incoming_qos2: 3,
        ..Limits::default()
    });
    let p = h.client("p", true, false);
    for pid in 1..=3 {
        h.publish(p, "t", b"m", QoS::ExactlyOnce, pid);
    }
    assert!(!h.closing(p));
    h.publish(p, "t", b"m", QoS::ExactlyOnce, 4);
    assert!(h.closing(p));
}

#[test]
fn overlapping_subscriptions_deliver_once_at_the_highest_qos_mqtt_3_3_5_1() {
    let mut h = H::new();
    let s = h.client("s", true, false);
    assert_eq!(
        h.subscribe(s, &[("a/#", QoS::ExactlyOnce), ("a/+", QoS::AtLeastOnce)]),
        [2, 1]
    );
    let p = h.client("p", true, false);
    h.publish(p, "a/c", b"x", QoS::ExactlyOnce, 1);
    assert_eq!(publishes(&h.recv(s)), [pub_("a/c", b"x", QoS::ExactlyOnce)]);
}

#[test]
fn dollar_topics_are_not_matched_by_leading_wildcards_mqtt_4_7_2_1() {
    let mut h = H::new();
    let s = h.client("s", true, false);
    h.subscribe(s, &[("#", QoS::AtMostOnce), ("+/+", QoS::AtMostOnce)]);
    let d = h.client("d", true, false);
    h.subscribe(d, &[("$SYS/#", QoS::AtMostOnce)]);
    let p = h.client("p", true, false);
    h.publish(p, "$SYS/x", b"", QoS::AtLeastOnce, 1);
    assert!(publishes(&h.recv(s)).is_empty());
    assert_eq!(publishes(&h.recv(d)).len(), 1);
}

#[test]
fn wildcard_topic_names_close_the_publisher_mqtt_3_3_2_2() {
    let mut h = H::new();
    let p = h.client("p", true, false);
    let mut b = client_publish("a/b", b"", QoS::AtMostOnce, 0, false);
    b[5] = b'+'; // "a/+"
    h.bytes(p, &b);
    assert!(h.closing(p));
    assert_eq!(h.b.stats().published, 0);
}

#[test]
fn retained_messages_mqtt_3_3_1_5_to_12() {
    let mut h = H::new();
    let p = h.client("p", true, false);
    h.bytes(p, &client_publish("r/a", b"1", QoS::AtLeastOnce, 1, true));
    h.bytes(p, &client_publish("r/a", b"2", QoS::AtMostOnce, 0, true)); // replaces [3.3.1-5], [3.3.1-7]
    h.bytes(
        p,
        &client_publish("r/b", b"kept", QoS::ExactlyOnce, 2, true),
    );
    h.bytes(
        p,
        &client_publish("r/b", b"not retained", QoS::AtMostOnce, 0, false),
    ); // [3.3.1-12]
    h.recv(p);
    let s = h.client("s", true, false);
    h.send(
        s,
        Packet::Subscribe {
            pid: 3,
            filters: vec![("r/+".into(), QoS::ExactlyOnce)],
        },
    );
    let got = h.recv(s);
    assert!(
        matches!(got[0], Packet::SubAck { pid: 3, .. }),
        "SUBACK first"
    );
    // [MQTT-3.3.1-6]: sent with RETAIN=1 to the new subscription, at min(QoS).
    assert_eq!(
        publishes(&got),
        [
            ("r/a".into(), b"2".to_vec(), QoS::AtMostOnce, true, false),
            (
                "r/b".into(),
                b"kept".to_vec(),
                QoS::ExactlyOnce,
                true,
                false
            )
        ]
    );
    // [MQTT-3.3.1-9]: a retained publish to an established subscription has RETAIN=0.
    h.bytes(p, &client_publish("r/a", b"3", QoS::AtMostOnce, 0, true));
    assert_eq!(publishes(&h.recv(s)), [pub_("r/a", b"3", QoS::AtMostOnce)]);
    // [MQTT-3.3.1-10], [MQTT-3.3.1-11]: an empty retained payload clears and is not stored.
    h.bytes(p, &client_publish("r/a", b"", QoS::AtMostOnce, 0, true));
    h.bytes(p, &client_publish("r/b", b"", QoS::AtMostOnce, 0, true));
    assert_eq!(h.b.retained_count(), 0);
    // [MQTT-3.8.4-3]: re-subscribing re-sends retained messages.
    h.bytes(p, &client_publish("r/c", b"c", QoS::AtMostOnce, 0, true));
    h.recv(s);
    h.subscribe(s, &[("r/+", QoS::AtMostOnce)]);
    assert_eq!(
        publishes(&h.recv(s)),
        [("r/c".into(), b"c".to_vec(), QoS::AtMostOnce, true, false)]
    );
    assert_eq!(h.b.retained_count(), 1);
}

// ---- SUBSCRIBE / UNSUBSCRIBE (§3.8, §3.10) ----

#[test]
fn suback_per_filter_with_limits_mqtt_3_8_4_5() {
    let mut h = H::with(Limits {
        max_filters_per_client: 2,
        max_filter_bytes: 8,
        max_filter_levels: 3,
        ..Limits::default()
    });
    let s = h.client("s", true, false);
    let codes = h.subscribe(
        s,
        &[
            ("a", QoS::AtMostOnce),
            ("toolongfilter", QoS::AtMostOnce),
            ("a/b/c/d", QoS::AtMostOnce),
            ("b", QoS::ExactlyOnce),
            ("c", QoS::AtLeastOnce),
            ("a", QoS::AtLeastOnce),
        ],
    );
    assert_eq!(
        codes,
        [0, 0x80, 0x80, 2, 0x80, 1],
        "the held filter is replaced, not added"
    );
    assert!(!h.closing(s), "refusing a filter is not a disconnect");
}

#[test]
fn denied_filters_are_refused_mqtt_3_9_3_2() {
    let mut h = H::new();
    h.b.deny_subscribe(vec!["test/nosubscribe".into(), "secret/#".into()]);
    let s = h.client("s", true, false);
    let codes = h.subscribe(
        s,
        &[
            ("test/nosubscribe", QoS::ExactlyOnce),
            ("secret/a", QoS::AtMostOnce),
            ("secret/+", QoS::AtMostOnce),
            ("test/other", QoS::AtLeastOnce),
        ],
    );
    assert_eq!(codes, [0x80, 0x80, 0x80, 1]);
}

#[test]
fn unsubscribe_is_always_acknowledged_mqtt_3_10_4_4_and_5() {
    let mut h = H::new();
    let s = h.client("s", true, false);
    h.subscribe(s, &[("a", QoS::AtMostOnce), ("b", QoS::AtMostOnce)]);
    h.send(
        s,
        Packet::Unsubscribe {
            pid: 7,
            filters: vec!["a".into(), "never".into()],
        },
    );
    assert_eq!(h.recv(s), [Packet::UnsubAck(7)]);
    let p = h.client("p", true, false);
    h.publish(p, "a", b"", QoS::AtMostOnce, 0);
    h.publish(p, "b", b"", QoS::AtMostOnce, 0);
    assert_eq!(publishes(&h.recv(s)), [pub_("b", b"", QoS::AtMostOnce)]);
}

#[test]
fn server_packets_from_a_client_close_mqtt_4_8_0_1() {
    for p in [
        Packet::ConnAck {
            session_present: false,
            code: 0,
        },
        Packet::SubAck {
            pid: 1,
            codes: vec![0],
        },
        Packet::UnsubAck(1),
        Packet::PingResp,
    ] {
        let mut h = H::new();
        let c = h.client("c", true, false);
        h.send(c, p.clone());
        assert!(h.closing(c), "{}", p.name());
    }
}

#[test]
fn malformed_and_oversized_packets_close() {
    let mut h = H::with(Limits {
        max_packet: 100,
        ..Limits::default()
    });
    let c = h.client("c", true, false);
    h.bytes(c, &[0x30, 0xE8, 0x07]); // a 1,000-byte PUBLISH announced
    assert!(h.closing(c), "closed from the length alone");
    let c = h.client("d", true, false);
    h.bytes(c, &[0x82, 0x02, 0x00, 0x01]); // SUBSCRIBE without filters
    assert!(h.closing(c));
    assert_eq!(h.b.stats().violations, 2);
}

// ---- delivery guarantees (§4.3, §4.4) ----

#[test]
fn unacknowledged_messages_are_resent_on_reconnect_mqtt_4_4_0_1() {
    let mut h = H::new();
    let s = h.client("s", false, false);
    h.subscribe(s, &[("t/#", QoS::ExactlyOnce)]);
    let p = h.client("p", true, false);
    h.publish(p, "t/1", b"one", QoS::AtLeastOnce, 1);
    h.publish(p, "t/2", b"two", QoS::ExactlyOnce, 2);
    h.publish(p, "t/3", b"three", QoS::ExactlyOnce, 3);
    let first = h.recv(s);
    let pids: Vec<u16> = first
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p.pid),
            _ => None,
        })
        .collect();
    assert_eq!(pids.len(), 3);
    // t/3 got as far as PUBREC before the connection died.
    h.send(s, Packet::PubRec(pids[2]));
    assert_eq!(h.recv(s), [Packet::PubRel(pids[2])]);
    h.b.on_closed(s, h.now);
    let s = h.client("s", false, true);
    let again = h.recv(s);
    assert_eq!(
        again,
        [
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "t/1".into(),
                pid: pids[0],
                payload: b"one".to_vec()
            }),
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::ExactlyOnce,
                retain: false,
                topic: "t/2".into(),
                pid: pids[1],
                payload: b"two".to_vec()
            }),
            Packet::PubRel(pids[2]),
        ],
        "same ids, DUP=1, original order [MQTT-4.6.0-1]"
    );
}

#[test]
fn inflight_window_holds_the_rest_in_order() {
    let mut h = H::with(Limits {
        max_inflight: 2,
        ..Limits::default()
    });
    let s = h.client("s", true, false);
    h.subscribe(s, &[("t", QoS::AtLeastOnce)]);
    let p = h.client("p", true, false);
    for i in 1..=5u16 {
        h.publish(p, "t", &[i as u8], QoS::AtLeastOnce, i);
    }
    let got = h.recv(s);
    assert_eq!(publishes(&got).len(), 2, "window of two");
    let mut seen = Vec::new();
    let mut batch = got;
    while !batch.is_empty() {
        for p in &batch {
            if let Packet::Publish(m) = p {
                seen.push(m.payload[0]);
                h.send(s, Packet::PubAck(m.pid));
            }
        }
        batch = h.recv(s);
    }
    assert_eq!(
        seen,
        [1, 2, 3, 4, 5],
        "every message, in order [MQTT-4.6.0-6]"
    );
}
