//! Mailboxes, state cells and the rules for waiting on them (see the crate docs).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use event_listener::Event;

use crate::{BusMessage, DesiredPods, Link, ModuleId};

/// Mail (everything but replies and state) a mailbox holds at most, in messages.
pub const MAILBOX_CAPACITY: usize = 64;
/// Mail a mailbox holds at most, in bytes ([`BusMessage::weight`]). A message larger than
/// this is still taken when the box holds no mail, so the largest frame (4 MiB) gets
/// through, one at a time.
pub const MAILBOX_BYTES: usize = 1 << 20;
/// Replies a mailbox holds at most, in bytes; as for mail, one larger reply fits an empty
/// reply room.
pub const REPLY_BYTES: usize = 1 << 20;

/// Why a message was handed back by [`Bus::deliver`]: the mailbox has no room for it now.
/// Keep it and try again once [`Bus::room`] fires; nothing is lost.
#[derive(Debug, PartialEq)]
#[must_use = "a refused message is handed back to be kept and delivered later"]
pub struct Full(pub BusMessage);

/// What woke a module's loop ([`Mailbox::next`]).
#[derive(Debug)]
pub enum Wake {
    Mail(BusMessage),
    Tick,
    /// Shutdown was triggered, or every sender is gone.
    Stop,
}

/// One module's queue. Mail and replies share the queue (arrival order is kept) but are
/// counted apart, so requests and pushes can never take the room reserved for replies.
struct Inbox {
    queue: RefCell<VecDeque<(bool, usize, BusMessage)>>,
    mail: Cell<usize>,
    mail_bytes: Cell<usize>,
    replies: Cell<usize>,
    reply_bytes: Cell<usize>,
    reply_room: usize,
    /// The reader dropped its mailbox: nothing more is accepted.
    gone: Cell<bool>,
    /// Rung for the reader: mail, a changed cell, or the bus closing.
    arrived: Event,
    /// Rung for writers: something left the queue.
    left: Event,
}

impl Inbox {
    fn admits(&self, is_reply: bool, w: usize) -> bool {
        if is_reply {
            self.replies.get() < self.reply_room
                && (self.reply_bytes.get() == 0 || self.reply_bytes.get() + w <= REPLY_BYTES)
        } else {
            self.mail.get() < MAILBOX_CAPACITY
                && (self.mail_bytes.get() == 0 || self.mail_bytes.get() + w <= MAILBOX_BYTES)
        }
    }

    fn push(&self, msg: BusMessage) -> Result<(), BusMessage> {
        let is_reply = matches!(msg, BusMessage::Reply { .. });
        let w = msg.weight();
        if !self.admits(is_reply, w) {
            return Err(msg);
        }
        if is_reply {
            self.replies.set(self.replies.get() + 1);
            self.reply_bytes.set(self.reply_bytes.get() + w);
        } else {
            self.mail.set(self.mail.get() + 1);
            self.mail_bytes.set(self.mail_bytes.get() + w);
        }
        self.queue.borrow_mut().push_back((is_reply, w, msg));
        self.arrived.notify(usize::MAX);
        Ok(())
    }

    /// Pops the head if `fits(weight)` says so.
    fn pop_if(&self, fits: impl Fn(usize) -> bool) -> Option<BusMessage> {
        let mut q = self.queue.borrow_mut();
        if !fits(q.front()?.1) {
            return None;
        }
        let (is_reply, w, msg) = q.pop_front()?;
        drop(q);
        if is_reply {
            self.replies.set(self.replies.get() - 1);
            self.reply_bytes.set(self.reply_bytes.get() - w);
        } else {
            self.mail.set(self.mail.get() - 1);
            self.mail_bytes.set(self.mail_bytes.get() - w);
        }
        self.left.notify(usize::MAX);
        Some(msg)
    }
}

/// A latest-value cell kept by the bus; every mailbox remembers the version it last showed.
struct BusCell<T> {
    version: Cell<u64>,
    value: RefCell<T>,
}

impl<T: Clone> BusCell<T> {
    fn new(v: T) -> Self {
        BusCell {
            version: Cell::new(0),
            value: RefCell::new(v),
        }
    }
    fn set(&self, v: T) {
        *self.value.borrow_mut() = v;
        self.version.set(self.version.get() + 1);
    }
    /// The value if it is newer than `seen` (and records it as seen).
    fn newer(&self, seen: &Cell<u64>) -> Option<T> {
        let v = self.version.get();
        (v != seen.get()).then(|| {
            seen.set(v);
            self.value.borrow().clone()
        })
    }
}

struct Shared {
    boxes: Vec<Option<Rc<Inbox>>>,
    link: BusCell<Link>,
    desired: BusCell<Rc<DesiredPods>>,
    /// Live [`Bus`] handles; at zero every mailbox reads as closed.
    handles: Cell<usize>,
}

/// A module's receiving end.
pub struct Mailbox {
    pub id: ModuleId,
    inbox: Rc<Inbox>,
    shared: Rc<Shared>,
    seen_link: Cell<u64>,
    seen_desired: Cell<u64>,
}

impl Mailbox {
    /// A changed cell, else the next message that passes `fits`, without waiting.
    fn poll_now(&self, fits: impl Fn(usize) -> bool) -> Option<BusMessage> {
        if let Some(l) = self.shared.link.newer(&self.seen_link) {
            return Some(BusMessage::Link(l));
        }
        if self.id == ModuleId::Edged {
            if let Some(d) = self.shared.desired.newer(&self.seen_desired) {
                return Some(BusMessage::Desired(d));
            }
        }
        self.inbox.pop_if(fits)
    }

    /// The next message; `None` once every sender is gone (edgecore is stopping). A changed
    /// link (and for Edged, changed desired pods) comes first, as one
    /// [`BusMessage::Link`]/[`BusMessage::Desired`] with the latest value, however many
    /// changes happened since the last one shown. Cancel-safe.
    pub async fn recv(&self) -> Option<BusMessage> {
        loop {
            if let Some(m) = self.poll_now(|_| true) {
                return Some(m);
            }
            if self.shared.handles.get() == 0 {
                return None;
            }
            let l = self.inbox.arrived.listen();
            if let Some(m) = self.poll_now(|_| true) {
                return Some(m);
            }
            if self.shared.handles.get() == 0 {
                return None;
            }
            l.await;
        }
    }

    /// The next message if one is already waiting.
    pub fn try_recv(&self) -> Option<BusMessage> {
        self.poll_now(|_| true)
    }

    /// The next message if one is waiting and weighs at most `bytes` (a batch's remaining
    /// byte budget): what does not fit stays queued for the next batch.
    pub fn try_recv_within(&self, bytes: usize) -> Option<BusMessage> {
        self.poll_now(|w| w <= bytes)
    }

    /// The next message, tick of `ticker`, or shutdown, whichever comes first: the wait at
    /// the top of a module's loop.
    pub async fn next(&self, ticker: &mut smol::Timer, shutdown: &Shutdown) -> Wake {
        use smol::future::FutureExt;
        use smol::stream::StreamExt;
        async {
            match self.recv().await {
                Some(m) => Wake::Mail(m),
                None => Wake::Stop,
            }
        }
        .or(async {
            ticker.next().await;
            Wake::Tick
        })
        .or(async {
            shutdown.wait().await;
            Wake::Stop
        })
        .await
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.inbox.gone.set(true);
        self.inbox.left.notify(usize::MAX);
    }
}

/// Every enabled module's mailbox and the bus's state cells. Cheap to clone.
pub struct Bus {
    shared: Rc<Shared>,
}

impl Clone for Bus {
    fn clone(&self) -> Self {
        self.shared.handles.set(self.shared.handles.get() + 1);
        Bus {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let n = self.shared.handles.get() - 1;
        self.shared.handles.set(n);
        if n == 0 {
            for b in self.shared.boxes.iter().flatten() {
                b.arrived.notify(usize::MAX);
            }
        }
    }
}

impl Bus {
    /// Makes a mailbox for each enabled module, with reply room for
    /// [`ModuleId::reply_room`] replies.
    pub fn new(enabled: &[ModuleId]) -> (Bus, Vec<Mailbox>) {
        let mut boxes = vec![None; ModuleId::ALL.len()];
        for &id in enabled {
            boxes[id as usize] = Some(Rc::new(Inbox {
                queue: RefCell::new(VecDeque::new()),
                mail: Cell::new(0),
                mail_bytes: Cell::new(0),
                replies: Cell::new(0),
                reply_bytes: Cell::new(0),
                reply_room: id.reply_room(),
                gone: Cell::new(false),
                arrived: Event::new(),
                left: Event::new(),
            }));
        }
        let shared = Rc::new(Shared {
            boxes,
            link: BusCell::new(Link::Disconnected),
            desired: BusCell::new(Rc::default()),
            handles: Cell::new(1),
        });
        let mailboxes = enabled
            .iter()
            .map(|&id| Mailbox {
                id,
                inbox: shared.boxes[id as usize].clone().expect("made above"),
                shared: shared.clone(),
                seen_link: Cell::new(0),
                seen_desired: Cell::new(0),
            })
            .collect();
        (Bus { shared }, mailboxes)
    }

    pub fn is_enabled(&self, id: ModuleId) -> bool {
        self.shared.boxes[id as usize].is_some()
    }

    fn inbox(&self, to: ModuleId) -> Option<&Rc<Inbox>> {
        self.shared.boxes[to as usize]
            .as_ref()
            .filter(|b| !b.gone.get())
    }

    /// Sends, waiting while the mailbox has no room. Returns false if `to` is disabled or
    /// stopped. Only the waits the crate docs allow may use this.
    pub async fn send(&self, to: ModuleId, mut msg: BusMessage) -> bool {
        loop {
            let Some(inbox) = self.inbox(to) else {
                return false;
            };
            match inbox.push(msg) {
                Ok(()) => return true,
                Err(m) => msg = m,
            }
            let l = inbox.left.listen();
            match inbox.push(msg) {
                Ok(()) => return true,
                Err(m) => msg = m,
            }
            l.await;
        }
    }

    /// Queues without waiting. A mailbox with no room hands the message back ([`Full`]):
    /// the caller keeps it and delivers it after [`Bus::room`]. To a disabled or stopped
    /// module the message is discarded (nobody will ever read it).
    pub fn deliver(&self, to: ModuleId, msg: BusMessage) -> Result<(), Full> {
        match self.inbox(to) {
            Some(inbox) => inbox.push(msg).map_err(Full),
            None => Ok(()),
        }
    }

    /// Resolves when something leaves `to`'s mailbox (or it stops): the moment to retry a
    /// message [`Bus::deliver`] handed back. Create it right after the refusal, before any
    /// other await, so no departure is missed.
    pub async fn room(&self, to: ModuleId) {
        if let Some(inbox) = self.inbox(to) {
            inbox.left.listen().await;
        }
    }

    /// Sets the tunnel's state: every mailbox shows the latest value once
    /// ([`Mailbox::recv`]); nothing queues, so it never waits and is never refused.
    pub fn set_link(&self, link: Link) {
        self.shared.link.set(link);
        for b in self.shared.boxes.iter().flatten() {
            b.arrived.notify(usize::MAX);
        }
    }

    /// The tunnel's state now.
    pub fn link(&self) -> Link {
        *self.shared.link.value.borrow()
    }

    /// Sets what Edged must run (MetaManager's): Edged's mailbox shows the latest value once.
    pub fn set_desired(&self, d: Rc<DesiredPods>) {
        self.shared.desired.set(d);
        if let Some(b) = &self.shared.boxes[ModuleId::Edged as usize] {
            b.arrived.notify(usize::MAX);
        }
    }

    /// Mail and replies queued for `to` now (messages, bytes): for tests and diagnostics.
    pub fn queued(&self, to: ModuleId) -> (usize, usize) {
        self.inbox(to).map_or((0, 0), |b| {
            (
                b.mail.get() + b.replies.get(),
                b.mail_bytes.get() + b.reply_bytes.get(),
            )
        })
    }
}

/// A latest-value cell (embassy's `Watch`): writing replaces the value, never queues it, so
/// state can never be dropped or stall its writer; a reader waits for a value newer than the
/// one it saw. Single-threaded, for tasks of one executor; one reader per cell (the bell
/// wakes one waiter).
pub struct Watch<T> {
    value: RefCell<T>,
    version: Cell<u64>,
    bell: (smol::channel::Sender<()>, smol::channel::Receiver<()>),
}

impl<T: Clone> Watch<T> {
    pub fn new(initial: T) -> Self {
        Watch {
            value: RefCell::new(initial),
            version: Cell::new(0),
            bell: smol::channel::bounded(1),
        }
    }

    /// Replaces the value and wakes the reader.
    pub fn set(&self, v: T) {
        *self.value.borrow_mut() = v;
        self.version.set(self.version.get() + 1);
        let _ = self.bell.0.try_send(()); // a full bell already means "look again"
    }

    /// The current value.
    pub fn get(&self) -> T {
        self.value.borrow().clone()
    }

    /// The version of the current value (bumped by every [`Watch::set`]).
    pub fn version(&self) -> u64 {
        self.version.get()
    }

    /// Waits until the value is newer than `seen`, then returns it and records its version.
    pub async fn changed(&self, seen: &mut u64) -> T {
        while self.version.get() == *seen {
            let _ = self.bell.1.recv().await;
        }
        *seen = self.version.get();
        self.get()
    }
}

/// Shutdown signal every task selects on. Triggered once, observed by all clones.
#[derive(Clone)]
pub struct Shutdown {
    rx: smol::channel::Receiver<()>,
}

/// Triggers [`Shutdown`] when [`ShutdownTrigger::trigger`] is called or it is dropped.
pub struct ShutdownTrigger {
    tx: Option<smol::channel::Sender<()>>,
}

impl Shutdown {
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = smol::channel::bounded(1);
        (ShutdownTrigger { tx: Some(tx) }, Shutdown { rx })
    }

    /// Resolves once shutdown has been triggered.
    pub async fn wait(&self) {
        // Nothing is ever sent: the channel closing is the signal.
        let _ = self.rx.recv().await;
    }

    pub fn is_triggered(&self) -> bool {
        self.rx.is_closed()
    }
}

impl ShutdownTrigger {
    pub fn trigger(&mut self) {
        self.tx.take();
    }
}
