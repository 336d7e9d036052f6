//! The bus under floods, end to end (our edgecore, an upstream-shaped test cloud): nothing
//! a module is owed is dropped when its mailbox is full. A flood of pushes from the cloud is
//! stored and acknowledged whole (EdgeHub holds what a full mailbox refuses and stops
//! reading the tunnel meanwhile), and twin reports keep flowing after an MQTT flood filled
//! DeviceTwin's mailbox (replies have room of their own, so no in-flight slot leaks).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use e2e::upstream_cloud::UpstreamCloud;
use e2e::{wait_for, Cloud, Edge, Proc};
use mqtt::{Connect, Packet, Publish, QoS};
use proto::Operation;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

struct Setup {
    _cloud: Cloud,
    up: UpstreamCloud,
    _edge: Edge,
    run: Proc,
    broker: u16,
}

fn setup() -> Setup {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    edge.join_ok(&cloud);
    let broker = edge.private_broker();
    let up = UpstreamCloud::start(&cloud.dir.path().join("pki"));
    up.state.lock().unwrap().confirm_device_reports = true;
    edge.use_cloud(up.addr);
    // Info, not debug: a flood must not be measured by its log.
    let run = edge.run_with(&[
        "--heartbeat",
        "1s",
        "--status-interval",
        "1s",
        "--lease-interval",
        "1s",
        "--log-level",
        "info",
    ]);
    wait_for("the edge's lease in the test cloud", T, || {
        up.state.lock().unwrap().lease.is_some().then_some(())
    });
    Setup {
        _cloud: cloud,
        up,
        _edge: edge,
        run,
        broker,
    }
}

#[test]
fn a_flood_of_pushes_is_stored_and_acknowledged_whole() {
    let s = setup();
    // Far more than a mailbox holds (64), all at once, without waiting for acknowledgements.
    const N: usize = 400;
    let ids: Vec<String> = (0..N)
        .map(|i| {
            s.up.push(
                Operation::Insert,
                &format!("default/configmap/flood{i}"),
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("flood{i}"), "namespace": "default",
                        "uid": format!("u{i}"), "resourceVersion": format!("{}", i + 1)},
                    "data": {"k": "v".repeat(2000)}}),
            )
        })
        .collect();
    wait_for("every push acknowledged", T, || {
        ids.iter().all(|id| s.up.acked(id)).then_some(())
    });
    assert!(
        !s.run.log().contains("mailbox full"),
        "nothing was dropped on the way"
    );
}

fn client(port: u16, id: &str) -> TcpStream {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(&Connect::new(id, 60, true).to_bytes()).unwrap();
    let mut b = [0u8; 4];
    c.read_exact(&mut b).unwrap();
    assert_eq!(b[3], 0, "CONNACK refused");
    c
}

fn update(device: usize, value: &str) -> Vec<u8> {
    Packet::Publish(Publish::new(
        &format!("$hw/events/device/default/d{device}/twin/update"),
        format!(r#"{{"event_id":"e","timestamp":1,"twin":{{"value":{{"actual":{{"value":"{value}"}}}}}}}}"#)
            .as_bytes(),
        QoS::AtMostOnce,
        0,
    ))
    .to_bytes()
}

#[test]
fn twin_reports_keep_flowing_after_an_mqtt_flood() {
    let s = setup();
    s.run.wait_log("MQTT: connected", T);
    const DEVICES: usize = 20;
    s.up.push(
        Operation::Insert,
        "default/devicemodel/sensor",
        json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
            "metadata": {"name": "sensor", "namespace": "default"},
            "spec": {"properties": [{"name": "value"}]}}),
    );
    let ids: Vec<String> = (0..DEVICES)
        .map(|i| {
            s.up.push(
                Operation::Insert,
                &format!("default/device/d{i}"),
                json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
                    "metadata": {"name": format!("d{i}"), "namespace": "default",
                        "uid": format!("u{i}"), "resourceVersion": "1"},
                    "spec": {"deviceModelRef": {"name": "sensor"}, "nodeName": "edge0",
                        "properties": [{"name": "value"}]}}),
            )
        })
        .collect();
    wait_for("the devices stored", T, || {
        ids.iter().all(|id| s.up.acked(id)).then_some(())
    });
    // The flood: DeviceTwin's mailbox stays full while the cloud answers its reports.
    let mut publisher = client(s.broker, "flood");
    let mut burst = Vec::new();
    for i in 0..3000 {
        burst.extend(update(i % DEVICES, &format!("{i}")));
    }
    publisher.write_all(&burst).unwrap();
    let reports = || s.up.state.lock().unwrap().device_reports.len();
    wait_for("reports from the flood", T, || {
        (reports() > 0).then_some(())
    });
    // Then one more update: its report must reach the cloud, so no report slot was lost.
    publisher.write_all(&update(0, "last")).unwrap();
    wait_for("the report of the last update", T, || {
        s.up.state
            .lock()
            .unwrap()
            .device_reports
            .iter()
            .any(|(_, _, c)| c["twin"]["value"]["actual"]["value"] == "last")
            .then_some(())
    });
}
