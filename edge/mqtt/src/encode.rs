//! [`Packet`] → bytes. Encoding trusts its input (the caller built it); what a peer sends is
//! checked by [`crate::decode`].

use crate::{Level, Packet, QoS};

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// A length-prefixed string or binary field (at most 65,535 bytes; longer is cut, which only
/// a caller bug could cause: topics and ids are validated before they get here).
fn put_bytes(out: &mut Vec<u8>, s: &[u8]) {
    let s = &s[..s.len().min(u16::MAX as usize)];
    put_u16(out, s.len() as u16);
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

fn header(out: &mut Vec<u8>, first: u8, body_len: usize) {
    out.push(first);
    put_remaining_len(out, body_len);
}

/// A PUBLISH from borrowed parts (the broker's fan-out writes one per subscriber without
/// building a [`crate::Publish`] each time). `pid` is written for QoS 1 and 2 only.
pub fn encode_publish(
    out: &mut Vec<u8>,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    pid: u16,
    dup: bool,
    retain: bool,
) {
    let pid_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let first = 0x30 | (u8::from(dup) << 3) | ((qos as u8) << 1) | u8::from(retain);
    header(out, first, 2 + topic.len() + pid_len + payload.len());
    put_bytes(out, topic.as_bytes());
    if qos != QoS::AtMostOnce {
        put_u16(out, pid);
    }
    out.extend_from_slice(payload);
}

impl Packet {
    /// Appends the packet's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let ack = |out: &mut Vec<u8>, first: u8, pid: u16| {
            header(out, first, 2);
            put_u16(out, pid);
        };
        match self {
            Packet::Connect(c) => {
                let mut b = Vec::with_capacity(64);
                match c.level {
                    Level::V311 => put_bytes(&mut b, b"MQTT"),
                    Level::V31 => put_bytes(&mut b, b"MQIsdp"),
                }
                b.push(c.level as u8);
                let mut flags = u8::from(c.clean_session) << 1;
                if let Some(w) = &c.will {
                    flags |= 0b100 | ((w.qos as u8) << 3) | (u8::from(w.retain) << 5);
                }
                if c.username.is_some() {
                    flags |= 0x80;
                }
                if c.password.is_some() {
                    flags |= 0x40;
                }
                b.push(flags);
                put_u16(&mut b, c.keepalive);
                put_bytes(&mut b, c.client_id.as_bytes());
                if let Some(w) = &c.will {
                    put_bytes(&mut b, w.topic.as_bytes());
                    put_bytes(&mut b, &w.payload);
                }
                if let Some(u) = &c.username {
                    put_bytes(&mut b, u.as_bytes());
                }
                if let Some(p) = &c.password {
                    put_bytes(&mut b, p);
                }
                header(out, 0x10, b.len());
                out.extend(b);
            }
            Packet::ConnAck {
                session_present,
                code,
            } => out.extend_from_slice(&[0x20, 2, u8::from(*session_present), *code]),
            Packet::Publish(p) => {
                encode_publish(out, &p.topic, &p.payload, p.qos, p.pid, p.dup, p.retain)
            }
            Packet::PubAck(id) => ack(out, 0x40, *id),
            Packet::PubRec(id) => ack(out, 0x50, *id),
            Packet::PubRel(id) => ack(out, 0x62, *id),
            Packet::PubComp(id) => ack(out, 0x70, *id),
            Packet::Subscribe { pid, filters } => {
                let len = 2 + filters.iter().map(|(f, _)| 3 + f.len()).sum::<usize>();
                header(out, 0x82, len);
                put_u16(out, *pid);
                for (f, q) in filters {
                    put_bytes(out, f.as_bytes());
                    out.push(*q as u8);
                }
            }
            Packet::SubAck { pid, codes } => {
                header(out, 0x90, 2 + codes.len());
                put_u16(out, *pid);
                out.extend_from_slice(codes);
            }
            Packet::Unsubscribe { pid, filters } => {
                let len = 2 + filters.iter().map(|f| 2 + f.len()).sum::<usize>();
                header(out, 0xA2, len);
                put_u16(out, *pid);
                for f in filters {
                    put_bytes(out, f.as_bytes());
                }
            }
            Packet::UnsubAck(id) => ack(out, 0xB0, *id),
            Packet::PingReq => out.extend_from_slice(&[0xC0, 0]),
            Packet::PingResp => out.extend_from_slice(&[0xD0, 0]),
            Packet::Disconnect => out.extend_from_slice(&[0xE0, 0]),
        }
    }

    /// The packet's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}
