//! Devices end to end with the real `mosquitto_pub`/`mosquitto_sub` clients against an external
//! mosquitto broker: a device applied in the cloud appears in membership on the edge; a desired
//! value set in the cloud produces a delta on MQTT; a reported value published on MQTT appears
//! in the cloud's device status; both survive an edgecore restart and a period with the cloud
//! down; bad input gets an error result.

use std::time::Duration;

use e2e::mqtt::{publish, Mosquitto, Subscriber};
use e2e::{wait_for, Cloud, Edge};
use rustix::process::Signal;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);
const TWIN: &str = "$hw/events/device/default/thermo/twin";

fn device(desired: &str) -> String {
    format!(
        "apiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceModel\nmetadata: {{name: thermometer}}\nspec:\n  properties: [{{name: temperature}}]\n---\n\
         apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {{name: thermo}}\nspec:\n  deviceModelRef: {{name: thermometer}}\n  nodeName: edge0\n  \
         properties: [{{name: temperature, desired: {{value: \"{desired}\"}}}}]\n"
    )
}

fn reported(cloud: &Cloud) -> Option<String> {
    cloud.reported_twin("thermo", "temperature")
}

fn twin_update(port: u16, value: &str) {
    publish(port, &format!("{TWIN}/update"), &json!({"event_id": "", "timestamp": 1, "twin": {"temperature": {"actual": {"value": value}, "metadata": {"type": "string"}}}}).to_string());
}

#[test]
fn devices_through_an_external_mosquitto() {
    let broker = Mosquitto::start();
    scenario(Some(broker.port));
}

#[test]
fn devices_through_the_embedded_broker() {
    scenario(None);
}

/// `external`: the port of a mosquitto to use; `None` runs edgecore's embedded broker.
fn scenario(external: Option<u16>) {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    edge.join_ok(&cloud);
    let port = match external {
        Some(p) => {
            edge.set_config(
                "eventbus",
                json!({ "embedded": false, "broker": format!("127.0.0.1:{p}") }),
            );
            p
        }
        None => edge.private_broker(),
    };
    let mut run = edge.run("1s");
    cloud.wait_ready("edge0", true, T);
    run.wait_log("MQTT: connected", T);

    let topics = [
        "$hw/events/node/edge0/membership/updated".to_owned(),
        format!("{TWIN}/update/delta"),
        format!("{TWIN}/update/result"),
        format!("{TWIN}/get/result"),
    ];
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut sub = Subscriber::start(port, &topics);
    cloud.apply_ok(&device("20"));
    let m = sub.wait("$hw/events/node/edge0/membership/updated", T, |v| {
        v["added_devices"][0]["id"] == "default/thermo"
    });
    assert_eq!(m["added_devices"][0]["name"], "thermo");
    let d = sub.wait(&format!("{TWIN}/update/delta"), T, |v| {
        v["delta"]["temperature"] == "20"
    });
    assert_eq!(d["twin"]["temperature"]["expected"]["value"], "20");

    // A new desired value from the cloud: a new delta.
    cloud.apply_ok(&device("22"));
    sub.wait(&format!("{TWIN}/update/delta"), T, |v| {
        v["delta"]["temperature"] == "22"
    });
    // The device reaches the edge twice (its object, and membership for upstream edges, sent
    // after it and again with the new value, so both were handled before this delta): mappers
    // see it announced once.
    let announced = sub
        .messages()
        .into_iter()
        .filter(|(t, p)| t.ends_with("membership/updated") && p.contains("default/thermo"))
        .count();
    assert_eq!(announced, 1, "{:?}", sub.messages());

    // Reported by a mapper: result on MQTT, value in the cloud's status.
    twin_update(port, "25.3");
    sub.wait(&format!("{TWIN}/update/result"), T, |v| {
        v["twin"]["temperature"]["actual"]["value"] == "25.3"
    });
    wait_for("reported value in the cloud", T, || {
        (reported(&cloud).as_deref() == Some("25.3")).then_some(())
    });
    let yaml =
        String::from_utf8(cloud.cli(&["get", "device", "thermo", "-o", "yaml"]).stdout).unwrap();
    assert!(yaml.contains("25.3"), "{yaml}");

    // Application messages on upload topics go to the cloud (upstream's `upload`, group user).
    publish(port, "$hw/events/upload/line1", r#"{"count":7}"#);
    cloud
        .proc
        .wait_log("uploaded 11 bytes on topic $hw/events/upload/line1", T);

    // Bad input: an error result, nothing stored, nothing sent.
    publish(port, &format!("{TWIN}/update"), "{not json");
    sub.wait(&format!("{TWIN}/update/result"), T, |v| v["code"] == 400);
    publish(
        port,
        "$hw/events/device/default/nosuch/twin/update",
        r#"{"twin":{}}"#,
    );

    // edgecore restart: the twin (desired and reported) is still there.
    run.signal(Signal::TERM);
    run.wait_exit(T);
    let mut run = edge.run("1s");
    run.wait_log("MQTT: connected", T);
    if external.is_none() {
        // The embedded broker restarted with edgecore: subscribers connect again, as mappers do.
        sub = Subscriber::start(port, &topics);
    }
    publish(port, &format!("{TWIN}/get"), r#"{"event_id":"g1"}"#);
    let g = sub.wait(&format!("{TWIN}/get/result"), T, |v| v["event_id"] == "g1");
    assert_eq!(g["twin"]["temperature"]["actual"]["value"], "25.3");
    assert_eq!(g["twin"]["temperature"]["expected"]["value"], "22");

    // Cloud down: a report made offline is kept and delivered when the cloud returns.
    let stopped = cloud.stop(true);
    twin_update(port, "30.1");
    sub.wait(&format!("{TWIN}/update/result"), T, |v| {
        v["twin"]["temperature"]["actual"]["value"] == "30.1"
    });
    run.signal(Signal::KILL); // and the edge restarts while offline, too
    run.wait_exit(T);
    let _run = edge.run("1s");
    let cloud = stopped.start(&[]);
    wait_for("the offline report in the cloud", T, || {
        (reported(&cloud).as_deref() == Some("30.1")).then_some(())
    });
    let table = String::from_utf8(cloud.cli(&["get", "devices"]).stdout).unwrap();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("thermo") && l.contains("thermometer") && l.contains("edge0")),
        "{table}"
    );
    let _: Value = json!(null);
}

/// EventBus to an external broker over TLS: the broker's certificate is verified against the
/// configured CA; with the wrong CA nothing connects and the log says why.
#[test]
fn eventbus_reaches_an_external_broker_over_tls_and_refuses_a_wrong_ca() {
    let (broker, tls_port, ca) = Mosquitto::start_tls();
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    edge.join_ok(&cloud);
    edge.set_config("eventbus", json!({ "embedded": false, "broker": format!("127.0.0.1:{tls_port}"), "tls": { "ca": ca } }));
    let run = edge.run("1s");
    run.wait_log("MQTT: connected", T);
    cloud.apply_ok(&device("20"));
    wait_for("the device on the edge", T, || {
        (cloud.synced("edge0", "Device").len() == 1).then_some(())
    });
    // A plain-TCP client on the same broker talks to the TLS-connected edge.
    let sub = Subscriber::start(
        broker.port,
        &["$hw/events/node/edge0/membership/get/result"],
    );
    wait_for("membership over the TLS link", T, || {
        publish(
            broker.port,
            "$hw/events/node/edge0/membership/get",
            r#"{"event_id":"m"}"#,
        );
        std::thread::sleep(Duration::from_millis(200));
        sub.messages()
            .iter()
            .any(|(_, p)| p.contains("default/thermo"))
            .then_some(())
    });
    drop(run);

    // The cloud's CA is not the broker's: refused, with TLS named in the log.
    let wrong = Edge::new("edge1");
    wrong.join_ok(&cloud);
    wrong.set_config("eventbus", json!({ "embedded": false, "broker": format!("127.0.0.1:{tls_port}"), "tls": { "ca": wrong.dir.path().join("pki/ca.crt") } }));
    let run = wrong.run("1s");
    run.wait_log("TLS", T);
    assert!(!run.log().contains("MQTT: connected"), "{}", run.log());
}
