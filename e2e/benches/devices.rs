//! Devices benchmark: 1,000 devices on one edge, 50 MQTT clients connected, then 1,000 twin
//! updates published over MQTT; reports twin updates per second end to end (MQTT publish →
//! Device status in the cloud), p50/p99 latency, and edgecore's RSS, for the embedded broker
//! and for an external mosquitto side by side.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

use e2e::mqtt::Mosquitto;
use e2e::{proc_status, wait_for, Cloud, Edge};
use mqtt::{Packet, Publish, QoS};

const DEVICES: usize = 1000;
const CLIENTS: usize = 50;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn mqtt_client(port: u16, id: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&mqtt::Connect::new(id, 60, true).to_bytes())
        .unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).unwrap();
    assert_eq!(b[3], 0, "CONNACK refused");
    s
}

fn run(external: Option<u16>) -> String {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("bench-edge");
    edge.join_ok(&cloud);
    let port = match external {
        Some(p) => {
            edge.set_config(
                "eventbus",
                serde_json::json!({ "embedded": false, "broker": format!("127.0.0.1:{p}") }),
            );
            p
        }
        None => edge.private_broker(),
    };
    let run = edge.run_with(&["--log-level", "warn"]);
    cloud.wait_ready("bench-edge", true, Duration::from_secs(60));
    wait_for("broker", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    });

    let mut manifest = String::from("apiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceModel\nmetadata: {name: sensor}\nspec: {properties: [{name: value}]}\n");
    for i in 0..DEVICES {
        manifest.push_str(&format!(
            "---\napiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {{name: d{i}}}\nspec:\n  deviceModelRef: {{name: sensor}}\n  nodeName: bench-edge\n  properties: [{{name: value, desired: {{value: \"0\"}}}}]\n"
        ));
    }
    let (status, body) = cloud.admin("POST", "/api/v1/apply", manifest.as_bytes());
    assert_eq!(status, 200, "{body}");
    wait_for(
        "1,000 devices on the edge",
        Duration::from_secs(300),
        || (cloud.synced("bench-edge", "Device").len() == DEVICES).then_some(()),
    );

    // 50 connected clients, each subscribed to the result topics.
    let mut clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|i| mqtt_client(port, &format!("bench-sub-{i}")))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let filters = vec![(
            format!("$hw/events/device/default/d{i}/twin/update/result"),
            QoS::AtMostOnce,
        )];
        c.write_all(&Packet::Subscribe { pid: 1, filters }.to_bytes())
            .unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));

    let mut publisher = mqtt_client(port, "bench-pub");
    let mut sent = Vec::with_capacity(DEVICES);
    let t0 = Instant::now();
    for i in 0..DEVICES {
        let payload = format!(
            r#"{{"event_id":"b{i}","timestamp":1,"twin":{{"value":{{"actual":{{"value":"{i}"}}}}}}}}"#
        );
        publisher
            .write_all(
                &Packet::Publish(Publish::new(
                    &format!("$hw/events/device/default/d{i}/twin/update"),
                    payload.as_bytes(),
                    QoS::AtMostOnce,
                    0,
                ))
                .to_bytes(),
            )
            .unwrap();
        sent.push(now_ms());
        // A steady 500 updates/s offered load: a mapper fleet, not a flood.
        std::thread::sleep(Duration::from_millis(2));
    }
    let published = t0.elapsed();
    // Until the last report arrives, or 60 s: reports shed by a full queue never will.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let last = cloud
            .admin(
                "GET",
                &format!("/api/v1/devices/default/d{}", DEVICES - 1),
                b"",
            )
            .1;
        if last["status"]["twins"][0]["reported"]["value"] == format!("{}", DEVICES - 1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut lat = Vec::with_capacity(DEVICES);
    let mut last_ms = 0;
    for (i, t) in sent.iter().enumerate() {
        let ev = cloud
            .admin("GET", &format!("/api/v1/events/devices/default/d{i}"), b"")
            .1;
        if let Some(ms) = ev["items"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|e| e["reason"] == "Reported")
            .and_then(|e| e["timeMs"].as_i64())
        {
            lat.push((ms - t).max(0));
            last_ms = last_ms.max(ms);
        }
    }
    lat.sort();
    let n = lat.len();
    let rate = n as f64 / ((last_ms - sent[0]).max(1) as f64 / 1000.0);
    let [rss, anon, _, threads] = proc_status(run.pid());
    drop(clients);
    format!(
        "| {:<18} | {:>8.0}/s | {:>6} ms | {:>6} ms | {:>5}/{DEVICES} | {:>8.2} MiB | {:>8.2} MiB | {threads:>7} | {:>6} ms |",
        if external.is_some() { "external mosquitto" } else { "embedded broker" },
        rate,
        lat.get(n / 2).copied().unwrap_or(-1),
        lat.get(n * 99 / 100).copied().unwrap_or(-1),
        n,
        rss as f64 / 1024.0,
        anon as f64 / 1024.0,
        published.as_millis()
    )
}

fn main() {
    println!("\n1,000 devices, 50 MQTT clients, 1,000 twin updates (release, x86_64, loopback)\n");
    println!("| broker             | updates    | p50       | p99       | delivered  | edgecore VmRSS | RssAnon     | threads | publish   |");
    println!("|--------------------|------------|-----------|-----------|------------|--------------|--------------|---------|-----------|");
    println!("{}", run(None));
    let m = Mosquitto::start();
    println!("{}", run(Some(m.port)));
    println!();
}
