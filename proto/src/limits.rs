//! The size and shape limits both sides of the tunnel agree on, named once.
//!
//! An object the cloud stores must fit in one frame the edge accepts, with room for the
//! message around it; that relation is checked at compile time below, so raising one limit
//! without the other does not build. Depth is limited wherever JSON comes from outside
//! (frames, patches inside frames, manifests, config files) and checked on the bytes before
//! they are parsed, so nothing deeper than the limit is ever built, stored or echoed to
//! another client (serde_json's own limit is 128 levels; an object stored at 124 levels can
//! no longer be read back inside a list, which is how one node's status broke `get nodes` for
//! everyone).

use serde_json::Value;

/// Largest WebSocket message the edge accepts (edgehub's reader). Upstream's edge has none of
/// its own; 4 MiB is ours, sized for a gateway's memory.
pub const EDGE_MAX_FRAME_BYTES: usize = 4 << 20;

/// Largest object the cloud stores, of any kind, as compact JSON: about what etcd holds per
/// object in Kubernetes (`--max-request-bytes` 1.5 MiB). Applies to what is stored after
/// defaults and status reports, not only to what a client sent.
pub const MAX_OBJECT_BYTES: usize = 3 << 19;

/// Room kept in a frame for what goes around an object: header (ids, timestamp, version),
/// route (a resource path is at most ~600 bytes), the `{"Object":…,"Err":null}` reply shape.
pub const MAX_ENVELOPE_BYTES: usize = 64 << 10;

// Every object the cloud may store fits in one frame the edge accepts.
const _: () = assert!(MAX_OBJECT_BYTES + MAX_ENVELOPE_BYTES <= EDGE_MAX_FRAME_BYTES);

/// Deepest nesting (levels of `{` and `[`) of an object or patch: Kubernetes objects need
/// about 10 (pod affinity terms), CRD schemas a few dozen.
pub const MAX_JSON_DEPTH: usize = 64;

/// Deepest nesting of a whole frame: an object plus the levels the message and reply shapes
/// add around it (`content`, `Object`, list items).
pub const MAX_FRAME_DEPTH: usize = MAX_JSON_DEPTH + 8;

// A list of stored objects inside a reply still parses with serde_json's default limit.
const _: () = assert!(MAX_FRAME_DEPTH + 8 < 128);

/// Why JSON bytes were refused before parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("{len} bytes is over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("nested deeper than the limit of {max} levels")]
    TooDeep { max: usize },
}

/// Checks that the JSON text `bytes` nests at most `max` levels, without parsing it: a scan
/// that counts brackets outside strings, so it stops at the first level too deep whatever
/// follows. Says nothing about whether the text is valid JSON (the parser that follows does).
pub fn check_json_depth(bytes: &[u8], max: usize) -> Result<(), LimitError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(LimitError::TooDeep { max });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Why outside JSON could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("not JSON: {0}")]
    Syntax(#[from] serde_json::Error),
}

/// Parses an object or patch from outside: at most [`MAX_OBJECT_BYTES`] and
/// [`MAX_JSON_DEPTH`] levels, both checked before parsing.
pub fn parse_json(bytes: &[u8]) -> Result<Value, JsonError> {
    if bytes.len() > MAX_OBJECT_BYTES {
        return Err(LimitError::TooLarge {
            len: bytes.len(),
            max: MAX_OBJECT_BYTES,
        }
        .into());
    }
    check_json_depth(bytes, MAX_JSON_DEPTH)?;
    Ok(serde_json::from_slice(bytes)?)
}

/// Levels of nesting of a parsed value (a scalar is 0, `{}` and `[]` are 1).
pub fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Bytes of `v` as compact JSON (what it takes in a frame and in the store), without
/// building the text.
pub fn json_len<T: serde::Serialize + ?Sized>(v: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Values and messages (string keys only) written to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> String {
        format!("{}{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn depth_is_counted_outside_strings_only() {
        assert!(check_json_depth(nested(64).as_bytes(), 64).is_ok());
        assert_eq!(
            check_json_depth(nested(65).as_bytes(), 64),
            Err(LimitError::TooDeep { max: 64 })
        );
        // Brackets inside strings, escaped quotes included, are text.
        let s = format!(r#"{{"a":"\"{}"}}"#, "[{".repeat(500));
        assert!(check_json_depth(s.as_bytes(), 1).is_ok());
        assert!(check_json_depth(br#"{"a":{"b":[1]}}"#, 3).is_ok());
        assert!(check_json_depth(br#"{"a":{"b":[1]}}"#, 2).is_err());
        // A scan stops at the first level too deep, however long the rest is.
        let huge = "[".repeat(1 << 20);
        assert!(check_json_depth(huge.as_bytes(), 64).is_err());
    }

    #[test]
    fn parse_json_checks_before_parsing_and_agrees_with_depth() {
        let v = parse_json(nested(64).as_bytes()).unwrap();
        assert_eq!(depth(&v), 64);
        assert!(matches!(
            parse_json(nested(65).as_bytes()),
            Err(JsonError::Limit(LimitError::TooDeep { .. }))
        ));
        // Deeper than serde_json's own limit: refused as too deep, not as a parse error.
        assert!(matches!(
            parse_json(nested(200).as_bytes()),
            Err(JsonError::Limit(_))
        ));
        let big = format!("\"{}\"", "x".repeat(MAX_OBJECT_BYTES));
        assert!(matches!(
            parse_json(big.as_bytes()),
            Err(JsonError::Limit(LimitError::TooLarge { .. }))
        ));
        assert!(matches!(parse_json(b"{nope"), Err(JsonError::Syntax(_))));
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({"a": [1, {"b": {}}]})), 4);
    }

    #[test]
    fn json_len_is_the_compact_encoding() {
        let v = json!({"a": [1, "é\"x"], "b": null});
        assert_eq!(json_len(&v), serde_json::to_vec(&v).unwrap().len());
    }
}
