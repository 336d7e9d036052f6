//! One local client floods edgecore's embedded broker (QoS 0, unpaced) for 30 s on a topic
//! nobody handles and then for 30 s on a DeviceTwin topic of a device that does not exist
//! (each message reaches DeviceTwin, which must refuse it, and its mailbox fills), while the
//! node must stay Ready in the cloud with one tunnel the whole time and twin round trips for a
//! real device (publish `twin/update`, get `update/result`) stay fast. In its own test binary
//! so nothing else shares the two cores.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use e2e::mqtt::{Got, Raw};
use e2e::{Cloud, Edge};
use mqtt::{Packet, Publish, QoS};

/// Each of the two phases.
const FLOOD: Duration = Duration::from_secs(30);
/// Messages the flooder sends at most (a bound on the loop besides time).
const FLOOD_MAX: u64 = 50_000_000;

#[test]
fn a_flooding_client_does_not_take_the_node_offline() {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("flood-edge");
    edge.join_ok(&cloud);
    let port = edge.private_broker();
    let run = edge.run("1s");
    cloud.wait_ready("flood-edge", true, Duration::from_secs(30));
    run.wait_log("MQTT: connected", Duration::from_secs(30));
    cloud.apply_ok(
        "apiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceModel\nmetadata: {name: m}\nspec:\n  properties: [{name: v}]\n---\n\
         apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {name: real}\nspec:\n  deviceModelRef: {name: m}\n  nodeName: flood-edge\n  properties: [{name: v}]\n",
    );
    e2e::wait_for("the device on the edge", Duration::from_secs(30), || {
        (cloud.synced("flood-edge", "Device").len() == 1).then_some(())
    });

    for topic in [
        "flood/unrelated",
        "$hw/events/device/default/nosuch/twin/update",
    ] {
        let ph = flood_phase(&cloud, &run, port, topic);
        let p = |q: f64| ph.latencies[((ph.latencies.len() - 1) as f64 * q) as usize];
        println!(
            "flood on {topic}: {} messages in {:?}; {} twin round trips, p50 {:?}, p99 {:?}, max {:?}",
            ph.sent,
            FLOOD,
            ph.latencies.len(),
            p(0.5),
            p(0.99),
            ph.latencies.last().unwrap()
        );
        assert!(ph.sent > 100_000, "the flood on {topic} did flood");
        assert_eq!(
            ph.not_ready, 0,
            "the node went NotReady during the flood on {topic}"
        );
        assert!(
            !run.log().contains("tunnel lost") && !run.log().contains("reconnecting in"),
            "the tunnel dropped during the flood on {topic}:\n{}",
            run.log()
        );
        assert!(
            p(0.99) < Duration::from_secs(1),
            "twin round trips slowed to p99 {:?} during the flood on {topic}",
            p(0.99)
        );
        assert_eq!(cloud.ready("flood-edge").as_deref(), Some("True"));
    }
}

/// What one phase saw.
struct Phase {
    sent: u64,
    latencies: Vec<Duration>,
    not_ready: u32,
}

/// Floods `topic` for [`FLOOD`] while probing twin round trips every 250 ms.
fn flood_phase(cloud: &Cloud, run: &e2e::Proc, port: u16, topic: &str) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flooder = {
        let (stop, sent, topic) = (stop.clone(), sent.clone(), topic.to_owned());
        thread::spawn(move || {
            let mut c = Raw::client(port, "flooder");
            let mut batch = Vec::new();
            let payload =
                br#"{"event_id":"f","timestamp":1,"twin":{"v":{"actual":{"value":"1"}}}}"#;
            for _ in 0..256 {
                Packet::Publish(Publish::new(&topic, payload, QoS::AtMostOnce, 0))
                    .encode(&mut batch);
            }
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed)
                && t0.elapsed() < FLOOD
                && sent.load(Ordering::Relaxed) < FLOOD_MAX
            {
                use std::io::Write;
                if c.sock.write_all(&batch).is_err() {
                    break;
                }
                sent.fetch_add(256, Ordering::Relaxed);
            }
        })
    };

    // Twin round trips meanwhile, one every 250 ms.
    let mut probe = Raw::client(port, &format!("probe-{topic}"));
    probe.subscribe(&[(
        "$hw/events/device/default/real/twin/update/result",
        QoS::AtLeastOnce,
    )]);
    let mut latencies = Vec::new();
    let mut not_ready = 0;
    let t0 = Instant::now();
    let mut i = 0u32;
    while t0.elapsed() < FLOOD {
        i += 1;
        let body = format!(
            r#"{{"event_id":"p{i}","timestamp":1,"twin":{{"v":{{"actual":{{"value":"{i}"}}}}}}}}"#
        );
        let start = Instant::now();
        probe.send(&Packet::Publish(Publish::new(
            "$hw/events/device/default/real/twin/update",
            body.as_bytes(),
            QoS::AtLeastOnce,
            (i % 60000 + 1) as u16,
        )));
        let deadline = start + Duration::from_secs(20);
        loop {
            match probe.recv(deadline.saturating_duration_since(Instant::now())) {
                Got::Packet(Packet::Publish(m)) => {
                    probe.send(&Packet::PubAck(m.pid));
                    if String::from_utf8_lossy(&m.payload).contains(&format!("\"p{i}\"")) {
                        latencies.push(start.elapsed());
                        break;
                    }
                }
                Got::Packet(_) => {}
                other => {
                    let log = run.log();
                    let tail: Vec<&str> = log.lines().rev().take(30).collect();
                    panic!(
                        "round trip {i}: {other:?} after {:?}; edgecore's last lines:\n{}",
                        start.elapsed(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                }
            }
        }
        if i.is_multiple_of(20) && cloud.ready("flood-edge").as_deref() != Some("True") {
            not_ready += 1;
        }
        thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
    latencies.sort();
    Phase {
        sent: sent.load(Ordering::Relaxed),
        latencies,
        not_ready,
    }
}
