//! The beehive `Message` and its JSON codec (§1.1–1.2).
//!
//! One message is one WebSocket frame: a JSON document, which upstream writes with a trailing
//! newline. Field names and their order on output follow the Go struct; input accepts any order
//! and tolerates the newline. `content` stays a generic JSON value so that no field the peer
//! sent is lost; [`Message::content_bytes`] applies upstream's "a JSON string means these bytes"
//! rule.

use serde::{Deserialize, Serialize};

use crate::route::{Group, ModuleName, Operation};

/// Why bytes from the wire are not a message. Every malformed input ends here; nothing panics.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame is not a valid message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("frame has no header.msg_id")]
    MissingId,
    #[error("frame of {len} bytes is over the {max} byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("frame is {0}")]
    TooDeep(crate::limits::LimitError),
}

/// `header` (§1.1). Empty optional fields are omitted on output exactly as Go's `omitempty`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Header {
    pub msg_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub parent_msg_id: String,
    /// Unix milliseconds.
    pub timestamp: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resourceversion: String,
    #[serde(skip_serializing_if = "is_false")]
    pub sync: bool,
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    pub kind: String,
}

/// `route` (§1.1).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Route {
    #[serde(skip_serializing_if = "module_is_empty")]
    pub source: ModuleName,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub destination: String,
    #[serde(skip_serializing_if = "group_is_empty")]
    pub group: Group,
    #[serde(skip_serializing_if = "operation_is_empty")]
    pub operation: Operation,
    /// Kept as text: its grammar depends on the group (an MQTT topic for `user`, a resource
    /// path otherwise). Parse it with [`crate::ResourcePath::parse`].
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource: String,
}

/// One beehive message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub route: Route,
    /// Always emitted; `null` when empty, as Go does.
    #[serde(default)]
    pub content: serde_json::Value,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn module_is_empty(m: &ModuleName) -> bool {
    m.as_str().is_empty()
}
fn group_is_empty(g: &Group) -> bool {
    g.as_str().is_empty()
}
fn operation_is_empty(o: &Operation) -> bool {
    o.as_str().is_empty()
}

/// Whether `bytes` is the zero `model.Message` upstream's edgehub sends once while it shuts
/// down: `{"header":{"msg_id":"","timestamp":0},"route":{},"content":null}`.
pub fn is_empty_frame(bytes: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return false;
    };
    v["header"]["msg_id"] == ""
        && v["route"].as_object().is_some_and(|r| r.is_empty())
        && v["content"].is_null()
}

/// A fresh random (version 4) UUID in the textual form upstream uses for `msg_id`.
pub fn new_msg_id() -> String {
    uuid_v4(fastrand::u128(..))
}

/// Formats `random` as a version 4 UUID (the version and variant bits are forced).
pub fn uuid_v4(random: u128) -> String {
    let v = (random & !(0xF << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let b = v.to_be_bytes();
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        s.push(char::from_digit(u32::from(byte & 0xF), 16).unwrap_or('0'));
    }
    s
}

impl Message {
    /// A new request with a fresh id and no parent.
    pub fn new(
        source: ModuleName,
        group: Group,
        operation: Operation,
        resource: impl Into<String>,
        content: serde_json::Value,
        now_ms: i64,
    ) -> Self {
        Message {
            header: Header {
                msg_id: new_msg_id(),
                timestamp: now_ms,
                ..Header::default()
            },
            route: Route {
                source,
                group,
                operation,
                resource: resource.into(),
                ..Route::default()
            },
            content,
        }
    }

    /// Parses one frame. Accepts text or binary payloads, a trailing newline and any field order.
    /// Frames nested deeper than [`crate::limits::MAX_FRAME_DEPTH`] are refused before parsing.
    pub fn decode(bytes: &[u8], max_len: usize) -> Result<Self, DecodeError> {
        if bytes.len() > max_len {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: max_len,
            });
        }
        crate::limits::check_json_depth(bytes, crate::limits::MAX_FRAME_DEPTH)
            .map_err(DecodeError::TooDeep)?;
        let msg: Message = serde_json::from_slice(bytes)?;
        if msg.header.msg_id.is_empty() {
            return Err(DecodeError::MissingId);
        }
        Ok(msg)
    }

    /// Serializes as gorilla's `WriteJSON` does: the JSON document and a trailing newline.
    pub fn encode(&self) -> String {
        // Serializing a Value-backed struct cannot fail (no non-string map keys).
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// `NewRespByMessage(req, content)`: a reply that copies the request's source, group,
    /// resource and type, with operation `response` and `parent_msg_id` = the request's id (§1.1).
    pub fn response_to(&self, content: serde_json::Value, now_ms: i64) -> Message {
        Message {
            header: Header {
                msg_id: new_msg_id(),
                parent_msg_id: self.header.msg_id.clone(),
                timestamp: now_ms,
                kind: self.header.kind.clone(),
                ..Header::default()
            },
            route: Route {
                source: self.route.source.clone(),
                group: self.route.group.clone(),
                operation: Operation::Response,
                resource: self.route.resource.clone(),
                ..Route::default()
            },
            content,
        }
    }

    /// The acknowledgement upstream edgecore sends for a delivered object (§3.6): a response
    /// with content `"OK"`.
    pub fn ack(&self, now_ms: i64) -> Message {
        self.response_to(serde_json::Value::String("OK".into()), now_ms)
    }

    /// The id of the request this message answers, if it is an answer.
    pub fn parent_id(&self) -> Option<&str> {
        (!self.header.parent_msg_id.is_empty()).then_some(self.header.parent_msg_id.as_str())
    }

    /// Whether the content is the plain `"OK"` acknowledgement.
    pub fn is_ok_content(&self) -> bool {
        self.content.as_str() == Some("OK")
    }

    /// `GetContentData()` (§1.2): a JSON string is its raw bytes, anything else its JSON text.
    pub fn content_bytes(&self) -> Vec<u8> {
        match &self.content {
            serde_json::Value::String(s) => s.as_bytes().to_vec(),
            other => serde_json::to_vec(other).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keepalive_serializes_with_upstream_field_names_and_order() {
        let mut m = Message::new(
            ModuleName::WebSocket,
            Group::Resource,
            Operation::Keepalive,
            "node",
            json!("ping"),
            1718006400000,
        );
        m.header.msg_id = "6f1c2a1e-2d7b-4c4e-9a31-1b0f3b2f8e10".into();
        assert_eq!(
            m.encode(),
            "{\"header\":{\"msg_id\":\"6f1c2a1e-2d7b-4c4e-9a31-1b0f3b2f8e10\",\"timestamp\":1718006400000},\
             \"route\":{\"source\":\"websocket\",\"group\":\"resource\",\"operation\":\"keepalive\",\"resource\":\"node\"},\
             \"content\":\"ping\"}\n"
        );
    }

    #[test]
    fn ack_copies_route_and_sets_parent() {
        let req = Message::decode(
            br#"{"header":{"msg_id":"11aa","timestamp":1,"resourceversion":"7"},"route":{"source":"edgecontroller","group":"resource","operation":"insert","resource":"default/pod/nginx"},"content":{}}"#,
            1 << 20,
        )
        .unwrap();
        let ack = req.ack(5);
        assert_eq!(ack.header.parent_msg_id, "11aa");
        assert_ne!(ack.header.msg_id, "11aa");
        assert_eq!(ack.route.source, ModuleName::EdgeController);
        assert_eq!(ack.route.group, Group::Resource);
        assert_eq!(ack.route.operation, Operation::Response);
        assert_eq!(ack.route.resource, "default/pod/nginx");
        assert!(ack.is_ok_content());
        assert!(ack.header.resourceversion.is_empty());
    }

    #[test]
    fn malformed_frames_are_errors() {
        for bad in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"header\":5}",
            b"{\"header\":{\"msg_id\":7}}",
            b"{\"route\":{}}",
            b"{\"header\":{\"msg_id\":\"x\"",
            b"\xff\xfe",
        ] {
            assert!(Message::decode(bad, 1 << 20).is_err(), "{:?}", bad);
        }
        assert!(matches!(
            Message::decode(&[b' '; 100], 10),
            Err(DecodeError::TooLarge { len: 100, max: 10 })
        ));
    }

    #[test]
    fn frames_nested_past_the_limit_are_refused_before_parsing() {
        let deep = |levels: usize| {
            format!(
                "{{\"header\":{{\"msg_id\":\"a\"}},\"content\":{}1{}}}",
                "[".repeat(levels),
                "]".repeat(levels)
            )
        };
        let max = crate::limits::MAX_FRAME_DEPTH;
        // The frame's own object is one level: content may nest to the rest.
        assert!(Message::decode(deep(max - 1).as_bytes(), 1 << 20).is_ok());
        assert!(matches!(
            Message::decode(deep(max).as_bytes(), 1 << 20),
            Err(DecodeError::TooDeep(_))
        ));
    }

    #[test]
    fn trailing_newline_and_binary_payloads_are_accepted() {
        let m = Message::decode(
            b"{\"header\":{\"msg_id\":\"a\"},\"route\":{},\"content\":null}\n",
            1024,
        )
        .unwrap();
        assert_eq!(m.header.msg_id, "a");
        assert!(m.content.is_null());
    }

    #[test]
    fn upstreams_shutdown_frame_is_recognised() {
        let frame =
            b"{\"header\":{\"msg_id\":\"\",\"timestamp\":0},\"route\":{},\"content\":null}\n";
        assert!(matches!(
            Message::decode(frame, 1 << 20),
            Err(DecodeError::MissingId)
        ));
        assert!(is_empty_frame(frame));
        assert!(!is_empty_frame(
            b"{\"header\":{\"msg_id\":\"\"},\"route\":{\"source\":\"x\"},\"content\":null}"
        ));
        assert!(!is_empty_frame(b"not json"));
    }

    #[test]
    fn content_bytes_follows_get_content_data() {
        let mut m = Message {
            content: json!("{\"status\":{}}"),
            ..Message::default()
        };
        assert_eq!(m.content_bytes(), b"{\"status\":{}}");
        m.content = json!({"a": 1});
        assert_eq!(m.content_bytes(), b"{\"a\":1}");
    }

    #[test]
    fn uuids_are_version_4() {
        let id = uuid_v4(u128::MAX);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(new_msg_id(), new_msg_id());
    }
}
