//! Golden tests: every frame an unmodified upstream edgecore (and the reference test cloud)
//! put on the wire parses, and re-serializes with the same field names and values.

use proto::{Message, ResourcePath};
use serde_json::Value;

const FRAMES: &str = include_str!("golden/upstream-edgecore-frames.jsonl");

fn frames() -> Vec<(String, Value)> {
    FRAMES
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("golden line is JSON");
            (
                v["direction"].as_str().unwrap().to_owned(),
                v["frame"].clone(),
            )
        })
        .collect()
}

#[test]
fn every_golden_frame_round_trips() {
    let all = frames();
    assert!(all.len() >= 10, "golden file lost frames: {}", all.len());
    for (dir, frame) in all {
        let wire = serde_json::to_vec(&frame).unwrap();
        let msg = Message::decode(&wire, 1 << 20).unwrap_or_else(|e| panic!("{dir}: {e}"));
        let again: Value = serde_json::from_str(msg.encode().trim_end()).unwrap();
        assert_eq!(again, frame, "{dir} frame changed on re-serialization");
        // Upstream's trailing newline is tolerated too.
        let mut nl = wire.clone();
        nl.push(b'\n');
        assert_eq!(Message::decode(&nl, 1 << 20).unwrap(), msg);
    }
}

#[test]
fn every_golden_resource_path_parses_and_prints_back() {
    for (_, frame) in frames() {
        let res = frame["route"]["resource"].as_str().unwrap();
        let path = ResourcePath::parse(res).unwrap_or_else(|e| panic!("{res}: {e}"));
        assert_eq!(path.to_string(), res);
    }
}

#[test]
fn golden_edge_frames_have_the_shapes_our_edge_produces() {
    use proto::{Group, ModuleName, Operation};
    let edge: Vec<Message> = frames()
        .into_iter()
        .filter(|(d, _)| d == "edge-to-cloud")
        .map(|(_, f)| serde_json::from_value(f).unwrap())
        .collect();
    let keepalive = edge
        .iter()
        .find(|m| m.route.operation == Operation::Keepalive)
        .unwrap();
    assert_eq!(keepalive.route.source, ModuleName::WebSocket);
    assert_eq!(keepalive.route.group, Group::Resource);
    assert_eq!(keepalive.route.resource, "node");
    assert_eq!(keepalive.content, Value::String("ping".into()));
    let register = edge
        .iter()
        .find(|m| {
            m.route.operation == Operation::Insert && m.route.resource.starts_with("null/node/")
        })
        .unwrap();
    assert_eq!(register.route.source, ModuleName::Edged);
    assert_eq!(register.route.group, Group::Meta);
    assert_eq!(
        register.content["metadata"]["labels"][proto::EDGE_ROLE_LABEL],
        ""
    );
    let patch = edge
        .iter()
        .find(|m| m.route.operation == Operation::Patch)
        .unwrap();
    assert!(
        patch.content.is_string(),
        "node patches travel as a JSON string"
    );
    for ack in edge
        .iter()
        .filter(|m| m.route.operation == Operation::Response)
    {
        assert!(ack.is_ok_content());
        assert!(ack.parent_id().is_some());
    }
}

/// Upstream edgecore's last frame when it stops (`upstream-shapes.jsonl`): recognised, not an
/// error.
#[test]
fn the_empty_shutdown_frame_is_recognised() {
    const SHAPES: &str = include_str!("golden/upstream-shapes.jsonl");
    let raw = SHAPES
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["name"] == "empty-shutdown-frame")
        .unwrap();
    let bytes = raw["raw"].as_str().unwrap().as_bytes();
    assert!(proto::message::is_empty_frame(bytes));
    assert!(proto::Message::decode(bytes, 1 << 20).is_err());
}
