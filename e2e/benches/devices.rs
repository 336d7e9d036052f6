//! Devices benchmark: 1,000 devices on one edge, 50 MQTT clients connected, then twin updates
//! published over MQTT, for the embedded broker and for an external mosquitto side by side.
//!
//! - End to end: 1,000 updates at a steady 500/s through our cloudcore; updates per second
//!   (MQTT publish → Device status in the cloud), p50/p99 latency, edgecore's RSS.
//! - Group commit, edge only: 10,000 updates as fast as one publisher sends them, against a
//!   test cloud that confirms reports at once (the cloud's own fsync per report is not the
//!   edge's); per update: the MQTT result (published only after the commit: "persisted")
//!   and the report's arrival in the cloud ("sent"), p50/p99 of each, store commits and
//!   flash bytes written per 1,000 updates (from edgecore's exit line).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

use e2e::mqtt::Mosquitto;
use e2e::upstream_cloud::UpstreamCloud;
use e2e::{proc_status, wait_for, Cloud, Edge};
use mqtt::{Packet, Publish, QoS};
use proto::Operation;

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

const BURST: usize = 10_000;

fn sub_bytes(filter: &str) -> Vec<u8> {
    let filters = vec![(filter.to_owned(), QoS::AtMostOnce)];
    Packet::Subscribe { pid: 1, filters }.to_bytes()
}

fn pub_bytes(topic: &str, payload: &[u8]) -> Vec<u8> {
    Packet::Publish(Publish::new(topic, payload, QoS::AtMostOnce, 0)).to_bytes()
}

fn percentile(v: &mut [f64], p: usize) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v.get((v.len() * p / 100).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(-1.0)
}

/// Group commit at the edge: [`BURST`] updates at `rate` a second, reports confirmed at once.
fn edge_only(external: Option<u16>, rate: u32) -> String {
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
    let up = UpstreamCloud::start(&cloud.dir.path().join("pki"));
    up.state.lock().unwrap().confirm_device_reports = true;
    edge.use_cloud(up.addr);
    let lease = || up.state.lock().unwrap().lease.is_some().then_some(());
    let mut setup = edge.run_with(&["--log-level", "info"]);
    wait_for(
        "the lease in the test cloud",
        Duration::from_secs(60),
        lease,
    );
    up.push(
        Operation::Insert,
        "default/devicemodel/sensor",
        serde_json::json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
            "metadata": {"name": "sensor", "namespace": "default"}, "spec": {"properties": [{"name": "value"}]}}),
    );
    // In windows of 32, as our cloud's EdgeController sends them.
    for chunk in (0..DEVICES).collect::<Vec<_>>().chunks(32) {
        let ids: Vec<String> = chunk
            .iter()
            .map(|i| {
                up.push(
                    Operation::Insert,
                    &format!("default/device/d{i}"),
                    serde_json::json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
                        "metadata": {"name": format!("d{i}"), "namespace": "default", "uid": format!("u{i}"), "resourceVersion": "1"},
                        "spec": {"deviceModelRef": {"name": "sensor"}, "nodeName": "bench-edge",
                            "properties": [{"name": "value", "desired": {"value": "0"}}]}}),
                )
            })
            .collect();
        wait_for("devices stored", Duration::from_secs(60), || {
            ids.iter().all(|id| up.acked(id)).then_some(())
        });
    }
    // Restart, so edgecore's exit line counts the updates' commits only.
    setup.signal(rustix::process::Signal::TERM);
    setup.wait_exit(Duration::from_secs(10));
    drop(setup);
    up.state.lock().unwrap().lease = None;
    let run = edge.run_with(&["--log-level", "info"]);
    wait_for("the lease again", Duration::from_secs(60), lease);
    wait_for("broker", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    });
    let mut clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|i| mqtt_client(port, &format!("bench-sub-{i}")))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(&sub_bytes(&format!(
            "$hw/events/device/default/d{i}/twin/update/result"
        )))
        .unwrap();
    }
    // One reader of every result, timing when each update was persisted.
    let mut results = mqtt_client(port, "bench-results");
    results
        .write_all(&sub_bytes("$hw/events/device/+/+/twin/update/result"))
        .unwrap();
    results
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut persisted = vec![None; BURST];
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        let mut got = 0;
        while got < BURST {
            let Ok(n) = results.read(&mut chunk) else {
                break;
            };
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            while let Ok(Some((p, used))) = mqtt::decode(&buf, 1 << 20) {
                buf.drain(..used);
                if let Packet::Publish(p) = p {
                    let v: serde_json::Value =
                        serde_json::from_slice(&p.payload).unwrap_or_default();
                    if let Some(i) = v["event_id"]
                        .as_str()
                        .and_then(|e| e.strip_prefix('b'))
                        .and_then(|n| n.parse::<usize>().ok())
                    {
                        if i < BURST && persisted[i].is_none() {
                            persisted[i] = Some(Instant::now());
                            got += 1;
                        }
                    }
                }
            }
        }
        persisted
    });
    std::thread::sleep(Duration::from_secs(1)); // let the subscriptions land
    let mut publisher = mqtt_client(port, "bench-pub");
    let mut sent = Vec::with_capacity(BURST);
    let t0 = Instant::now();
    for i in 0..BURST {
        let payload = format!(
            r#"{{"event_id":"b{i}","timestamp":1,"twin":{{"value":{{"actual":{{"value":"{i}"}}}}}}}}"#
        );
        publisher
            .write_all(&pub_bytes(
                &format!("$hw/events/device/default/d{}/twin/update", i % DEVICES),
                payload.as_bytes(),
            ))
            .unwrap();
        sent.push(Instant::now());
        // Paced by the schedule, not by sleeps between sends: the offered load is `rate`.
        let due = t0 + Duration::from_secs_f64((i + 1) as f64 / f64::from(rate));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let published = t0.elapsed();
    let count = || {
        up.state
            .lock()
            .unwrap()
            .device_reports
            .iter()
            .filter(|(_, r, _)| r.ends_with("twin/edge_updated"))
            .count()
    };
    // Until every report arrived, or 60 s: the bound for a run that sheds.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count() < BURST && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let persisted = reader.join().unwrap();
    let [rss, _, hwm, _] = proc_status(run.pid());
    let mut run = run;
    run.signal(rustix::process::Signal::TERM);
    run.wait_exit(Duration::from_secs(10));
    let log = run.log();
    let (commits, bytes) = e2e::pods::store_commits(&log);
    if let Some(l) = log.lines().find(|l| l.contains("results shed")) {
        eprintln!("{l}");
    }
    drop(clients);
    let mut sent_ms = Vec::new();
    let mut last = t0;
    for (at, _, content) in up.state.lock().unwrap().device_reports.iter() {
        if let Some(i) = content["twin"]["value"]["actual"]["value"]
            .as_str()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|i| *i < BURST)
        {
            sent_ms.push(at.duration_since(sent[i]).as_secs_f64() * 1000.0);
            last = last.max(*at);
        }
    }
    let mut persisted_ms: Vec<f64> = persisted
        .iter()
        .zip(&sent)
        .filter_map(|(p, s)| Some(p.as_ref()?.duration_since(*s).as_secs_f64() * 1000.0))
        .collect();
    let n = sent_ms.len();
    let span = last.duration_since(t0).as_secs_f64().max(1e-3);
    let per_k = |x: u64| x as f64 * 1000.0 / BURST as f64;
    format!(
        "| {:<18} | {rate:>6}/s | {:>7.0}/s | {:>6.1} | {:>6.1} | {:>6.1} | {:>6.1} | {:>5}/{BURST} | {:>5}/{BURST} | {:>7.0}/s | {:>7.1} | {:>8.1} KiB | {:>6.2} MiB | {:>6.2} MiB | {:>6} ms |",
        if external.is_some() { "external mosquitto" } else { "embedded broker" },
        n as f64 / span,
        percentile(&mut persisted_ms.clone(), 50),
        percentile(&mut persisted_ms, 99),
        percentile(&mut sent_ms.clone(), 50),
        percentile(&mut sent_ms, 99),
        persisted.iter().filter(|p| p.is_some()).count(),
        n,
        commits as f64 / span,
        per_k(commits),
        per_k(bytes) / 1024.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        published.as_millis()
    )
}

fn main() {
    let only_edge = std::env::args().any(|a| a == "--edge-only");
    // The machine is shared: the load says how far to trust a row.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nload average at start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("\nGroup commit at the edge: 1,000 devices, 50 MQTT clients, {BURST} twin updates offered at a steady rate, test cloud confirming reports at once (release, x86_64, loopback). Latency in ms from publish to the MQTT result (persisted: published after the commit) and to the report's arrival in the cloud (sent)\n");
    println!("| broker             | offered   | sent       | persisted p50 | p99 | sent p50 | p99 | results     | reports     | commits    | commits/1k | flash/1k     | VmRSS      | VmHWM      | publish   |");
    println!("|--------------------|-----------|------------|--------|--------|--------|--------|-------------|-------------|------------|---------|--------------|------------|------------|-----------|");
    let m = Mosquitto::start();
    if !std::env::args().any(|a| a == "--e2e-only") {
        println!("{}", edge_only(None, 5000));
        println!("{}", edge_only(Some(m.port), 5000));
        println!("{}", edge_only(Some(m.port), 10_000));
    }
    if only_edge {
        return;
    }

    println!("\n1,000 devices, 50 MQTT clients, 1,000 twin updates (release, x86_64, loopback)\n");
    println!("| broker             | updates    | p50       | p99       | delivered  | edgecore VmRSS | RssAnon     | threads | publish   |");
    println!("|--------------------|------------|-----------|-----------|------------|--------------|--------------|---------|-----------|");
    println!("{}", run(None));
    println!("{}", run(Some(m.port)));
    println!();
}
