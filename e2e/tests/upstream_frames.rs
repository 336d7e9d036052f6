//! cloudcore accepts what an unmodified upstream edgecore sends: every edge-to-cloud frame of
//! the golden capture, replayed in order over a real mutual-TLS WebSocket to a real cloudcore,
//! gets the reply upstream's cloudcore would give (or none where upstream gives none).

use std::collections::HashSet;
use std::time::Duration;

use async_tungstenite::tungstenite::Message as Ws;
use e2e::{Cloud, Edge};
use proto::objresp::Reply;
use proto::{Message, Operation};
use serde_json::Value;
use smol::future::FutureExt;
use smol::stream::StreamExt;

const FRAMES: &str = include_str!("../../proto/tests/golden/upstream-edgecore-frames.jsonl");

#[test]
fn golden_upstream_edge_frames_get_upstream_shaped_replies() {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0"); // the capture's node name
    edge.join_ok(&cloud);
    let frames: Vec<Message> = FRAMES
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["direction"] == "edge-to-cloud")
        .map(|v| serde_json::from_value(v["frame"].clone()).unwrap())
        .collect();
    assert!(frames.len() >= 9);

    smol::block_on(async {
        // The URL and headers upstream edgecore sends (§3.2); the path is ignored by the server.
        let mut ws = e2e::upstream_edge::connect(&cloud, &edge).await;

        let next_reply = async |ws: &mut async_tungstenite::WebSocketStream<_>| -> Message {
            let frame = async { ws.next().await }
                .or(async {
                    smol::Timer::after(Duration::from_secs(10)).await;
                    None
                })
                .await
                .expect("a reply within 10 s")
                .unwrap();
            Message::decode(frame.into_data().as_ref(), 1 << 24).unwrap()
        };

        let mut answered = HashSet::new();
        for f in &frames {
            // Upstream writes JSON plus a newline in a text frame.
            ws.send(Ws::text(f.encode())).await.unwrap();
            if f.route.operation == Operation::Get && f.route.resource == "membership/detail" {
                // Answered (upstream cloudcore drops it, and the edge asks every minute): the
                // node's whole membership, then a confirmation of the request.
                let detail = next_reply(&mut ws).await;
                assert_eq!(
                    (detail.route.group.as_str(), detail.route.resource.as_str()),
                    ("twin", "membership/detail")
                );
                assert!(detail.header.parent_msg_id.is_empty());
                assert_eq!(detail.content["devices"], serde_json::json!([]));
                let confirm = next_reply(&mut ws).await;
                assert_eq!(confirm.header.parent_msg_id, f.header.msg_id);
                assert_eq!(confirm.route.resource, "twin");
                continue;
            }
            let expects_reply = !matches!(
                f.route.operation,
                Operation::Keepalive | Operation::Response
            );
            if !expects_reply {
                continue;
            }
            let r = next_reply(&mut ws).await;
            assert_eq!(
                r.header.parent_msg_id, f.header.msg_id,
                "replies come in order, one per request"
            );
            assert_eq!(r.route.operation, Operation::Response);
            assert_eq!(r.route.resource, f.route.resource);
            assert_eq!(r.route.source.as_str(), "edgecontroller");
            let reply = Reply::from_content(&r.content);
            match (f.route.operation.as_str(), f.route.resource.as_str()) {
                ("query", "kube-node-lease/lease/edge0") => {
                    assert!(reply.is_not_found(), "{reply:?}")
                }
                ("insert", "null/node/edge0") => match &reply {
                    Reply::Object(n) => {
                        assert_eq!(n["metadata"]["name"], "edge0");
                        assert!(n["metadata"]["uid"].is_string());
                        assert!(!r.header.resourceversion.is_empty());
                    }
                    other => panic!("node insert answered {other:?}"),
                },
                ("patch", _) | ("insert", "kube-node-lease/lease/edge0") => {
                    assert!(
                        matches!(reply, Reply::Object(_)),
                        "{} answered {reply:?}",
                        f.route.resource
                    )
                }
                // The capture's lease update carries the capture cloud's resourceVersion, so a
                // faithful apiserver answers Conflict; kubelet then re-reads the lease.
                ("update", "kube-node-lease/lease/edge0") => assert!(
                    matches!(&reply, Reply::Object(_))
                        || matches!(&reply, Reply::Failed { code: 409, .. }),
                    "{reply:?}"
                ),
                other => panic!("unexpected request in capture: {other:?}"),
            }
            answered.insert(f.header.msg_id.clone());
        }
        assert!(answered.len() >= 6, "{answered:?}");
        // Nothing else may be pending: one more query is answered next, directly.
        let probe = Message::new(
            proto::ModuleName::Edged,
            proto::Group::Meta,
            Operation::Query,
            "kube-node-lease/lease/edge0",
            Value::Null,
            0,
        );
        ws.send(Ws::text(probe.encode())).await.unwrap();
        let r = next_reply(&mut ws).await;
        assert_eq!(
            r.header.parent_msg_id, probe.header.msg_id,
            "a frame that needs no reply got one"
        );
        assert!(
            matches!(Reply::from_content(&r.content), Reply::Object(_)),
            "the lease inserted above exists"
        );
    });
    // And the node registered by the upstream frames is visible.
    assert!(cloud.ready("edge0").is_some());
}

type Tunnel = e2e::upstream_edge::Tunnel;

async fn next_message(ws: &mut Tunnel) -> Message {
    loop {
        let frame = async { ws.next().await }
            .or(async {
                smol::Timer::after(Duration::from_secs(10)).await;
                None
            })
            .await
            .expect("a message within 10 s")
            .unwrap();
        if frame.is_text() || frame.is_binary() {
            return Message::decode(frame.into_data().as_ref(), 1 << 24).unwrap();
        }
    }
}

/// What upstream edgecore's kubelet does with a delivered pod: acknowledge the push, then
/// report status with `patch <ns>/podpatch/<pod>`; `cloudcore get pods` shows it.
#[test]
fn pod_status_reported_by_the_edge_shows_in_get_pods() {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    edge.join_ok(&cloud);
    cloud.apply_ok("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  nodeName: edge0\n  containers: [{name: app, image: busybox}]\n");
    smol::block_on(async {
        let mut ws = e2e::upstream_edge::connect(&cloud, &edge).await;
        let push = next_message(&mut ws).await;
        assert_eq!(
            (push.route.operation.as_str(), push.route.resource.as_str()),
            ("insert", "default/pod/web")
        );
        assert_eq!(push.content["kind"], "Pod");
        let uid = push.content["metadata"]["uid"].as_str().unwrap().to_owned();
        ws.send(Ws::text(push.ack(0).encode())).await.unwrap();

        let patch = serde_json::json!({
            "metadata": { "uid": uid },
            "status": {
                "phase": "Running",
                "podIP": "10.88.0.7",
                "conditions": [{ "type": "Ready", "status": "True" }],
                "containerStatuses": [{ "name": "app", "ready": true, "restartCount": 3, "state": { "running": {} } }]
            }
        });
        let req = Message::new(
            proto::ModuleName::Edged,
            proto::Group::Meta,
            Operation::Patch,
            "default/podpatch/web",
            Value::String(patch.to_string()),
            0,
        );
        ws.send(Ws::text(req.encode())).await.unwrap();
        let reply = next_message(&mut ws).await;
        assert_eq!(reply.header.parent_msg_id, req.header.msg_id);
        match Reply::from_content(&reply.content) {
            Reply::Object(p) => assert_eq!(p["status"]["phase"], "Running"),
            other => panic!("{other:?}"),
        }
        // A status report is not echoed back to the node as a pod update (upstream filters
        // status-only changes): the next thing the node hears is the answer to a probe.
        let probe = Message::new(
            proto::ModuleName::Edged,
            proto::Group::Meta,
            Operation::Query,
            "kube-node-lease/lease/edge0",
            Value::Null,
            0,
        );
        ws.send(Ws::text(probe.encode())).await.unwrap();
        assert_eq!(
            next_message(&mut ws).await.header.parent_msg_id,
            probe.header.msg_id
        );
    });
    let table = String::from_utf8(cloud.cli(&["get", "pods", "-o", "wide"]).stdout).unwrap();
    let row = table.lines().nth(1).unwrap_or_default().to_owned();
    for want in ["web", "1/1", "Running", " 3 ", "edge0", "10.88.0.7"] {
        assert!(row.contains(want), "{want:?} missing: {table}");
    }
    let describe = String::from_utf8(cloud.cli(&["describe", "pod", "web"]).stdout).unwrap();
    assert!(
        describe.contains("StatusReported") && describe.contains("Delivered"),
        "{describe}"
    );
}
