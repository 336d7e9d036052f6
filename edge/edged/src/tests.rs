//! NodeAgent on virtual time.

use super::*;
use serde_json::json;

const S: Duration = Duration::from_secs(10);

fn answered(reply: Reply) -> Outcome {
    Outcome::Answered {
        reply,
        resource_version: String::new(),
        ack: None,
    }
}

fn up() -> Link {
    Link::Connected {
        local_ip: [10, 0, 0, 2].into(),
    }
}

fn p() -> Pressure {
    Pressure::default()
}

/// The status patches among `reqs`, parsed.
fn status_patches(reqs: &[(RequestId, CloudRequest)]) -> Vec<Value> {
    reqs.iter()
        .filter_map(|(_, r)| match r {
            CloudRequest::PatchNodeStatus { patch } => serde_json::from_str(patch).ok(),
            _ => None,
        })
        .collect()
}

fn id_of(reqs: &[(RequestId, CloudRequest)], f: impl Fn(&CloudRequest) -> bool) -> RequestId {
    reqs.iter().find(|(_, r)| f(r)).expect("request present").0
}

#[test]
fn registers_reports_the_whole_status_then_creates_lease_and_renews() {
    let t0 = Instant::now();
    let w = SystemTime::now();
    let mut a = NodeAgent::new("edge0", NodeFacts::default(), S, S, t0);
    assert!(
        a.on_tick(t0, w, &p()).is_empty(),
        "nothing while disconnected"
    );
    let reqs = a.on_link(up(), t0, w, &p());
    assert!(matches!(
        reqs.as_slice(),
        [(_, CloudRequest::RegisterNode { .. })]
    ));
    let reqs = a.on_reply(
        reqs[0].0,
        answered(Reply::Object(json!({"metadata":{"uid":"u1"}}))),
        t0,
        w,
        &p(),
    );
    assert!(a.is_registered());
    assert!(reqs
        .iter()
        .any(|(_, r)| matches!(r, CloudRequest::QueryLease)));
    let full = status_patches(&reqs);
    assert_eq!(full.len(), 1, "the whole status follows registration");
    assert!(full[0]["status"]["nodeInfo"].is_object());
    assert!(full[0]["status"]["capacity"].is_object());
    let status_id = id_of(&reqs, |r| matches!(r, CloudRequest::PatchNodeStatus { .. }));
    a.on_reply(status_id, answered(Reply::Object(json!({}))), t0, w, &p());
    let lease_id = id_of(&reqs, |r| matches!(r, CloudRequest::QueryLease));
    let nf = Reply::Failed {
        code: 404,
        reason: "NotFound".into(),
        message: String::new(),
    };
    let reqs = a.on_reply(lease_id, answered(nf), t0, w, &p());
    let lease = match reqs.as_slice() {
        [(_, CloudRequest::CreateLease { lease })] => lease.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(lease["metadata"]["ownerReferences"][0]["uid"], "u1");
    let mut stored = lease.clone();
    stored["metadata"]["resourceVersion"] = json!("5");
    assert!(a
        .on_reply(reqs[0].0, answered(Reply::Object(stored)), t0, w, &p())
        .is_empty());
    // At the interval: the lease; the unchanged status is not sent again.
    assert!(a.on_tick(t0 + S / 2, w, &p()).is_empty());
    let reqs = a.on_tick(t0 + S, w, &p());
    assert!(
        status_patches(&reqs).is_empty(),
        "unchanged: only heartbeats moved"
    );
    match reqs.as_slice() {
        [(_, CloudRequest::UpdateLease { lease })] => {
            assert_eq!(lease["metadata"]["resourceVersion"], "5")
        }
        other => panic!("{other:?}"),
    }
}

/// Registered and with a first report accepted, at `t0`.
fn settled(t0: Instant, w: SystemTime) -> NodeAgent {
    let mut a = NodeAgent::new("edge0", NodeFacts::default(), S, S, t0);
    let reqs = a.on_link(up(), t0, w, &p());
    let reqs = a.on_reply(reqs[0].0, answered(Reply::Object(json!({}))), t0, w, &p());
    for (id, r) in reqs {
        if matches!(r, CloudRequest::PatchNodeStatus { .. }) {
            a.on_reply(id, answered(Reply::Object(json!({}))), t0, w, &p());
        }
    }
    a
}

#[test]
fn a_changed_status_or_five_minutes_sends_it_again() {
    let t0 = Instant::now();
    let w = SystemTime::now();
    let mut a = settled(t0, w);
    assert!(status_patches(&a.on_tick(t0 + S, w, &p())).is_empty());
    a.set_runtime(&RuntimeHealth::Up("containerd://1.7.20".into()));
    let reqs = a.on_tick(t0 + 2 * S, w, &p());
    let patches = status_patches(&reqs);
    assert_eq!(
        patches[0]["status"]["nodeInfo"]["containerRuntimeVersion"], "containerd://1.7.20",
        "a runtime seen after registration reaches the node object"
    );
    let id = id_of(&reqs, |r| matches!(r, CloudRequest::PatchNodeStatus { .. }));
    a.on_reply(id, answered(Reply::Object(json!({}))), t0 + 2 * S, w, &p());
    a.set_runtime(&RuntimeHealth::Down("connection refused".into()));
    let reqs = a.on_tick(t0 + 3 * S, w, &p());
    let ready = &status_patches(&reqs)[0]["status"]["conditions"][3];
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("KubeletNotReady"))
    );
    let id = id_of(&reqs, |r| matches!(r, CloudRequest::PatchNodeStatus { .. }));
    a.on_reply(id, answered(Reply::Object(json!({}))), t0 + 3 * S, w, &p());
    assert!(status_patches(&a.on_tick(t0 + 4 * S, w, &p())).is_empty());
    let late = t0 + 3 * S + STATUS_REPORT_INTERVAL;
    assert_eq!(
        status_patches(&a.on_tick(late, w, &p())).len(),
        1,
        "reported again after 5 min"
    );
}

#[test]
fn already_exists_counts_as_registered_refreshes_the_status_and_failures_retry() {
    let t0 = Instant::now();
    let w = SystemTime::now();
    let mut a = NodeAgent::new("edge0", NodeFacts::default(), S, S, t0);
    let reqs = a.on_link(up(), t0, w, &p());
    assert!(a.on_reply(reqs[0].0, Outcome::Lost, t0, w, &p()).is_empty());
    assert!(!a.is_registered());
    let reqs = a.on_tick(t0 + S, w, &p());
    assert!(
        matches!(reqs.as_slice(), [(_, CloudRequest::RegisterNode { .. })]),
        "{reqs:?}"
    );
    let exists = Reply::Failed {
        code: 409,
        reason: "AlreadyExists".into(),
        message: String::new(),
    };
    let reqs = a.on_reply(reqs[0].0, answered(exists), t0 + S, w, &p());
    assert!(a.is_registered());
    assert_eq!(
        status_patches(&reqs).len(),
        1,
        "an existing node object gets this node's whole status"
    );
}

#[test]
fn reconnect_registers_again_reports_again_and_drops_stale_replies() {
    let t0 = Instant::now();
    let w = SystemTime::now();
    let mut a = settled(t0, w);
    let before = a.on_tick(t0 + S, w, &p());
    a.on_link(Link::Disconnected, t0, w, &p());
    let again = a.on_link(up(), t0, w, &p());
    assert!(matches!(
        again.as_slice(),
        [(_, CloudRequest::RegisterNode { .. })]
    ));
    for (id, _) in before {
        assert!(a
            .on_reply(id, answered(Reply::Object(json!({}))), t0, w, &p())
            .is_empty());
    }
    assert!(
        !a.is_registered(),
        "a reply from the old session must not count"
    );
    let reqs = a.on_reply(again[0].0, answered(Reply::Object(json!({}))), t0, w, &p());
    assert_eq!(
        status_patches(&reqs).len(),
        1,
        "the whole status on each connect"
    );
}

#[test]
fn a_store_that_cannot_write_is_reported_not_ready_until_it_writes_again() {
    let t0 = Instant::now();
    let w = SystemTime::now();
    let mut a = settled(t0, w);
    let cond = |reqs: &[(RequestId, CloudRequest)], kind: &str| {
        let patches = status_patches(reqs);
        let c = patches[0]["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .cloned()
            .unwrap();
        (
            c["status"].as_str().unwrap().to_owned(),
            c["message"].clone(),
        )
    };
    a.set_store(Some(node::StoreFault {
        message: "No space left on device (os error 28)".into(),
        no_space: true,
    }));
    let reqs = a.on_tick(t0 + S, w, &p());
    let (ready, message) = cond(&reqs, "Ready");
    assert_eq!(ready, "False");
    assert!(
        message
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{message}"
    );
    assert_eq!(cond(&reqs, "DiskPressure").0, "True");
    let id = id_of(&reqs, |r| matches!(r, CloudRequest::PatchNodeStatus { .. }));
    a.on_reply(id, answered(Reply::Object(json!({}))), t0 + S, w, &p());

    a.set_store(None);
    let reqs = a.on_tick(t0 + 2 * S, w, &p());
    assert_eq!(cond(&reqs, "Ready").0, "True", "writable again: Ready");
    assert_eq!(cond(&reqs, "DiskPressure").0, "False");
}

/// A runtime whose every call takes forever (an image pull that never ends): the pod loop
/// is stuck inside its first call.
#[derive(Default)]
struct Stuck {
    calls: std::cell::Cell<u32>,
}

impl Stuck {
    async fn never<T>(&self) -> T {
        self.calls.set(self.calls.get() + 1);
        std::future::pending().await
    }
}

impl pods::runtime::Runtime for Stuck {
    async fn version(&self) -> Result<String, String> {
        self.never().await
    }
    async fn observe(&self) -> Result<pods::runtime::Snapshot, String> {
        self.never().await
    }
    async fn run_sandbox(&self, _: &pods::runtime::SandboxSpec) -> Result<String, String> {
        self.never().await
    }
    async fn stop_sandbox(&self, _: &str) -> Result<(), String> {
        self.never().await
    }
    async fn remove_sandbox(&self, _: &str) -> Result<(), String> {
        self.never().await
    }
    async fn start_container(
        &self,
        _: &str,
        _: &pods::runtime::SandboxSpec,
        _: &pods::runtime::ContainerSpec,
    ) -> Result<String, pods::runtime::StartError> {
        self.never().await
    }
    async fn stop_container(&self, _: &str, _: Duration) -> Result<(), String> {
        self.never().await
    }
    async fn remove_container(&self, _: &str) -> Result<(), String> {
        self.never().await
    }
    async fn exec(&self, _: &str, _: &[String], _: Duration) -> Result<i32, String> {
        self.never().await
    }
}

#[test]
fn the_lease_is_renewed_while_the_pod_loop_is_stuck_in_the_runtime() {
    let dir = std::env::temp_dir().join(format!("edged-stuck-{}", std::process::id()));
    let cfg = EdgedConfig {
        node_name: "edge0".into(),
        status_interval: Duration::from_millis(50),
        lease_interval: Duration::from_millis(50),
        data_dir: dir.clone(),
        cri_endpoint: None,
        direct: None,
        crash_backoff: Duration::from_secs(10),
        pod_sync_period: Duration::from_millis(50),
        reservations: Reservations::default(),
        store: StoreWatch::default(),
    };
    let (bus, mut boxes) = bus::Bus::new(&[ModuleId::EdgeHub, ModuleId::Edged]);
    let edged_box = boxes.pop().unwrap();
    let hub = boxes.pop().unwrap();
    assert_eq!(hub.id, ModuleId::EdgeHub);
    let (_trigger, shutdown) = bus::Shutdown::new();
    let rt = Stuck::default();
    let ex = smol::LocalExecutor::new();
    let renewals = smol::block_on(ex.run(async {
        let edged = Loops::new(&cfg).run(Some(&rt), &edged_box, &bus, &shutdown);
        let cloud = async {
            bus.set_link(up());
            bus.set_desired(Rc::new(bus::DesiredPods {
                pods: vec![Rc::new(
                    json!({"metadata": {"name": "p", "namespace": "default",
                    "uid": "u1"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
                )],
                ..Default::default()
            }));
            // Play EdgeHub and the cloud until three lease renewals came, 10 s at most.
            let mut renewals = 0;
            let deadline = Instant::now() + Duration::from_secs(10);
            while renewals < 3 && Instant::now() < deadline {
                let msg = smol::future::or(hub.recv(), async {
                    smol::Timer::at(deadline).await;
                    None
                })
                .await;
                let Some(BusMessage::ToCloud { id, request, .. }) = msg else {
                    continue;
                };
                let reply = match request {
                    CloudRequest::RegisterNode { .. } => {
                        Reply::Object(json!({"metadata": {"uid": "n1"}}))
                    }
                    CloudRequest::QueryLease => Reply::Failed {
                        code: 404,
                        reason: "NotFound".into(),
                        message: String::new(),
                    },
                    CloudRequest::CreateLease { lease } => Reply::Object(lease),
                    CloudRequest::UpdateLease { lease } => {
                        renewals += 1;
                        Reply::Object(lease)
                    }
                    _ => Reply::Object(json!({})),
                };
                bus.deliver(
                    ModuleId::Edged,
                    BusMessage::Reply {
                        id,
                        outcome: answered(reply),
                    },
                )
                .unwrap();
            }
            renewals
        };
        smol::future::or(cloud, async {
            edged.await;
            0
        })
        .await
    }));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        rt.calls.get(),
        1,
        "the pod loop sits in its first runtime call"
    );
    assert_eq!(renewals, 3, "the lease is renewed all the same");
}
