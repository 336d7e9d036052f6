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
