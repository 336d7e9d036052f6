//! `edge-mqtt`: publish, subscribe and request/response against an MQTT 3.1.1 broker, for
//! gateways whose image has no mosquitto clients (and for the QEMU system tests, which drive
//! the device twin inside the VM with it). Blocking std sockets over the `mqtt` crate's codec:
//! one thread, no runtime, a few hundred KiB static.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
#[cfg(feature = "tls")]
use futures_rustls::rustls;
use mqtt::{Packet, Publish, QoS};

/// Client TLS settings; without the `tls` feature there are none to be had (and rustls and
/// ring, ~0.6 MiB, stay out of the binary).
#[cfg(feature = "tls")]
type TlsConfig = std::sync::Arc<rustls::ClientConfig>;
#[cfg(not(feature = "tls"))]
type TlsConfig = std::convert::Infallible;
use lexopt::prelude::*;
use support::cli::{duration, parsed, text, usage};

const USAGE: &str = "\
edge-mqtt — a small MQTT 3.1.1 client for gateways

USAGE:
    edge-mqtt pub -t <TOPIC> -m <MESSAGE> [-q 0|1|2] [OPTIONS]
    edge-mqtt sub -t <FILTER> [-t <FILTER>...] [-C <COUNT>] [-v] [OPTIONS]
    edge-mqtt req -t <TOPIC> -m <MESSAGE> -r <RESPONSE-TOPIC> [--match <TEXT>] [OPTIONS]

COMMANDS:
    pub     publish one message (QoS 1 waits for the broker's PUBACK, QoS 2 for its PUBCOMP)
    sub     print each message's payload, one per line (-v: topic first)
    req     subscribe to the response topic, publish, print the first response whose payload
            contains --match (any response without it); the request is published again every
            --every until then, so it also works while the responder is still starting

OPTIONS:
    --host <HOST>         broker host [default: 127.0.0.1]; with --cafile it must match the
                          broker certificate's name or address
    -p, --port <PORT>     broker port [default: 1883]
    -u, --username <U>    user name (with --password)
    -P, --password <P>    password
    --cafile <PEM>        TLS: verify the broker against this CA (plain TCP without it)
    --cert <PEM>          TLS client certificate (with --key)
    --key <PEM>           its private key
    -i, --id <ID>         client id [default: edge-mqtt-<pid>]
    -q, --qos <0|1|2>     QoS of pub and req messages and sub's subscriptions [default: 1]
    -C, --count <N>       sub: exit after N messages
    -W, --timeout <DUR>   give up after DUR (10s, 1m, …), exit 1; until then a refused connection
                          is retried, so a broker that is still starting is waited for
                          [default: req 30s; pub and sub once, no limit]
    --every <DUR>         req: publish the request again this often [default: 1s]
    -v, --verbose         sub: print `<topic> <payload>`
    -d, --debug           tell on stderr when connected, subscribed and published
    -h, --help            this text
    -V, --version         the version

EXIT CODES:
    0 done, 1 no broker, refused, or timed out, 2 bad command line
";

/// Biggest packet accepted from the broker.
const MAX_PACKET: usize = 1 << 20;
/// Messages kept that arrive while waiting for an acknowledgement; later ones are dropped
/// (req publishes its request again, sub is subscribed by then and loses nothing before).
const MAX_EARLY: usize = 1024;
const KEEPALIVE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq)]
enum Cmd {
    Pub,
    Sub,
    Req,
}

struct Args {
    cmd: Cmd,
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
    id: String,
    qos: QoS,
    topics: Vec<String>,
    message: Option<String>,
    response: Option<String>,
    matching: Option<String>,
    count: Option<u64>,
    timeout: Option<Duration>,
    every: Duration,
    verbose: bool,
    debug: bool,
    tls: Option<TlsConfig>,
}

/// Options may come before or after the command, as with the mosquitto clients.
fn parse(mut p: lexopt::Parser) -> anyhow::Result<Option<Args>> {
    let mut a = Args {
        cmd: Cmd::Pub,
        host: "127.0.0.1".into(),
        port: 1883,
        credentials: None,
        id: format!("edge-mqtt-{}", std::process::id()),
        qos: QoS::AtLeastOnce,
        topics: Vec::new(),
        message: None,
        response: None,
        matching: None,
        count: None,
        timeout: None,
        every: Duration::from_secs(1),
        verbose: false,
        debug: false,
        tls: None,
    };
    let (mut cafile, mut cert, mut key) = (None::<PathBuf>, None::<PathBuf>, None::<PathBuf>);
    let mut cmd = None;
    let (mut user, mut pass) = (None, None);
    while let Some(arg) = p.next()? {
        match arg {
            Long("host") => a.host = text(p.value()?)?,
            Short('p') | Long("port") => a.port = parsed(p.value()?, "port")?,
            Short('u') | Long("username") => user = Some(text(p.value()?)?),
            Short('P') | Long("password") => pass = Some(text(p.value()?)?),
            Short('i') | Long("id") => a.id = text(p.value()?)?,
            Short('q') | Long("qos") => {
                let q: u8 = parsed(p.value()?, "QoS")?;
                a.qos = match QoS::from_bits(q) {
                    Some(q) => q,
                    None => return usage("QoS must be 0, 1 or 2"),
                };
            }
            Short('t') | Long("topic") => a.topics.push(text(p.value()?)?),
            Short('m') | Long("message") => a.message = Some(text(p.value()?)?),
            Short('r') | Long("response-topic") => a.response = Some(text(p.value()?)?),
            Long("match") => a.matching = Some(text(p.value()?)?),
            Short('C') | Long("count") => a.count = Some(parsed(p.value()?, "count")?),
            Short('W') | Long("timeout") => a.timeout = Some(duration(p.value()?)?),
            Long("every") => a.every = duration(p.value()?)?,
            Short('v') | Long("verbose") => a.verbose = true,
            Short('d') | Long("debug") => a.debug = true,
            Long("cafile") => cafile = Some(p.value()?.into()),
            Long("cert") => cert = Some(p.value()?.into()),
            Long("key") => key = Some(p.value()?.into()),
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(None);
            }
            Short('V') | Long("version") => {
                println!("edge-mqtt {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            Value(v) if cmd.is_none() => {
                cmd = Some(match text(v)?.as_str() {
                    "pub" => Cmd::Pub,
                    "sub" => Cmd::Sub,
                    "req" => Cmd::Req,
                    other => {
                        return usage(format!("unknown command {other:?}; use pub, sub or req"))
                    }
                })
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    a.cmd = match cmd {
        Some(c) => c,
        None => return usage("a command is needed: pub, sub or req"),
    };
    if a.cmd == Cmd::Req && a.timeout.is_none() {
        a.timeout = Some(Duration::from_secs(30));
    }
    a.credentials = match (user, pass) {
        (Some(u), Some(p)) => Some((u, p)),
        (None, None) => None,
        _ => return usage("--username and --password go together"),
    };
    if a.topics.is_empty() {
        return usage("-t <TOPIC> is needed");
    }
    if a.cmd != Cmd::Sub {
        if a.topics.len() > 1 {
            return usage("pub and req publish to one topic");
        }
        if a.message.is_none() {
            return usage("-m <MESSAGE> is needed");
        }
    }
    if a.cmd == Cmd::Req && a.response.is_none() {
        return usage("req needs -r <RESPONSE-TOPIC>");
    }
    a.tls = match cafile {
        #[cfg(feature = "tls")]
        Some(ca) => Some(
            eventbus::tls::client_config(&ca, cert.as_deref(), key.as_deref())
                .map_err(support::cli::UsageError)?,
        ),
        #[cfg(not(feature = "tls"))]
        Some(_) => return usage("this edge-mqtt was built without TLS (cargo feature tls)"),
        None if cert.is_some() || key.is_some() => {
            return usage("--cert and --key need --cafile (TLS)")
        }
        None => None,
    };
    if a.every.is_zero() {
        return usage("--every must be more than 0");
    }
    Ok(Some(a))
}

/// The socket, plain or TLS.
enum Stream {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(t) => t,
            #[cfg(feature = "tls")]
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(t) => t.read(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(t) => t.write(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(t) => t.flush(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// One broker connection: a socket and the bytes received but not yet decoded.
struct Conn {
    tcp: Stream,
    buf: Vec<u8>,
    next_id: u16,
    last_sent: Instant,
    /// QoS 2 messages received whose PUBREL has not come: a re-sent PUBLISH with one of these
    /// ids is acknowledged again but not handed to the caller twice.
    unreleased: std::collections::BTreeSet<u16>,
}

impl Conn {
    /// Connects and completes CONNECT/CONNACK, retrying refused connections until `deadline`.
    fn open(a: &Args, deadline: Option<Instant>) -> anyhow::Result<Conn> {
        let addr = format!("{}:{}", a.host, a.port);
        let tcp = loop {
            match TcpStream::connect(&addr) {
                Ok(t) => break t,
                Err(_) if deadline.is_some_and(|d| Instant::now() < d) => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e).with_context(|| format!("cannot connect to {addr}")),
            }
        };
        let _ = tcp.set_nodelay(true);
        // Bounds the TLS handshake, which runs inside the first write.
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
        let tcp = match &a.tls {
            None => Stream::Plain(tcp),
            #[cfg(not(feature = "tls"))]
            Some(never) => match *never {},
            #[cfg(feature = "tls")]
            Some(cfg) => {
                let name = rustls::pki_types::ServerName::try_from(a.host.clone())
                    .map_err(|e| anyhow::anyhow!("{:?} is not a TLS server name: {e}", a.host))?;
                let conn = rustls::ClientConnection::new(cfg.clone(), name)?;
                Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
            }
        };
        let mut c = Conn {
            tcp,
            buf: Vec::new(),
            next_id: 1,
            last_sent: Instant::now(),
            unreleased: Default::default(),
        };
        let mut connect = mqtt::Connect::new(&a.id, KEEPALIVE.as_secs() as u16, true);
        if let Some((u, p)) = &a.credentials {
            connect = connect.credentials(u, p);
        }
        c.send(&connect.to_bytes())?;
        let connack_by = Instant::now() + Duration::from_secs(10);
        match c.recv(Some(deadline.map_or(connack_by, |d| d.min(connack_by))))? {
            Some(Packet::ConnAck { code: 0, .. }) => Ok(c),
            Some(Packet::ConnAck { code, .. }) => bail!(
                "{addr} refused the connection: {}",
                match code {
                    1 => "it does not speak MQTT 3.1.1".to_owned(),
                    2 => "client id rejected".to_owned(),
                    3 => "server unavailable".to_owned(),
                    4 => "bad user name or password".to_owned(),
                    5 => "not authorized".to_owned(),
                    _ => format!("CONNACK code {code}"),
                }
            ),
            Some(other) => bail!("{addr} answered CONNECT with {other:?}"),
            None => bail!("{addr} did not answer CONNECT"),
        }
    }

    fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.tcp
            .write_all(bytes)
            .context("broker connection lost")?;
        self.last_sent = Instant::now();
        Ok(())
    }

    fn id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        id
    }

    /// The next packet, or `None` once `until` passes. Pings the broker when quiet; answers
    /// QoS 1 messages with PUBACK and QoS 2 with PUBREC, PUBREL with PUBCOMP.
    fn recv(&mut self, until: Option<Instant>) -> anyhow::Result<Option<Packet>> {
        loop {
            if let Some((packet, used)) = mqtt::decode(&self.buf, MAX_PACKET)? {
                self.buf.drain(..used);
                match &packet {
                    Packet::Publish(p) if p.qos == QoS::AtLeastOnce => {
                        self.send(&Packet::PubAck(p.pid).to_bytes())?
                    }
                    Packet::Publish(p) if p.qos == QoS::ExactlyOnce => {
                        self.send(&Packet::PubRec(p.pid).to_bytes())?;
                        if !self.unreleased.insert(p.pid) {
                            continue; // already handed over
                        }
                    }
                    Packet::PubRel(pid) => {
                        self.unreleased.remove(pid);
                        self.send(&Packet::PubComp(*pid).to_bytes())?;
                    }
                    _ => {}
                }
                return Ok(Some(packet));
            }
            let now = Instant::now();
            if until.is_some_and(|u| now >= u) {
                return Ok(None);
            }
            if now.duration_since(self.last_sent) >= KEEPALIVE / 2 {
                self.send(&Packet::PingReq.to_bytes())?;
            }
            // Wake at least every second to ping and to notice the deadline.
            let wait = until
                .map(|u| u.saturating_duration_since(now))
                .unwrap_or(Duration::MAX)
                .clamp(Duration::from_millis(1), Duration::from_secs(1));
            self.tcp.tcp().set_read_timeout(Some(wait))?;
            let mut chunk = [0u8; 4096];
            match self.tcp.read(&mut chunk) {
                Ok(0) => bail!("the broker closed the connection"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(e).context("broker connection lost"),
            }
        }
    }

    /// Waits for the packet `want` accepts and returns it, answering pings; messages in
    /// between are kept for the caller.
    fn expect(
        &mut self,
        until: Option<Instant>,
        what: &str,
        want: impl Fn(&Packet) -> bool,
        early: &mut Vec<Publish>,
    ) -> anyhow::Result<Packet> {
        let until = until.or(Some(Instant::now() + Duration::from_secs(30)));
        loop {
            match self.recv(until)? {
                Some(p) if want(&p) => return Ok(p),
                Some(Packet::Publish(m)) if early.len() < MAX_EARLY => early.push(m),
                Some(_) => {}
                None => bail!("the broker sent no {what}"),
            }
        }
    }

    fn subscribe(
        &mut self,
        filters: &[String],
        qos: QoS,
        until: Option<Instant>,
        early: &mut Vec<Publish>,
    ) -> anyhow::Result<()> {
        let id = self.id();
        let filters_qos = filters.iter().map(|t| (t.clone(), qos)).collect();
        self.send(
            &Packet::Subscribe {
                pid: id,
                filters: filters_qos,
            }
            .to_bytes(),
        )?;
        let ack = self.expect(
            until,
            "SUBACK",
            |p| matches!(p, Packet::SubAck { pid, .. } if *pid == id),
            early,
        )?;
        if let Packet::SubAck { codes, .. } = ack {
            if let Some(i) = codes.iter().position(|c| *c == 0x80) {
                bail!("the broker refused the subscription to {}", filters[i]);
            }
        }
        Ok(())
    }

    fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        until: Option<Instant>,
        early: &mut Vec<Publish>,
    ) -> anyhow::Result<()> {
        let id = self.id();
        self.send(&Packet::Publish(Publish::new(topic, payload, qos, id)).to_bytes())?;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.expect(until, "PUBACK", |p| *p == Packet::PubAck(id), early)?;
            }
            QoS::ExactlyOnce => {
                self.expect(until, "PUBREC", |p| *p == Packet::PubRec(id), early)?;
                self.send(&Packet::PubRel(id).to_bytes())?;
                self.expect(until, "PUBCOMP", |p| *p == Packet::PubComp(id), early)?;
            }
        }
        Ok(())
    }
}

fn run(a: Args) -> anyhow::Result<()> {
    let deadline = a.timeout.map(|t| Instant::now() + t);
    let mut conn = Conn::open(&a, deadline)?;
    let note = |what: &str| {
        if a.debug {
            eprintln!("edge-mqtt: {what}");
        }
    };
    note(&format!("connected to {}:{} as {}", a.host, a.port, a.id));
    let mut early = Vec::new();
    let out = std::io::stdout();
    match a.cmd {
        Cmd::Pub => {
            let msg = a.message.as_deref().unwrap_or_default();
            conn.publish(&a.topics[0], msg.as_bytes(), a.qos, deadline, &mut early)?;
            note(&format!("published to {}", a.topics[0]));
        }
        Cmd::Sub => {
            conn.subscribe(&a.topics, a.qos, deadline, &mut early)?;
            note(&format!("subscribed to {}", a.topics.join(", ")));
            let mut seen = 0u64;
            let mut pending = early.into_iter();
            while a.count.is_none_or(|c| seen < c) {
                let m = match pending.next() {
                    Some(m) => m,
                    None => match conn.recv(deadline)? {
                        Some(Packet::Publish(m)) => m,
                        Some(_) => continue,
                        None => bail!("timed out after {seen} message(s)"),
                    },
                };
                let mut line = Vec::with_capacity(m.topic.len() + m.payload.len() + 2);
                if a.verbose {
                    line.extend_from_slice(m.topic.as_bytes());
                    line.push(b' ');
                }
                line.extend_from_slice(&m.payload);
                line.push(b'\n');
                out.lock().write_all(&line)?;
                seen += 1;
            }
        }
        Cmd::Req => {
            let response = a.response.clone().unwrap_or_default();
            conn.subscribe(std::slice::from_ref(&response), a.qos, deadline, &mut early)?;
            note(&format!("subscribed to {response}"));
            let msg = a.message.as_deref().unwrap_or_default();
            let wanted = |m: &Publish| {
                mqtt::topic::matches(&response, &m.topic)
                    && a.matching
                        .as_ref()
                        .is_none_or(|t| String::from_utf8_lossy(&m.payload).contains(t.as_str()))
            };
            loop {
                let mut got = std::mem::take(&mut early);
                conn.publish(&a.topics[0], msg.as_bytes(), a.qos, deadline, &mut got)?;
                note(&format!("published to {}", a.topics[0]));
                let next =
                    (Instant::now() + a.every).min(deadline.unwrap_or(Instant::now() + a.every));
                loop {
                    if let Some(m) = got.iter().find(|m| wanted(m)) {
                        out.lock().write_all(&[&m.payload[..], b"\n"].concat())?;
                        let _ = conn.send(&Packet::Disconnect.to_bytes());
                        return Ok(());
                    }
                    got.clear();
                    match conn.recv(Some(next))? {
                        Some(Packet::Publish(m)) => got.push(m),
                        Some(_) => {}
                        None => break,
                    }
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    bail!(
                        "no response{} on {response} within {:?}",
                        a.matching
                            .as_ref()
                            .map(|t| format!(" containing {t:?}"))
                            .unwrap_or_default(),
                        a.timeout.unwrap_or_default()
                    );
                }
            }
        }
    }
    let _ = conn.send(&Packet::Disconnect.to_bytes());
    Ok(())
}

fn real_main(args: Vec<OsString>) -> anyhow::Result<()> {
    match parse(lexopt::Parser::from_args(args))? {
        Some(a) => run(a),
        None => Ok(()),
    }
}

fn main() -> ExitCode {
    support::cli::exit(
        "edge-mqtt",
        real_main(std::env::args_os().skip(1).collect()),
    )
}
