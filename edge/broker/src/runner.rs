//! The thin runner: sockets on smol, two small tasks per connection (a reader that feeds the
//! core one bounded read at a time and yields, and a writer that drains the core's output),
//! and one timer task driving the core's deadlines. All of it runs on a local executor nested
//! in the caller's task, so the broker adds no thread.
//!
//! Fairness: a reader handles at most [`READ_CHUNK`] bytes per turn and then yields, so a
//! client publishing without pause gets one turn in many, never the thread; a writer blocked
//! on a client that does not read holds only its own task.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bus::Shutdown;
use smol::channel::{bounded, Receiver, Sender};
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, LocalExecutor};

use crate::{Broker, ConnId, Limits, READ_CHUNK};

/// Broker listener, limits and credentials.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    pub limits: Limits,
    /// Required user name and password, if any.
    pub credentials: Option<(String, String)>,
    /// Filters no client may subscribe to ([`Broker::deny_subscribe`]).
    pub deny_subscribe: Vec<String>,
    /// A client id only the client with this secret (as its password) may use, exempt from
    /// the deny list and the client limit ([`Broker::reserve_client`]): edgecore's EventBus.
    pub reserved: Option<(String, String)>,
}

impl BrokerConfig {
    pub fn new(listen: SocketAddr) -> Self {
        BrokerConfig {
            listen,
            limits: Limits::default(),
            credentials: None,
            deny_subscribe: Vec::new(),
            reserved: None,
        }
    }
}

/// Binds the listener (so the caller learns the address, and a busy port fails at start).
pub fn bind(cfg: &BrokerConfig) -> std::io::Result<Async<TcpListener>> {
    Async::<TcpListener>::bind(cfg.listen)
}

type Bell = (Sender<()>, Receiver<()>);

/// A connection's reader and writer bells.
struct ConnBells {
    reader: Sender<()>,
    writer: Sender<()>,
}

fn bell() -> Bell {
    bounded(1)
}

/// What every task of one broker shares.
struct Shared {
    core: RefCell<Broker>,
    /// Per connection: the reader's and the writer's bell.
    bells: RefCell<HashMap<ConnId, ConnBells>>,
    timer: Bell,
    /// The deadline the timer task sleeps until.
    armed: std::cell::Cell<Option<Instant>>,
}

impl Shared {
    /// Rings the tasks of every connection the core has news for, and the timer if a deadline
    /// came earlier than the one it sleeps for.
    fn ring(&self) {
        let (wakes, next) = {
            let mut core = self.core.borrow_mut();
            (core.drain_wakes(), core.poll_timeout())
        };
        let bells = self.bells.borrow();
        for id in wakes {
            if let Some(b) = bells.get(&id) {
                let _ = b.reader.try_send(()); // a full bell already means "look again"
                let _ = b.writer.try_send(());
            }
        }
        let earlier = match (next, self.armed.get()) {
            (Some(n), Some(a)) => n < a,
            (Some(_), None) => true,
            _ => false,
        };
        if earlier {
            let _ = self.timer.0.try_send(());
        }
    }
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
    let credentials = cfg.credentials.map(|(u, p)| (u, p.into_bytes()));
    let mut core = Broker::new(cfg.limits, credentials);
    core.deny_subscribe(cfg.deny_subscribe);
    if let Some((id, secret)) = &cfg.reserved {
        core.reserve_client(id, secret.as_bytes());
    }
    let shared = Rc::new(Shared {
        core: RefCell::new(core),
        bells: RefCell::new(HashMap::new()),
        timer: bell(),
        armed: Default::default(),
    });
    let ex = Rc::new(LocalExecutor::new());
    ex.spawn(timer(shared.clone())).detach();
    let accept = {
        let ex = ex.clone();
        async move {
            loop {
                let sock = match listener.accept().await {
                    Ok((sock, _)) => sock,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        log::warn!("broker: accept: {e}");
                        smol::Timer::after(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = sock.get_ref().set_nodelay(true);
                let id = shared.core.borrow_mut().accept(Instant::now());
                let (rb, wb) = (bell(), bell());
                shared.bells.borrow_mut().insert(
                    id,
                    ConnBells {
                        reader: rb.0,
                        writer: wb.0,
                    },
                );
                let sock = Rc::new(sock);
                ex.spawn(reader(shared.clone(), id, sock.clone(), rb.1))
                    .detach();
                ex.spawn(writer(shared.clone(), id, sock, wb.1)).detach();
                shared.ring();
                // Let the new connection read its CONNECT before the next accept: a burst of
                // clients connecting at once must not look like sockets held open without one
                // (the oldest handshake is evicted when `max_handshaking` are waiting).
                smol::future::yield_now().await;
            }
        }
    };
    // The broker's tasks run on an executor of their own, driven here one task at a time with
    // a yield to edgecore's executor after each: `LocalExecutor::run` would run up to 200 of
    // them before yielding, so a flooding client's reads (one per task turn) would get 200
    // turns for every one EventBus and DeviceTwin get, and whatever it floods into them
    // would wait seconds.
    let drive = async {
        loop {
            ex.tick().await;
            smol::future::yield_now().await;
        }
    };
    // Accepting is one of those tasks, so a connection accepted is read (its CONNECT) before
    // the next accept, in the executor's order. Dropping the handle at shutdown cancels it.
    let _accept = ex.spawn(accept);
    async { shutdown.wait().await }.or(drive).await;
}

async fn timer(shared: Rc<Shared>) {
    loop {
        let next = shared.core.borrow().poll_timeout();
        shared.armed.set(next);
        let sleep = async {
            match next {
                Some(t) => {
                    smol::Timer::at(t).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        sleep
            .or(async {
                let _ = shared.timer.1.recv().await;
            })
            .await;
        shared.core.borrow_mut().handle_timeout(Instant::now());
        shared.ring();
    }
}

/// Time a closing connection's writer gets to flush what is queued (a refusing CONNACK, the
/// answers to the last packets) before the socket is closed anyway.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads what the core allows, one bounded read per turn. Stops when the broker closes the
/// connection (the writer flushes and closes the socket) or the client does (EOF or error:
/// the client is gone, nothing is flushed).
async fn reader(shared: Rc<Shared>, id: ConnId, sock: Rc<Async<TcpStream>>, bell: Receiver<()>) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let (budget, closing) = {
            let mut core = shared.core.borrow_mut();
            (core.read_budget(id), core.is_closing(id))
        };
        if closing {
            shared.ring();
            return;
        }
        if budget == 0 {
            // Over its write budget, behind a waiting PUBLISH, or waiting for the large-packet
            // pool: rung when that changes.
            if bell.recv().await.is_err() {
                return;
            }
            continue;
        }
        let mut s: &Async<TcpStream> = &sock;
        let n = async { s.read(&mut buf[..budget]).await }
            .or(async {
                // Woken while waiting for data: the connection may be closing; look again.
                let _ = bell.recv().await;
                Err(std::io::ErrorKind::Interrupted.into())
            })
            .await;
        match n {
            Ok(0) => break,
            Ok(n) => {
                shared
                    .core
                    .borrow_mut()
                    .on_bytes(id, &buf[..n], Instant::now());
                shared.ring();
                // One read per turn: the rest of the node runs between a flooder's reads.
                smol::future::yield_now().await;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    shared.core.borrow_mut().on_closed(id, Instant::now());
    shared.ring();
    let _ = sock.get_ref().shutdown(std::net::Shutdown::Both);
    if let Some(b) = shared.bells.borrow().get(&id) {
        let _ = b.writer.try_send(());
    }
}

/// Writes what the core queues. The only task that closes a connection the broker closed:
/// after flushing what is queued (within [`FLUSH_TIMEOUT`]).
async fn writer(shared: Rc<Shared>, id: ConnId, sock: Rc<Async<TcpStream>>, bell: Receiver<()>) {
    loop {
        let (out, closing) = {
            let mut core = shared.core.borrow_mut();
            (core.take_output(id), core.is_closing(id))
        };
        if !out.is_empty() {
            let mut s: &Async<TcpStream> = &sock;
            let wrote = async { s.write_all(&out).await.is_ok() }
                .or(async {
                    // A client that does not read must not keep a closing connection open.
                    loop {
                        if bell.recv().await.is_err() || shared.core.borrow().is_closing(id) {
                            smol::Timer::after(FLUSH_TIMEOUT).await;
                            return false;
                        }
                    }
                })
                .await;
            if !wrote {
                break;
            }
            shared.core.borrow_mut().written(id, Instant::now());
            shared.ring();
            continue;
        }
        if closing {
            break;
        }
        if bell.recv().await.is_err() {
            break;
        }
    }
    let _ = sock.get_ref().shutdown(std::net::Shutdown::Both);
    shared.core.borrow_mut().on_closed(id, Instant::now());
    shared.bells.borrow_mut().remove(&id);
    shared.ring();
}
