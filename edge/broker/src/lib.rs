//! edgecore's embedded MQTT 3.1.1 broker, so a gateway needs no separate broker process and no
//! extra thread. A sans-IO core ([`Broker`]) does everything the spec asks of a server; a thin
//! runner ([`serve`]) moves bytes between it and sockets on edgecore's executor.
//!
//! What it does: CONNECT validation and CONNACK codes (MQTT 5 clients get 0x01, an empty
//! client id with CleanSession=0 gets 0x02), client-id takeover, clean and persistent sessions
//! (bounded, expiring), QoS 0/1/2 in both directions at the lower of published and granted QoS
//! with a bounded in-flight window and re-delivery on reconnect, retained messages, will
//! messages, overlapping subscriptions delivered once at the highest QoS, the `$` topic rule,
//! keepalive at 1.5 × the client's value measured from packets received, and a disconnect for
//! every protocol violation. MQTT 3.1 (`MQIsdp`) clients are accepted as mosquitto does.
//!
//! Every resource a client can make the broker hold is bounded in [`Limits`], in bytes where
//! the thing has a size, each with what happens when it is full.

#![forbid(unsafe_code)]

mod core;
mod handle;
mod index;
mod input;
mod retained;
mod route;
mod runner;
mod session;

pub use crate::core::{Broker, ConnId, Stats};
pub use mqtt::topic::check_filter;
pub use runner::{bind, serve, BrokerConfig};

use std::time::Duration;

/// Bytes read from one client per turn, and the size up to which a packet needs no room in
/// the large-packet pool.
pub const READ_CHUNK: usize = 8 << 10;
/// Of each connection's `out_budget`, what messages to it may not fill: room for the answers
/// to one read of its input (no answer is longer than the packet it answers). Without it a
/// client flooded with QoS 0 messages has its output always full, so the broker stops reading
/// its input, and what it publishes (acknowledged only when read) crawls: EventBus's results
/// waited behind a flood it was only relaying.
pub const ANSWER_ROOM: usize = READ_CHUNK;

/// The broker's named capacities. Defaults suit a gateway with 32–64 MB of RAM; the worst case
/// of all of them together, with every client hostile, is [`Limits::worst_case_bytes`]
/// (about 12 MiB; ARCHITECTURE.md, "Bounds", has the table).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Clients past CONNECT at once. Full: a further CONNECT gets CONNACK 0x03 (server
    /// unavailable) and is closed. The reserved client (edgecore's own) is not counted.
    pub max_clients: usize,
    /// Sockets that have not finished CONNECT. Full: the oldest of them is closed to make room,
    /// so sockets held open without a CONNECT cannot lock legitimate clients out.
    pub max_handshaking: usize,
    /// Time a socket has to send its CONNECT before it is closed.
    pub connect_timeout: Duration,
    /// Largest packet accepted. Larger: the connection is closed as soon as the length is read.
    pub max_packet: usize,
    /// Bytes of packets over [`READ_CHUNK`] being assembled, over all connections. Full: such
    /// a packet is not read further until room appears.
    pub large_input_bytes: usize,
    /// A packet over [`READ_CHUNK`] must arrive whole within this; else the connection closes.
    pub packet_timeout: Duration,
    /// Bytes waiting to be written to one connection. Over it: QoS 0 messages for that client
    /// are dropped (counted), QoS 1/2 wait in its session queue, and the broker stops reading
    /// from the client until it reads what it was sent (a client that never reads cannot make
    /// the broker buffer its acknowledgements).
    pub out_budget: usize,
    /// Bytes waiting to be written over all connections; same behaviour when full.
    pub total_out_bytes: usize,
    /// A connection with output waiting and nothing written for this long is closed (a client
    /// that never reads, with keepalive 0, must not hold its slot forever).
    pub write_timeout: Duration,
    /// QoS 1/2 messages sent to one client and not yet acknowledged. Full: messages wait in the
    /// session queue.
    pub max_inflight: usize,
    /// Messages waiting in one session queue. Full: a QoS 1/2 publisher to it waits (its next
    /// PUBLISH is not handled; its acknowledgements still are) while the subscriber is live; a
    /// stalled or offline session drops the message (counted).
    pub max_queued: usize,
    /// Bytes waiting in (and in flight to) one session; same behaviour as `max_queued`.
    pub session_bytes: usize,
    /// Bytes waiting in all sessions together; same behaviour, after offline sessions' queues
    /// are dropped (oldest first, counted) to make room for connected ones.
    pub total_queued_bytes: usize,
    /// A connected subscriber with messages unacknowledged and no acknowledgement for this
    /// long is stalled: publishers stop waiting for it, and messages that do not fit are
    /// dropped for it. A waiting publisher is rechecked this often.
    pub publish_wait: Duration,
    /// Sessions kept (connected or persistent). Full: the persistent session disconnected
    /// longest ago is discarded.
    pub max_sessions: usize,
    /// A persistent session with no connection for this long is discarded.
    pub session_expiry: Duration,
    /// Filters one client may hold; more are refused (SUBACK 0x80).
    pub max_filters_per_client: usize,
    /// Bytes of one filter, and its levels; longer or deeper ones are refused (SUBACK 0x80).
    pub max_filter_bytes: usize,
    pub max_filter_levels: usize,
    /// Subscription bytes (text and index, `index::filter_cost`) one client may hold, and all
    /// together; more are refused (SUBACK 0x80, counted).
    pub subscription_bytes_per_client: usize,
    pub subscription_bytes: usize,
    /// Retained messages kept, and their bytes. Full: a retained message for a new topic is
    /// delivered but not retained (counted); replacing or clearing one always works.
    pub max_retained: usize,
    pub retained_bytes: usize,
    /// Bytes of will messages held over all connections. Full: a CONNECT with a will gets
    /// CONNACK 0x03.
    pub will_bytes: usize,
    /// Bytes of a client identifier; longer: CONNACK 0x02.
    pub max_client_id: usize,
    /// QoS 2 messages one client may have received and not released. More: the connection is
    /// closed (a client cannot grow this set without bound).
    pub max_incoming_qos2: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 64,
            max_handshaking: 32,
            connect_timeout: Duration::from_secs(10),
            max_packet: 256 << 10,
            large_input_bytes: 1 << 20,
            packet_timeout: Duration::from_secs(60),
            out_budget: 64 << 10,
            total_out_bytes: 2 << 20,
            write_timeout: Duration::from_secs(60),
            max_inflight: 32,
            max_queued: 1000,
            session_bytes: 256 << 10,
            total_queued_bytes: 4 << 20,
            publish_wait: Duration::from_secs(5),
            max_sessions: 256,
            session_expiry: Duration::from_secs(3600),
            max_filters_per_client: 128,
            max_filter_bytes: 1024,
            max_filter_levels: 32,
            subscription_bytes_per_client: 64 << 10,
            subscription_bytes: 1 << 20,
            max_retained: 1000,
            retained_bytes: 1 << 20,
            will_bytes: 256 << 10,
            max_client_id: 256,
            max_incoming_qos2: 256,
        }
    }
}

/// Bytes a session costs besides its queue and subscriptions (the entry, its maps).
pub const SESSION_OVERHEAD: usize = 1024;

impl Limits {
    /// The most memory the broker's state can take with every client hostile: connection
    /// buffers (the runner's read buffer, unhandled input, output), the large-packet pool,
    /// queues, retained messages, subscriptions, wills, sessions, and one decoded packet.
    pub fn worst_case_bytes(&self) -> usize {
        let sockets = self.max_clients + self.max_handshaking + 1;
        sockets * 3 * READ_CHUNK
            + self.total_out_bytes
            + self.max_packet // one message may go over an empty budget
            + self.large_input_bytes
            + self.total_queued_bytes
            + self.retained_bytes
            + self.subscription_bytes
            + self.will_bytes
            + self.max_sessions * (SESSION_OVERHEAD + self.max_client_id + self.max_incoming_qos2 * 16)
            + 2 * self.max_packet
    }
}
