//! The embedded MQTT broker: a small, bounded MQTT 3.1.1 broker on edgecore's own executor, so
//! a gateway needs no separate broker process and no extra thread.
//!
//! What it does: CONNECT (optional username/password), SUBSCRIBE/UNSUBSCRIBE with `+`/`#`
//! filters, PUBLISH at QoS 0 and 1 (acknowledged), fan-out to every matching subscriber at
//! QoS 0, PINGREQ, keepalive enforcement (1.5 × the client's keepalive). No retained messages,
//! no persistent sessions, no QoS 2 (refused by closing the connection), which is what device
//! mappers and upstream's eventbus use.
//!
//! Bounds, each a config value: connections (further ones are closed at once), packet size
//! (a larger packet closes its connection), messages queued per subscriber (a full queue drops
//! the message for that subscriber, counted and logged), and topic filters per client
//! ([`MAX_FILTERS_PER_CLIENT`]; more are refused in the SUBACK). So a flood cannot grow memory.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::time::Duration;

use bus::Shutdown;
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, LocalExecutor};

use crate::mqtt::{self, Packet};

/// Broker limits and listener.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    pub max_connections: usize,
    pub max_packet: usize,
    /// Messages waiting per subscriber at most.
    pub queue_per_client: usize,
    /// Required username and password, if any.
    pub credentials: Option<(String, String)>,
}

impl BrokerConfig {
    pub fn new(listen: SocketAddr) -> Self {
        BrokerConfig {
            listen,
            max_connections: 64,
            max_packet: 256 << 10,
            queue_per_client: 256,
            credentials: None,
        }
    }
}

/// Topic filters one client may hold; SUBSCRIBE beyond this is refused (SUBACK 0x80) so a
/// client cannot grow the broker's memory without bound.
pub const MAX_FILTERS_PER_CLIENT: usize = 128;

/// Adds the requested filters a client does not hold yet, up to the limit; returns the
/// SUBACK codes (0: granted at QoS 0, 0x80: refused).
fn add_filters(held: &mut Vec<String>, requested: Vec<(String, u8)>) -> Vec<u8> {
    requested
        .into_iter()
        .map(|(f, _)| {
            if held.contains(&f) {
                0
            } else if held.len() < MAX_FILTERS_PER_CLIENT {
                held.push(f);
                0
            } else {
                0x80
            }
        })
        .collect()
}

struct Client {
    filters: Vec<String>,
    tx: smol::channel::Sender<Vec<u8>>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    clients: HashMap<u64, Client>,
    dropped: u64,
}

impl State {
    fn route(&mut self, topic: &str, payload: &[u8]) {
        let bytes = mqtt::publish(topic, payload, 0, 0);
        for c in self.clients.values() {
            if c.filters.iter().any(|f| mqtt::topic_matches(f, topic))
                && c.tx.try_send(bytes.clone()).is_err()
            {
                self.dropped += 1;
                if self.dropped.is_power_of_two() {
                    log::warn!(
                        "broker: a subscriber's queue is full; {} messages dropped so far",
                        self.dropped
                    );
                }
            }
        }
    }
}

/// Binds the listener (so the caller learns the address, and a busy port fails at start).
pub fn bind(cfg: &BrokerConfig) -> std::io::Result<Async<TcpListener>> {
    Async::<TcpListener>::bind(cfg.listen)
}

/// Serves until shutdown.
pub async fn serve(cfg: BrokerConfig, listener: Async<TcpListener>, shutdown: Shutdown) {
    log::info!(
        "embedded MQTT broker listening on {}",
        listener
            .get_ref()
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    let state = Rc::new(RefCell::new(State::default()));
    let ex = Rc::new(LocalExecutor::new());
    let accept = {
        let ex = ex.clone();
        async move {
            loop {
                let Ok((sock, peer)) = listener.accept().await else {
                    smol::Timer::after(Duration::from_millis(100)).await;
                    continue;
                };
                if state.borrow().clients.len() >= cfg.max_connections {
                    log::warn!(
                        "broker: connection limit {} reached; refusing {peer}",
                        cfg.max_connections
                    );
                    continue; // dropping the socket closes it
                }
                ex.spawn(connection(sock, state.clone(), cfg.clone()))
                    .detach();
            }
        }
    };
    ex.run(accept.or(async { shutdown.wait().await })).await;
}

async fn connection(mut sock: Async<TcpStream>, state: Rc<RefCell<State>>, cfg: BrokerConfig) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 8192];
    // CONNECT first, within 10 s.
    let first = async {
        loop {
            if let Some((p, n)) = mqtt::decode(&buf, cfg.max_packet).ok()? {
                buf.drain(..n);
                return Some(p);
            }
            let n = sock.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    .or(async {
        smol::Timer::after(Duration::from_secs(10)).await;
        None
    })
    .await;
    let Some(Packet::Connect {
        keepalive,
        username,
        password,
        ..
    }) = first
    else {
        return;
    };
    if let Some((u, p)) = &cfg.credentials {
        if username.as_deref() != Some(u) || password.as_deref() != Some(p) {
            let _ = sock.write_all(&mqtt::connack(5)).await;
            return;
        }
    }
    if sock.write_all(&mqtt::connack(0)).await.is_err() {
        return;
    }
    let (tx, rx) = smol::channel::bounded(cfg.queue_per_client.max(1));
    let id = {
        let mut s = state.borrow_mut();
        s.next_id += 1;
        let id = s.next_id;
        s.clients.insert(
            id,
            Client {
                filters: Vec::new(),
                tx,
            },
        );
        id
    };
    let limit = if keepalive == 0 {
        Duration::from_secs(3600)
    } else {
        Duration::from_millis(u64::from(keepalive) * 1500)
    };
    let _ = serve_client(&mut sock, id, &state, &cfg, &rx, buf, limit).await;
    state.borrow_mut().clients.remove(&id);
}

async fn serve_client(
    sock: &mut Async<TcpStream>,
    id: u64,
    state: &Rc<RefCell<State>>,
    cfg: &BrokerConfig,
    rx: &smol::channel::Receiver<Vec<u8>>,
    mut buf: Vec<u8>,
    limit: Duration,
) -> Result<(), ()> {
    let mut chunk = vec![0u8; 8192];
    loop {
        while let Some((p, n)) =
            mqtt::decode(&buf, cfg.max_packet).map_err(|e| log::debug!("broker: {e}"))?
        {
            buf.drain(..n);
            match p {
                Packet::Publish(p) => {
                    if p.qos > 1 {
                        return Err(());
                    }
                    if let (1, Some(pid)) = (p.qos, p.id) {
                        sock.write_all(&mqtt::puback(pid)).await.map_err(|_| ())?;
                    }
                    state.borrow_mut().route(&p.topic, &p.payload);
                }
                Packet::Subscribe { id: pid, filters } => {
                    let granted = match state.borrow_mut().clients.get_mut(&id) {
                        Some(c) => add_filters(&mut c.filters, filters),
                        None => vec![0x80; filters.len()],
                    };
                    sock.write_all(&mqtt::suback(pid, &granted))
                        .await
                        .map_err(|_| ())?;
                }
                Packet::Unsubscribe { id: pid, filters } => {
                    if let Some(c) = state.borrow_mut().clients.get_mut(&id) {
                        c.filters.retain(|f| !filters.contains(f));
                    }
                    sock.write_all(&mqtt::unsuback(pid)).await.map_err(|_| ())?;
                }
                Packet::PingReq => sock.write_all(&mqtt::pingresp()).await.map_err(|_| ())?,
                Packet::Disconnect => return Ok(()),
                _ => {}
            }
        }
        enum Ev {
            Read(std::io::Result<usize>),
            Out(Option<Vec<u8>>),
            Idle,
        }
        let ev = async { Ev::Read(sock.read(&mut chunk).await) }
            .or(async { Ev::Out(rx.recv().await.ok()) })
            .or(async {
                smol::Timer::after(limit).await;
                Ev::Idle
            })
            .await;
        match ev {
            Ev::Read(Ok(0)) | Ev::Read(Err(_)) | Ev::Out(None) | Ev::Idle => return Err(()),
            Ev::Read(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ev::Out(Some(bytes)) => sock.write_all(&bytes).await.map_err(|_| ())?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_per_client_are_bounded() {
        let mut held = Vec::new();
        let many: Vec<(String, u8)> = (0..MAX_FILTERS_PER_CLIENT + 2)
            .map(|i| (format!("t/{i}"), 1))
            .collect();
        let codes = add_filters(&mut held, many);
        assert_eq!(held.len(), MAX_FILTERS_PER_CLIENT);
        assert!(codes[..MAX_FILTERS_PER_CLIENT].iter().all(|c| *c == 0));
        assert_eq!(&codes[MAX_FILTERS_PER_CLIENT..], [0x80, 0x80]);
        // A filter already held is granted again without growing the list.
        assert_eq!(add_filters(&mut held, vec![("t/0".into(), 0)]), [0]);
        assert_eq!(held.len(), MAX_FILTERS_PER_CLIENT);
    }
}
