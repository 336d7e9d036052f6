//! The embedded broker on its own, for conformance suites and side-by-side runs with
//! mosquitto: `cargo run -p broker --example serve -- 127.0.0.1:18831 [DENIED-FILTER...]`.
//! Stops on SIGTERM or when stdin closes (so a test harness that dies takes it along).

fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:1883".into())
        .parse()
        .expect("usage: serve <ip:port> [denied-filter...]");
    let mut cfg = broker::BrokerConfig::new(listen);
    cfg.deny_subscribe = args.collect();
    let listener = broker::bind(&cfg).expect("bind");
    let (mut trigger, shutdown) = bus::Shutdown::new();
    std::thread::spawn(move || {
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        std::process::exit(0);
    });
    smol::block_on(broker::serve(cfg, listener, shutdown));
    trigger.trigger();
}
