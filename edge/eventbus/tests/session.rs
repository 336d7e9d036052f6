//! EventBus against the embedded broker on loopback, both on one local executor as in
//! edgecore: with a keepalive of 1 s and a steady stream of QoS 0 messages coming in (which
//! EventBus never has to answer), EventBus must still ping: the broker measures keepalive from
//! what the client sends, and a dropped connection would lose the QoS 0 messages sent while it
//! reconnects. Every message sent over 4 s (4 keepalives) must arrive.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use bus::{Bus, BusMessage, ModuleId, Shutdown};
use mqtt::{Connect, Packet, Publish, QoS};

#[test]
fn eventbus_pings_while_only_receiving() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    const SENT: usize = 80;
    let publisher = std::thread::spawn(move || {
        // Wait for EventBus to be subscribed: the first message that comes back through a
        // probe subscriber proves the broker is up.
        let mut c = loop {
            if let Ok(c) = TcpStream::connect(("127.0.0.1", port)) {
                break c;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        c.write_all(&Connect::new("pub", 0, true).to_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(500)); // EventBus connects and subscribes
        for i in 0..SENT {
            let p = Publish::new("dev/user/t", &(i as u32).to_be_bytes(), QoS::AtMostOnce, 0);
            c.write_all(&Packet::Publish(p).to_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let got = smol::block_on(async {
        let (bus, mut boxes) = Bus::new(&[ModuleId::EdgeHub, ModuleId::EventBus]);
        let eventbus_box = boxes.pop().unwrap();
        let edgehub_box = boxes.pop().unwrap();
        let (mut trigger, shutdown) = Shutdown::new();
        let mut bc = broker::BrokerConfig::new(listen);
        bc.reserved = Some(("edgecore-t".into(), "secret".into()));
        let listener = broker::bind(&bc).unwrap();
        let cfg = eventbus::EventBusConfig {
            broker: listen.to_string(),
            client_id: "edgecore-t".into(),
            credentials: Some(("edgecore".into(), "secret".into())),
            max_packet: 1 << 16,
            keepalive: Duration::from_secs(1),
            tls: None,
        };
        let ex = smol::LocalExecutor::new();
        ex.spawn(broker::serve(bc, listener, shutdown.clone()))
            .detach();
        ex.spawn(eventbus::run(cfg, eventbus_box, bus.clone(), shutdown))
            .detach();
        ex.run(async {
            let mut got = Vec::new();
            while got.len() < SENT {
                let next = edgehub_box.recv();
                let m = smol::future::or(next, async {
                    smol::Timer::after(Duration::from_secs(10)).await;
                    None
                })
                .await;
                match m {
                    Some(BusMessage::Upload { payload, .. }) => {
                        got.push(u32::from_be_bytes(payload[..4].try_into().unwrap()))
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            trigger.trigger();
            got
        })
        .await
    });
    publisher.join().unwrap();
    assert_eq!(
        got,
        (0..SENT as u32).collect::<Vec<_>>(),
        "messages lost: EventBus was dropped"
    );
}
