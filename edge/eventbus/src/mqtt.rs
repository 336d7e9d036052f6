//! The MQTT 3.1.1 packets an EventBus client needs, as a sans-IO codec: CONNECT/CONNACK,
//! SUBSCRIBE/SUBACK, PUBLISH (QoS 0 and 1)/PUBACK, PINGREQ/PINGRESP, DISCONNECT.
//!
//! [`decode`] takes whatever bytes have arrived and returns a packet and its length, `None`
//! when more bytes are needed, or an error for malformed input; it never panics and never
//! accepts a packet larger than the caller's limit.

/// A decoded packet (the client-relevant subset).
#[derive(Clone, Debug, PartialEq)]
pub enum Packet {
    Connect {
        client_id: String,
        keepalive: u16,
        username: Option<String>,
        password: Option<String>,
    },
    Subscribe {
        id: u16,
        filters: Vec<(String, u8)>,
    },
    Unsubscribe {
        id: u16,
        filters: Vec<String>,
    },
    PingReq,
    Disconnect,
    ConnAck {
        session_present: bool,
        code: u8,
    },
    Publish(Publish),
    PubAck {
        id: u16,
    },
    SubAck {
        id: u16,
        codes: Vec<u8>,
    },
    PingResp,
    /// Anything else a broker may send (PUBREC for QoS 2, …): type nibble, ignored.
    Other(u8),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Publish {
    pub topic: String,
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    /// Present for QoS 1 and 2.
    pub id: Option<u16>,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MqttError {
    #[error("MQTT packet of {len} bytes is over the {max} byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("malformed MQTT packet: {0}")]
    Malformed(&'static str),
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn put_remaining_len(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
}

fn packet(first: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    put_remaining_len(&mut out, body.len());
    out.extend(body);
    out
}

/// CONNECT with a clean session.
pub fn connect(client_id: &str, keepalive_secs: u16, credentials: Option<(&str, &str)>) -> Vec<u8> {
    let mut b = Vec::new();
    put_str(&mut b, b"MQTT");
    b.push(4); // protocol level 3.1.1
    let mut flags = 0x02; // clean session
    if credentials.is_some() {
        flags |= 0xC0;
    }
    b.push(flags);
    b.extend_from_slice(&keepalive_secs.to_be_bytes());
    put_str(&mut b, client_id.as_bytes());
    if let Some((user, pass)) = credentials {
        put_str(&mut b, user.as_bytes());
        put_str(&mut b, pass.as_bytes());
    }
    packet(0x10, b)
}

pub fn subscribe(id: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    for (f, qos) in filters {
        put_str(&mut b, f.as_bytes());
        b.push(*qos);
    }
    packet(0x82, b)
}

pub fn publish(topic: &str, payload: &[u8], qos: u8, id: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(topic.len() + payload.len() + 4);
    put_str(&mut b, topic.as_bytes());
    if qos > 0 {
        b.extend_from_slice(&id.to_be_bytes());
    }
    b.extend_from_slice(payload);
    packet(0x30 | (qos.min(1) << 1), b)
}

pub fn puback(id: u16) -> Vec<u8> {
    packet(0x40, id.to_be_bytes().to_vec())
}

pub fn connack(code: u8) -> Vec<u8> {
    vec![0x20, 2, 0, code]
}

pub fn suback(id: u16, codes: &[u8]) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    b.extend_from_slice(codes);
    packet(0x90, b)
}

pub fn unsuback(id: u16) -> Vec<u8> {
    packet(0xB0, id.to_be_bytes().to_vec())
}

pub fn pingresp() -> Vec<u8> {
    vec![0xD0, 0]
}

pub fn pingreq() -> Vec<u8> {
    vec![0xC0, 0]
}

pub fn disconnect() -> Vec<u8> {
    vec![0xE0, 0]
}

fn u16_at(b: &[u8], i: usize) -> Result<u16, MqttError> {
    b.get(i..i + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(MqttError::Malformed("truncated field"))
}

/// A length-prefixed UTF-8 string at `*at`, advancing `*at`.
fn str_at(b: &[u8], at: &mut usize) -> Result<String, MqttError> {
    let len = u16_at(b, *at)? as usize;
    let s = b
        .get(*at + 2..*at + 2 + len)
        .ok_or(MqttError::Malformed("truncated string"))?;
    *at += 2 + len;
    String::from_utf8(s.to_vec()).map_err(|_| MqttError::Malformed("string is not UTF-8"))
}

fn connect_body(body: &[u8]) -> Result<Packet, MqttError> {
    let mut at = 0;
    let proto = str_at(body, &mut at)?;
    if proto != "MQTT" && proto != "MQIsdp" {
        return Err(MqttError::Malformed("CONNECT protocol name"));
    }
    let flags = *body
        .get(at + 1)
        .ok_or(MqttError::Malformed("CONNECT flags"))?;
    let keepalive = u16_at(body, at + 2)?;
    at += 4;
    let client_id = str_at(body, &mut at)?;
    if flags & 0x04 != 0 {
        str_at(body, &mut at)?; // will topic
        let len = u16_at(body, at)? as usize; // will message (binary)
        at += 2 + len;
    }
    let username = if flags & 0x80 != 0 {
        Some(str_at(body, &mut at)?)
    } else {
        None
    };
    let password = if flags & 0x40 != 0 {
        Some(str_at(body, &mut at)?)
    } else {
        None
    };
    Ok(Packet::Connect {
        client_id,
        keepalive,
        username,
        password,
    })
}

fn filters_body(body: &[u8], with_qos: bool) -> Result<(u16, Vec<(String, u8)>), MqttError> {
    let id = u16_at(body, 0)?;
    let mut at = 2;
    let mut out = Vec::new();
    while at < body.len() {
        let f = str_at(body, &mut at)?;
        let qos = if with_qos {
            let q = *body.get(at).ok_or(MqttError::Malformed("SUBSCRIBE QoS"))?;
            at += 1;
            q.min(1)
        } else {
            0
        };
        if f.is_empty() {
            return Err(MqttError::Malformed("empty topic filter"));
        }
        out.push((f, qos));
    }
    if out.is_empty() {
        return Err(MqttError::Malformed("no topic filters"));
    }
    Ok((id, out))
}

/// Decodes one packet from the front of `buf`.
pub fn decode(buf: &[u8], max_packet: usize) -> Result<Option<(Packet, usize)>, MqttError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let first = buf[0];
    let mut len = 0usize;
    let mut mult = 1usize;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len += (b & 0x7F) as usize * mult;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        mult *= 128;
        if i > 4 {
            return Err(MqttError::Malformed("remaining length over 4 bytes"));
        }
    }
    let total = i + len;
    if total > max_packet {
        return Err(MqttError::TooLarge {
            len: total,
            max: max_packet,
        });
    }
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[i..total];
    let p = match first >> 4 {
        1 => connect_body(body)?,
        8 => {
            let (id, filters) = filters_body(body, true)?;
            Packet::Subscribe { id, filters }
        }
        10 => {
            let (id, filters) = filters_body(body, false)?;
            Packet::Unsubscribe {
                id,
                filters: filters.into_iter().map(|(f, _)| f).collect(),
            }
        }
        12 => Packet::PingReq,
        14 => Packet::Disconnect,
        2 => {
            if body.len() != 2 {
                return Err(MqttError::Malformed("CONNACK length"));
            }
            Packet::ConnAck {
                session_present: body[0] & 1 == 1,
                code: body[1],
            }
        }
        3 => {
            let qos = (first >> 1) & 3;
            if qos == 3 {
                return Err(MqttError::Malformed("PUBLISH QoS 3"));
            }
            let tlen = u16_at(body, 0)? as usize;
            let topic = body
                .get(2..2 + tlen)
                .ok_or(MqttError::Malformed("PUBLISH topic"))?;
            let topic = std::str::from_utf8(topic)
                .map_err(|_| MqttError::Malformed("PUBLISH topic is not UTF-8"))?
                .to_owned();
            let mut at = 2 + tlen;
            let id = if qos > 0 {
                let id = u16_at(body, at)?;
                at += 2;
                Some(id)
            } else {
                None
            };
            Packet::Publish(Publish {
                topic,
                qos,
                retain: first & 1 == 1,
                dup: first & 8 == 8,
                id,
                payload: body[at..].to_vec(),
            })
        }
        4 => Packet::PubAck {
            id: u16_at(body, 0)?,
        },
        9 => Packet::SubAck {
            id: u16_at(body, 0)?,
            codes: body.get(2..).unwrap_or_default().to_vec(),
        },
        13 => Packet::PingResp,
        0 | 15 => return Err(MqttError::Malformed("reserved packet type")),
        t => Packet::Other(t),
    };
    Ok(Some((p, total)))
}

/// Whether `topic` matches the subscription `filter` (`+` one level, `#` the rest).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The body of the `packet` fuzz target (`edge/eventbus/fuzz`), also run by the stable test
/// suite over the seed corpus: decoding never panics, consumes at most what it was given, and
/// what decodes as PUBLISH re-encodes to the same packet.
#[doc(hidden)]
pub fn fuzz(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((p, n))) = decode(rest, 1 << 16) {
        assert!(n > 0 && n <= rest.len());
        if let Packet::Publish(p) = &p {
            if p.qos <= 1 && !p.retain && !p.dup {
                let again = publish(&p.topic, &p.payload, p.qos, p.id.unwrap_or(0));
                assert_eq!(
                    decode(&again, 1 << 17).unwrap().map(|(q, _)| q),
                    Some(Packet::Publish(p.clone()))
                );
            }
        }
        let _ = topic_matches(
            "$hw/events/device/+/+/twin/+",
            match &p {
                Packet::Publish(p) => &p.topic,
                _ => "",
            },
        );
        rest = &rest[n..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trips_at_qos_0_and_1() {
        for (qos, id) in [(0, 0), (1, 7)] {
            let bytes = publish(
                "$hw/events/device/default/t/twin/update",
                b"{\"x\":1}",
                qos,
                id,
            );
            let (p, n) = decode(&bytes, 1 << 20).unwrap().unwrap();
            assert_eq!(n, bytes.len());
            match p {
                Packet::Publish(p) => {
                    assert_eq!(p.topic, "$hw/events/device/default/t/twin/update");
                    assert_eq!(p.payload, b"{\"x\":1}");
                    assert_eq!(p.qos, qos);
                    assert_eq!(p.id, (qos > 0).then_some(id));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn partial_input_waits_and_limits_hold() {
        let big = publish("t", &vec![b'x'; 300], 0, 0);
        for cut in 0..big.len() {
            assert_eq!(decode(&big[..cut], 1 << 20).unwrap(), None, "cut at {cut}");
        }
        assert!(matches!(decode(&big, 100), Err(MqttError::TooLarge { .. })));
        assert!(decode(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], 1 << 30).is_err());
        assert!(decode(&[0x20, 0x01, 0x00], 64).is_err());
        assert_eq!(
            decode(&[0x20, 0x02, 0x00, 0x00], 64).unwrap().unwrap().0,
            Packet::ConnAck {
                session_present: false,
                code: 0
            }
        );
        assert_eq!(
            decode(&[0xD0, 0x00], 64).unwrap().unwrap().0,
            Packet::PingResp
        );
        assert_eq!(
            decode(&[0x90, 0x03, 0x00, 0x05, 0x01], 64)
                .unwrap()
                .unwrap()
                .0,
            Packet::SubAck {
                id: 5,
                codes: vec![1]
            }
        );
        assert!(decode(&[0x36, 0x02, 0x00, 0x00], 64).is_err(), "QoS 3");
    }

    #[test]
    fn encodes_connect_and_subscribe_as_the_spec_says() {
        let c = connect("edgecore", 30, Some(("u", "p")));
        assert_eq!(&c[..2], &[0x10, c.len() as u8 - 2]);
        assert_eq!(&c[2..10], &[0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2]);
        let s = subscribe(1, &[("$hw/events/device/+/+/twin/+", 1)]);
        assert_eq!(s[0], 0x82);
        assert_eq!(*s.last().unwrap(), 1);
    }

    #[test]
    fn broker_side_packets_decode() {
        let c = connect("edgecore", 30, Some(("u", "p")));
        assert_eq!(
            decode(&c, 1024).unwrap().unwrap().0,
            Packet::Connect {
                client_id: "edgecore".into(),
                keepalive: 30,
                username: Some("u".into()),
                password: Some("p".into())
            }
        );
        let s = subscribe(3, &[("a/+", 1), ("b/#", 0)]);
        assert_eq!(
            decode(&s, 1024).unwrap().unwrap().0,
            Packet::Subscribe {
                id: 3,
                filters: vec![("a/+".into(), 1), ("b/#".into(), 0)]
            }
        );
        assert_eq!(decode(&pingreq(), 8).unwrap().unwrap().0, Packet::PingReq);
        assert_eq!(
            decode(&disconnect(), 8).unwrap().unwrap().0,
            Packet::Disconnect
        );
        assert!(
            decode(&[0x82, 0x02, 0x00, 0x01], 64).is_err(),
            "SUBSCRIBE without filters"
        );
        assert!(
            decode(&[0x10, 0x04, 0x00, 0x02, b'X', b'Y'], 64).is_err(),
            "wrong protocol name"
        );
        assert_eq!(
            decode(&suback(3, &[1, 0]), 64).unwrap().unwrap().0,
            Packet::SubAck {
                id: 3,
                codes: vec![1, 0]
            }
        );
    }

    #[test]
    fn topic_filters() {
        assert!(topic_matches(
            "$hw/events/device/+/+/twin/+",
            "$hw/events/device/default/t/twin/update"
        ));
        assert!(!topic_matches(
            "$hw/events/device/+/+/twin/+",
            "$hw/events/device/default/t/twin/update/result"
        ));
        assert!(topic_matches(
            "$hw/events/upload/#",
            "$hw/events/upload/a/b"
        ));
        assert!(topic_matches("+/user/#", "x/user/y"));
        assert!(!topic_matches("a/b", "a"));
    }
}
