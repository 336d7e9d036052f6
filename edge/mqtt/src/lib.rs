//! MQTT 3.1.1 (OASIS standard, 29 October 2014) as a sans-IO codec.
//!
//! - [`decode`] takes whatever bytes have arrived and returns one [`Packet`] and its length,
//!   `None` when more bytes are needed, or an [`Error`] naming the normative statement the input
//!   breaks (`[MQTT-3.1.2-3]`). It never panics, never reads past the packet, and refuses a
//!   packet larger than the caller's limit as soon as its length is known, before buffering it.
//! - [`Packet::encode`] writes any packet; [`encode_publish`] writes a PUBLISH from borrowed
//!   parts, for fan-out without copying the message first.
//! - [`topic`] validates topic names and filters and matches them (with the `$` rule).
//!
//! Validation is the same in both directions; which packets a side may *receive* (a client
//! never sends CONNACK) is the peer's business, because only the peer knows its role.

#![forbid(unsafe_code)]

mod decode;
mod encode;
pub mod topic;

pub use decode::decode;
pub use encode::encode_publish;

/// Quality of service of a message or subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for bits `0..=2`; 3 is not a QoS.
    pub fn from_bits(b: u8) -> Option<QoS> {
        match b {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// The protocol levels a CONNECT may carry that this codec reads: 3.1.1 (`MQTT`, 4) and
/// 3.1 (`MQIsdp`, 3), as mosquitto accepts both. Anything else is [`Error::UnsupportedProtocol`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    V31 = 3,
    V311 = 4,
}

/// CONNACK return codes (§3.2.2.3).
pub mod connack {
    pub const ACCEPTED: u8 = 0;
    pub const UNACCEPTABLE_PROTOCOL: u8 = 1;
    pub const IDENTIFIER_REJECTED: u8 = 2;
    pub const SERVER_UNAVAILABLE: u8 = 3;
    pub const BAD_CREDENTIALS: u8 = 4;
    pub const NOT_AUTHORIZED: u8 = 5;
}

/// The SUBACK return code for a refused filter (§3.9.3).
pub const SUBACK_FAILURE: u8 = 0x80;

/// A will message (§3.1.2.5).
#[derive(Clone, Debug, PartialEq)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Connect {
    pub level: Level,
    pub clean_session: bool,
    /// Seconds; 0 turns keepalive off (§3.1.2.10).
    pub keepalive: u16,
    /// May be empty (§3.1.3.1): the server assigns one if the session is clean.
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    /// Binary data (§3.1.3.5).
    pub password: Option<Vec<u8>>,
}

impl Connect {
    /// A 3.1.1 CONNECT with no will and no credentials.
    pub fn new(client_id: &str, keepalive: u16, clean_session: bool) -> Connect {
        Connect {
            level: Level::V311,
            clean_session,
            keepalive,
            client_id: client_id.to_owned(),
            will: None,
            username: None,
            password: None,
        }
    }

    /// With a user name and password.
    pub fn credentials(mut self, user: &str, password: &str) -> Connect {
        self.username = Some(user.to_owned());
        self.password = Some(password.as_bytes().to_vec());
        self
    }

    pub fn to_bytes(self) -> Vec<u8> {
        Packet::Connect(Box::new(self)).to_bytes()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: String,
    /// The packet identifier; 0 (absent on the wire) for QoS 0.
    pub pid: u16,
    pub payload: Vec<u8>,
}

impl Publish {
    /// A PUBLISH as a client first sends it (DUP=0, RETAIN=0); `pid` is ignored at QoS 0.
    pub fn new(topic: &str, payload: &[u8], qos: QoS, pid: u16) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.to_owned(),
            pid: if qos == QoS::AtMostOnce { 0 } else { pid },
            payload: payload.to_vec(),
        }
    }
}

/// Every MQTT 3.1.1 control packet.
#[derive(Clone, Debug, PartialEq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck {
        session_present: bool,
        code: u8,
    },
    Publish(Publish),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    /// Filters with their requested QoS, in order.
    Subscribe {
        pid: u16,
        filters: Vec<(String, QoS)>,
    },
    /// One return code per filter: a granted QoS (0..=2) or [`SUBACK_FAILURE`].
    SubAck {
        pid: u16,
        codes: Vec<u8>,
    },
    Unsubscribe {
        pid: u16,
        filters: Vec<String>,
    },
    UnsubAck(u16),
    PingReq,
    PingResp,
    Disconnect,
}

impl Packet {
    /// The packet's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck { .. } => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe { .. } => "SUBSCRIBE",
            Packet::SubAck { .. } => "SUBACK",
            Packet::Unsubscribe { .. } => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect => "DISCONNECT",
        }
    }
}

/// Why bytes are not an acceptable packet. Every variant means "close the connection"
/// ([MQTT-4.8.0-1]); [`Error::UnsupportedProtocol`] asks a server to send CONNACK 0x01 first
/// ([MQTT-3.1.2-2]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("MQTT packet of {len} bytes is over the {max} byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("malformed MQTT packet: {what} [{rule}]")]
    Malformed {
        /// The normative statement broken, e.g. `MQTT-3.1.2-3`.
        rule: &'static str,
        what: &'static str,
    },
    #[error(
        "unsupported MQTT protocol level {0} (this server speaks 3.1.1 and 3.1) [MQTT-3.1.2-2]"
    )]
    UnsupportedProtocol(u8),
}

pub(crate) fn malformed(rule: &'static str, what: &'static str) -> Error {
    Error::Malformed { rule, what }
}

/// The body of the `packet` fuzz target (`edge/mqtt/fuzz`), also run by the stable test
/// suite over the seed corpus: decoding never panics, consumes at most what it was given, and
/// whatever decodes re-encodes to bytes that decode to the same packet.
#[doc(hidden)]
pub fn fuzz(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((p, n))) = decode(rest, 1 << 16) {
        assert!(n > 0 && n <= rest.len());
        let mut again = Vec::new();
        p.encode(&mut again);
        assert_eq!(
            decode(&again, 1 << 17).unwrap().map(|(q, _)| q),
            Some(p.clone())
        );
        if let Packet::Publish(p) = &p {
            let _ = topic::matches("$hw/events/device/+/+/twin/+", &p.topic);
            let _ = topic::matches("#", &p.topic);
        }
        rest = &rest[n..];
    }
}
