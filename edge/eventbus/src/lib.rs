//! EventBus: connects to the MQTT broker (the embedded one or an external one, §5.1 of the
//! protocol spec), subscribes to the upstream topics, hands device and node events to
//! DeviceTwin as typed bus messages, and publishes what DeviceTwin answers.
//!
//! The MQTT client is this crate's own over the `mqtt` crate's sans-IO codec (the runner below
//! owns the socket), so EventBus runs on edgecore's single smol thread: no tokio runtime. It
//! reads the broker one bounded chunk per turn, and never stops draining its own mailbox.

#![forbid(unsafe_code)]

pub mod tls;

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bus::{Bus, BusMessage, Mailbox, ModuleId, Shutdown};
use mqtt::{Packet, QoS};
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::stream::StreamExt;
use smol::Async;

/// Application topics upstream's eventbus forwards to the cloud as `upload` (§5.1).
pub const UPLOAD_TOPICS: [&str; 3] = ["$hw/events/upload/#", "SYS/dis/upload_records", "+/user/#"];

/// The topics upstream's eventbus subscribes to (QoS 1) that DeviceTwin serves.
pub const TWIN_TOPICS: [&str; 3] = [
    "$hw/events/device/+/+/twin/+",
    "$hw/events/device/+/+/state/update",
    "$hw/events/node/+/membership/get",
];

/// EventBus settings.
#[derive(Clone, Debug)]
pub struct EventBusConfig {
    /// `host:port` of the broker.
    pub broker: String,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    /// Largest MQTT packet accepted; larger ones close the connection (the broker should
    /// have refused them first).
    pub max_packet: usize,
    pub keepalive: Duration,
    /// TLS to the broker (server verified against the configured CA), or plain TCP.
    pub tls: Option<std::sync::Arc<futures_rustls::rustls::ClientConfig>>,
}

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("cannot reach MQTT broker {0}: {1}")]
    Connect(String, String),
    #[error("MQTT broker refused the connection (CONNACK code {0})")]
    Refused(u8),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Mqtt(#[from] mqtt::Error),
    #[error("broker closed the connection")]
    Closed,
    #[error("no answer from the broker for {0:?}")]
    Silent(Duration),
}

fn resolve(s: &str) -> Result<SocketAddr, LinkError> {
    s.to_socket_addrs()
        .map_err(|e| LinkError::Connect(s.to_owned(), e.to_string()))?
        .next()
        .ok_or_else(|| LinkError::Connect(s.to_owned(), "no address".into()))
}

/// Runs EventBus until shutdown, reconnecting to the broker with back-off (reset once a
/// session got its CONNACK).
pub async fn run(cfg: EventBusConfig, mailbox: Mailbox, bus: Bus, shutdown: Shutdown) {
    const FIRST: Duration = Duration::from_millis(200);
    let mut delay = FIRST;
    loop {
        let connected = std::cell::Cell::new(false);
        let session = async { Some(session(&cfg, &mailbox, &bus, &connected).await) }.or(async {
            shutdown.wait().await;
            None
        });
        match session.await {
            None => return,
            Some(Ok(())) => return,
            Some(Err(e)) => {
                if connected.get() {
                    delay = FIRST;
                }
                log::warn!("MQTT: {e}; reconnecting in {delay:?}")
            }
        }
        let stop = async {
            shutdown.wait().await;
            true
        }
        .or(async {
            smol::Timer::after(delay).await;
            false
        });
        if stop.await {
            return;
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// Bytes read from the broker per turn: after each read EventBus yields, so a burst from the
/// broker never holds edgecore's thread.
const READ_CHUNK: usize = 8 << 10;

/// Bytes waiting to be written to the broker at most; while full, EventBus takes no more mail
/// (DeviceTwin's results wait in its outbox) but keeps reading and writing.
const OUT_CAP: usize = 64 << 10;

/// Time the broker has to accept the TCP connection, finish TLS and answer CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

async fn timeout<T>(
    what: &str,
    broker: &str,
    f: impl std::future::Future<Output = Result<T, LinkError>>,
) -> Result<T, LinkError> {
    f.or(async {
        smol::Timer::after(CONNECT_TIMEOUT).await;
        Err(LinkError::Connect(
            broker.to_owned(),
            format!("no {what} within {CONNECT_TIMEOUT:?}"),
        ))
    })
    .await
}

async fn read_packet<S: smol::io::AsyncRead + Unpin>(
    sock: &mut S,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<Packet, LinkError> {
    loop {
        if let Some((p, n)) = mqtt::decode(buf, max)? {
            buf.drain(..n);
            return Ok(p);
        }
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Err(LinkError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn session(
    cfg: &EventBusConfig,
    mailbox: &Mailbox,
    bus: &Bus,
    connected: &std::cell::Cell<bool>,
) -> Result<(), LinkError> {
    let addr = resolve(&cfg.broker)?;
    let tcp = timeout("TCP connection", &cfg.broker, async {
        Async::<TcpStream>::connect(addr)
            .await
            .map_err(|e| LinkError::Connect(cfg.broker.clone(), e.to_string()))
    })
    .await?;
    match &cfg.tls {
        None => mqtt_session(cfg, tcp, mailbox, bus, connected).await,
        Some(tls) => {
            let host = cfg
                .broker
                .rsplit_once(':')
                .map_or(cfg.broker.as_str(), |(h, _)| h)
                .trim_matches(['[', ']']);
            let name = rustls_pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| LinkError::Connect(cfg.broker.clone(), e.to_string()))?;
            let stream = timeout("TLS handshake", &cfg.broker, async {
                futures_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| LinkError::Connect(cfg.broker.clone(), format!("TLS: {e}")))
            })
            .await?;
            mqtt_session(cfg, stream, mailbox, bus, connected).await
        }
    }
}

/// A message from the broker on its way to a module, held while that module's mailbox is
/// full, with the acknowledgement it is owed once delivered. Boxed so it survives the select
/// below: dropping a pending send would drop the message.
struct Forward {
    send: std::pin::Pin<Box<dyn std::future::Future<Output = bool>>>,
    /// PUBACK (QoS 1) or PUBREC (QoS 2) to send once the module has the message: until then
    /// the broker keeps it in flight, so a reconnect re-delivers it [MQTT-4.4.0-1].
    ack: Option<Packet>,
}

/// One connection to the broker. Nothing in the loop waits on the socket's writes: output
/// goes to a bounded buffer written by its own branch of the select, so reading the broker,
/// taking DeviceTwin's results and keeping the connection alive never wait on each other.
async fn mqtt_session<S>(
    cfg: &EventBusConfig,
    sock: S,
    mailbox: &Mailbox,
    bus: &Bus,
    connected: &std::cell::Cell<bool>,
) -> Result<(), LinkError>
where
    S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = smol::io::split(sock);
    // A persistent session under a stable id: what the broker queued for EventBus while it
    // reconnected is delivered, not dropped.
    let mut connect = mqtt::Connect::new(&cfg.client_id, cfg.keepalive.as_secs() as u16, false);
    if let Some((u, p)) = &cfg.credentials {
        connect = connect.credentials(u, p);
    }
    let mut buf = Vec::new();
    timeout("CONNACK", &cfg.broker, async {
        wr.write_all(&connect.to_bytes()).await?;
        match read_packet(&mut rd, &mut buf, cfg.max_packet).await? {
            Packet::ConnAck { code: 0, .. } => Ok(()),
            Packet::ConnAck { code, .. } => Err(LinkError::Refused(code)),
            _ => Err(LinkError::Refused(255)),
        }
    })
    .await?;
    connected.set(true);
    let filters: Vec<(String, QoS)> = TWIN_TOPICS
        .iter()
        .chain(UPLOAD_TOPICS.iter())
        .map(|t| (t.to_string(), QoS::AtLeastOnce))
        .collect();
    let mut out = Packet::Subscribe {
        pid: 1,
        filters: filters.clone(),
    }
    .to_bytes();
    log::info!(
        "MQTT: connected to {} and subscribed to the device topics",
        cfg.broker
    );
    let mut ticker = smol::Timer::interval(cfg.keepalive / 4);
    let mut last_tx = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    let mut next_pid: u16 = 1;
    // While a message waits for room in a module's mailbox, the broker is not read (TCP pushes
    // back on it, and its bounded queue for us makes QoS 1 publishers wait), but this mailbox
    // still is, and output still goes: DeviceTwin's results must reach the broker while
    // DeviceTwin's inbox is full, or the two would wait on each other.
    let mut forward: Option<Forward> = None;
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        while forward.is_none() && out.len() < OUT_CAP {
            let Some((p, used)) = mqtt::decode(&buf, cfg.max_packet)? else {
                break;
            };
            buf.drain(..used);
            match p {
                Packet::Publish(p) => {
                    let ack = match p.qos {
                        QoS::AtMostOnce => None,
                        QoS::AtLeastOnce => Some(Packet::PubAck(p.pid)),
                        QoS::ExactlyOnce => Some(Packet::PubRec(p.pid)),
                    };
                    let (to, msg) = to_module(p.topic, p.payload);
                    let bus = bus.clone();
                    forward = Some(Forward {
                        send: Box::pin(async move { bus.send(to, msg).await }),
                        ack,
                    });
                }
                Packet::PubRel(pid) => Packet::PubComp(pid).encode(&mut out),
                Packet::PingResp => ping_sent = None,
                Packet::SubAck { pid: 1, codes } => {
                    for ((f, _), c) in filters.iter().zip(&codes) {
                        if *c == mqtt::SUBACK_FAILURE {
                            log::warn!("MQTT: the broker refused the subscription to {f}");
                        }
                    }
                }
                _ => {}
            }
        }
        enum Ev {
            Data(std::io::Result<usize>),
            Wrote(std::io::Result<usize>),
            Forwarded(bool),
            Mail(Option<BusMessage>),
            Tick,
        }
        let reading = forward.is_none() && buf.len() <= cfg.max_packet;
        let (writing, mail) = (!out.is_empty(), out.len() < OUT_CAP);
        let ev = async {
            match forward.as_mut() {
                Some(f) => Ev::Forwarded(f.send.as_mut().await),
                None => std::future::pending().await,
            }
        }
        .or(async {
            if writing {
                // Cancel-safe: a write that is not ready has taken no bytes.
                Ev::Wrote(wr.write(&out).await)
            } else {
                std::future::pending().await
            }
        })
        .or(async {
            if mail {
                Ev::Mail(mailbox.recv().await)
            } else {
                std::future::pending().await
            }
        })
        .or(async {
            if reading {
                Ev::Data(rd.read(&mut chunk).await)
            } else {
                std::future::pending().await
            }
        })
        .or(async {
            ticker.next().await;
            Ev::Tick
        })
        .await;
        match ev {
            Ev::Data(Ok(0)) => return Err(LinkError::Closed),
            Ev::Data(Err(e)) | Ev::Wrote(Err(e)) => return Err(e.into()),
            Ev::Data(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                smol::future::yield_now().await;
            }
            Ev::Wrote(Ok(n)) => {
                out.drain(..n);
                last_tx = Instant::now();
            }
            Ev::Forwarded(true) => {
                if let Some(ack) = forward.take().and_then(|f| f.ack) {
                    ack.encode(&mut out);
                }
            }
            Ev::Forwarded(false) => return Ok(()), // the module is gone: edgecore is stopping
            Ev::Mail(None) => {
                let _ = wr.write_all(&out).await;
                let _ = wr.write_all(&Packet::Disconnect.to_bytes()).await;
                return Ok(());
            }
            Ev::Mail(Some(BusMessage::MqttPublish { topic, payload })) => {
                // Results and deltas for devices go out at QoS 1, queued by the broker for
                // subscribers that asked for it; its PUBACK needs no answer.
                let p = mqtt::Publish::new(&topic, &payload, QoS::AtLeastOnce, next_pid);
                next_pid = next_pid.checked_add(1).unwrap_or(1);
                Packet::Publish(p).encode(&mut out);
            }
            Ev::Mail(Some(_)) => {}
            Ev::Tick => {
                // The broker must hear from us within its keepalive [MQTT-3.1.2-23]: measured
                // from what we sent, not from what we received.
                if ping_sent.is_none() && last_tx.elapsed() >= cfg.keepalive / 2 {
                    Packet::PingReq.encode(&mut out);
                    ping_sent = Some(Instant::now());
                }
                // No PINGRESP is a silent broker, unless we are the ones not reading.
                if let Some(t) = ping_sent {
                    if !reading {
                        ping_sent = Some(Instant::now());
                    } else if t.elapsed() > cfg.keepalive {
                        return Err(LinkError::Silent(t.elapsed()));
                    }
                }
            }
        }
    }
}

/// Device and node events go to DeviceTwin; application messages on the upload topics go to
/// the cloud through EdgeHub (§5.1).
fn to_module(topic: String, payload: Vec<u8>) -> (ModuleId, BusMessage) {
    if TWIN_TOPICS.iter().any(|f| mqtt::topic::matches(f, &topic)) {
        (ModuleId::DeviceTwin, BusMessage::Mqtt { topic, payload })
    } else {
        (ModuleId::EdgeHub, BusMessage::Upload { topic, payload })
    }
}
