//! EdgeHub: the only edgecore module that touches the wire (DESIGN.md §2).
//!
//! It keeps one mutual-TLS WebSocket tunnel to CloudHub (`wss://<server>/<project>/<node>/events`
//! with the upstream headers, §3.2), sends the upstream keepalive every heartbeat, turns module
//! requests into wire messages and answers back into typed replies ([`core`]), and reconnects
//! with exponential back-off and jitter.
//!
//! Dead links are found fast: a WebSocket ping goes out with every keepalive (upstream
//! cloudcore's gorilla server answers pings), and a link on which nothing arrives for two
//! heartbeats is dropped and redialled. A write that cannot finish within a heartbeat counts as
//! dead too. Upstream edgecore has neither check and can sit on a half-open socket for minutes.

#![forbid(unsafe_code)]

pub mod core;

use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message as WsMessage;
use async_tungstenite::WebSocketStream;
use bus::{Bus, BusMessage, Link, Mailbox, ModuleId, Outcome, Shutdown, Throttle};
use futures_rustls::client::TlsStream;
use futures_rustls::rustls::ClientConfig;
use futures_rustls::TlsConnector;
use rustls_pki_types::ServerName;
use smol::future::FutureExt;
use smol::stream::StreamExt;
use smol::{Async, Timer};

use crate::core::{Backoff, Held, HubCore, Inbound, Liveness, ReadBudget};

/// Largest frame accepted from the cloud. Kubernetes objects are capped near 1.5 MiB by etcd;
/// 4 MiB leaves room while keeping a hostile frame from eating a 64 MB gateway. Named in
/// `proto::limits`, where the cloud's object limit is checked against it.
pub const MAX_FRAME_BYTES: usize = proto::limits::EDGE_MAX_FRAME_BYTES;

type Ws = WebSocketStream<TlsStream<Async<TcpStream>>>;

/// EdgeHub settings, resolved by edgecore from its config file and flags.
#[derive(Clone)]
pub struct EdgeHubConfig {
    pub node_name: String,
    pub project_id: String,
    /// `host:port` of CloudHub's WebSocket server; the host must match a SAN of its certificate.
    pub server: String,
    /// The tunnel's TLS settings, loaded again for every dial so a renewed certificate is used
    /// as soon as it is on disk.
    pub tls: TlsSource,
    /// A message here means the certificate was renewed: the session closes cleanly and the
    /// tunnel is redialled at once with the new one.
    pub renewed: Option<smol::channel::Receiver<()>>,
    /// Keepalive period (upstream default 15 s).
    pub heartbeat: Duration,
    pub connect_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The store's identity, sent as [`STORE_EPOCH_HEADER`] on every dial so the cloud knows
    /// when this node's store was replaced (and resends everything). `None` sends nothing.
    pub store_epoch: Option<String>,
}

/// Handshake header carrying the edge store's epoch: our extension, which upstream cloudcore
/// ignores (it reads only `node_id` and `project_id`).
pub const STORE_EPOCH_HEADER: &str = "edgecore-store-epoch";

/// Loads the tunnel's TLS settings (CA, client certificate and key).
pub type TlsSource = std::rc::Rc<dyn Fn() -> Result<Arc<ClientConfig>, String>>;

/// Why a connection attempt or a session ended.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
    #[error("TCP connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error("cannot load the tunnel certificate: {0}")]
    Credentials(String),
    #[error("the edge certificate was renewed; redialling with it")]
    Renewed,
    #[error("WebSocket handshake: {0}")]
    Handshake(async_tungstenite::tungstenite::Error),
    #[error("{0} timed out after {1:?}")]
    Timeout(&'static str, Duration),
    #[error("no traffic from the cloud for {0:?}: link is dead")]
    Dead(Duration),
    #[error("write stalled for {0:?}: link is dead")]
    WriteStalled(Duration),
    #[error("WebSocket: {0}")]
    Ws(async_tungstenite::tungstenite::Error),
    #[error("the cloud closed the tunnel")]
    Closed,
}

async fn timeout<T>(
    what: &'static str,
    d: Duration,
    f: impl std::future::Future<Output = Result<T, HubError>>,
) -> Result<T, HubError> {
    f.or(async {
        Timer::after(d).await;
        Err(HubError::Timeout(what, d))
    })
    .await
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The host part of `host:port` (without IPv6 brackets).
fn host_of(server: &str) -> &str {
    let host = server.rsplit_once(':').map(|(h, _)| h).unwrap_or(server);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Dials the cloud: TCP, TLS (client certificate, server verified against the cloud CA), then
/// the WebSocket upgrade with upstream's headers. Returns the tunnel and our local address.
pub async fn connect(cfg: &EdgeHubConfig) -> Result<(Ws, IpAddr), HubError> {
    // Resolution is synchronous on purpose: smol's async resolver would start a thread pool on
    // a gateway that usually dials an IP literal anyway.
    let addr = cfg
        .server
        .to_socket_addrs()
        .map_err(|e| HubError::Resolve(cfg.server.clone(), e.to_string()))?
        .next()
        .ok_or_else(|| HubError::Resolve(cfg.server.clone(), "no addresses".into()))?;
    let tcp = timeout("TCP connect", cfg.connect_timeout, async {
        Async::<TcpStream>::connect(addr)
            .await
            .map_err(|e| HubError::Connect(addr, e))
    })
    .await?;
    let _ = tcp.get_ref().set_nodelay(true);
    let local_ip = tcp
        .get_ref()
        .local_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let name = ServerName::try_from(host_of(&cfg.server).to_owned())
        .map_err(|e| HubError::Resolve(cfg.server.clone(), e.to_string()))?;
    let tls_config = (cfg.tls)().map_err(HubError::Credentials)?;
    let tls = timeout("TLS handshake", cfg.connect_timeout, async {
        TlsConnector::from(tls_config)
            .connect(name, tcp)
            .await
            .map_err(HubError::Tls)
    })
    .await?;
    let url = format!(
        "wss://{}/{}/{}/events",
        cfg.server, cfg.project_id, cfg.node_name
    );
    let mut req = url.into_client_request().map_err(HubError::Handshake)?;
    let h = req.headers_mut();
    let value = |s: &str| {
        HeaderValue::from_str(s).map_err(|e| HubError::Resolve(s.to_owned(), e.to_string()))
    };
    h.insert("node_id", value(&cfg.node_name)?);
    h.insert("project_id", value(&cfg.project_id)?);
    h.insert("connectionuse", HeaderValue::from_static("msg"));
    if let Some(epoch) = &cfg.store_epoch {
        h.insert(STORE_EPOCH_HEADER, value(epoch)?);
    }
    let ws_cfg = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .write_buffer_size(0);
    let (ws, _) = timeout("WebSocket handshake", cfg.connect_timeout, async {
        async_tungstenite::client_async_with_config(req, tls, Some(ws_cfg))
            .await
            .map_err(HubError::Handshake)
    })
    .await?;
    Ok((ws, local_ip))
}

/// Runs EdgeHub until shutdown.
pub async fn run(cfg: EdgeHubConfig, mailbox: Mailbox, bus: Bus, shutdown: Shutdown) {
    let mut core = HubCore::new(&cfg.node_name);
    let mut held = Held::default();
    let seed = now_ms() as u64 ^ u64::from(std::process::id());
    let mut backoff = Backoff::new(cfg.backoff_base, cfg.backoff_max, seed);
    // A cloud that stays away would otherwise log two lines per attempt, for ever.
    let mut unreachable = Throttle::default();
    loop {
        // This dial loads the current certificate: a renewal signalled before it is served.
        if let Some(r) = &cfg.renewed {
            while r.try_recv().is_ok() {}
        }
        let attempt = async { Some(connect(&cfg).await) }.or(async {
            shutdown.wait().await;
            None
        });
        match attempt.await {
            None => return,
            Some(Ok((ws, local_ip))) => {
                log::info!(
                    "connected to cloud {} as node {}",
                    cfg.server,
                    cfg.node_name
                );
                unreachable.reset();
                bus.set_link(Link::Connected { local_ip });
                let started = Instant::now();
                let mut s = Session {
                    cfg: &cfg,
                    core: &mut core,
                    held: &mut held,
                    mailbox: &mailbox,
                    bus: &bus,
                    shutdown: &shutdown,
                };
                let result = s.run(ws).await;
                bus.set_link(Link::Disconnected);
                for (to, id) in core.drain() {
                    hand(&mut held, &bus, to, lost(id));
                }
                match result {
                    Ok(()) => {
                        log::info!("tunnel closed for shutdown");
                        return;
                    }
                    Err(HubError::Renewed) => {
                        log::info!("{}", HubError::Renewed);
                        continue;
                    }
                    Err(e) => {
                        if let Some(n) = unreachable.allow(Instant::now()) {
                            log::warn!("tunnel lost: {e}{n}");
                        }
                    }
                }
                if started.elapsed() >= cfg.heartbeat {
                    backoff.reset();
                }
            }
            Some(Err(e)) => {
                if let Some(n) = unreachable.allow(Instant::now()) {
                    log::warn!("cannot reach cloud {}: {e}{n}", cfg.server);
                }
            }
        }
        let delay = backoff.next_delay();
        log::debug!("reconnecting in {:.1} s", delay.as_secs_f64());
        if !wait_offline(delay, &mailbox, &bus, &mut held, &shutdown).await {
            return;
        }
    }
}

fn lost(id: bus::RequestId) -> BusMessage {
    BusMessage::Reply {
        id,
        outcome: Outcome::Lost,
    }
}

/// Delivers now, or holds it (in order) while `to` has no room.
fn hand(held: &mut Held, bus: &Bus, to: ModuleId, msg: BusMessage) {
    held.hand(to, msg, |t, m| bus.deliver(t, m).map_err(|bus::Full(m)| m));
}

fn flush(held: &mut Held, bus: &Bus) {
    held.flush(|t, m| bus.deliver(t, m).map_err(|bus::Full(m)| m));
}

/// Resolves when the module the oldest held delivery waits for takes mail; never if nothing
/// is held.
async fn room(held: &Held, bus: &Bus) {
    match held.first_target() {
        Some(to) => bus.room(to).await,
        None => std::future::pending().await,
    }
}

/// Waits out a back-off delay, failing module requests fast meanwhile. False on shutdown.
async fn wait_offline(
    delay: Duration,
    mailbox: &Mailbox,
    bus: &Bus,
    held: &mut Held,
    shutdown: &Shutdown,
) -> bool {
    let deadline = Instant::now() + delay;
    loop {
        flush(held, bus);
        enum Ev {
            Mail(Option<BusMessage>),
            Room,
            Done,
            Stop,
        }
        let ev = async { Ev::Mail(mailbox.recv().await) }
            .or(async {
                room(held, bus).await;
                Ev::Room
            })
            .or(async {
                Timer::at(deadline).await;
                Ev::Done
            })
            .or(async {
                shutdown.wait().await;
                Ev::Stop
            })
            .await;
        match ev {
            Ev::Mail(Some(BusMessage::ToCloud { from, id, .. })) => hand(
                held,
                bus,
                from,
                BusMessage::Reply {
                    id,
                    outcome: Outcome::NotConnected,
                },
            ),
            Ev::Mail(Some(_)) | Ev::Room => {}
            Ev::Mail(None) | Ev::Stop => return false,
            Ev::Done => return true,
        }
    }
}

/// Which module stores and acknowledges objects of `kind`.
fn store_module(kind: bus::ObjectKind) -> ModuleId {
    match kind {
        bus::ObjectKind::Device | bus::ObjectKind::DeviceModel => ModuleId::DeviceTwin,
        _ => ModuleId::MetaManager,
    }
}

async fn send(ws: &mut Ws, msg: WsMessage, limit: Duration) -> Result<(), HubError> {
    async { ws.send(msg).await.map_err(HubError::Ws) }
        .or(async {
            Timer::after(limit).await;
            Err(HubError::WriteStalled(limit))
        })
        .await
}

/// One connected session's context.
struct Session<'a> {
    cfg: &'a EdgeHubConfig,
    core: &'a mut HubCore,
    held: &'a mut Held,
    mailbox: &'a Mailbox,
    bus: &'a Bus,
    shutdown: &'a Shutdown,
}

impl Session<'_> {
    /// Runs the session. `Ok` means shutdown was requested and the tunnel closed cleanly.
    ///
    /// Fairness: frames are read at most [`core::FRAME_BUDGET`] (or
    /// [`core::FRAME_BUDGET_BYTES`]) in a row; then the loop yields to every other task and
    /// looks at its mailbox and timers first. While a delivery is held (a module's mailbox
    /// is full) no frame is read at all: the cloud waits, the mailbox and keepalives do not.
    async fn run(&mut self, mut ws: Ws) -> Result<(), HubError> {
        let cfg = self.cfg;
        let mut liveness = Liveness::new(cfg.heartbeat, Instant::now());
        // Check four times per heartbeat so a dead link is noticed within 2.25 heartbeats.
        let mut ticker = Timer::interval((cfg.heartbeat / 4).max(Duration::from_millis(50)));
        let mut next_keepalive = Instant::now();
        let mut budget = ReadBudget::default();
        let mut others_first = false;
        let mut malformed = Throttle::default();
        loop {
            let now = Instant::now();
            if now >= next_keepalive {
                // Upstream sends the first keepalive immediately on connect (§3.4).
                send(
                    &mut ws,
                    WsMessage::text(HubCore::keepalive(now_ms()).encode()),
                    cfg.heartbeat,
                )
                .await?;
                send(&mut ws, WsMessage::Ping(Vec::new().into()), cfg.heartbeat).await?;
                next_keepalive = now + cfg.heartbeat;
            }
            flush(self.held, self.bus);
            let reading = self.held.is_empty();
            if !reading {
                // Silence while we do not read is ours, not the link's.
                liveness.received(now);
            }
            enum Ev {
                Frame(Option<Result<WsMessage, async_tungstenite::tungstenite::Error>>),
                Mail(Option<BusMessage>),
                Room,
                Tick,
                Stop,
                Renewed,
            }
            let frame = async {
                if !reading {
                    std::future::pending::<()>().await;
                }
                Ev::Frame(ws.next().await)
            };
            let held = &*self.held;
            let others = async { Ev::Mail(self.mailbox.recv().await) }
                .or(async {
                    room(held, self.bus).await;
                    Ev::Room
                })
                .or(async {
                    match &cfg.renewed {
                        Some(r) if r.recv().await.is_ok() => Ev::Renewed,
                        // No renewals (or nobody left to send one): never fires.
                        _ => std::future::pending().await,
                    }
                })
                .or(async {
                    ticker.next().await;
                    Ev::Tick
                })
                .or(async {
                    self.shutdown.wait().await;
                    Ev::Stop
                });
            let ev = if std::mem::take(&mut others_first) {
                others.or(frame).await
            } else {
                frame.or(others).await
            };
            if !matches!(ev, Ev::Frame(_)) {
                budget.refill();
            }
            match ev {
                Ev::Frame(None) => return Err(HubError::Closed),
                Ev::Frame(Some(Err(e))) => return Err(HubError::Ws(e)),
                Ev::Frame(Some(Ok(frame))) => {
                    liveness.received(Instant::now());
                    let bytes: &[u8] = match &frame {
                        WsMessage::Text(t) => t.as_bytes(),
                        WsMessage::Binary(b) => b,
                        WsMessage::Close(_) => return Err(HubError::Closed),
                        _ => &[], // ping (answered by tungstenite), pong: liveness only
                    };
                    if budget.spend(bytes.len().max(1)) {
                        others_first = true;
                        smol::future::yield_now().await;
                    }
                    if bytes.is_empty() {
                        continue;
                    }
                    let msg = match proto::Message::decode(bytes, MAX_FRAME_BYTES) {
                        Ok(m) => m,
                        Err(e) => {
                            if let Some(n) = malformed.allow(Instant::now()) {
                                log::warn!("dropping malformed frame from cloud: {e}{n}");
                            }
                            continue;
                        }
                    };
                    self.inbound(&mut ws, msg).await?;
                }
                Ev::Mail(None) | Ev::Stop | Ev::Renewed => {
                    // Clean close: a Close frame, then TLS close_notify, bounded by one
                    // heartbeat.
                    let _ = async {
                        let _ = ws.close(None).await;
                        while let Some(Ok(_)) = ws.next().await {}
                    }
                    .or(async {
                        Timer::after(cfg.heartbeat.min(Duration::from_secs(2))).await;
                    })
                    .await;
                    return match ev {
                        Ev::Renewed => Err(HubError::Renewed),
                        _ => Ok(()),
                    };
                }
                Ev::Mail(Some(BusMessage::ToCloud { from, id, request })) => {
                    let (msg, evicted) =
                        self.core
                            .request(from, id, request, now_ms(), Instant::now());
                    if let Some((to, id)) = evicted {
                        hand(self.held, self.bus, to, lost(id));
                    }
                    send(&mut ws, WsMessage::text(msg.encode()), cfg.heartbeat).await?;
                }
                Ev::Mail(Some(BusMessage::Upload { topic, payload })) => {
                    let m = HubCore::upload(&topic, &payload, now_ms());
                    send(&mut ws, WsMessage::text(m.encode()), cfg.heartbeat).await?;
                }
                Ev::Mail(Some(BusMessage::Persisted(handle))) => {
                    send(
                        &mut ws,
                        WsMessage::text(HubCore::ack_persisted(*handle, now_ms()).encode()),
                        cfg.heartbeat,
                    )
                    .await?;
                }
                Ev::Mail(Some(_)) | Ev::Room => {}
                Ev::Tick => {
                    let now = Instant::now();
                    if let Some(silence) = liveness.dead(now) {
                        return Err(HubError::Dead(silence));
                    }
                    for (to, id) in self.core.expire(now) {
                        hand(self.held, self.bus, to, lost(id));
                    }
                }
            }
        }
    }

    /// Routes one message from the cloud.
    async fn inbound(&mut self, ws: &mut Ws, msg: proto::Message) -> Result<(), HubError> {
        let (bus, held, hb) = (self.bus, &mut *self.held, self.cfg.heartbeat);
        match self.core.inbound(msg, now_ms()) {
            Inbound::Reply {
                to,
                id,
                outcome,
                ack,
            } => {
                hand(held, bus, to, BusMessage::Reply { id, outcome });
                if let Some(ack) = ack {
                    send(ws, WsMessage::text(ack.encode()), hb).await?;
                }
            }
            Inbound::Ack(ack) => send(ws, WsMessage::text(ack.encode()), hb).await?,
            // Not acknowledged here: MetaManager answers with `Persisted` once the object is
            // on disk. Without MetaManager nothing is acknowledged, so the cloud keeps the
            // object queued rather than believing it delivered.
            Inbound::Store(obj) if bus.is_enabled(store_module(obj.kind)) => hand(
                held,
                bus,
                store_module(obj.kind),
                BusMessage::FromCloud(obj),
            ),
            Inbound::Membership(content) => hand(
                held,
                bus,
                ModuleId::DeviceTwin,
                BusMessage::Membership(content),
            ),
            Inbound::Store(obj) => log::debug!(
                "{} is disabled; not accepting {:?} {}/{}",
                store_module(obj.kind),
                obj.kind,
                obj.namespace,
                obj.name
            ),
            Inbound::Ignore(why) => log::debug!("ignoring cloud message: {why}"),
        }
        Ok(())
    }
}
