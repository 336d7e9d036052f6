//! One test per normative statement the decoder enforces, each with the input the statement
//! forbids next to the nearest input it allows.

use super::*;
use crate::Error;

fn rule(bytes: &[u8]) -> &'static str {
    match decode(bytes, 1 << 20) {
        Err(Error::Malformed { rule, .. }) => rule,
        other => panic!("expected a malformed packet, got {other:?}"),
    }
}

fn ok(bytes: &[u8]) -> Packet {
    let (p, n) = decode(bytes, 1 << 20).unwrap().unwrap();
    assert_eq!(n, bytes.len());
    p
}

/// A packet from its first byte and body.
fn pkt(first: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        v.push(b);
        if len == 0 {
            break;
        }
    }
    v.extend_from_slice(body);
    v
}

fn s(x: &[u8]) -> Vec<u8> {
    let mut v = (x.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(x);
    v
}

/// A CONNECT body: protocol name, level, flags, keepalive 60, then `payload`.
fn connect_body(name: &[u8], level: u8, flags: u8, payload: &[&[u8]]) -> Vec<u8> {
    let mut b = s(name);
    b.push(level);
    b.push(flags);
    b.extend_from_slice(&60u16.to_be_bytes());
    for p in payload {
        b.extend_from_slice(&s(p));
    }
    b
}

#[test]
fn every_packet_round_trips() {
    let all = [
        Packet::Connect(Box::new(Connect {
            level: Level::V311,
            clean_session: false,
            keepalive: 30,
            client_id: "c1".into(),
            will: Some(Will {
                topic: "w/t".into(),
                payload: vec![0, 1, 2],
                qos: QoS::ExactlyOnce,
                retain: true,
            }),
            username: Some("u".into()),
            password: Some(vec![0xFF, 0]),
        })),
        Packet::Connect(Box::new(Connect {
            level: Level::V31,
            clean_session: true,
            keepalive: 0,
            client_id: "old".into(),
            will: None,
            username: None,
            password: None,
        })),
        Packet::ConnAck {
            session_present: true,
            code: 0,
        },
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: "a/b".into(),
            pid: 9,
            payload: b"x".to_vec(),
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "a".into(),
            pid: 0,
            payload: vec![],
        }),
        Packet::PubAck(1),
        Packet::PubRec(2),
        Packet::PubRel(3),
        Packet::PubComp(65535),
        Packet::Subscribe {
            pid: 4,
            filters: vec![
                ("a/+".into(), QoS::AtLeastOnce),
                ("#".into(), QoS::ExactlyOnce),
            ],
        },
        Packet::SubAck {
            pid: 4,
            codes: vec![1, 0x80, 2, 0],
        },
        Packet::Unsubscribe {
            pid: 5,
            filters: vec!["a/+".into(), "b".into()],
        },
        Packet::UnsubAck(5),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect,
    ];
    for p in all {
        let b = p.to_bytes();
        assert_eq!(ok(&b), p, "{}", p.name());
        for cut in 0..b.len() {
            assert_eq!(
                decode(&b[..cut], 1 << 20),
                Ok(None),
                "{} cut at {cut}",
                p.name()
            );
        }
    }
}

#[test]
fn remaining_length_is_at_most_four_bytes() {
    // §2.2.3: 268,435,455 is the largest length.
    assert_eq!(rule(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]), "MQTT-2.2.3");
    let big = pkt(0x30, &[&s(b"t")[..], &vec![7u8; 200_000]].concat());
    assert_eq!(
        &big[1..4],
        &[0xC3, 0x9A, 0x0C],
        "200,003 in three length bytes"
    );
    assert!(matches!(ok(&big), Packet::Publish(p) if p.payload.len() == 200_000));
}

#[test]
fn too_large_is_refused_before_it_arrives() {
    let b = pkt(0x30, &[&s(b"t")[..], &[0u8; 300]].concat());
    assert_eq!(
        decode(&b[..4], 100),
        Err(Error::TooLarge {
            len: b.len(),
            max: 100
        })
    );
    assert!(decode(&b, b.len()).unwrap().is_some());
}

#[test]
fn fixed_header_flags_are_checked_mqtt_2_2_2_2() {
    // [MQTT-2.2.2-1]/[MQTT-2.2.2-2]: CONNECT, PUBACK, PINGREQ, DISCONNECT flags are 0000.
    for first in [0x11u8, 0x41, 0xC1, 0xE8, 0x21, 0x92, 0xB4, 0xD1, 0x58, 0x71] {
        let body: &[u8] = match first >> 4 {
            4 | 5 | 7 | 11 => &[0, 1],
            2 => &[0, 0],
            9 => &[0, 1, 0],
            _ => &[],
        };
        assert_eq!(rule(&pkt(first, body)), "MQTT-2.2.2-2", "{first:#x}");
    }
}

#[test]
fn pubrel_subscribe_unsubscribe_need_flags_0010() {
    // [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1]
    assert_eq!(rule(&pkt(0x60, &[0, 1])), "MQTT-2.2.2-2");
    assert_eq!(ok(&pkt(0x62, &[0, 1])), Packet::PubRel(1));
    let sub = [&[0u8, 1][..], &s(b"a"), &[0]].concat();
    assert_eq!(rule(&pkt(0x80, &sub)), "MQTT-2.2.2-2");
    assert!(matches!(ok(&pkt(0x82, &sub)), Packet::Subscribe { .. }));
    let unsub = [&[0u8, 1][..], &s(b"a")].concat();
    assert_eq!(rule(&pkt(0xA0, &unsub)), "MQTT-2.2.2-2");
    assert!(matches!(ok(&pkt(0xA2, &unsub)), Packet::Unsubscribe { .. }));
}

#[test]
fn reserved_packet_types_are_malformed() {
    assert_eq!(rule(&[0x00, 0x00]), "MQTT-2.2.1");
    assert_eq!(rule(&[0xF0, 0x00]), "MQTT-2.2.1");
}

#[test]
fn packet_identifiers_are_never_zero_mqtt_2_3_1_1() {
    let publish = [&s(b"t")[..], &[0, 0]].concat();
    assert_eq!(rule(&pkt(0x32, &publish)), "MQTT-2.3.1-1");
    let sub = [&[0u8, 0][..], &s(b"a"), &[0]].concat();
    assert_eq!(rule(&pkt(0x82, &sub)), "MQTT-2.3.1-1");
    let unsub = [&[0u8, 0][..], &s(b"a")].concat();
    assert_eq!(rule(&pkt(0xA2, &unsub)), "MQTT-2.3.1-1");
    assert_eq!(rule(&pkt(0x40, &[0, 0])), "MQTT-2.3.1-1");
    // QoS 0 carries no identifier at all.
    let p0 = [&s(b"t")[..], &[0, 0]].concat();
    assert!(matches!(ok(&pkt(0x30, &p0)), Packet::Publish(p) if p.pid == 0 && p.payload == [0, 0]));
}

#[test]
fn fixed_size_packets_have_exact_lengths() {
    for (first, n) in [
        (0x40u8, 3usize),
        (0x50, 1),
        (0x62, 0),
        (0x70, 4),
        (0xB0, 3),
        (0x20, 3),
    ] {
        assert_eq!(rule(&pkt(first, &vec![1; n])), "MQTT-2.2.3", "{first:#x}");
    }
    assert_eq!(rule(&pkt(0xC0, &[0])), "MQTT-2.2.3");
    assert_eq!(rule(&pkt(0xD0, &[0])), "MQTT-2.2.3");
    assert_eq!(rule(&pkt(0xE0, &[0])), "MQTT-2.2.3");
}

#[test]
fn strings_are_well_formed_utf8_without_nul() {
    // [MQTT-1.5.3-1]: an encoded surrogate (U+D800 as ED A0 80) and a stray continuation byte.
    for bad in [&[0xED, 0xA0, 0x80][..], &[b'a', 0x80], &[0xC0, 0xAF]] {
        let body = [&s(bad)[..], &[]].concat();
        assert_eq!(rule(&pkt(0x30, &body)), "MQTT-1.5.3-1", "{bad:x?}");
    }
    // [MQTT-1.5.3-2]
    assert_eq!(rule(&pkt(0x30, &s(b"a\0b"))), "MQTT-1.5.3-2");
    // [MQTT-1.5.3-3]: a BOM is a character like any other, kept.
    let bom = "\u{FEFF}t";
    assert!(matches!(ok(&pkt(0x30, &s(bom.as_bytes()))), Packet::Publish(p) if p.topic == bom));
}

#[test]
fn truncated_strings_are_malformed() {
    assert_eq!(rule(&pkt(0x30, &[0, 5, b'a'])), "MQTT-2.2.3");
}

#[test]
fn connect_protocol_name_and_level() {
    // [MQTT-3.1.2-1]: another name may be closed without CONNACK.
    assert_eq!(
        rule(&pkt(0x10, &connect_body(b"MQTX", 4, 2, &[b"c"]))),
        "MQTT-3.1.2-1"
    );
    // [MQTT-3.1.2-2]: a level this server does not speak gets CONNACK 0x01 (MQTT 5 is level 5).
    assert_eq!(
        decode(&pkt(0x10, &connect_body(b"MQTT", 5, 2, &[b"c"])), 1024),
        Err(Error::UnsupportedProtocol(5))
    );
    assert_eq!(
        decode(&pkt(0x10, &connect_body(b"MQTT", 3, 2, &[b"c"])), 1024),
        Err(Error::UnsupportedProtocol(3))
    );
    assert!(matches!(
        ok(&pkt(0x10, &connect_body(b"MQIsdp", 3, 2, &[b"c"]))),
        Packet::Connect(c) if c.level == Level::V31
    ));
}

#[test]
fn connect_reserved_flag_mqtt_3_1_2_3() {
    assert_eq!(
        rule(&pkt(0x10, &connect_body(b"MQTT", 4, 3, &[b"c"]))),
        "MQTT-3.1.2-3"
    );
}

#[test]
fn will_flags_mqtt_3_1_2_13_to_15() {
    // Will QoS set without the will flag.
    assert_eq!(
        rule(&pkt(0x10, &connect_body(b"MQTT", 4, 0b0000_1010, &[b"c"]))),
        "MQTT-3.1.2-13"
    );
    // Will retain without the will flag.
    assert_eq!(
        rule(&pkt(0x10, &connect_body(b"MQTT", 4, 0b0010_0010, &[b"c"]))),
        "MQTT-3.1.2-15"
    );
    // Will QoS 3.
    assert_eq!(
        rule(&pkt(
            0x10,
            &connect_body(b"MQTT", 4, 0b0001_1110, &[b"c", b"w", b"m"])
        )),
        "MQTT-3.1.2-14"
    );
    // A will is its topic and message, in that order [MQTT-3.1.2-9].
    match ok(&pkt(
        0x10,
        &connect_body(b"MQTT", 4, 0b0011_0110, &[b"c", b"w/t", b"bye"]),
    )) {
        Packet::Connect(c) => assert_eq!(
            c.will,
            Some(Will {
                topic: "w/t".into(),
                payload: b"bye".to_vec(),
                qos: QoS::ExactlyOnce,
                retain: true
            })
        ),
        other => panic!("{other:?}"),
    }
    // The will flag set but no will fields [MQTT-3.1.2-9].
    assert_eq!(
        rule(&pkt(0x10, &connect_body(b"MQTT", 4, 0b0000_0110, &[b"c"]))),
        "MQTT-2.2.3"
    );
    // A will topic is a topic name: no wildcards [MQTT-3.3.2-2].
    assert_eq!(
        rule(&pkt(
            0x10,
            &connect_body(b"MQTT", 4, 0b0000_0110, &[b"c", b"w/#", b"m"])
        )),
        "MQTT-3.3.2-2"
    );
}

#[test]
fn credentials_flags_mqtt_3_1_2_18_to_22() {
    // Password without user name [MQTT-3.1.2-22].
    assert_eq!(
        rule(&pkt(0x10, &connect_body(b"MQTT", 4, 0x42, &[b"c", b"p"]))),
        "MQTT-3.1.2-22"
    );
    // User name flag set, field missing [MQTT-3.1.2-19].
    assert_eq!(
        rule(&pkt(0x10, &connect_body(b"MQTT", 4, 0x82, &[b"c"]))),
        "MQTT-2.2.3"
    );
    // Flags clear, fields present: bytes after the payload [MQTT-3.1.2-18], [MQTT-3.1.3-1].
    assert_eq!(
        rule(&pkt(0x10, &connect_body(b"MQTT", 4, 0x02, &[b"c", b"u"]))),
        "MQTT-3.1.3-1"
    );
    match ok(&pkt(
        0x10,
        &connect_body(b"MQTT", 4, 0xC2, &[b"c", b"u", b"\xFFp"]),
    )) {
        Packet::Connect(c) => {
            assert_eq!(c.username.as_deref(), Some("u"));
            assert_eq!(
                c.password.as_deref(),
                Some(&b"\xFFp"[..]),
                "passwords are binary"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn connect_client_id_is_a_string_and_may_be_empty() {
    // [MQTT-3.1.3-3], [MQTT-3.1.3-4]: present, UTF-8.
    assert_eq!(
        rule(&pkt(0x10, &connect_body(b"MQTT", 4, 2, &[]))),
        "MQTT-2.2.3"
    );
    assert_eq!(
        rule(&pkt(0x10, &connect_body(b"MQTT", 4, 2, &[b"\xFF"]))),
        "MQTT-1.5.3-1"
    );
    // [MQTT-3.1.3-6]: zero bytes is allowed by the codec; the server decides [MQTT-3.1.3-7].
    assert!(matches!(
        ok(&pkt(0x10, &connect_body(b"MQTT", 4, 0, &[b""]))),
        Packet::Connect(c) if c.client_id.is_empty() && !c.clean_session
    ));
}

#[test]
fn connack_reserved_bits() {
    assert_eq!(rule(&pkt(0x20, &[2, 0])), "MQTT-3.2.2.1");
    assert_eq!(
        ok(&pkt(0x20, &[1, 0])),
        Packet::ConnAck {
            session_present: true,
            code: 0
        }
    );
}

#[test]
fn publish_qos_dup_and_topic_mqtt_3_3() {
    // [MQTT-3.3.1-4]
    assert_eq!(
        rule(&pkt(0x36, &[&s(b"t")[..], &[0, 1]].concat())),
        "MQTT-3.3.1-4"
    );
    // [MQTT-3.3.1-2]
    assert_eq!(rule(&pkt(0x38, &s(b"t"))), "MQTT-3.3.1-2");
    assert!(
        matches!(ok(&pkt(0x3A, &[&s(b"t")[..], &[0, 1]].concat())), Packet::Publish(p) if p.dup)
    );
    // [MQTT-3.3.2-2]: no wildcards in a topic name; [MQTT-4.7.3-1]: not empty.
    assert_eq!(rule(&pkt(0x30, &s(b"a/+"))), "MQTT-3.3.2-2");
    assert_eq!(rule(&pkt(0x30, &s(b"#"))), "MQTT-3.3.2-2");
    assert_eq!(rule(&pkt(0x30, &s(b""))), "MQTT-4.7.3-1");
    // The retain flag is read [MQTT-3.3.1-5].
    assert!(matches!(ok(&pkt(0x31, &s(b"t"))), Packet::Publish(p) if p.retain));
}

#[test]
fn subscribe_payload_mqtt_3_8_3() {
    // [MQTT-3.8.3-3]: at least one filter.
    assert_eq!(rule(&pkt(0x82, &[0, 1])), "MQTT-3.8.3-3");
    // [MQTT-3-8.3-4]: QoS 3 or reserved bits.
    for q in [3u8, 4, 0x81] {
        let b = [&[0u8, 1][..], &s(b"a"), &[q]].concat();
        assert_eq!(rule(&pkt(0x82, &b)), "MQTT-3-8.3-4", "{q:#x}");
    }
    // A filter without its QoS byte.
    assert_eq!(
        rule(&pkt(0x82, &[&[0u8, 1][..], &s(b"a")].concat())),
        "MQTT-2.2.3"
    );
    // Filters follow §4.7 [MQTT-4.7.1-2], [MQTT-4.7.1-3], [MQTT-4.7.3-1].
    for (f, r) in [
        (&b"a/#/b"[..], "MQTT-4.7.1-2"),
        (b"a+", "MQTT-4.7.1-3"),
        (b"", "MQTT-4.7.3-1"),
    ] {
        let b = [&[0u8, 1][..], &s(f), &[0]].concat();
        assert_eq!(rule(&pkt(0x82, &b)), r);
    }
    // [MQTT-3.8.3-1]: UTF-8.
    let b = [&[0u8, 1][..], &s(b"\xFE"), &[0]].concat();
    assert_eq!(rule(&pkt(0x82, &b)), "MQTT-1.5.3-1");
}

#[test]
fn unsubscribe_payload_mqtt_3_10_3() {
    assert_eq!(rule(&pkt(0xA2, &[0, 1])), "MQTT-3.10.3-2");
    assert_eq!(
        rule(&pkt(0xA2, &[&[0u8, 1][..], &s(b"#/a")].concat())),
        "MQTT-4.7.1-2"
    );
}

#[test]
fn suback_codes() {
    assert_eq!(rule(&pkt(0x90, &[0, 1])), "MQTT-3.9.3");
    assert_eq!(rule(&pkt(0x90, &[0, 1, 3])), "MQTT-3.9.3");
}

#[test]
fn two_packets_in_one_read_decode_one_at_a_time() {
    let mut b = Packet::PingReq.to_bytes();
    b.extend(Packet::PubAck(7).to_bytes());
    let (p, n) = decode(&b, 64).unwrap().unwrap();
    assert_eq!((p, n), (Packet::PingReq, 2));
    assert_eq!(decode(&b[n..], 64).unwrap().unwrap().0, Packet::PubAck(7));
}
