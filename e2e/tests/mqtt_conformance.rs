//! MQTT 3.1.1 conformance, side by side: the same scenarios, written from the spec, against a
//! real mosquitto and against edgecore's embedded broker (a real edgecore process joined to a
//! real cloudcore), plus a table of malformed inputs after which the spec requires the
//! connection to be closed. The embedded broker must pass everything; mosquitto must pass
//! everything but the differences listed (each with the reason), and the run prints both
//! columns. The per-statement unit tests are in `edge/broker/src/core/tests.rs`.

use std::time::{Duration, Instant};

use e2e::mqtt::{Got, Mosquitto, Raw};
use e2e::{Cloud, Edge};
use mqtt::{connack, Connect, Packet, Publish, QoS, Will};

type Outcome = Result<(), String>;

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn connack_code(g: &Got) -> Option<u8> {
    match g {
        Got::Packet(Packet::ConnAck { code, .. }) => Some(*code),
        _ => None,
    }
}

fn publish_pkt(topic: &str, payload: &[u8], qos: QoS, pid: u16, retain: bool) -> Packet {
    let mut p = Publish::new(topic, payload, qos, pid);
    p.retain = retain;
    Packet::Publish(p)
}

/// Publishes at QoS 1 and waits for the PUBACK.
fn publish_acked(c: &mut Raw, topic: &str, payload: &[u8], retain: bool) -> Outcome {
    c.send(&publish_pkt(topic, payload, QoS::AtLeastOnce, 7, retain));
    loop {
        match c.recv(Duration::from_secs(10)) {
            Got::Packet(Packet::PubAck(7)) => return Ok(()),
            Got::Packet(_) => {}
            other => return Err(format!("no PUBACK: {other:?}")),
        }
    }
}

/// The next PUBLISH on `c`, acknowledging nothing.
fn next_publish(c: &mut Raw) -> Result<Publish, String> {
    loop {
        match c.recv(Duration::from_secs(10)) {
            Got::Packet(Packet::Publish(p)) => return Ok(p),
            Got::Packet(_) => {}
            other => return Err(format!("expected a PUBLISH, got {other:?}")),
        }
    }
}

fn ack(c: &mut Raw, p: &Publish) {
    match p.qos {
        QoS::AtMostOnce => {}
        QoS::AtLeastOnce => c.send(&Packet::PubAck(p.pid)),
        QoS::ExactlyOnce => c.send(&Packet::PubRec(p.pid)),
    }
}

fn level(l: u8) -> Vec<u8> {
    let mut b = Connect::new("conf-level", 30, true).to_bytes();
    b[8] = l;
    b
}

// ---- scenarios ----

fn unsupported_protocol_level(port: u16) -> Outcome {
    // Level 6 exists in no MQTT version: CONNACK 0x01, then close [MQTT-3.1.2-2].
    let mut c = Raw::open(port);
    c.write(&level(6));
    let got = c.until_closed(Duration::from_secs(5)).ok_or("left open")?;
    check!(
        got.first()
            == Some(&Packet::ConnAck {
                session_present: false,
                code: connack::UNACCEPTABLE_PROTOCOL
            }),
        "answered {got:?}"
    );
    Ok(())
}

fn mqtt5_client_refused_cleanly(port: u16) -> Outcome {
    // An MQTT 5 CONNECT (level 5, empty properties): a 3.1.1 server answers CONNACK 0x01.
    let mut b = Packet::Connect(Box::new(Connect::new("conf-v5", 30, true))).to_bytes();
    b[8] = 5;
    b.insert(11, 0); // property length 0, after the keepalive
    b[1] += 1;
    let mut c = Raw::open(port);
    c.write(&b);
    let got = c.until_closed(Duration::from_secs(5)).ok_or("left open")?;
    check!(
        got.first()
            == Some(&Packet::ConnAck {
                session_present: false,
                code: connack::UNACCEPTABLE_PROTOCOL
            }),
        "answered {got:?}"
    );
    Ok(())
}

fn empty_client_id(port: u16) -> Outcome {
    // [MQTT-3.1.3-8]: zero bytes with CleanSession=0 is rejected with 0x02 and closed.
    let (mut c, got) = Raw::connect(port, Connect::new("", 30, false));
    check!(
        connack_code(&got) == Some(connack::IDENTIFIER_REJECTED),
        "clean=0: {got:?}"
    );
    check!(
        c.until_closed(Duration::from_secs(5)).is_some(),
        "clean=0 left open"
    );
    // [MQTT-3.1.3-6]: with CleanSession=1 the server assigns an id.
    let (_, got) = Raw::connect(port, Connect::new("", 30, true));
    check!(connack_code(&got) == Some(0), "clean=1: {got:?}");
    Ok(())
}

fn second_connect_closes(port: u16) -> Outcome {
    let mut c = Raw::client(port, "conf-second");
    c.write(&Connect::new("conf-second", 30, true).to_bytes());
    check!(
        c.until_closed(Duration::from_secs(5)).is_some(),
        "left open [MQTT-3.1.0-2]"
    );
    Ok(())
}

fn takeover_publishes_the_old_will(port: u16) -> Outcome {
    let mut w = Raw::client(port, "conf-takeover-watch");
    w.subscribe(&[("conf/takeover/will", QoS::AtLeastOnce)]);
    let mut first = Connect::new("conf-takeover", 30, true);
    first.will = Some(Will {
        topic: "conf/takeover/will".into(),
        payload: b"old".to_vec(),
        qos: QoS::AtLeastOnce,
        retain: false,
    });
    let (mut old, _) = Raw::connect(port, first);
    let _new = Raw::client(port, "conf-takeover");
    check!(
        old.until_closed(Duration::from_secs(5)).is_some(),
        "old connection left open [MQTT-3.1.4-2]"
    );
    let m = next_publish(&mut w)?;
    check!(m.payload == b"old", "will {m:?}");
    Ok(())
}

fn will_on_abnormal_close_not_on_disconnect(port: u16) -> Outcome {
    let mut w = Raw::client(port, "conf-will-watch");
    w.subscribe(&[("conf/will/+", QoS::AtLeastOnce)]);
    let with_will = |id: &str, topic: &str| {
        let mut c = Connect::new(id, 30, true);
        c.will = Some(Will {
            topic: topic.into(),
            payload: b"gone".to_vec(),
            qos: QoS::AtLeastOnce,
            retain: false,
        });
        c
    };
    let (mut polite, _) = Raw::connect(port, with_will("conf-will-a", "conf/will/a"));
    polite.send(&Packet::Disconnect);
    polite.until_closed(Duration::from_secs(5));
    let (rude, _) = Raw::connect(port, with_will("conf-will-b", "conf/will/b"));
    drop(rude); // no DISCONNECT
    let m = next_publish(&mut w)?;
    ack(&mut w, &m);
    check!(
        m.topic == "conf/will/b",
        "got {m:?}: the DISCONNECTed client's will was published [MQTT-3.14.4-3]"
    );
    Ok(())
}

fn keepalive_closes_a_silent_client(port: u16) -> Outcome {
    let mut w = Raw::client(port, "conf-ka-watch");
    w.subscribe(&[("conf/ka", QoS::AtMostOnce)]);
    let mut c = Connect::new("conf-ka", 1, true);
    c.will = Some(Will {
        topic: "conf/ka".into(),
        payload: b"expired".to_vec(),
        qos: QoS::AtMostOnce,
        retain: false,
    });
    let t0 = Instant::now();
    let (mut silent, _) = Raw::connect(port, c);
    check!(
        silent.until_closed(Duration::from_secs(10)).is_some(),
        "never closed [MQTT-3.1.2-24]"
    );
    let after = t0.elapsed();
    check!(
        after >= Duration::from_millis(1400),
        "closed after {after:?}, before 1.5 × keepalive"
    );
    let m = next_publish(&mut w)?;
    check!(m.payload == b"expired", "will {m:?}");
    Ok(())
}

fn retained_messages(port: u16) -> Outcome {
    let mut p = Raw::client(port, "conf-ret-pub");
    publish_acked(&mut p, "conf/ret/a", b"kept", true)?;
    let mut s = Raw::client(port, "conf-ret-sub");
    s.subscribe(&[("conf/ret/+", QoS::AtLeastOnce)]);
    let m = next_publish(&mut s)?;
    ack(&mut s, &m);
    check!(
        m.retain && m.payload == b"kept",
        "new subscription got {m:?} [MQTT-3.3.1-6]"
    );
    publish_acked(&mut p, "conf/ret/a", b"live", true)?;
    let m = next_publish(&mut s)?;
    ack(&mut s, &m);
    check!(
        !m.retain,
        "established subscription got RETAIN=1 [MQTT-3.3.1-9]"
    );
    publish_acked(&mut p, "conf/ret/a", b"", true)?;
    let m = next_publish(&mut s)?;
    ack(&mut s, &m);
    let mut late = Raw::client(port, "conf-ret-late");
    late.subscribe(&[("conf/ret/+", QoS::AtLeastOnce)]);
    let before = late.sync();
    check!(
        before.is_empty(),
        "a cleared retained message was sent: {before:?} [MQTT-3.3.1-10]"
    );
    Ok(())
}

fn qos2_both_ways_exactly_once(port: u16) -> Outcome {
    let mut s = Raw::client(port, "conf-q2-sub");
    s.subscribe(&[("conf/q2", QoS::ExactlyOnce)]);
    let mut p = Raw::client(port, "conf-q2-pub");
    p.send(&publish_pkt("conf/q2", b"once", QoS::ExactlyOnce, 3, false));
    check!(p.packet() == Packet::PubRec(3), "no PUBREC");
    let mut dup = Publish::new("conf/q2", b"once", QoS::ExactlyOnce, 3);
    dup.dup = true;
    p.send(&Packet::Publish(dup));
    check!(
        p.packet() == Packet::PubRec(3),
        "no PUBREC for the re-sent PUBLISH"
    );
    p.send(&Packet::PubRel(3));
    check!(p.packet() == Packet::PubComp(3), "no PUBCOMP");
    let m = next_publish(&mut s)?;
    check!(m.qos == QoS::ExactlyOnce, "delivered at {:?}", m.qos);
    s.send(&Packet::PubRec(m.pid));
    check!(
        s.packet() == Packet::PubRel(m.pid),
        "no PUBREL to the subscriber"
    );
    s.send(&Packet::PubComp(m.pid));
    let rest = s.sync();
    check!(
        rest.is_empty(),
        "delivered more than once: {rest:?} [MQTT-4.3.3-2]"
    );
    Ok(())
}

fn qos_is_the_lower_of_both(port: u16) -> Outcome {
    let mut s = Raw::client(port, "conf-min-sub");
    s.subscribe(&[("conf/min", QoS::AtLeastOnce)]);
    let mut p = Raw::client(port, "conf-min-pub");
    p.send(&publish_pkt("conf/min", b"x", QoS::ExactlyOnce, 4, false));
    p.packet();
    p.send(&Packet::PubRel(4));
    p.packet();
    let m = next_publish(&mut s)?;
    check!(
        m.qos == QoS::AtLeastOnce,
        "QoS 2 to a QoS 1 subscription delivered at {:?}",
        m.qos
    );
    Ok(())
}

fn dollar_topics_and_wildcards(port: u16) -> Outcome {
    let mut s = Raw::client(port, "conf-dollar-sub");
    s.subscribe(&[("#", QoS::AtMostOnce), ("+/conf-dollar", QoS::AtMostOnce)]);
    let mut p = Raw::client(port, "conf-dollar-pub");
    publish_acked(&mut p, "$X/conf-dollar", b"hidden", false)?;
    publish_acked(&mut p, "conf/dollar/sentinel", b"seen", false)?;
    // Everything `#` gets, up to the sentinel published after the `$` message.
    loop {
        let m = next_publish(&mut s)?;
        check!(
            !m.topic.starts_with('$'),
            "{} matched a leading wildcard [MQTT-4.7.2-1]",
            m.topic
        );
        if m.topic == "conf/dollar/sentinel" {
            return Ok(());
        }
    }
}

fn overlapping_subscriptions(port: u16) -> Outcome {
    let mut s = Raw::client(port, "conf-overlap-sub");
    s.subscribe(&[
        ("conf/overlap/#", QoS::ExactlyOnce),
        ("conf/overlap/+", QoS::AtLeastOnce),
    ]);
    let mut p = Raw::client(port, "conf-overlap-pub");
    p.send(&publish_pkt(
        "conf/overlap/x",
        b"x",
        QoS::ExactlyOnce,
        5,
        false,
    ));
    p.packet();
    p.send(&Packet::PubRel(5));
    p.packet();
    let first = next_publish(&mut s)?;
    ack(&mut s, &first);
    // [MQTT-3.3.5-1]: at least one copy at the highest matching QoS (one copy per
    // subscription is allowed too).
    let mut qos = vec![first.qos];
    for p in s.sync() {
        if let Packet::Publish(p) = p {
            qos.push(p.qos);
        }
    }
    check!(
        qos.contains(&QoS::ExactlyOnce),
        "copies at {qos:?}, none at QoS 2"
    );
    Ok(())
}

fn persistent_session_and_redelivery(port: u16) -> Outcome {
    let (mut c, got) = Raw::connect(port, Connect::new("conf-persist", 30, false));
    check!(
        matches!(got, Got::Packet(Packet::ConnAck { code: 0, .. })),
        "{got:?}"
    );
    c.subscribe(&[("conf/persist/#", QoS::ExactlyOnce)]);
    c.send(&Packet::Disconnect);
    c.until_closed(Duration::from_secs(5));
    let mut p = Raw::client(port, "conf-persist-pub");
    publish_acked(&mut p, "conf/persist/offline", b"queued", false)?;
    // [MQTT-3.2.2-2] and [MQTT-3.1.2-5]: the session is back, with what came meanwhile.
    let (mut c, got) = Raw::connect(port, Connect::new("conf-persist", 30, false));
    check!(
        got == Got::Packet(Packet::ConnAck {
            session_present: true,
            code: 0
        }),
        "{got:?}"
    );
    let m = next_publish(&mut c)?;
    check!(m.payload == b"queued", "got {m:?}");
    // Not acknowledged; the connection dies; it must come again with DUP=1 and the same id.
    drop(c);
    let (mut c, _) = Raw::connect(port, Connect::new("conf-persist", 30, false));
    let again = next_publish(&mut c)?;
    check!(
        again.dup && again.pid == m.pid && again.payload == b"queued",
        "re-sent as {again:?} [MQTT-4.4.0-1]"
    );
    ack(&mut c, &again);
    // Clean up: CleanSession=1 ends the session.
    let _ = Raw::connect(port, Connect::new("conf-persist", 30, true));
    Ok(())
}

fn order_is_kept(port: u16) -> Outcome {
    let mut s = Raw::client(port, "conf-order-sub");
    s.subscribe(&[("conf/order", QoS::AtLeastOnce)]);
    let mut p = Raw::client(port, "conf-order-pub");
    for i in 1..=200u16 {
        p.send(&publish_pkt(
            "conf/order",
            &i.to_be_bytes(),
            QoS::AtLeastOnce,
            i,
            false,
        ));
    }
    for want in 1..=200u16 {
        let m = next_publish(&mut s)?;
        s.send(&Packet::PubAck(m.pid));
        check!(
            m.payload == want.to_be_bytes(),
            "message {want} arrived as {:?} [MQTT-4.6.0-6]",
            m.payload
        );
    }
    Ok(())
}

fn unsubscribe_stops_delivery(port: u16) -> Outcome {
    let mut s = Raw::client(port, "conf-unsub");
    s.subscribe(&[
        ("conf/unsub/a", QoS::AtMostOnce),
        ("conf/unsub/b", QoS::AtMostOnce),
    ]);
    s.send(&Packet::Unsubscribe {
        pid: 9,
        filters: vec!["conf/unsub/a".into(), "conf/never".into()],
    });
    check!(
        s.packet() == Packet::UnsubAck(9),
        "no UNSUBACK [MQTT-3.10.4-4]"
    );
    let mut p = Raw::client(port, "conf-unsub-pub");
    publish_acked(&mut p, "conf/unsub/a", b"gone", false)?;
    publish_acked(&mut p, "conf/unsub/b", b"here", false)?;
    let m = next_publish(&mut s)?;
    check!(
        m.topic == "conf/unsub/b",
        "got {} after unsubscribing [MQTT-3.10.4-2]",
        m.topic
    );
    Ok(())
}

/// A scenario: its name, its body (given the broker's port), and why mosquitto 2.0 is
/// expected to differ, if it is.
type Scenario = (&'static str, fn(u16) -> Outcome, Option<&'static str>);

const SCENARIOS: &[Scenario] = &[
    (
        "unsupported protocol level: CONNACK 0x01",
        unsupported_protocol_level,
        None,
    ),
    (
        "MQTT 5 client: CONNACK 0x01",
        mqtt5_client_refused_cleanly,
        Some("mosquitto speaks MQTT 5"),
    ),
    ("empty client id", empty_client_id, None),
    ("second CONNECT closes", second_connect_closes, None),
    (
        "client id takeover, old will",
        takeover_publishes_the_old_will,
        None,
    ),
    (
        "will: abnormal close yes, DISCONNECT no",
        will_on_abnormal_close_not_on_disconnect,
        None,
    ),
    ("keepalive 1.5 ×", keepalive_closes_a_silent_client, None),
    ("retained messages", retained_messages, None),
    (
        "QoS 2 both ways, exactly once",
        qos2_both_ways_exactly_once,
        None,
    ),
    ("QoS is the lower of both", qos_is_the_lower_of_both, None),
    ("$ topics and wildcards", dollar_topics_and_wildcards, None),
    (
        "overlapping subscriptions",
        overlapping_subscriptions,
        Some("mosquitto 2.0.11 sends one copy at QoS 1 unless allow_duplicate_messages is set"),
    ),
    (
        "persistent session, redelivery with DUP",
        persistent_session_and_redelivery,
        None,
    ),
    ("order per topic", order_is_kept, None),
    ("unsubscribe", unsubscribe_stops_delivery, None),
];

// ---- malformed input ----

fn s(x: &[u8]) -> Vec<u8> {
    let mut v = (x.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(x);
    v
}

fn pkt(first: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![first, body.len() as u8];
    assert!(body.len() < 128);
    v.extend_from_slice(body);
    v
}

fn connect_body(name: &[u8], level: u8, flags: u8, payload: &[&[u8]]) -> Vec<u8> {
    let mut b = s(name);
    b.extend_from_slice(&[level, flags, 0, 30]);
    for p in payload {
        b.extend_from_slice(&s(p));
    }
    b
}

/// Inputs after which the spec requires the connection to be closed; `true`: sent after a
/// successful CONNECT, `false`: as the first bytes.
fn malformed() -> Vec<(&'static str, bool, Vec<u8>)> {
    let sub = |f: &[u8], q: u8| pkt(0x82, &[&[0u8, 1][..], &s(f), &[q]].concat());
    let publish = |first: u8, topic: &[u8], pid: Option<u16>| {
        let mut b = s(topic);
        if let Some(p) = pid {
            b.extend_from_slice(&p.to_be_bytes());
        }
        b.extend_from_slice(b"x");
        pkt(first, &b)
    };
    vec![
        ("PINGREQ before CONNECT [3.1.0-1]", false, vec![0xC0, 0]),
        (
            "PUBLISH before CONNECT [3.1.0-1]",
            false,
            publish(0x30, b"t", None),
        ),
        ("SUBSCRIBE before CONNECT [3.1.0-1]", false, sub(b"t", 0)),
        ("reserved type 0 first [2.2.1]", false, vec![0x00, 0]),
        ("reserved type 15 first [2.2.1]", false, vec![0xF0, 0]),
        (
            "protocol name MQTX [3.1.2-1]",
            false,
            pkt(0x10, &connect_body(b"MQTX", 4, 2, &[b"c"])),
        ),
        (
            "protocol name mqtt (case) [3.1.2-1]",
            false,
            pkt(0x10, &connect_body(b"mqtt", 4, 2, &[b"c"])),
        ),
        ("level 6 [3.1.2-2]", false, level(6)),
        ("level 0 [3.1.2-2]", false, level(0)),
        (
            "CONNECT reserved flag [3.1.2-3]",
            false,
            pkt(0x10, &connect_body(b"MQTT", 4, 3, &[b"c"])),
        ),
        (
            "will QoS without will [3.1.2-13]",
            false,
            pkt(0x10, &connect_body(b"MQTT", 4, 0x0A, &[b"c"])),
        ),
        (
            "will retain without will [3.1.2-15]",
            false,
            pkt(0x10, &connect_body(b"MQTT", 4, 0x22, &[b"c"])),
        ),
        (
            "will QoS 3 [3.1.2-14]",
            false,
            pkt(0x10, &connect_body(b"MQTT", 4, 0x1E, &[b"c", b"w", b"m"])),
        ),
        (
            "password without user name [3.1.2-22]",
            false,
            pkt(0x10, &connect_body(b"MQTT", 4, 0x42, &[b"c", b"p"])),
        ),
        (
            "will flag, no will fields [3.1.2-9]",
            false,
            pkt(0x10, &connect_body(b"MQTT", 4, 0x06, &[b"c"])),
        ),
        (
            "user name flag, no user name [3.1.2-19]",
            false,
            pkt(0x10, &connect_body(b"MQTT", 4, 0x82, &[b"c"])),
        ),
        (
            "client id not UTF-8 [1.5.3-1]",
            false,
            pkt(0x10, &connect_body(b"MQTT", 4, 2, &[b"\xFF\xFE"])),
        ),
        (
            "client id with U+0000 [1.5.3-2]",
            false,
            pkt(0x10, &connect_body(b"MQTT", 4, 2, &[b"a\0b"])),
        ),
        (
            "will topic with wildcard [3.3.2-2]",
            false,
            pkt(0x10, &connect_body(b"MQTT", 4, 0x06, &[b"c", b"w/#", b"m"])),
        ),
        (
            "will topic empty [4.7.3-1]",
            false,
            pkt(0x10, &connect_body(b"MQTT", 4, 0x06, &[b"c", b"", b"m"])),
        ),
        (
            "user name not UTF-8 [3.1.3-11]",
            false,
            pkt(0x10, &connect_body(b"MQTT", 4, 0x82, &[b"c", b"\xC0\xAF"])),
        ),
        (
            "CONNECT fixed header flags [2.2.2-2]",
            false,
            pkt(0x11, &connect_body(b"MQTT", 4, 2, &[b"c"])),
        ),
        (
            "empty client id, CleanSession=0 [3.1.3-8]",
            false,
            pkt(0x10, &connect_body(b"MQTT", 4, 0, &[b""])),
        ),
        (
            "remaining length of five bytes [2.2.3]",
            false,
            vec![0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        ),
        (
            "second CONNECT [3.1.0-2]",
            true,
            Connect::new("again", 30, true).to_bytes(),
        ),
        (
            "PUBLISH QoS 3 [3.3.1-4]",
            true,
            publish(0x36, b"t", Some(1)),
        ),
        (
            "PUBLISH QoS 0 with DUP [3.3.1-2]",
            true,
            publish(0x38, b"t", None),
        ),
        (
            "PUBLISH topic a/+ [3.3.2-2]",
            true,
            publish(0x30, b"a/+", None),
        ),
        (
            "PUBLISH topic a/# [3.3.2-2]",
            true,
            publish(0x30, b"a/#", None),
        ),
        ("PUBLISH topic + [3.3.2-2]", true, publish(0x30, b"+", None)),
        (
            "PUBLISH empty topic [4.7.3-1]",
            true,
            publish(0x30, b"", None),
        ),
        (
            "PUBLISH topic with U+0000 [4.7.3-2]",
            true,
            publish(0x30, b"a\0", None),
        ),
        (
            "PUBLISH topic not UTF-8 [1.5.3-1]",
            true,
            publish(0x30, b"\xFFa", None),
        ),
        (
            "PUBLISH topic with a surrogate [1.5.3-1]",
            true,
            publish(0x30, b"\xED\xA0\x80", None),
        ),
        (
            "PUBLISH QoS 1 id 0 [2.3.1-1]",
            true,
            publish(0x32, b"t", Some(0)),
        ),
        (
            "PUBLISH QoS 2 id 0 [2.3.1-1]",
            true,
            publish(0x34, b"t", Some(0)),
        ),
        (
            "PUBLISH topic longer than packet [2.2.3]",
            true,
            pkt(0x30, &[0, 9, b'a']),
        ),
        ("PUBREL flags 0000 [3.6.1-1]", true, pkt(0x60, &[0, 1])),
        ("PUBREL flags 0011 [3.6.1-1]", true, pkt(0x63, &[0, 1])),
        (
            "SUBSCRIBE flags 0000 [3.8.1-1]",
            true,
            pkt(0x80, &[&[0u8, 1][..], &s(b"t"), &[0]].concat()),
        ),
        (
            "SUBSCRIBE flags 0011 [3.8.1-1]",
            true,
            pkt(0x83, &[&[0u8, 1][..], &s(b"t"), &[0]].concat()),
        ),
        (
            "SUBSCRIBE without filters [3.8.3-3]",
            true,
            pkt(0x82, &[0, 1]),
        ),
        ("SUBSCRIBE QoS 3 [3-8.3-4]", true, sub(b"t", 3)),
        (
            "SUBSCRIBE reserved option bits [3-8.3-4]",
            true,
            sub(b"t", 0x41),
        ),
        ("SUBSCRIBE filter a/#/b [4.7.1-2]", true, sub(b"a/#/b", 0)),
        ("SUBSCRIBE filter a# [4.7.1-2]", true, sub(b"a#", 0)),
        ("SUBSCRIBE filter #/ [4.7.1-2]", true, sub(b"#/", 0)),
        ("SUBSCRIBE filter a+ [4.7.1-3]", true, sub(b"a+", 0)),
        ("SUBSCRIBE filter +a/b [4.7.1-3]", true, sub(b"+a/b", 0)),
        ("SUBSCRIBE empty filter [4.7.3-1]", true, sub(b"", 0)),
        (
            "SUBSCRIBE filter not UTF-8 [3.8.3-1]",
            true,
            sub(b"\xFF", 0),
        ),
        (
            "SUBSCRIBE filter with U+0000 [4.7.3-2]",
            true,
            sub(b"a\0", 0),
        ),
        (
            "SUBSCRIBE id 0 [2.3.1-1]",
            true,
            pkt(0x82, &[&[0u8, 0][..], &s(b"t"), &[0]].concat()),
        ),
        (
            "SUBSCRIBE filter without QoS byte [3.8.3]",
            true,
            pkt(0x82, &[&[0u8, 1][..], &s(b"t")].concat()),
        ),
        (
            "UNSUBSCRIBE flags 0000 [3.10.1-1]",
            true,
            pkt(0xA0, &[&[0u8, 1][..], &s(b"t")].concat()),
        ),
        (
            "UNSUBSCRIBE without filters [3.10.3-2]",
            true,
            pkt(0xA2, &[0, 1]),
        ),
        (
            "UNSUBSCRIBE id 0 [2.3.1-1]",
            true,
            pkt(0xA2, &[&[0u8, 0][..], &s(b"t")].concat()),
        ),
        (
            "UNSUBSCRIBE filter not UTF-8 [3.10.3-1]",
            true,
            pkt(0xA2, &[&[0u8, 1][..], &s(b"\xFE")].concat()),
        ),
        ("PINGREQ flags [2.2.2-2]", true, vec![0xC1, 0]),
        ("DISCONNECT flags [3.14.1-1]", true, vec![0xE2, 0]),
        ("PUBACK flags [2.2.2-2]", true, pkt(0x41, &[0, 1])),
        ("PUBREC flags [2.2.2-2]", true, pkt(0x58, &[0, 1])),
        ("PUBCOMP flags [2.2.2-2]", true, pkt(0x74, &[0, 1])),
        ("CONNACK from a client [4.8.0-1]", true, vec![0x20, 2, 0, 0]),
        (
            "SUBACK from a client [4.8.0-1]",
            true,
            pkt(0x90, &[0, 1, 0]),
        ),
        ("UNSUBACK from a client [4.8.0-1]", true, pkt(0xB0, &[0, 1])),
        ("PINGRESP from a client [4.8.0-1]", true, vec![0xD0, 0]),
        ("reserved type 0 [2.2.1]", true, vec![0x00, 0]),
        ("reserved type 15 [2.2.1]", true, vec![0xF0, 0]),
        (
            "remaining length of five bytes [2.2.3]",
            true,
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        ),
    ]
}

/// Whether the broker closed the connection after `bytes`. When it does not close, a
/// round trip proves it had processed them (a PINGREQ after a CONNECT; before one, a CONNECT
/// that gets its CONNACK).
fn closes(port: u16, after_connect: bool, bytes: &[u8]) -> bool {
    let mut c = if after_connect {
        Raw::client(port, "conf-malformed")
    } else {
        Raw::open(port)
    };
    c.write(bytes);
    if after_connect {
        c.write(&Packet::PingReq.to_bytes());
    } else {
        c.write(&Connect::new("conf-malformed-probe", 30, true).to_bytes());
    }
    loop {
        match c.recv(Duration::from_secs(10)) {
            Got::Closed => return true,
            Got::Packet(Packet::PingResp) => return false,
            Got::Packet(Packet::ConnAck { code: 0, .. }) if !after_connect => return false,
            Got::Packet(_) => {}
            Got::Nothing => return false,
        }
    }
}

struct Column {
    failed: Vec<String>,
    closed: usize,
    left_open: Vec<&'static str>,
}

fn run_all(port: u16) -> Column {
    let mut col = Column {
        failed: Vec::new(),
        closed: 0,
        left_open: Vec::new(),
    };
    for (name, f, _) in SCENARIOS {
        if let Err(e) = f(port) {
            col.failed.push(format!("{name}: {e}"));
        }
    }
    for (name, after, bytes) in malformed() {
        if closes(port, after, &bytes) {
            col.closed += 1;
        } else {
            col.left_open.push(name);
        }
    }
    col
}

#[test]
fn embedded_broker_and_mosquitto_side_by_side() {
    let mosquitto = Mosquitto::start();
    let theirs = run_all(mosquitto.port);

    let cloud = Cloud::start(&[]);
    let edge = Edge::new("conf-edge");
    edge.join_ok(&cloud);
    let port = edge.private_broker();
    let run = edge.run("1s");
    run.wait_log("MQTT: connected", Duration::from_secs(30));
    let ours = run_all(port);

    let total = malformed().len();
    println!("{:<48} {:<10} {:<10}", "scenario", "embedded", "mosquitto");
    for (name, _, _) in SCENARIOS {
        let mark = |c: &Column| {
            if c.failed.iter().any(|f| f.starts_with(name)) {
                "FAIL"
            } else {
                "pass"
            }
        };
        println!("{name:<48} {:<10} {:<10}", mark(&ours), mark(&theirs));
    }
    println!(
        "{:<48} {:<10} {:<10}",
        format!("closed after malformed input (of {total})"),
        ours.closed,
        theirs.closed
    );
    println!("mosquitto left open after: {:?}", theirs.left_open);
    println!("mosquitto failed: {:#?}", theirs.failed);

    assert!(
        ours.failed.is_empty(),
        "embedded broker failed: {:#?}",
        ours.failed
    );
    assert!(
        ours.left_open.is_empty(),
        "embedded broker left open after: {:?}",
        ours.left_open
    );
    // mosquitto is the reference: anything it fails that is not a listed difference means the
    // scenario (not the broker) is wrong.
    let unexpected: Vec<&String> = theirs
        .failed
        .iter()
        .filter(|f| {
            !SCENARIOS
                .iter()
                .any(|(name, _, differs)| differs.is_some() && f.starts_with(name))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "mosquitto failed scenarios it should pass: {unexpected:#?}"
    );
    assert!(ours.closed >= theirs.closed);
}
