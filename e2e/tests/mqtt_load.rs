//! The embedded broker under load, beside mosquitto: an unpaced QoS 0 burst reaches a fast
//! subscriber whole; a 50 × 1,000 QoS 1 fan-in delivers every message a publisher had
//! acknowledged; a subscriber that never reads holds nobody else up. Each test runs the same
//! clients against a real mosquitto (numbers printed, for comparison) and against edgecore's
//! embedded broker in a real edgecore (numbers asserted).

use std::thread;
use std::time::{Duration, Instant};

use e2e::mqtt::{Got, Mosquitto, Raw};
use e2e::{Cloud, Edge, Proc};
use mqtt::{Packet, Publish, QoS};

/// A real edgecore with its embedded broker; the port to reach it.
struct Embedded {
    port: u16,
    _run: Proc,
    _edge: Edge,
    _cloud: Cloud,
}

fn embedded(name: &str) -> Embedded {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new(name);
    edge.join_ok(&cloud);
    let port = edge.private_broker();
    let run = edge.run_with(&["--log-level", "warn"]);
    e2e::wait_for("the embedded broker", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
    Embedded {
        port,
        _run: run,
        _edge: edge,
        _cloud: cloud,
    }
}

/// Writes `n` QoS 0 messages as fast as the socket takes them, while a subscriber reads as
/// fast as it can; returns how many it got (reading stops 5 s after the last one arrived, or
/// after 60 s).
fn qos0_burst(port: u16, n: u32) -> u32 {
    let mut sub = Raw::client(port, "load-burst-sub");
    sub.subscribe(&[("load/burst", QoS::AtMostOnce)]);
    let reader = thread::spawn(move || {
        let mut got = 0u32;
        let deadline = Instant::now() + Duration::from_secs(60);
        while got < n && Instant::now() < deadline {
            match sub.recv(Duration::from_secs(5)) {
                Got::Packet(Packet::Publish(_)) => got += 1,
                Got::Packet(_) => {}
                Got::Closed | Got::Nothing => break,
            }
        }
        got
    });
    let mut p = Raw::client(port, "load-burst-pub");
    let mut batch = Vec::with_capacity(64 << 10);
    for i in 0..n {
        Packet::Publish(Publish::new(
            "load/burst",
            &i.to_be_bytes(),
            QoS::AtMostOnce,
            0,
        ))
        .encode(&mut batch);
        if batch.len() >= 60 << 10 {
            p.write(&batch);
            batch.clear();
        }
    }
    p.write(&batch);
    p.sync();
    reader.join().unwrap()
}

#[test]
fn unpaced_qos0_burst_reaches_a_fast_subscriber_whole() {
    const N: u32 = 100_000;
    let m = Mosquitto::start();
    let theirs = qos0_burst(m.port, N);
    let e = embedded("load-burst");
    let ours = qos0_burst(e.port, N);
    println!("QoS 0 burst of {N}: embedded {ours}, mosquitto {theirs}");
    assert_eq!(ours, N, "the fast subscriber lost messages");
}

#[test]
fn qos1_fan_in_delivers_every_acknowledged_message() {
    let m = Mosquitto::start();
    let theirs = e2e::mqtt::fan_in(m.port, 50, 1000);
    let (their_acked, their_lost) = (theirs.acked, theirs.lost);
    let e = embedded("load-fanin");
    let ours = e2e::mqtt::fan_in(e.port, 50, 1000);
    let (acked, lost) = (ours.acked, ours.lost);
    println!(
        "QoS 1 fan-in 50 × 1,000: embedded {acked} acknowledged, {lost} of them lost; mosquitto {their_acked} acknowledged, {their_lost} lost"
    );
    assert_eq!(acked, 50_000, "every publish acknowledged");
    assert_eq!(lost, 0, "acknowledged messages were lost");
}

/// A subscriber to everything that never reads, beside one that reads: the reader gets every
/// QoS 1 message and the publisher every PUBACK, within the time bound.
fn with_a_stuck_reader(port: u16) -> (usize, usize) {
    let stuck = {
        let mut s = Raw::client(port, "load-stuck");
        s.subscribe(&[("load/stuck/#", QoS::AtLeastOnce)]);
        s.sock.set_read_timeout(None).unwrap();
        s // kept open, never read again
    };
    let mut good = Raw::client(port, "load-good");
    good.subscribe(&[("load/stuck/#", QoS::AtLeastOnce)]);
    const N: u16 = 3000;
    let reader = thread::spawn(move || {
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while got < N as usize && Instant::now() < deadline {
            match good.recv(Duration::from_secs(15)) {
                Got::Packet(Packet::Publish(m)) => {
                    good.send(&Packet::PubAck(m.pid));
                    got += 1;
                }
                Got::Packet(_) => {}
                _ => break,
            }
        }
        got
    });
    let mut p = Raw::client(port, "load-stuck-pub");
    let mut out = Vec::new();
    for i in 1..=N {
        Packet::Publish(Publish::new("load/stuck/t", &[0; 512], QoS::AtLeastOnce, i))
            .encode(&mut out);
    }
    p.write(&out);
    let mut acks = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while acks < N as usize && Instant::now() < deadline {
        match p.recv(Duration::from_secs(15)) {
            Got::Packet(Packet::PubAck(_)) => acks += 1,
            Got::Packet(_) => {}
            _ => break,
        }
    }
    let got = reader.join().unwrap();
    drop(stuck);
    (acks, got)
}

#[test]
fn a_subscriber_that_never_reads_holds_nobody_up() {
    let m = Mosquitto::start();
    let (their_acks, their_got) = with_a_stuck_reader(m.port);
    let e = embedded("load-stuck");
    let t0 = Instant::now();
    let (acks, got) = with_a_stuck_reader(e.port);
    println!(
        "stuck reader: embedded {acks} PUBACKs, {got} delivered in {:?}; mosquitto {their_acks} PUBACKs, {their_got} delivered",
        t0.elapsed()
    );
    assert_eq!((acks, got), (3000, 3000));
}

/// 2,000 sockets opened and held without a CONNECT do not lock a legitimate client out, and do
/// not grow edgecore: each of 13 legitimate connects made while they are held succeeds.
#[test]
fn held_sockets_do_not_lock_out_a_legitimate_client() {
    let e = embedded("load-held");
    let pid = e._run.pid();
    let before = e2e::proc_status(pid);
    let mut held = Vec::new();
    let mut legit = 0;
    for i in 0..2000 {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", e.port)) {
            held.push(s);
        }
        if i % 150 == 149 {
            let (_, got) =
                Raw::connect(e.port, mqtt::Connect::new(&format!("legit-{i}"), 30, true));
            if matches!(got, Got::Packet(Packet::ConnAck { code: 0, .. })) {
                legit += 1;
            }
        }
    }
    let after = e2e::proc_status(pid);
    println!(
        "held {} sockets: {legit} of 13 legitimate connects accepted; edgecore RSS {} → {} KiB, threads {}",
        held.len(),
        before[0],
        after[0],
        after[3]
    );
    assert_eq!(
        legit, 13,
        "a legitimate client was refused while sockets were held"
    );
    // The broker closes all but the newest `max_handshaking` of them (the last legitimate
    // connect was accepted after every held socket, so all of them have been seen).
    for s in &held {
        s.set_nonblocking(true).unwrap();
    }
    let max = broker::Limits::default().max_handshaking;
    e2e::wait_for(
        "the broker to close the held sockets",
        Duration::from_secs(30),
        || {
            let open = held
                .iter()
                .filter(|s| {
                    use std::io::Read;
                    let mut r: &std::net::TcpStream = s;
                    let mut b = [0u8; 1];
                    matches!(r.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                })
                .count();
            (open <= max).then_some(())
        },
    );
}
