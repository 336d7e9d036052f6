//! MQTT helpers for tests: a private mosquitto broker on a loopback port, and the real
//! `mosquitto_pub` / `mosquitto_sub` clients.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use crate::{wait_for, Proc, TempDir};

/// A mosquitto broker on 127.0.0.1, stopped by PID when dropped.
pub struct Mosquitto {
    pub port: u16,
    pub proc: Proc,
    _dir: TempDir,
    keep: Vec<TempDir>,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Self::start_with("")
    }

    /// A broker with a plain listener (`port`) and a TLS listener (returned with the path of
    /// the CA that signed its certificate for 127.0.0.1).
    pub fn start_tls() -> (Mosquitto, u16, std::path::PathBuf) {
        let certs = TempDir::new("mqtt-ca");
        let ca = pki::Ca::load_or_create(&certs.path().join("ca")).unwrap();
        let (chain, key) = ca.issue_server_cert(&["127.0.0.1".to_owned()]).unwrap();
        let dir = certs.path();
        std::fs::write(
            dir.join("server.crt"),
            pki::der_to_pem(&chain[0], "CERTIFICATE"),
        )
        .unwrap();
        std::fs::write(
            dir.join("server.key"),
            pki::der_to_pem(key.secret_der(), "PRIVATE KEY"),
        )
        .unwrap();
        let ca_path = dir.join("ca").join("ca.crt");
        let tls_port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let extra = format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
            ca_path.display(),
            dir.join("server.crt").display(),
            dir.join("server.key").display()
        );
        let mut m = Self::start_with(&extra);
        wait_for("mosquitto TLS listener", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", tls_port))
                .ok()
                .map(|_| ())
        });
        m.keep.push(certs);
        (m, tls_port, ca_path)
    }

    fn start_with(extra: &str) -> Mosquitto {
        assert!(std::path::Path::new("/usr/sbin/mosquitto").exists(), "mosquitto is needed: apt-get install mosquitto mosquitto-clients (scripts/test.sh does)");
        let dir = TempDir::new("mosquitto");
        // mosquitto cannot listen on port 0: take a free port and hand it over.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, format!("user root\nper_listener_settings false\nallow_anonymous true\npersistence false\nlog_dest stderr\nlistener {port} 127.0.0.1\n{extra}")).unwrap();
        let mut cmd = Command::new("/usr/sbin/mosquitto");
        cmd.arg("-c").arg(&conf);
        let mut proc = Proc::spawn(cmd);
        wait_for("mosquitto to listen", Duration::from_secs(10), || {
            if let Ok(Some(st)) = proc.child.try_wait() {
                panic!("mosquitto exited ({st}): {}", proc.log());
            }
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        Mosquitto {
            port,
            proc,
            _dir: dir,
            keep: Vec::new(),
        }
    }
}

/// `mosquitto_pub` one message (QoS 1).
pub fn publish(port: u16, topic: &str, payload: &str) {
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            payload,
        ])
        .output()
        .expect("mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `mosquitto_sub -v` on some topics; lines are `<topic> <payload>`.
pub struct Subscriber {
    proc: Proc,
}

impl Subscriber {
    /// Subscribes and returns once the subscription is live (proven by a probe message).
    pub fn start(port: u16, topics: &[&str]) -> Subscriber {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-v",
            "-q",
            "1",
            "-t",
            "e2e/probe",
        ]);
        for t in topics {
            cmd.args(["-t", t]);
        }
        let sub = Subscriber {
            proc: Proc::spawn(cmd),
        };
        wait_for(
            "mosquitto_sub to be subscribed",
            Duration::from_secs(10),
            || {
                publish(port, "e2e/probe", "ping");
                std::thread::sleep(Duration::from_millis(50));
                sub.proc.log().contains("e2e/probe ping").then_some(())
            },
        );
        sub
    }

    /// Every `(topic, payload)` received so far.
    pub fn messages(&self) -> Vec<(String, String)> {
        self.proc
            .log()
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(t, p)| (t.to_owned(), p.to_owned())))
            .filter(|(t, _)| t != "e2e/probe")
            .collect()
    }

    /// Waits for a message on `topic` whose JSON payload satisfies `pred`; returns it.
    pub fn wait(
        &self,
        topic: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_for(&format!("a matching message on {topic}"), timeout, || {
            self.messages()
                .into_iter()
                .filter(|(t, _)| t == topic)
                .filter_map(|(_, p)| serde_json::from_str::<serde_json::Value>(&p).ok())
                .find(|v| pred(v))
        })
    }
}

/// A raw MQTT client for conformance tests: writes any bytes (valid or not) and decodes what
/// the broker answers with the project's codec, so a test can tell "answered", "closed" and
/// "still open" apart without sleeping.
pub struct Raw {
    pub sock: std::net::TcpStream,
    buf: Vec<u8>,
}

/// What a [`Raw`] read ended with.
#[derive(Debug, PartialEq)]
pub enum Got {
    Packet(mqtt::Packet),
    /// The broker closed the connection (EOF or reset).
    Closed,
    /// Nothing within the timeout: the connection is open and silent.
    Nothing,
}

impl Raw {
    pub fn open(port: u16) -> Raw {
        let sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_nodelay(true).unwrap();
        Raw {
            sock,
            buf: Vec::new(),
        }
    }

    /// Another handle on a connection (a writer thread beside a reader).
    pub fn from_stream(sock: std::net::TcpStream) -> Raw {
        Raw {
            sock,
            buf: Vec::new(),
        }
    }

    /// Opens and completes CONNECT; returns the client and the CONNACK.
    pub fn connect(port: u16, c: mqtt::Connect) -> (Raw, Got) {
        let mut r = Raw::open(port);
        r.write(&c.to_bytes());
        let got = r.recv(Duration::from_secs(10));
        (r, got)
    }

    /// A connected client (CONNACK 0 asserted) with a clean session.
    pub fn client(port: u16, id: &str) -> Raw {
        let (r, got) = Raw::connect(port, mqtt::Connect::new(id, 60, true));
        assert!(
            matches!(got, Got::Packet(mqtt::Packet::ConnAck { code: 0, .. })),
            "{id}: {got:?}"
        );
        r
    }

    pub fn write(&mut self, bytes: &[u8]) {
        use std::io::Write;
        // A broker that already closed may reset the connection; the next read tells.
        let _ = self.sock.write_all(bytes);
    }

    pub fn send(&mut self, p: &mqtt::Packet) {
        self.write(&p.to_bytes());
    }

    /// The next packet, a close, or nothing within `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Got {
        use std::io::Read;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match mqtt::decode(&self.buf, 1 << 24) {
                Ok(Some((p, n))) => {
                    self.buf.drain(..n);
                    return Got::Packet(p);
                }
                Ok(None) => {}
                Err(e) => panic!("the broker sent a malformed packet: {e}"),
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Got::Nothing;
            }
            self.sock.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 4096];
            match self.sock.read(&mut chunk) {
                Ok(0) => return Got::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Got::Closed,
            }
        }
    }

    /// The next packet; panics on a close or a timeout (10 s).
    pub fn packet(&mut self) -> mqtt::Packet {
        match self.recv(Duration::from_secs(10)) {
            Got::Packet(p) => p,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// Reads until the broker closes; returns the packets before the close, or `None` if it
    /// stayed open for `timeout`.
    pub fn until_closed(&mut self, timeout: Duration) -> Option<Vec<mqtt::Packet>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            match self.recv(deadline.saturating_duration_since(std::time::Instant::now())) {
                Got::Packet(p) => got.push(p),
                Got::Closed => return Some(got),
                Got::Nothing => return None,
            }
        }
    }

    /// Subscribes (packet id 1) and returns the SUBACK codes; packets before the SUBACK are
    /// dropped.
    pub fn subscribe(&mut self, filters: &[(&str, mqtt::QoS)]) -> Vec<u8> {
        self.send(&mqtt::Packet::Subscribe {
            pid: 1,
            filters: filters.iter().map(|(f, q)| (f.to_string(), *q)).collect(),
        });
        loop {
            if let mqtt::Packet::SubAck { pid: 1, codes } = self.packet() {
                return codes;
            }
        }
    }

    /// Round trip through the broker: a PINGREQ answered proves every earlier packet on this
    /// connection was processed (the broker handles a connection's packets in order).
    pub fn sync(&mut self) -> Vec<mqtt::Packet> {
        self.send(&mqtt::Packet::PingReq);
        let mut before = Vec::new();
        loop {
            match self.packet() {
                mqtt::Packet::PingResp => return before,
                p => before.push(p),
            }
        }
    }
}

/// What a QoS 1 fan-in run ([`fan_in`]) saw.
#[derive(Debug)]
pub struct FanIn {
    /// PUBACKs the publishers got.
    pub acked: usize,
    /// Distinct messages the subscriber got.
    pub delivered: usize,
    /// Acknowledged to a publisher and never delivered.
    pub lost: usize,
    /// From the first publish to the last delivery.
    pub took: Duration,
}

/// `pubs` publishers send `each` QoS 1 messages each, unpaced, to one QoS 1 subscriber that
/// acknowledges everything (bounded: 120 s).
pub fn fan_in(port: u16, pubs: u16, each: u16) -> FanIn {
    use mqtt::{Packet, Publish, QoS};
    use std::collections::HashSet;
    use std::time::Instant;
    let mut sub = Raw::client(port, "fanin-sub");
    sub.subscribe(&[("fanin/+", QoS::AtLeastOnce)]);
    let total = pubs as usize * each as usize;
    let t0 = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut seen = HashSet::new();
        let mut last = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(120);
        while seen.len() < total && Instant::now() < deadline {
            match sub.recv(Duration::from_secs(10)) {
                Got::Packet(Packet::Publish(m)) => {
                    sub.send(&Packet::PubAck(m.pid));
                    seen.insert((m.topic, m.payload));
                    last = Instant::now();
                }
                Got::Packet(_) => {}
                Got::Closed | Got::Nothing => break,
            }
        }
        (seen, last)
    });
    let publishers: Vec<_> = (0..pubs)
        .map(|p| {
            std::thread::spawn(move || {
                let mut c = Raw::client(port, &format!("fanin-pub-{p}"));
                let topic = format!("fanin/{p}");
                let mut out = Vec::new();
                for i in 1..=each {
                    Packet::Publish(Publish::new(&topic, &i.to_be_bytes(), QoS::AtLeastOnce, i))
                        .encode(&mut out);
                }
                c.write(&out);
                let mut acked = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(120);
                while acked.len() < each as usize && Instant::now() < deadline {
                    match c.recv(Duration::from_secs(10)) {
                        Got::Packet(Packet::PubAck(id)) => {
                            acked.push((topic.clone(), id.to_be_bytes().to_vec()))
                        }
                        Got::Packet(_) => {}
                        Got::Closed | Got::Nothing => break,
                    }
                }
                acked
            })
        })
        .collect();
    let acked: Vec<(String, Vec<u8>)> = publishers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let (seen, last) = reader.join().unwrap();
    FanIn {
        acked: acked.len(),
        delivered: seen.len(),
        lost: acked.iter().filter(|a| !seen.contains(*a)).count(),
        took: last.duration_since(t0),
    }
}
