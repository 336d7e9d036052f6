//! Bytes → [`Packet`], validating every field the spec constrains. Each rejection names the
//! normative statement it enforces, so a test per statement can check the exact reason.

use crate::{malformed, topic, Connect, Error, Level, Packet, Publish, QoS, Will};

/// Decodes one packet from the front of `buf`: `Ok(None)` while it is incomplete, the packet
/// and the bytes it used otherwise. A packet whose declared size exceeds `max_packet` is an
/// error as soon as its length bytes have arrived.
pub fn decode(buf: &[u8], max_packet: usize) -> Result<Option<(Packet, usize)>, Error> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    // Remaining Length: at most four bytes of seven bits each (§2.2.3).
    let mut len = 0usize;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len |= ((b & 0x7F) as usize) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return Err(malformed("MQTT-2.2.3", "Remaining Length over four bytes"));
        }
    }
    let total = i + len;
    if total > max_packet {
        return Err(Error::TooLarge {
            len: total,
            max: max_packet,
        });
    }
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[i..total];
    let flags = first & 0x0F;
    let kind = first >> 4;
    // Fixed header flags are fixed for every type but PUBLISH [MQTT-2.2.2-1], [MQTT-2.2.2-2].
    let want = match kind {
        3 => flags,
        6 | 8 | 10 => 0b0010, // PUBREL [MQTT-3.6.1-1], SUBSCRIBE [MQTT-3.8.1-1], UNSUBSCRIBE [MQTT-3.10.1-1]
        _ => 0,
    };
    if flags != want {
        return Err(malformed(
            "MQTT-2.2.2-2",
            "reserved fixed header flags are wrong",
        ));
    }
    let mut r = Reader { b: body, at: 0 };
    let p = match kind {
        1 => Packet::Connect(Box::new(connect(&mut r)?)),
        2 => {
            r.exact(2)?;
            let ack_flags = r.u8()?;
            if ack_flags & 0xFE != 0 {
                return Err(malformed("MQTT-3.2.2.1", "CONNACK reserved flag bits set"));
            }
            Packet::ConnAck {
                session_present: ack_flags == 1,
                code: r.u8()?,
            }
        }
        3 => Packet::Publish(publish(flags, &mut r)?),
        4 => Packet::PubAck(ack(&mut r)?),
        5 => Packet::PubRec(ack(&mut r)?),
        6 => Packet::PubRel(ack(&mut r)?),
        7 => Packet::PubComp(ack(&mut r)?),
        8 => {
            let pid = r.pid()?;
            let mut filters = Vec::new();
            while !r.done() {
                let f = r.string()?;
                topic::check_filter(&f).map_err(|rule| malformed(rule, "invalid topic filter"))?;
                let q = r.u8()?;
                let qos = QoS::from_bits(q)
                    .filter(|_| q & 0xFC == 0)
                    .ok_or(malformed(
                        "MQTT-3-8.3-4",
                        "SUBSCRIBE requested QoS is not 0, 1 or 2",
                    ))?;
                filters.push((f, qos));
            }
            if filters.is_empty() {
                return Err(malformed(
                    "MQTT-3.8.3-3",
                    "SUBSCRIBE without a topic filter",
                ));
            }
            Packet::Subscribe { pid, filters }
        }
        9 => {
            let pid = r.pid()?;
            let codes = r.rest().to_vec();
            if codes.is_empty() || codes.iter().any(|c| !matches!(c, 0 | 1 | 2 | 0x80)) {
                return Err(malformed("MQTT-3.9.3", "SUBACK return codes"));
            }
            Packet::SubAck { pid, codes }
        }
        10 => {
            let pid = r.pid()?;
            let mut filters = Vec::new();
            while !r.done() {
                let f = r.string()?;
                topic::check_filter(&f).map_err(|rule| malformed(rule, "invalid topic filter"))?;
                filters.push(f);
            }
            if filters.is_empty() {
                return Err(malformed(
                    "MQTT-3.10.3-2",
                    "UNSUBSCRIBE without a topic filter",
                ));
            }
            Packet::Unsubscribe { pid, filters }
        }
        11 => Packet::UnsubAck(ack(&mut r)?),
        12 => {
            r.exact(0)?;
            Packet::PingReq
        }
        13 => {
            r.exact(0)?;
            Packet::PingResp
        }
        14 => {
            r.exact(0)?;
            Packet::Disconnect
        }
        _ => return Err(malformed("MQTT-2.2.1", "reserved packet type")),
    };
    Ok(Some((p, total)))
}

fn ack(r: &mut Reader<'_>) -> Result<u16, Error> {
    r.exact(2)?;
    r.pid()
}

fn publish(flags: u8, r: &mut Reader<'_>) -> Result<Publish, Error> {
    let qos = QoS::from_bits((flags >> 1) & 3)
        .ok_or(malformed("MQTT-3.3.1-4", "PUBLISH with both QoS bits set"))?;
    let dup = flags & 0b1000 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(malformed("MQTT-3.3.1-2", "DUP set on a QoS 0 PUBLISH"));
    }
    let topic = r.string()?;
    topic::check_name(&topic).map_err(|rule| malformed(rule, "invalid topic name"))?;
    let pid = if qos == QoS::AtMostOnce { 0 } else { r.pid()? };
    Ok(Publish {
        dup,
        qos,
        retain: flags & 1 != 0,
        topic,
        pid,
        payload: r.rest().to_vec(),
    })
}

fn connect(r: &mut Reader<'_>) -> Result<Connect, Error> {
    let name = r.string()?;
    let level = r.u8()?;
    let level = match (name.as_str(), level) {
        ("MQTT", 4) => Level::V311,
        ("MQIsdp", 3) => Level::V31,
        ("MQTT", other) | ("MQIsdp", other) => return Err(Error::UnsupportedProtocol(other)),
        _ => {
            return Err(malformed(
                "MQTT-3.1.2-1",
                "CONNECT protocol name is not MQTT",
            ))
        }
    };
    let flags = r.u8()?;
    if flags & 1 != 0 {
        return Err(malformed("MQTT-3.1.2-3", "CONNECT reserved flag set"));
    }
    let will_flag = flags & 0b0000_0100 != 0;
    let will_qos = (flags >> 3) & 3;
    let will_retain = flags & 0b0010_0000 != 0;
    let has_password = flags & 0b0100_0000 != 0;
    let has_username = flags & 0b1000_0000 != 0;
    if !will_flag && will_qos != 0 {
        return Err(malformed("MQTT-3.1.2-13", "will QoS without a will"));
    }
    if !will_flag && will_retain {
        return Err(malformed("MQTT-3.1.2-15", "will retain without a will"));
    }
    if has_password && !has_username {
        return Err(malformed("MQTT-3.1.2-22", "password without a user name"));
    }
    let keepalive = r.u16()?;
    let client_id = r.string()?;
    let will = if will_flag {
        let qos = QoS::from_bits(will_qos).ok_or(malformed("MQTT-3.1.2-14", "will QoS 3"))?;
        let topic = r.string()?;
        topic::check_name(&topic).map_err(|rule| malformed(rule, "invalid will topic"))?;
        let payload = r.binary()?.to_vec();
        Some(Will {
            topic,
            payload,
            qos,
            retain: will_retain,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?.to_vec())
    } else {
        None
    };
    if !r.done() {
        return Err(malformed("MQTT-3.1.3-1", "bytes after the CONNECT payload"));
    }
    Ok(Connect {
        level,
        clean_session: flags & 0b10 != 0,
        keepalive,
        client_id,
        will,
        username,
        password,
    })
}

/// A cursor over one packet's body; running out of bytes is a malformed packet, since the
/// body's length was already known to be complete.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.at == self.b.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let s = self
            .b
            .get(self.at..self.at + n)
            .ok_or(malformed("MQTT-2.2.3", "packet shorter than its fields"))?;
        self.at += n;
        Ok(s)
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = &self.b[self.at..];
        self.at = self.b.len();
        s
    }

    fn exact(&self, n: usize) -> Result<(), Error> {
        if self.b.len() != n {
            return Err(malformed(
                "MQTT-2.2.3",
                "wrong Remaining Length for the packet type",
            ));
        }
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Error> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }

    /// A packet identifier: never 0 [MQTT-2.3.1-1].
    fn pid(&mut self) -> Result<u16, Error> {
        match self.u16()? {
            0 => Err(malformed("MQTT-2.3.1-1", "packet identifier 0")),
            id => Ok(id),
        }
    }

    fn binary(&mut self) -> Result<&'a [u8], Error> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    /// A UTF-8 string (§1.5.3): well-formed, no surrogates [MQTT-1.5.3-1] (Rust's decoder
    /// refuses them), no U+0000 [MQTT-1.5.3-2]. A BOM is kept, never stripped [MQTT-1.5.3-3].
    fn string(&mut self) -> Result<String, Error> {
        let b = self.binary()?;
        let s = std::str::from_utf8(b)
            .map_err(|_| malformed("MQTT-1.5.3-1", "string is not well-formed UTF-8"))?;
        if s.contains('\0') {
            return Err(malformed("MQTT-1.5.3-2", "string contains U+0000"));
        }
        Ok(s.to_owned())
    }
}

#[cfg(test)]
mod tests;
