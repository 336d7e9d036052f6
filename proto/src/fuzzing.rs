//! The body of the `frame` fuzz target (`proto/fuzz`), here so the stable test suite can run
//! the same code over the seed corpus and its mutations.
//!
//! Contract: for any bytes, parsing returns a value or an error and never panics; whatever
//! parses re-encodes to something that parses to the same message.

use crate::objresp::Reply;
use crate::token::EnrollToken;
use crate::{Message, ResourcePath};

/// Runs every parser that sees bytes from the wire over `data`.
pub fn frame(data: &[u8]) {
    if let Ok(msg) = Message::decode(data, 1 << 20) {
        let again =
            Message::decode(msg.encode().as_bytes(), 1 << 21).expect("re-encoded message parses");
        assert_eq!(again, msg, "encode/decode round trip");
        if let Ok(path) = ResourcePath::parse(&msg.route.resource) {
            assert_eq!(
                path.to_string(),
                msg.route.resource,
                "resource path round trip"
            );
        }
        let _ = Reply::from_content(&msg.content);
        let _ = msg.content_bytes();
        let _ = msg.ack(0);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(t) = EnrollToken::parse(s) {
            assert_eq!(EnrollToken::parse(&t.to_string()).as_ref(), Ok(&t));
        }
        let _ = ResourcePath::parse(s);
        let _ = crate::time::parse_rfc3339(s);
    }
}
