//! Broker benchmark: edgecore's embedded broker (release edgecore, joined to a cloudcore)
//! next to mosquitto, same clients, same machine. Throughput and latency per QoS, fan-out,
//! fan-in, and the broker process's memory afterwards.
//!
//! `cargo build --release -p edgecore -p cloudcore && cargo bench -p e2e --bench broker`

use std::thread;
use std::time::{Duration, Instant};

use e2e::mqtt::{Got, Mosquitto, Raw};
use e2e::{proc_status, Cloud, Edge};
use mqtt::{Packet, Publish, QoS};

struct Row {
    name: &'static str,
    rate: f64,
    p50: Duration,
    p99: Duration,
    delivered: usize,
    sent: usize,
}

fn pct(v: &mut [Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() - 1) as f64 * q) as usize]
}

/// One publisher → one subscriber at `qos`, `n` messages of 64 bytes carrying their send
/// time; the publisher completes each exchange (PUBACK, or PUBREC → PUBREL → PUBCOMP) as the
/// broker answers.
fn one_to_one(port: u16, qos: QoS, n: u32) -> Row {
    let mut sub = Raw::client(port, "bench-sub");
    sub.subscribe(&[("bench/1to1", qos)]);
    let t0 = Instant::now();
    let reader = thread::spawn(move || {
        let mut lat = Vec::with_capacity(n as usize);
        let mut last = Instant::now();
        while lat.len() < n as usize {
            match sub.recv(Duration::from_secs(10)) {
                Got::Packet(Packet::Publish(m)) => {
                    match m.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => sub.send(&Packet::PubAck(m.pid)),
                        QoS::ExactlyOnce => sub.send(&Packet::PubRec(m.pid)),
                    }
                    let sent = u64::from_be_bytes(m.payload[..8].try_into().unwrap());
                    last = Instant::now();
                    lat.push(last.duration_since(t0) - Duration::from_nanos(sent));
                }
                Got::Packet(Packet::PubRel(pid)) => sub.send(&Packet::PubComp(pid)),
                Got::Packet(_) => {}
                _ => break,
            }
        }
        (lat, last)
    });
    let mut p = Raw::client(port, "bench-pub");
    let payload = |t0: Instant| {
        let mut b = [0u8; 64];
        b[..8].copy_from_slice(&(t0.elapsed().as_nanos() as u64).to_be_bytes());
        b
    };
    if qos == QoS::ExactlyOnce {
        // One thread owns the socket (PUBRELs and PUBLISHes must not interleave mid-packet):
        // windows of 100 exchanges, each completed before the next window.
        let mut i = 0u32;
        while i < n {
            let mut batch = Vec::new();
            let window = (n - i).min(100);
            for k in 0..window {
                let pid = ((i + k) % 65535 + 1) as u16;
                Packet::Publish(Publish::new("bench/1to1", &payload(t0), qos, pid))
                    .encode(&mut batch);
            }
            p.write(&batch);
            let mut done = 0;
            while done < window {
                match p.recv(Duration::from_secs(10)) {
                    Got::Packet(Packet::PubRec(pid)) => p.send(&Packet::PubRel(pid)),
                    Got::Packet(Packet::PubComp(_)) => done += 1,
                    Got::Packet(_) => {}
                    _ => break,
                }
            }
            i += window;
        }
    } else {
        let mut w = Raw::from_stream(p.sock.try_clone().unwrap());
        let acks = thread::spawn(move || {
            let mut done = 0;
            while qos == QoS::AtLeastOnce && done < n {
                match p.recv(Duration::from_secs(10)) {
                    Got::Packet(Packet::PubAck(_)) => done += 1,
                    Got::Packet(_) => {}
                    _ => break,
                }
            }
        });
        let mut batch = Vec::new();
        for i in 0..n {
            let pid = (i % 65535 + 1) as u16;
            Packet::Publish(Publish::new("bench/1to1", &payload(t0), qos, pid)).encode(&mut batch);
            if batch.len() > 16 << 10 {
                w.write(&batch);
                batch.clear();
            }
            // At most ~20,000 QoS 1 ids outstanding, so none is reused while in use.
            if qos == QoS::AtLeastOnce && i % 20_000 == 19_999 {
                w.write(&batch);
                batch.clear();
                thread::sleep(Duration::from_millis(200));
            }
        }
        w.write(&batch);
        acks.join().unwrap();
    }
    let (mut lat, last) = reader.join().unwrap();
    Row {
        name: match qos {
            QoS::AtMostOnce => "1 → 1, QoS 0",
            QoS::AtLeastOnce => "1 → 1, QoS 1",
            QoS::ExactlyOnce => "1 → 1, QoS 2",
        },
        rate: lat.len() as f64 / last.duration_since(t0).as_secs_f64(),
        p50: pct(&mut lat, 0.5),
        p99: pct(&mut lat, 0.99),
        delivered: lat.len(),
        sent: n as usize,
    }
}

/// One QoS 0 publisher → 50 subscribers.
fn fan_out(port: u16, n: u32) -> Row {
    const SUBS: usize = 50;
    let t0 = Instant::now();
    let readers: Vec<_> = (0..SUBS)
        .map(|i| {
            let mut s = Raw::client(port, &format!("bench-fan-{i}"));
            s.subscribe(&[("bench/fan", QoS::AtMostOnce)]);
            thread::spawn(move || {
                let mut got = 0u32;
                let mut last = Instant::now();
                while got < n {
                    match s.recv(Duration::from_secs(10)) {
                        Got::Packet(Packet::Publish(_)) => {
                            got += 1;
                            last = Instant::now();
                        }
                        Got::Packet(_) => {}
                        _ => break,
                    }
                }
                (got, last)
            })
        })
        .collect();
    let mut p = Raw::client(port, "bench-fan-pub");
    let mut batch = Vec::new();
    for _ in 0..n {
        Packet::Publish(Publish::new("bench/fan", &[0; 64], QoS::AtMostOnce, 0)).encode(&mut batch);
        if batch.len() > 16 << 10 {
            p.write(&batch);
            batch.clear();
        }
    }
    p.write(&batch);
    let res: Vec<(u32, Instant)> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    let delivered: u32 = res.iter().map(|r| r.0).sum();
    let last = res.iter().map(|r| r.1).max().unwrap();
    Row {
        name: "1 → 50, QoS 0",
        rate: delivered as f64 / last.duration_since(t0).as_secs_f64(),
        p50: Duration::ZERO,
        p99: Duration::ZERO,
        delivered: delivered as usize,
        sent: n as usize * SUBS,
    }
}

/// 50 QoS 1 publishers × 1,000 → one subscriber; delivered counts distinct messages.
fn fan_in(port: u16) -> Row {
    let r = e2e::mqtt::fan_in(port, 50, 1000);
    Row {
        name: "50 → 1, QoS 1",
        rate: r.delivered as f64 / r.took.as_secs_f64(),
        p50: Duration::ZERO,
        p99: Duration::ZERO,
        delivered: r.delivered,
        sent: 50_000,
    }
}

fn run_all(port: u16) -> Vec<Row> {
    vec![
        one_to_one(port, QoS::AtMostOnce, 200_000),
        one_to_one(port, QoS::AtLeastOnce, 50_000),
        one_to_one(port, QoS::ExactlyOnce, 20_000),
        fan_out(port, 10_000),
        fan_in(port),
    ]
}

fn main() {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("bench-broker");
    edge.join_ok(&cloud);
    let port = edge.private_broker();
    let run = edge.run_with(&["--log-level", "warn"]);
    e2e::wait_for("the embedded broker", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
    let ours = run_all(port);
    let [_, _, hwm, threads] = proc_status(run.pid());
    let m = Mosquitto::start();
    let theirs = run_all(m.port);
    let [_, _, m_hwm, _] = proc_status(m.proc.pid());

    println!("\nMQTT broker, release, x86_64, loopback: embedded (in edgecore) | mosquitto 2.0\n");
    println!("| scenario        | embedded msg/s | p50      | p99      | delivered        | mosquitto msg/s | p50      | p99      | delivered        |");
    println!("|-----------------|----------------|----------|----------|------------------|-----------------|----------|----------|------------------|");
    for (a, b) in ours.iter().zip(&theirs) {
        println!(
            "| {:<15} | {:>14.0} | {:>8.1?} | {:>8.1?} | {:>7}/{:<8} | {:>15.0} | {:>8.1?} | {:>8.1?} | {:>7}/{:<8} |",
            a.name, a.rate, a.p50, a.p99, a.delivered, a.sent, b.rate, b.p50, b.p99, b.delivered, b.sent
        );
    }
    println!(
        "\npeak RSS: edgecore (whole agent) {:.1} MiB, {threads} threads; mosquitto {:.1} MiB\n",
        hwm as f64 / 1024.0,
        m_hwm as f64 / 1024.0
    );
}
