//! Flow control, budgets and fairness: what the broker holds and who waits for whom.

use std::time::Duration;

use mqtt::{Packet, QoS};

use super::{connect_packet, publishes, H};
use crate::route::client_publish;
use crate::Limits;

#[test]
fn slow_reader_drops_qos0_and_counts_it() {
    let mut h = H::with(Limits {
        out_budget: 1000,
        ..Limits::default()
    });
    let s = h.client("s", true, false);
    h.subscribe(s, &[("t", QoS::AtMostOnce)]);
    let p = h.client("p", true, false);
    for _ in 0..100 {
        h.publish(p, "t", &[0; 100], QoS::AtMostOnce, 0);
    }
    // Nothing was taken from `s`: its buffer stopped at the budget.
    let got = h.recv(s);
    assert!(got.len() < 12, "{} messages buffered", got.len());
    assert_eq!(h.b.stats().dropped_qos0 as usize, 100 - got.len());
    assert!(
        !h.closing(p),
        "the publisher is not held up by a slow QoS 0 reader"
    );
}

#[test]
fn client_that_never_reads_is_not_read_either() {
    let mut h = H::with(Limits {
        out_budget: 64,
        ..Limits::default()
    });
    let c = h.client("c", true, false);
    assert!(h.wants(c));
    for _ in 0..40 {
        h.send(c, Packet::PingReq);
    }
    assert!(!h.wants(c), "its PINGRESPs filled its budget");
    h.recv(c);
    assert!(h.wants(c));
}

#[test]
fn qos1_publisher_waits_for_a_live_full_subscriber_instead_of_losing_messages() {
    let mut h = H::with(Limits {
        max_inflight: 1,
        max_queued: 2,
        ..Limits::default()
    });
    let s = h.client("s", true, false);
    h.subscribe(s, &[("t", QoS::AtLeastOnce)]);
    let p = h.client("p", true, false);
    for i in 1..=10u16 {
        h.publish(p, "t", &[i as u8], QoS::AtLeastOnce, i);
    }
    let acks = h.recv(p).len();
    assert_eq!(
        acks, 3,
        "one in flight, two queued, then the publisher waits"
    );
    assert!(!h.wants(p));
    assert_eq!(h.b.stats().publisher_waits, 1);
    // The subscriber acknowledges as it reads: everything arrives, nothing is dropped.
    let mut got = Vec::new();
    for _ in 0..100 {
        for m in h.recv(s) {
            if let Packet::Publish(m) = m {
                got.push(m.payload[0]);
                h.send(s, Packet::PubAck(m.pid));
            }
        }
        h.b.handle_timeout(h.now);
        if got.len() == 10 {
            break;
        }
    }
    assert_eq!(got, (1..=10).collect::<Vec<u8>>());
    assert_eq!(h.recv(p).len(), 7, "the rest acknowledged once queued");
    assert_eq!(h.b.stats().dropped_queue_full, 0);
}

#[test]
fn a_stalled_subscriber_holds_publishers_only_for_publish_wait() {
    let mut h = H::with(Limits {
        max_inflight: 1,
        max_queued: 1,
        ..Limits::default()
    });
    let s = h.client("s", true, false);
    h.subscribe(s, &[("t", QoS::AtLeastOnce)]);
    let p = h.client("p", true, false);
    for i in 1..=5u16 {
        h.publish(p, "t", b"x", QoS::AtLeastOnce, i);
    }
    assert_eq!(h.recv(p).len(), 2);
    h.advance(h.b.limits().publish_wait);
    // The wait ran out: the waiting message is dropped for `s`, and `s` now counts as
    // stalled, so the rest go through at once.
    assert_eq!(h.recv(p).len(), 3);
    assert!(h.wants(p));
    assert_eq!(h.b.stats().dropped_queue_full, 3);
    assert!(
        !h.closing(s),
        "a stalled subscriber is not disconnected for it"
    );
}

#[test]
fn subscriptions_are_budgeted_in_bytes_per_client_and_in_total() {
    let mut h = H::with(Limits {
        subscription_bytes_per_client: 20_000,
        subscription_bytes: 50_000,
        ..Limits::default()
    });
    // Long filters (~2.4 KB of budget each): each client gets what fits its 20,000 bytes, and
    // together they stop at the total.
    let cost = crate::index::filter_cost(&format!("x/0/0/{}", "y".repeat(900)));
    let per_client = 20_000 / cost;
    let mut granted = 0;
    for c in 0..8 {
        let id = h.client(&format!("c{c}"), true, false);
        let filters: Vec<(String, QoS)> = (0..20)
            .map(|i| (format!("x/{c}/{i}/{}", "y".repeat(900)), QoS::AtMostOnce))
            .collect();
        h.send(id, Packet::Subscribe { pid: 1, filters });
        match &h.recv(id)[..] {
            [Packet::SubAck { codes, .. }] => {
                let ok = codes.iter().filter(|c| **c == 0).count();
                assert!(ok <= per_client, "client {c} got {ok}");
                granted += ok;
            }
            other => panic!("{other:?}"),
        }
    }
    let (count, bytes) = h.b.subscriptions();
    assert_eq!(count, granted);
    assert!(
        bytes <= 50_000 && bytes + cost > 50_000 - cost,
        "{bytes} bytes held"
    );
    assert!(h.b.stats().subscriptions_refused > 0);
    // A publish still reaches a small subscription made before the budget ran out elsewhere.
    let mut h = H::new();
    let s = h.client("s", true, false);
    h.subscribe(s, &[("dev/+", QoS::AtMostOnce)]);
    let p = h.client("p", true, false);
    h.publish(p, "dev/1", b"v", QoS::AtMostOnce, 0);
    assert_eq!(publishes(&h.recv(s)).len(), 1);
}

#[test]
fn a_repeated_filter_sends_retained_messages_once() {
    let mut h = H::new();
    let p = h.client("p", true, false);
    for i in 0..10 {
        h.bytes(
            p,
            &client_publish(&format!("r/{i}"), b"x", QoS::AtMostOnce, 0, true),
        );
    }
    let s = h.client("s", true, false);
    let filters: Vec<(String, QoS)> = (0..5000)
        .map(|_| ("r/#".to_string(), QoS::AtMostOnce))
        .collect();
    h.send(s, Packet::Subscribe { pid: 1, filters });
    let got = h.recv(s);
    assert!(matches!(&got[0], Packet::SubAck { codes, .. } if codes.len() == 5000));
    assert_eq!(publishes(&got).len(), 10, "ten retained messages, once");
}

// ---- regressions from the review (/work/notes/review-broker.md) ----

#[test]
fn a_write_that_ends_wakes_the_reader_that_stopped_for_the_budget() {
    let mut h = H::with(Limits {
        out_budget: 64,
        ..Limits::default()
    });
    let c = h.client("c", true, false);
    for _ in 0..40 {
        h.send(c, Packet::PingReq);
    }
    assert!(!h.wants(c));
    let _ = h.b.drain_wakes();
    let out = h.b.take_output(c);
    assert!(!out.is_empty());
    h.b.written(c, h.now);
    assert!(
        h.b.drain_wakes().contains(&c),
        "the reader is told it may read again"
    );
    assert!(h.wants(c));
}

#[test]
fn an_idle_subscriber_is_not_stalled_when_a_burst_arrives() {
    let mut h = H::with(Limits {
        max_inflight: 1,
        max_queued: 2,
        ..Limits::default()
    });
    let s = h.client("s", true, false);
    h.subscribe(s, &[("t", QoS::AtLeastOnce)]);
    let p = h.client("p", true, false);
    h.advance(Duration::from_secs(6)); // idle longer than publish_wait
    for i in 1..=10u16 {
        h.publish(p, "t", &[i as u8], QoS::AtLeastOnce, i);
    }
    let mut got = Vec::new();
    for _ in 0..20 {
        for m in h.recv(s) {
            if let Packet::Publish(m) = m {
                got.push(m.payload[0]);
                h.send(s, Packet::PubAck(m.pid));
            }
        }
    }
    assert_eq!(got, (1..=10).collect::<Vec<u8>>());
    assert_eq!(h.recv(p).len(), 10);
    assert_eq!(h.b.stats().dropped_queue_full, 0);
}

#[test]
fn waiting_publishers_take_turns_and_lose_nothing_while_the_subscriber_moves() {
    let mut h = H::with(Limits {
        max_inflight: 1,
        max_queued: 1,
        ..Limits::default()
    });
    let s = h.client("s", true, false);
    h.subscribe(s, &[("t", QoS::AtLeastOnce)]);
    let p1 = h.client("p1", true, false);
    let p2 = h.client("p2", true, false);
    for i in 1..=10 {
        h.publish(p1, "t", b"p1", QoS::AtLeastOnce, i);
    }
    h.publish(p2, "t", b"p2", QoS::AtLeastOnce, 1);
    let mut got = Vec::new();
    // One acknowledgement a second: slower than nothing, never stalled.
    for _ in 0..30 {
        h.now += Duration::from_secs(1);
        h.b.handle_timeout(h.now);
        for m in h.recv(s) {
            if let Packet::Publish(m) = m {
                got.push(String::from_utf8(m.payload.clone()).unwrap());
                h.send(s, Packet::PubAck(m.pid));
            }
        }
    }
    assert_eq!(got.len(), 11, "{got:?}");
    let p2_at = got.iter().position(|m| m == "p2").unwrap();
    assert!(p2_at <= 3, "p2 waited behind all of p1's messages: {got:?}");
    assert_eq!(h.b.stats().dropped_queue_full, 0);
}

#[test]
fn offline_sessions_give_up_the_total_to_connected_ones() {
    let mut h = H::with(Limits {
        total_queued_bytes: 2000,
        ..Limits::default()
    });
    let off = h.client("off", false, false);
    h.subscribe(off, &[("x", QoS::AtLeastOnce)]);
    h.send(off, Packet::Disconnect);
    h.b.on_closed(off, h.now);
    let p = h.client("p", true, false);
    for i in 1..=12u16 {
        h.publish(p, "x", &[0; 100], QoS::AtLeastOnce, i);
    }
    assert_eq!(h.recv(p).len(), 12);
    // A topic nobody subscribes to does not wait for the total.
    h.publish(p, "nobody/subscribes", b"v", QoS::AtLeastOnce, 100);
    assert_eq!(h.recv(p), [Packet::PubAck(100)]);
    // A connected subscriber gets its message; the offline session's oldest make room.
    let l = h.client("l", true, false);
    h.subscribe(l, &[("t", QoS::AtLeastOnce)]);
    let dropped = h.b.stats().dropped_queue_full;
    h.publish(p, "t", &[1; 500], QoS::AtLeastOnce, 101);
    assert_eq!(h.recv(p), [Packet::PubAck(101)]);
    assert_eq!(publishes(&h.recv(l)).len(), 1);
    assert!(
        h.b.stats().dropped_queue_full > dropped,
        "evicted from the offline session"
    );
    assert!(h.b.queued_bytes() <= 2000);
}

#[test]
fn a_waiting_publisher_still_acknowledges_what_it_receives() {
    // Subscribed to its own topic with a full queue: its PUBACK frees the room its PUBLISH
    // waits for, at once.
    let mut h = H::with(Limits {
        max_inflight: 1,
        max_queued: 1,
        ..Limits::default()
    });
    let c = h.client("c", true, false);
    h.subscribe(c, &[("t", QoS::AtLeastOnce)]);
    h.publish(c, "t", b"1", QoS::AtLeastOnce, 1);
    h.publish(c, "t", b"2", QoS::AtLeastOnce, 2);
    let got = h.recv(c);
    let pid = got
        .iter()
        .find_map(|p| match p {
            Packet::Publish(p) => Some(p.pid),
            _ => None,
        })
        .unwrap();
    h.publish(c, "t", b"3", QoS::AtLeastOnce, 3); // waits: its own queue is full
    h.send(c, Packet::PubAck(pid)); // handled although #3 waits
    let after = h.recv(c);
    assert!(
        after.contains(&Packet::PubAck(3)),
        "#3 went without a timeout: {after:?}"
    );
    assert_eq!(h.b.stats().dropped_queue_full, 0);
}

#[test]
fn a_waiting_publisher_that_pings_is_not_closed_for_silence() {
    let mut h = H::with(Limits {
        max_inflight: 1,
        max_queued: 1,
        ..Limits::default()
    });
    let s = h.client("s", true, false);
    h.subscribe(s, &[("t", QoS::AtLeastOnce)]);
    let mut c = connect_packet("p", true);
    c.keepalive = 2;
    let (p, _) = h.connect_with(c);
    for i in 1..=3 {
        h.publish(p, "t", b"x", QoS::AtLeastOnce, i);
    }
    for _ in 0..4 {
        h.send(p, Packet::PingReq);
        h.advance(Duration::from_secs(1));
        assert!(h.recv(p).contains(&Packet::PingResp));
    }
    assert!(!h.closing(p));
    assert_eq!(h.b.stats().keepalive_timeouts, 0);
}

#[test]
fn pubrec_frees_room_for_a_waiting_publisher() {
    let mut h = H::with(Limits {
        max_inflight: 2,
        session_bytes: 300,
        ..Limits::default()
    });
    let s = h.client("s", true, false);
    h.subscribe(s, &[("t", QoS::ExactlyOnce)]);
    let p = h.client("p", true, false);
    h.publish(p, "t", &[0; 150], QoS::ExactlyOnce, 1);
    h.publish(p, "t", &[0; 150], QoS::ExactlyOnce, 2); // waits: 215 + 215 > 300
    assert_eq!(h.recv(p), [Packet::PubRec(1)]);
    let pid = h
        .recv(s)
        .iter()
        .find_map(|x| match x {
            Packet::Publish(x) => Some(x.pid),
            _ => None,
        })
        .unwrap();
    h.send(s, Packet::PubRec(pid));
    assert_eq!(
        h.recv(p),
        [Packet::PubRec(2)],
        "the PUBREC made room at once"
    );
}

#[test]
fn denied_topics_reach_no_one_through_broader_filters() {
    let mut h = H::new();
    h.b.deny_subscribe(vec!["$hw/events/node/#".into()]);
    h.b.reserve_client("edgecore-n1", b"s3cret");
    let s = h.client("s", true, false);
    assert_eq!(h.subscribe(s, &[("$hw/#", QoS::AtMostOnce)]), [0]);
    let mut own = connect_packet("edgecore-n1", true);
    own.username = Some("x".into());
    own.password = Some(b"s3cret".to_vec());
    let (e, _) = h.connect_with(own);
    assert_eq!(
        h.subscribe(e, &[("$hw/events/node/+/membership/get", QoS::AtMostOnce)]),
        [0]
    );
    let p = h.client("p", true, false);
    h.publish(
        p,
        "$hw/events/node/n1/membership/get",
        b"m",
        QoS::AtMostOnce,
        0,
    );
    h.publish(
        p,
        "$hw/events/device/d/twin/update",
        b"d",
        QoS::AtMostOnce,
        0,
    );
    let got: Vec<String> = publishes(&h.recv(s)).into_iter().map(|m| m.0).collect();
    assert_eq!(got, ["$hw/events/device/d/twin/update"]);
    assert_eq!(
        publishes(&h.recv(e)).len(),
        1,
        "the reserved client still gets it"
    );
}

#[test]
fn the_reserved_client_id_needs_its_secret_and_always_has_a_slot() {
    let mut h = H::with(Limits {
        max_clients: 1,
        ..Limits::default()
    });
    h.b.reserve_client("edgecore-n1", b"s3cret");
    h.client("other", true, false);
    let mut own = connect_packet("edgecore-n1", true);
    own.username = Some("x".into());
    own.password = Some(b"s3cret".to_vec());
    let (e, r) = h.connect_with(own.clone());
    assert!(
        matches!(r[..], [Packet::ConnAck { code: 0, .. }]),
        "not counted against max_clients"
    );
    // Anyone else with that id is refused, and the real one stays connected.
    let (_, r) = h.connect_with(connect_packet("edgecore-n1", true));
    assert!(matches!(
        r[..],
        [Packet::ConnAck {
            code: mqtt::connack::NOT_AUTHORIZED,
            ..
        }]
    ));
    assert!(!h.closing(e));
}

#[test]
fn assigned_ids_cannot_be_guessed_and_taken_over() {
    let mut h = H::new();
    let (a, _) = h.connect_with(connect_packet("", true));
    for guess in ["auto-1", "auto-0", "auto-0000000000000001"] {
        h.client(guess, true, false);
    }
    assert!(!h.closing(a));
}

#[test]
fn a_connection_that_cannot_be_written_to_is_closed_after_write_timeout() {
    let mut h = H::new();
    let mut c = connect_packet("deaf", true);
    c.keepalive = 0;
    let (id, _) = h.connect_with(c);
    h.send(id, Packet::PingReq);
    let _ = h.b.take_output(id); // the runner is writing, and the write never finishes
    h.advance(h.b.limits().write_timeout);
    assert!(h.closing(id));
    assert_eq!(h.b.stats().io_timeouts, 1);
}

#[test]
fn large_packets_share_a_bounded_pool() {
    let mut h = H::with(Limits {
        large_input_bytes: 30_000,
        ..Limits::default()
    });
    let a = h.client("a", true, false);
    let b = h.client("b", true, false);
    let big = |t: &str| client_publish(t, &[7; 20_000], QoS::AtMostOnce, 0, false);
    let (pa, pb) = (big("a"), big("b"));
    h.bytes(a, &pa[..100]);
    h.bytes(b, &pb[..100]);
    assert!(
        h.b.read_budget(a) > 0,
        "the first large packet gets the pool"
    );
    assert_eq!(h.b.read_budget(b), 0, "the second waits for it");
    h.bytes(a, &pa[100..]);
    let _ = h.b.drain_wakes();
    h.b.handle_timeout(h.now);
    assert!(h.b.read_budget(b) > 0, "the pool is free again");
    // A large packet that never completes is closed after packet_timeout.
    h.bytes(b, &pb[100..200]);
    h.advance(h.b.limits().packet_timeout);
    assert!(h.closing(b));
    assert_eq!(h.b.stats().io_timeouts, 1);
}

#[test]
fn wills_are_bounded_in_bytes() {
    let mut h = H::with(Limits {
        will_bytes: 1000,
        ..Limits::default()
    });
    let with_will = |id: &str, n: usize| {
        let mut c = connect_packet(id, true);
        c.will = Some(mqtt::Will {
            topic: "w".into(),
            payload: vec![0; n],
            qos: QoS::AtMostOnce,
            retain: false,
        });
        c
    };
    let (a, r) = h.connect_with(with_will("a", 600));
    assert!(matches!(r[..], [Packet::ConnAck { code: 0, .. }]));
    let (_, r) = h.connect_with(with_will("b", 600));
    assert!(matches!(
        r[..],
        [Packet::ConnAck {
            code: mqtt::connack::SERVER_UNAVAILABLE,
            ..
        }]
    ));
    h.send(a, Packet::Disconnect);
    let (_, r) = h.connect_with(with_will("b", 600));
    assert!(
        matches!(r[..], [Packet::ConnAck { code: 0, .. }]),
        "room again once a's will is gone"
    );
}

#[test]
fn the_default_limits_fit_a_small_gateway() {
    // Everything every hostile client can make the broker hold, together.
    let worst = Limits::default().worst_case_bytes();
    assert!(worst < 16 << 20, "{worst} bytes");
}
