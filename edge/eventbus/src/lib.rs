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

/// Runs EventBus until shutdown, reconnecting to the broker with back-off.
pub async fn run(cfg: EventBusConfig, mailbox: Mailbox, bus: Bus, shutdown: Shutdown) {
    let mut delay = Duration::from_millis(200);
    loop {
        let session = async { Some(session(&cfg, &mailbox, &bus).await) }.or(async {
            shutdown.wait().await;
            None
        });
        match session.await {
            None => return,
            Some(Ok(())) => return,
            Some(Err(e)) => log::warn!("MQTT: {e}; reconnecting in {delay:?}"),
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

async fn session(cfg: &EventBusConfig, mailbox: &Mailbox, bus: &Bus) -> Result<(), LinkError> {
    let addr = resolve(&cfg.broker)?;
    let tcp = Async::<TcpStream>::connect(addr)
        .await
        .map_err(|e| LinkError::Connect(cfg.broker.clone(), e.to_string()))?;
    match &cfg.tls {
        None => mqtt_session(cfg, tcp, mailbox, bus).await,
        Some(tls) => {
            let host = cfg
                .broker
                .rsplit_once(':')
                .map_or(cfg.broker.as_str(), |(h, _)| h)
                .trim_matches(['[', ']']);
            let name = rustls_pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| LinkError::Connect(cfg.broker.clone(), e.to_string()))?;
            let stream = futures_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| LinkError::Connect(cfg.broker.clone(), format!("TLS: {e}")))?;
            mqtt_session(cfg, stream, mailbox, bus).await
        }
    }
}

/// A message from the broker on its way to a module, held while that module's mailbox is
/// full. Boxed so it survives the select below: dropping a pending send would drop the message.
type Forward = std::pin::Pin<Box<dyn std::future::Future<Output = bool>>>;

async fn mqtt_session<S>(
    cfg: &EventBusConfig,
    mut sock: S,
    mailbox: &Mailbox,
    bus: &Bus,
) -> Result<(), LinkError>
where
    S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin,
{
    let mut connect = mqtt::Connect::new(&cfg.client_id, cfg.keepalive.as_secs() as u16, true);
    if let Some((u, p)) = &cfg.credentials {
        connect = connect.credentials(u, p);
    }
    sock.write_all(&connect.to_bytes()).await?;
    let mut buf = Vec::new();
    match read_packet(&mut sock, &mut buf, cfg.max_packet).await? {
        Packet::ConnAck { code: 0, .. } => {}
        Packet::ConnAck { code, .. } => return Err(LinkError::Refused(code)),
        _ => return Err(LinkError::Refused(255)),
    }
    let filters = TWIN_TOPICS
        .iter()
        .chain(UPLOAD_TOPICS.iter())
        .map(|t| (t.to_string(), QoS::AtLeastOnce))
        .collect();
    sock.write_all(&Packet::Subscribe { pid: 1, filters }.to_bytes())
        .await?;
    log::info!(
        "MQTT: connected to {} and subscribed to the device topics",
        cfg.broker
    );
    let mut ticker = smol::Timer::interval(cfg.keepalive / 2);
    let mut last_rx = Instant::now();
    let mut pending_ping = false;
    let mut next_pid: u16 = 0;
    // While a message waits for room in a module's mailbox, the broker is not read (TCP pushes
    // back on it, and its bounded queue for us makes QoS 1 publishers wait) but this mailbox
    // still is: DeviceTwin's results must reach the broker while DeviceTwin's inbox is full,
    // or the two would wait on each other.
    let mut forward: Option<Forward> = None;
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        while forward.is_none() {
            let Some((p, used)) = mqtt::decode(&buf, cfg.max_packet)? else {
                break;
            };
            buf.drain(..used);
            match p {
                Packet::Publish(p) => {
                    if p.qos == QoS::AtLeastOnce {
                        sock.write_all(&Packet::PubAck(p.pid).to_bytes()).await?;
                    }
                    let (to, msg) = to_module(p.topic, p.payload);
                    let bus = bus.clone();
                    forward = Some(Box::pin(async move { bus.send(to, msg).await }));
                }
                // Subscribed at QoS 1, so the broker sends nothing at QoS 2; should one arrive,
                // finish its exchange rather than leave the broker waiting.
                Packet::PubRel(pid) => sock.write_all(&Packet::PubComp(pid).to_bytes()).await?,
                _ => {}
            }
        }
        enum Ev {
            Data(std::io::Result<usize>),
            Forwarded(bool),
            Mail(Option<BusMessage>),
            Tick,
        }
        let reading = forward.is_none();
        let ev = async {
            match forward.as_mut() {
                Some(f) => Ev::Forwarded(f.await),
                None => std::future::pending().await,
            }
        }
        .or(async { Ev::Mail(mailbox.recv().await) })
        .or(async {
            if reading {
                Ev::Data(sock.read(&mut chunk).await)
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
            Ev::Data(Err(e)) => return Err(e.into()),
            Ev::Data(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                last_rx = Instant::now();
                pending_ping = false;
                smol::future::yield_now().await;
            }
            Ev::Forwarded(true) => forward = None,
            Ev::Forwarded(false) => return Ok(()), // the module is gone: edgecore is stopping
            Ev::Mail(None) => {
                let _ = sock.write_all(&Packet::Disconnect.to_bytes()).await;
                return Ok(());
            }
            Ev::Mail(Some(BusMessage::MqttPublish { topic, payload })) => {
                // Results and deltas for devices go out at QoS 1 as upstream's eventbus
                // publishes them; the broker's PUBACK needs no answer.
                next_pid = next_pid.checked_add(1).unwrap_or(1);
                let p = mqtt::Publish::new(&topic, &payload, QoS::AtLeastOnce, next_pid);
                sock.write_all(&Packet::Publish(p).to_bytes()).await?;
            }
            Ev::Mail(Some(_)) => {}
            Ev::Tick => {
                if pending_ping && last_rx.elapsed() > cfg.keepalive {
                    return Err(LinkError::Silent(last_rx.elapsed()));
                }
                if last_rx.elapsed() >= cfg.keepalive / 2 && !pending_ping {
                    sock.write_all(&Packet::PingReq.to_bytes()).await?;
                    pending_ping = true;
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
