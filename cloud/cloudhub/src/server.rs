//! CloudHub's WebSocket server (§3.2): mutual TLS, the upstream handshake headers, one session
//! per node, keepalive timeout.
//!
//! A connection is accepted only if its client certificate (already verified against the CA by
//! rustls) names the node in its `node_id` header: `CN=system:node:<node_id>`. A second
//! connection for a node replaces the first, as upstream's session manager does.

use std::cell::RefCell;
use std::net::TcpStream;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::StatusCode;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message as WsMessage;
use futures_rustls::TlsAcceptor;
use smol::future::FutureExt;
use smol::stream::StreamExt;
use smol::Async;

use crate::dispatch::{self, Effect};
use crate::Hub;

/// Largest frame accepted from an edge.
pub const MAX_FRAME_BYTES: usize = 16 << 20;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames one session handles in a turn, and their bytes, before it waits for the commit of
/// what they wrote, answers them, and lets every other session run.
pub const FRAME_BUDGET: usize = 64;
pub const FRAME_BUDGET_BYTES: usize = 1 << 20;
/// A write to an edge that does not finish in this long ends its session: an edge that does
/// not read cannot hold its session (or a replaced one) open.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A refused upgrade: the HTTP status and the reason sent as the body.
type Refusal = (StatusCode, String);

fn reject(status: StatusCode, why: String) -> Refusal {
    (status, why)
}

/// The edge store's identity (our edge's extension header; upstream edges send none).
pub const STORE_EPOCH_HEADER: &str = "edgecore-store-epoch";
/// Longest epoch accepted: it is outside data, and ours are 32 hex digits.
pub const MAX_EPOCH_BYTES: usize = 64;

/// A connection that passed the handshake checks.
#[derive(Debug, PartialEq)]
struct Accepted {
    node: String,
    /// The edge's store epoch, if it sent one.
    epoch: Option<String>,
}

/// Checks the upgrade request against the certificate's node name (§3.2 headers).
fn check_request(req: &Request, cert_node: Option<&str>) -> Result<Accepted, Refusal> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    // A value that is not visible ASCII is there but wrong, not missing: say what is wrong.
    let Some(node) = req
        .headers()
        .get("node_id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    else {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "missing node_id header".into(),
        ));
    };
    if let Err(e) = proto::validate_node_name(&node) {
        return Err(reject(StatusCode::BAD_REQUEST, e));
    }
    // Upstream serves nothing on a connection without `ConnectionUse: msg`; we accept a missing
    // header as msg and refuse other uses we do not implement.
    match header("connectionuse").as_deref() {
        None | Some("msg") => {}
        Some(other) => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                format!("ConnectionUse {other:?} is not supported"),
            ))
        }
    }
    let epoch = header(STORE_EPOCH_HEADER);
    if let Some(e) = &epoch {
        let ok = !e.is_empty()
            && e.len() <= MAX_EPOCH_BYTES
            && e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                format!(
                    "{STORE_EPOCH_HEADER} must be 1 to {MAX_EPOCH_BYTES} letters, digits or '-'"
                ),
            ));
        }
    }
    match cert_node {
        Some(c) if c == node => Ok(Accepted { node, epoch }),
        Some(c) => Err(reject(
            StatusCode::FORBIDDEN,
            format!("client certificate is for node {c:?}, not {node:?}"),
        )),
        None => Err(reject(
            StatusCode::FORBIDDEN,
            "client certificate does not name a node (CN=system:node:<name>)".into(),
        )),
    }
}

/// Serves one connection until it ends.
// The handshake callback's error type is tungstenite's, large but not ours to change.
#[allow(clippy::result_large_err)]
/// `established` is called once the handshake passed and the session starts.
pub async fn handle(
    hub: Rc<Hub>,
    acceptor: TlsAcceptor,
    tcp: Async<TcpStream>,
    established: impl FnOnce(),
) {
    let peer = tcp.get_ref().peer_addr().ok();
    let _ = tcp.get_ref().set_nodelay(true);
    let accepted = async {
        let tls = acceptor
            .accept(tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let cert_node = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| pki::common_name(c))
            .and_then(|cn| cn.strip_prefix("system:node:").map(str::to_owned));
        // A revoked certificate chains to the CA like any other: refused here (`enroll`).
        let revoked = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| crate::enroll::tunnel_refusal(&hub, c));
        // The callback's verdict: the node on success, the refusal's reason otherwise (the
        // handshake error itself only carries the status code).
        let verdict = RefCell::new(Err(String::new()));
        let callback = |req: &Request, resp: Response| match revoked.clone().map_or_else(
            || check_request(req, cert_node.as_deref()),
            |why| Err((StatusCode::FORBIDDEN, why)),
        ) {
            Ok(n) => {
                *verdict.borrow_mut() = Ok(n);
                Ok(resp)
            }
            Err((status, why)) => {
                *verdict.borrow_mut() = Err(why.clone());
                let mut r = ErrorResponse::new(Some(why));
                *r.status_mut() = status;
                Err(r)
            }
        };
        let cfg = WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME_BYTES))
            .max_frame_size(Some(MAX_FRAME_BYTES))
            .write_buffer_size(0);
        let ws = async_tungstenite::accept_hdr_async_with_config(tls, callback, Some(cfg)).await;
        let verdict = verdict.into_inner();
        let ws = ws.map_err(|e| match &verdict {
            Err(why) if !why.is_empty() => why.clone(),
            _ => format!("WebSocket handshake: {e}"),
        })?;
        let accepted = verdict?;
        Ok::<_, String>((ws, accepted))
    }
    .or(async {
        smol::Timer::after(HANDSHAKE_TIMEOUT).await;
        Err("handshake timed out".to_owned())
    })
    .await;
    let (mut ws, Accepted { node, epoch }) = match accepted {
        Ok(x) => x,
        Err(e) => {
            log::info!("connection from {peer:?} refused: {e}");
            return;
        }
    };
    let Some((session_id, kill, bell)) = hub.sessions.open(&node, hub.cfg.node_limit) else {
        log::warn!(
            "node {node} refused: session limit {} reached",
            hub.cfg.node_limit
        );
        let _ = ws.close(None).await;
        return;
    };
    log::info!("node {node} connected from {peer:?}");
    established();
    let _live = hub.sessions.live_guard();
    if let Some(epoch) = &epoch {
        note_epoch(&hub, &node, epoch);
    }
    hub.controller.borrow_mut().connected(&node);
    hub.devices.borrow_mut().connected(&node);
    // Ended at once when replaced or at shutdown, wherever the session is waiting (a write
    // included).
    let reason = session(&hub, &mut ws, &node, &kill, &bell)
        .or(async {
            let _ = kill.recv().await;
            "replaced by a newer connection, or shutting down".to_owned()
        })
        .await;
    // A replaced session must not wipe the delivery state of the one that replaced it.
    if hub.sessions.close(&node, session_id) {
        hub.controller.borrow_mut().disconnected(&node);
        hub.devices.borrow_mut().disconnected(&node);
    }
    log::info!("node {node} disconnected: {reason}");
    let _ = ws
        .close(None)
        .or(async {
            smol::Timer::after(Duration::from_secs(1)).await;
            Ok(())
        })
        .await;
}

/// A node connected with store `epoch`: if its store was replaced, delivery starts over.
fn note_epoch(hub: &Hub, node: &str, epoch: &str) {
    match hub.store.borrow_mut().note_store_epoch(node, epoch) {
        Ok(cloudstore::EpochSeen::Replaced { previous, reset }) => log::info!(
            "node {node} has a new store (epoch {previous} before, {epoch} now): sending again the {reset} objects it had acknowledged"
        ),
        Ok(_) => {}
        // Its acknowledgements stand; the next connection tries again.
        Err(e) => log::error!("cannot record the store epoch of node {node}: {e}"),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Writes whatever the delivery plan says `node` should get now.
async fn deliver<S>(
    hub: &Hub,
    ws: &mut async_tungstenite::WebSocketStream<S>,
    node: &str,
) -> Result<(), String>
where
    S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin,
{
    // Only what is durable goes to an edge: an edge must never hold a version a crash of the
    // cloud could take back. (Bounded: under a constant stream of writes, plan anyway.)
    for _ in 0..4 {
        if !hub.store.borrow().is_dirty() {
            break;
        }
        hub.durable().await.map_err(|e| format!("store: {e}"))?;
    }
    let mut msgs =
        hub.controller
            .borrow_mut()
            .plan(node, &hub.store.borrow(), Instant::now(), now_ms());
    for u in hub.controller.borrow_mut().take_undeliverable() {
        log::warn!("{}: {}", u.key, u.message());
        (hub.events.borrow_mut()).record(&u.key, SystemTime::now(), "TooLargeForNode", u.message());
    }
    msgs.extend(
        hub.devices
            .borrow_mut()
            .plan(node, &hub.store.borrow(), now_ms()),
    );
    for m in msgs {
        send(ws, m).await?;
    }
    Ok(())
}

/// Sends one message, within [`WRITE_TIMEOUT`].
async fn send<S>(
    ws: &mut async_tungstenite::WebSocketStream<S>,
    m: proto::Message,
) -> Result<(), String>
where
    S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin,
{
    async {
        ws.send(WsMessage::text(m.encode()))
            .await
            .map_err(|e| format!("write error: {e}"))
    }
    .or(async {
        smol::Timer::after(WRITE_TIMEOUT).await;
        Err(format!("the edge read nothing for {WRITE_TIMEOUT:?}"))
    })
    .await
}

async fn session<S>(
    hub: &Hub,
    ws: &mut async_tungstenite::WebSocketStream<S>,
    node: &str,
    kill: &smol::channel::Receiver<()>,
    bell: &smol::channel::Receiver<()>,
) -> String
where
    S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin,
{
    let timeout = hub.cfg.keepalive_timeout;
    let mut last_keepalive = Instant::now();
    // Also the resend clock of the delivery plan, so at most a second late.
    let mut ticker = smol::Timer::interval(
        (timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1)),
    );
    loop {
        // Level-triggered: after every event, send whatever closes the node's gap.
        if let Err(e) = deliver(hub, ws, node).await {
            return e;
        }
        enum Ev {
            Frame(Option<Result<WsMessage, async_tungstenite::tungstenite::Error>>),
            Tick,
            Bell,
            Kill,
        }
        let ev = async { Ev::Frame(ws.next().await) }
            .or(async {
                // A closed doorbell means the session was replaced: end, never spin on it.
                match bell.recv().await {
                    Ok(()) => Ev::Bell,
                    Err(_) => Ev::Kill,
                }
            })
            .or(async {
                ticker.next().await;
                Ev::Tick
            })
            .or(async {
                let _ = kill.recv().await;
                Ev::Kill
            })
            .await;
        match ev {
            Ev::Kill => return "replaced by a newer connection, or shutting down".into(),
            Ev::Bell => {}
            Ev::Tick => {
                // Upstream resets this timer only on keepalive messages (§3.4).
                if last_keepalive.elapsed() > timeout {
                    return format!("no keepalive for {timeout:?}");
                }
            }
            Ev::Frame(first) => {
                // A turn: this frame and those already waiting, up to the budget; then one
                // commit for all they wrote (shared with every other session's), then the
                // answers.
                let mut replies = Vec::new();
                let mut next = first;
                let (mut frames, mut bytes) = (0, 0);
                loop {
                    let frame = match next {
                        None => return "connection closed".into(),
                        Some(Err(e)) => return format!("read error: {e}"),
                        Some(Ok(f)) => f,
                    };
                    frames += 1;
                    bytes += frame.len();
                    match on_frame(hub, node, frame, &mut last_keepalive) {
                        Err(reason) => return reason,
                        Ok(Some(r)) => replies.push(r),
                        Ok(None) => {}
                    }
                    if frames >= FRAME_BUDGET || bytes >= FRAME_BUDGET_BYTES {
                        break;
                    }
                    match smol::future::poll_once(ws.next()).await {
                        Some(f) => next = f,
                        None => break, // nothing more waiting
                    }
                }
                if let Err(e) = hub.durable().await {
                    return format!("store: {e}");
                }
                for r in replies {
                    if let Err(e) = send(ws, r).await {
                        return e;
                    }
                }
                // The other sessions run before this one reads again.
                smol::future::yield_now().await;
            }
        }
    }
}

/// Handles one frame from `node`: its effect on the hub, and the answer to send once what it
/// wrote is durable. `Err` ends the session with that reason.
fn on_frame(
    hub: &Hub,
    node: &str,
    frame: WsMessage,
    last_keepalive: &mut Instant,
) -> Result<Option<proto::Message>, String> {
    let bytes: &[u8] = match &frame {
        WsMessage::Text(t) => t.as_bytes(),
        WsMessage::Binary(b) => b,
        WsMessage::Close(_) => return Err("closed by the edge".into()),
        _ => return Ok(None),
    };
    let msg = match proto::Message::decode(bytes, MAX_FRAME_BYTES) {
        Ok(m) => m,
        // Upstream edgecore's last words: its edgehub forwards the zero message it reads
        // from a closed channel while shutting down. Expected, not malformed.
        Err(proto::DecodeError::MissingId) if proto::message::is_empty_frame(bytes) => {
            log::debug!("node {node} is shutting down (empty frame)");
            return Ok(None);
        }
        Err(e) => {
            log::warn!("node {node}: dropping malformed frame: {e}");
            return Ok(None);
        }
    };
    let now = SystemTime::now();
    let (effect, reply) = {
        let mut ctx = dispatch::Ctx {
            nodes: &mut hub.registry.borrow_mut(),
            store: &mut hub.store.borrow_mut(),
            events: &mut hub.events.borrow_mut(),
            ca: &hub.ca,
        };
        dispatch::upstream(&mut ctx, node, &msg, now)
    };
    match effect {
        Effect::Keepalive => *last_keepalive = Instant::now(),
        Effect::Ack(parent) => {
            let acked = hub
                .controller
                .borrow_mut()
                .ack(node, &parent, &mut hub.store.borrow_mut());
            match acked {
                Ok(Some(a)) => {
                    let (reason, message) = match a.rv {
                        Some(rv) => ("Delivered", format!("node {node} stored version {rv}")),
                        None => ("RemovedFromNode", format!("node {node} removed it")),
                    };
                    hub.events.borrow_mut().record(&a.key, now, reason, message);
                }
                Ok(None) => {}
                // Not recorded: the object is resent and the edge acknowledges again.
                Err(e) => log::error!("cannot record acknowledgement from {node}: {e}"),
            }
        }
        Effect::MembershipDetail(req) => hub.devices.borrow_mut().detail_requested(node, &req),
        Effect::TwinReport { namespace, name } => {
            hub.devices
                .borrow_mut()
                .observe_report(node, &namespace, &name, &msg.content)
        }
        Effect::Other => {}
    }
    Ok(reply)
}

/// The live sessions: one per node, bounded by the node limit.
#[derive(Default)]
pub struct Sessions {
    inner: RefCell<SessionTable>,
    /// Session tasks still running, closing included (shutdown waits for them).
    live: Rc<std::cell::Cell<usize>>,
}

/// Counts a session task as live until dropped.
pub struct LiveGuard(Rc<std::cell::Cell<usize>>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

#[derive(Default)]
struct SessionTable {
    next_id: u64,
    /// Per node: session id, kill switch (dropping it ends the session), doorbell.
    by_node: std::collections::HashMap<
        String,
        (u64, smol::channel::Sender<()>, smol::channel::Sender<()>),
    >,
}

impl Sessions {
    /// Opens a session for `node`, ending any older one. Returns its id, kill signal and
    /// doorbell; `None` when at the limit.
    fn open(
        &self,
        node: &str,
        limit: usize,
    ) -> Option<(
        u64,
        smol::channel::Receiver<()>,
        smol::channel::Receiver<()>,
    )> {
        let mut t = self.inner.borrow_mut();
        if !t.by_node.contains_key(node) && t.by_node.len() >= limit {
            return None;
        }
        t.next_id += 1;
        let id = t.next_id;
        let (tx, rx) = smol::channel::bounded(1);
        let (bell_tx, bell_rx) = smol::channel::bounded(1);
        // Dropping the old sender closes its channel: the old session sees Kill.
        t.by_node.insert(node.to_owned(), (id, tx, bell_tx));
        Some((id, rx, bell_rx))
    }

    /// Ends session `id` of `node`; true if it was the node's current session.
    fn close(&self, node: &str, id: u64) -> bool {
        let mut t = self.inner.borrow_mut();
        if t.by_node.get(node).is_some_and(|(i, _, _)| *i == id) {
            t.by_node.remove(node);
            return true;
        }
        false
    }

    /// Ends `node`'s session, if it has one (the node was deleted): its task sees Kill.
    pub fn end(&self, node: &str) -> bool {
        self.inner.borrow_mut().by_node.remove(node).is_some()
    }

    /// Rings every session's doorbell (a full doorbell already means "look again").
    pub fn ring_all(&self) {
        for (_, _, bell) in self.inner.borrow().by_node.values() {
            let _ = bell.try_send(());
        }
    }

    /// Whether `node` has a live session.
    pub fn is_connected(&self, node: &str) -> bool {
        self.inner.borrow().by_node.contains_key(node)
    }

    fn live_guard(&self) -> LiveGuard {
        self.live.set(self.live.get() + 1);
        LiveGuard(self.live.clone())
    }

    /// Ends every session (shutdown): each sends its edge a WebSocket Close. Resolves once
    /// every session task has finished, or after `limit`.
    pub async fn close_all(&self, limit: Duration) {
        self.inner.borrow_mut().by_node.clear();
        let deadline = Instant::now() + limit;
        while self.live.get() > 0 && Instant::now() < deadline {
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_tungstenite::tungstenite::http::HeaderValue;

    fn req(headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().uri("/e632/edge0/events");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn handshake_checks_headers_against_certificate() {
        let ok = req(&[
            ("Node_id", "edge0"),
            ("Project_id", "p"),
            ("Connectionuse", "msg"),
        ]);
        assert_eq!(
            check_request(&ok, Some("edge0")).unwrap(),
            Accepted {
                node: "edge0".into(),
                epoch: None
            }
        );
        assert_eq!(
            check_request(&ok, Some("edge1")).unwrap_err().0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            check_request(&ok, None).unwrap_err().0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            check_request(&req(&[]), Some("edge0")).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
        let stream = req(&[("node_id", "edge0"), ("ConnectionUse", "str")]);
        assert_eq!(
            check_request(&stream, Some("edge0")).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
        let missing_use = req(&[("node_id", "edge0")]);
        assert!(check_request(&missing_use, Some("edge0")).is_ok());
        // A name with non-ASCII characters is present, and refused for what it is.
        let unicode = Request::builder()
            .uri("/e632/x/events")
            .header(
                "node_id",
                HeaderValue::from_bytes("nöde".as_bytes()).unwrap(),
            )
            .body(())
            .unwrap();
        let (status, why) = check_request(&unicode, Some("edge0")).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(why.contains("'ö' at byte 1"), "{why}");
    }

    #[test]
    fn the_store_epoch_header_is_read_and_bounded() {
        let with = |e: &str| req(&[("node_id", "edge0"), (STORE_EPOCH_HEADER, e)]);
        assert_eq!(
            check_request(&with("0123abcd"), Some("edge0"))
                .unwrap()
                .epoch
                .as_deref(),
            Some("0123abcd")
        );
        for bad in [
            "",
            "has space",
            "semi;colon",
            &"a".repeat(MAX_EPOCH_BYTES + 1),
        ] {
            let e = check_request(&with(bad), Some("edge0")).unwrap_err();
            assert_eq!(e.0, StatusCode::BAD_REQUEST, "{bad:?}");
            assert!(e.1.contains(STORE_EPOCH_HEADER), "{}", e.1);
        }
    }

    #[test]
    fn newer_session_replaces_older_and_limit_holds() {
        smol::block_on(async {
            let s = Sessions::default();
            let (id1, rx1, _) = s.open("a", 2).unwrap();
            let (id2, _rx2, bell2) = s.open("a", 2).unwrap();
            assert!(rx1.recv().await.is_err(), "old session is told to end");
            assert!(
                !s.close("a", id1),
                "the old session's cleanup must not remove the new one"
            );
            assert!(s.is_connected("a"));
            s.ring_all();
            s.ring_all();
            assert_eq!(bell2.try_recv(), Ok(()));
            assert!(bell2.try_recv().is_err(), "rings coalesce");
            let _b = s.open("b", 2).unwrap();
            assert!(s.open("c", 2).is_none());
            assert!(s.close("a", id2));
            assert!(!s.is_connected("a"));
        });
    }
}
