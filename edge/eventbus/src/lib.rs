//! EventBus: connects to the MQTT broker (the embedded one or an external one, §5.1 of the
//! protocol spec), subscribes to the upstream topics, hands device and node events to
//! DeviceTwin as typed bus messages, and publishes what DeviceTwin answers.
//!
//! The MQTT client is this crate's own ([`mqtt`]: a sans-IO codec; the runner below owns the
//! socket) so EventBus runs on edgecore's single smol thread: no tokio runtime.

#![forbid(unsafe_code)]

pub mod broker;
pub mod mqtt;
pub mod tls;

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bus::{Bus, BusMessage, Mailbox, ModuleId, Shutdown};
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
    Mqtt(#[from] mqtt::MqttError),
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

async fn read_packet<S: smol::io::AsyncRead + Unpin>(
    sock: &mut S,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<mqtt::Packet, LinkError> {
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

async fn mqtt_session<S>(
    cfg: &EventBusConfig,
    mut sock: S,
    mailbox: &Mailbox,
    bus: &Bus,
) -> Result<(), LinkError>
where
    S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin,
{
    let creds = cfg
        .credentials
        .as_ref()
        .map(|(u, p)| (u.as_str(), p.as_str()));
    sock.write_all(&mqtt::connect(
        &cfg.client_id,
        cfg.keepalive.as_secs() as u16,
        creds,
    ))
    .await?;
    let mut buf = Vec::new();
    match read_packet(&mut sock, &mut buf, cfg.max_packet).await? {
        mqtt::Packet::ConnAck { code: 0, .. } => {}
        mqtt::Packet::ConnAck { code, .. } => return Err(LinkError::Refused(code)),
        _ => return Err(LinkError::Refused(255)),
    }
    let filters: Vec<(&str, u8)> = TWIN_TOPICS
        .iter()
        .chain(UPLOAD_TOPICS.iter())
        .map(|t| (*t, 1))
        .collect();
    sock.write_all(&mqtt::subscribe(1, &filters)).await?;
    log::info!(
        "MQTT: connected to {} and subscribed to the device topics",
        cfg.broker
    );
    let mut ticker = smol::Timer::interval(cfg.keepalive / 2);
    let mut last_rx = Instant::now();
    let mut pending_ping = false;
    loop {
        enum Ev {
            Data(std::io::Result<usize>),
            Mail(Option<BusMessage>),
            Tick,
        }
        let mut chunk = [0u8; 4096];
        let ev = async { Ev::Data(sock.read(&mut chunk).await) }
            .or(async { Ev::Mail(mailbox.recv().await) })
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
                while let Some((p, used)) = mqtt::decode(&buf, cfg.max_packet)? {
                    buf.drain(..used);
                    if let mqtt::Packet::Publish(p) = p {
                        if let (1, Some(id)) = (p.qos, p.id) {
                            sock.write_all(&mqtt::puback(id)).await?;
                        }
                        // Back-pressure, not drops: while DeviceTwin is busy this client stops
                        // reading, and the broker's bounded queue for it absorbs (or sheds) the
                        // burst, counted there.
                        let (to, msg) =
                            if TWIN_TOPICS.iter().any(|f| mqtt::topic_matches(f, &p.topic)) {
                                (
                                    ModuleId::DeviceTwin,
                                    BusMessage::Mqtt {
                                        topic: p.topic,
                                        payload: p.payload,
                                    },
                                )
                            } else {
                                (
                                    ModuleId::EdgeHub,
                                    BusMessage::Upload {
                                        topic: p.topic,
                                        payload: p.payload,
                                    },
                                )
                            };
                        if !bus.send(to, msg).await {
                            return Ok(());
                        }
                    }
                }
            }
            Ev::Mail(None) => {
                let _ = sock.write_all(&mqtt::disconnect()).await;
                return Ok(());
            }
            Ev::Mail(Some(BusMessage::MqttPublish { topic, payload })) => {
                sock.write_all(&mqtt::publish(&topic, &payload, 0, 0))
                    .await?;
            }
            Ev::Mail(Some(_)) => {}
            Ev::Tick => {
                if pending_ping && last_rx.elapsed() > cfg.keepalive {
                    return Err(LinkError::Silent(last_rx.elapsed()));
                }
                if last_rx.elapsed() >= cfg.keepalive / 2 && !pending_ping {
                    sock.write_all(&mqtt::pingreq()).await?;
                    pending_ping = true;
                }
            }
        }
    }
}
