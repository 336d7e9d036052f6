//! The MQTT 3.1.1 packets an EventBus client needs, as a sans-IO codec: CONNECT/CONNACK,
//! SUBSCRIBE/SUBACK, PUBLISH (QoS 0 and 1)/PUBACK, PINGREQ/PINGRESP, DISCONNECT.
//!
//! [`decode`] takes whatever bytes have arrived and returns a packet and its length, `None`
//! when more bytes are needed, or an error for malformed input; it never panics and never
//! accepts a packet larger than the caller's limit.

/// A decoded packet (the client-relevant subset).
#[derive(Clone, Debug, PartialEq)]
pub enum Packet {
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
