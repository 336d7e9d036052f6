//! `edge-mqtt`, the workspace's small MQTT client, against a real mosquitto and the real
//! mosquitto clients: what it publishes arrives, what others publish it prints, req gets the
//! response a responder sends, and failures exit 1 (no broker, timeout) or 2 (bad flags)
//! with a message.

use std::process::{Command, Output};
use std::time::Duration;

use e2e::mqtt::{publish, Mosquitto, Subscriber};
use e2e::{bin, wait_for, Proc};

fn edge_mqtt(port: u16, args: &[&str]) -> Output {
    Command::new(bin("edge-mqtt"))
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run edge-mqtt")
}

fn spawn(port: u16, args: &[&str]) -> Proc {
    let mut cmd = Command::new(bin("edge-mqtt"));
    cmd.args(["-p", &port.to_string()]).args(args);
    Proc::spawn(cmd)
}

#[test]
fn publishes_subscribes_and_requests_through_mosquitto() {
    let broker = Mosquitto::start();
    let port = broker.port;

    // pub → mosquitto_sub
    let sub = Subscriber::start(port, &["cli/out"]);
    let out = edge_mqtt(port, &["pub", "-t", "cli/out", "-m", "hello 1"]);
    assert!(out.status.success(), "{out:?}");
    wait_for(
        "the message at mosquitto_sub",
        Duration::from_secs(10),
        || {
            sub.messages()
                .iter()
                .any(|(t, p)| t == "cli/out" && p == "hello 1")
                .then_some(())
        },
    );

    // QoS 2 both ways (PUBREC/PUBREL/PUBCOMP with mosquitto on each side): each message
    // printed once, in order.
    let mut q2 = spawn(
        port,
        &[
            "sub", "-t", "cli/q2", "-q", "2", "-C", "2", "-W", "30s", "-d",
        ],
    );
    q2.wait_log("subscribed to cli/q2", Duration::from_secs(10));
    for m in ["first", "second"] {
        let out = edge_mqtt(port, &["pub", "-t", "cli/q2", "-q", "2", "-m", m, "-d"]);
        assert!(out.status.success(), "{out:?}");
    }
    assert_eq!(
        q2.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        q2.log()
    );
    let log = q2.log();
    let got: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with("edge-mqtt:"))
        .collect();
    assert_eq!(got, ["first", "second"]);

    // mosquitto_pub → sub -C 2 -v (printed in order, then exit 0)
    let mut s = spawn(
        port,
        &["sub", "-t", "cli/in/#", "-C", "2", "-v", "-W", "30s", "-d"],
    );
    s.wait_log("subscribed to cli/in/#", Duration::from_secs(10));
    publish(port, "cli/in/a", "one");
    publish(port, "cli/in/x", r#"{"v":2}"#);
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0), "{}", s.log());
    let lines: Vec<String> = s
        .log()
        .lines()
        .filter(|l| l.starts_with("cli/"))
        .map(str::to_owned)
        .collect();
    assert_eq!(lines, ["cli/in/a one", r#"cli/in/x {"v":2}"#]);

    // req: a responder answers on the response topic; only the matching answer is printed.
    let responder = spawn(
        port,
        &["sub", "-t", "svc/ask", "-C", "1", "-W", "30s", "-d"],
    );
    responder.wait_log("subscribed to svc/ask", Duration::from_secs(10));
    let req = std::thread::spawn(move || {
        edge_mqtt(
            port,
            &[
                "req",
                "-t",
                "svc/ask",
                "-m",
                "q1",
                "-r",
                "svc/answer",
                "--match",
                "yes",
                "-W",
                "20s",
                "--every",
                "200ms",
            ],
        )
    });
    responder.wait_log("q1", Duration::from_secs(10));
    publish(port, "svc/answer", "no");
    publish(port, "svc/answer", "yes: 42");
    let out = req.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "yes: 42\n");
}

#[test]
fn failures_are_clear() {
    let broker = Mosquitto::start();
    // Nothing listening: exit 1 naming the address.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = edge_mqtt(free, &["pub", "-t", "a", "-m", "b"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("cannot connect to 127.0.0.1:{free}")),
        "{out:?}"
    );
    // No answer in time: exit 1 saying what was awaited.
    let out = edge_mqtt(
        broker.port,
        &[
            "req",
            "-t",
            "nobody",
            "-m",
            "x",
            "-r",
            "nobody/answer",
            "-W",
            "1s",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no response on nobody/answer"),
        "{out:?}"
    );
    // Bad command lines: exit 2 with a pointer to --help.
    for args in [
        &["pub", "-t", "a"][..],
        &["req", "-t", "a", "-m", "b"],
        &["pub", "-t", "a", "-m", "b", "-q", "3"],
        &["frobnicate"],
    ] {
        let out = edge_mqtt(broker.port, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("edge-mqtt --help"),
            "{args:?}: {out:?}"
        );
    }
}

/// TLS: with the broker's CA the message goes through (and arrives for a plain-TCP
/// subscriber); with another CA the handshake fails and edge-mqtt says so.
#[test]
fn publishes_over_tls_and_refuses_a_wrong_ca() {
    let (broker, tls_port, ca) = Mosquitto::start_tls();
    let sub = Subscriber::start(broker.port, &["cli/tls"]);
    let ca = ca.to_str().unwrap().to_owned();
    let out = edge_mqtt(
        tls_port,
        &["pub", "-t", "cli/tls", "-m", "over tls", "--cafile", &ca],
    );
    assert!(out.status.success(), "{out:?}");
    wait_for("the TLS message", Duration::from_secs(10), || {
        sub.messages()
            .iter()
            .any(|(t, p)| t == "cli/tls" && p == "over tls")
            .then_some(())
    });

    let other = e2e::TempDir::new("other-ca");
    pki::Ca::load_or_create(other.path()).unwrap();
    let wrong = other.path().join("ca.crt");
    let out = edge_mqtt(
        tls_port,
        &[
            "pub",
            "-t",
            "cli/tls",
            "-m",
            "x",
            "--cafile",
            wrong.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate"),
        "{out:?}"
    );
    // Half a client certificate is a usage error.
    let out = edge_mqtt(tls_port, &["pub", "-t", "a", "-m", "b", "--cert", &ca]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
