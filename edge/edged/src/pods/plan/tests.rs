//! The reconciler on virtual time: every decision from a snapshot and a clock.

use super::*;
use crate::pods::spec::ProbeAction;
use serde_json::{json, Value};

const SEC: i64 = 1_000_000_000;
const T0: i64 = 1_800_000_000 * SEC;

/// A pass that may act, at `now`, over snapshot number `epoch`.
fn run(r: &mut Reconciler, d: &DesiredPods, snap: &Snapshot, epoch: u64, now_ns: i64) -> Plan {
    r.plan(
        d,
        snap,
        Pass {
            epoch,
            node_ip: "10.0.0.2",
            now_ns,
            act: true,
            runtime_problem: None,
        },
    )
}

fn rec() -> Reconciler {
    Reconciler::new(ReconcilerConfig {
        root: PathBuf::from("/pods"),
        crash_backoff: Duration::from_secs(10),
        node: NodeResources::default(),
    })
}

fn pod(extra: Value) -> Value {
    let mut p = json!({"metadata": {"uid": "u1", "name": "web", "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": "busybox:1"}]}});
    if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            if k == "spec" {
                for (sk, sv) in v.as_object().unwrap() {
                    p["spec"][sk] = sv.clone();
                }
            } else if k == "metadata" {
                for (mk, mv) in v.as_object().unwrap() {
                    p["metadata"][mk] = mv.clone();
                }
            }
        }
    }
    p
}

fn desired(pods: Vec<Value>) -> DesiredPods {
    DesiredPods {
        pods: pods.into_iter().map(std::rc::Rc::new).collect(),
        ..Default::default()
    }
}

fn sandbox(id: &str, ready: bool) -> SandboxObs {
    SandboxObs {
        id: id.into(),
        uid: "u1".into(),
        name: "web".into(),
        namespace: "default".into(),
        attempt: 0,
        ready,
        created_ns: T0,
        ip: "10.88.0.5".into(),
    }
}

fn container(
    id: &str,
    attempt: u32,
    state: CState,
    started: i64,
    finished: i64,
    exit: i32,
) -> ContainerObs {
    ContainerObs {
        id: id.into(),
        sandbox_id: "sb1".into(),
        uid: "u1".into(),
        name: "app".into(),
        attempt,
        state,
        created_ns: started,
        started_ns: started,
        finished_ns: finished,
        exit_code: exit,
        reason: String::new(),
        message: String::new(),
        image: "busybox:1".into(),
        image_ref: "sha256:abc".into(),
    }
}

fn kinds(op: &Op) -> Vec<&'static str> {
    op.actions
        .iter()
        .map(|a| match a {
            Action::WriteVolumes { .. } => "volumes",
            Action::RunSandbox(_) => "run-sandbox",
            Action::StopSandbox(_) => "stop-sandbox",
            Action::RemoveSandbox(_) => "remove-sandbox",
            Action::StopContainers(_) => "stop",
            Action::RemoveContainer(_) => "remove",
            Action::StartContainer { .. } => "start",
            Action::RemovePodDir => "remove-dir",
        })
        .collect()
}

fn status(plan: &Plan) -> &Value {
    &plan.reports[0].patch["status"]
}

fn waiting(plan: &Plan) -> (String, String) {
    let w = &status(plan)["containerStatuses"][0]["state"]["waiting"];
    (
        w["reason"].as_str().unwrap_or("").to_owned(),
        w["message"].as_str().unwrap_or("").to_owned(),
    )
}

#[test]
fn a_new_pod_gets_a_sandbox_then_its_container_and_nothing_twice() {
    let mut r = rec();
    let d = desired(vec![pod(json!({}))]);
    let empty = Snapshot::default();
    let p = run(&mut r, &d, &empty, 1, T0);
    assert_eq!(p.ops.len(), 1);
    assert_eq!(kinds(&p.ops[0]), ["run-sandbox"], "no volumes to write");
    assert_eq!(status(&p)["phase"], "Pending");
    assert_eq!(waiting(&p).0, "ContainerCreating");
    assert_eq!(
        status(&p)["conditions"][0]["status"],
        "False",
        "PodReadyToStartContainers"
    );
    // While its operation runs, and from a snapshot taken before it finished: nothing new.
    assert!(run(&mut r, &d, &empty, 2, T0).ops.is_empty());
    r.on_op_done("u1", vec![], None, 2, T0);
    assert!(
        run(&mut r, &d, &empty, 2, T0).ops.is_empty(),
        "a snapshot from before the operation ended is not acted on"
    );
    let with_sb = Snapshot {
        sandboxes: vec![sandbox("sb1", true)],
        containers: vec![],
    };
    let p = run(&mut r, &d, &with_sb, 3, T0);
    assert_eq!(kinds(&p.ops[0]), ["start"]);
    match &p.ops[0].actions[0] {
        Action::StartContainer {
            sandbox_id,
            container,
            ..
        } => {
            assert_eq!(sandbox_id, "sb1");
            assert_eq!(container.attempt, 0);
            assert_eq!(container.log_path, "app/0.log");
        }
        other => panic!("{other:?}"),
    }
    r.on_op_done("u1", vec![], None, 3, T0);
    let running = Snapshot {
        sandboxes: vec![sandbox("sb1", true)],
        containers: vec![container("c1", 0, CState::Running, T0, 0, 0)],
    };
    let p = run(&mut r, &d, &running, 4, T0 + SEC);
    assert!(p.ops.is_empty(), "{:?}", p.ops);
    let st = status(&p);
    assert_eq!(st["phase"], "Running");
    assert_eq!(st["podIP"], "10.88.0.5");
    assert_eq!(st["containerStatuses"][0]["ready"], true);
    assert_eq!(st["containerStatuses"][0]["containerID"], "containerd://c1");
    assert_eq!(st["conditions"][2]["status"], "True");
    assert!(!plan_terminal(&p));
}

fn plan_terminal(p: &Plan) -> bool {
    p.reports[0].terminal
}

#[test]
fn crash_loops_back_off_with_kubelets_message_and_restart_with_the_next_attempt() {
    let mut r = rec();
    let d = desired(vec![pod(json!({}))]);
    let exited = Snapshot {
        sandboxes: vec![sandbox("sb1", true)],
        containers: vec![container("c1", 2, CState::Exited, T0, T0 + SEC, 3)],
    };
    // Attempt 2 exited: back-off 10 s × 2² = 40 s from its finish.
    let p = run(&mut r, &d, &exited, 1, T0 + 20 * SEC);
    assert!(p.ops.is_empty());
    let (reason, message) = waiting(&p);
    assert_eq!(reason, "CrashLoopBackOff");
    assert_eq!(
        message,
        "back-off 40s restarting failed container=app pod=web_default(u1)"
    );
    let cs = &status(&p)["containerStatuses"][0];
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 3);
    assert_eq!(cs["restartCount"], 2);
    assert_eq!(
        status(&p)["phase"],
        "Running",
        "a restart wait is not pending"
    );
    assert_eq!(r.next_due_ns(&exited, T0 + 20 * SEC), Some(T0 + 41 * SEC));
    let p = run(&mut r, &d, &exited, 2, T0 + 41 * SEC);
    match &p.ops[0].actions[..] {
        [Action::StartContainer { container, .. }] => assert_eq!(container.attempt, 3),
        other => panic!("{other:?}"),
    }
    // Never: no restart, the pod fails.
    let mut r = rec();
    let d = desired(vec![pod(json!({"spec": {"restartPolicy": "Never"}}))]);
    let p = run(&mut r, &d, &exited, 1, T0 + 100 * SEC);
    assert!(p.ops.is_empty());
    assert_eq!(status(&p)["phase"], "Failed");
}

#[test]
fn a_container_that_ran_ten_minutes_restarts_with_the_first_back_off() {
    let mut r = rec();
    let d = desired(vec![pod(json!({}))]);
    let long_run = Snapshot {
        sandboxes: vec![sandbox("sb1", true)],
        containers: vec![container("c1", 5, CState::Exited, T0, T0 + 700 * SEC, 1)],
    };
    let p = run(&mut r, &d, &long_run, 1, T0 + 705 * SEC);
    assert_eq!(
        waiting(&p).1,
        "back-off 10s restarting failed container=app pod=web_default(u1)"
    );
}

#[test]
fn graceful_deletion_stops_with_the_grace_period_restarts_nothing_and_ends_terminal() {
    let mut r = rec();
    let deleting = pod(
        json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 7}}),
    );
    let d = desired(vec![deleting]);
    let running = Snapshot {
        sandboxes: vec![sandbox("sb1", true)],
        containers: vec![container("c1", 0, CState::Running, T0, 0, 0)],
    };
    let p = run(&mut r, &d, &running, 1, T0);
    assert_eq!(kinds(&p.ops[0]), ["stop", "stop-sandbox"]);
    match &p.ops[0].actions[0] {
        Action::StopContainers(list) => {
            assert_eq!(list, &[("c1".to_owned(), Duration::from_secs(7))])
        }
        other => panic!("{other:?}"),
    }
    assert!(!plan_terminal(&p), "still running: not terminal");
    assert_eq!(status(&p)["containerStatuses"][0]["ready"], false);
    r.on_op_done("u1", vec![], None, 1, T0);
    let mut stopped_sb = sandbox("sb1", false);
    stopped_sb.ip.clear();
    let stopped = Snapshot {
        sandboxes: vec![stopped_sb],
        containers: vec![container("c1", 0, CState::Exited, T0, T0 + 2 * SEC, 143)],
    };
    let p = run(&mut r, &d, &stopped, 2, T0 + 3 * SEC);
    assert!(p.ops.is_empty(), "no restart of a deleted pod: {:?}", p.ops);
    assert!(plan_terminal(&p));
    assert_eq!(status(&p)["phase"], "Failed", "exit 143 under deletion");
    assert_eq!(
        status(&p)["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        143
    );
    // A grace period under kubelet's per-container floor is raised to 2 s.
    let mut r = rec();
    let quick = pod(
        json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 0}}),
    );
    let p = run(&mut r, &desired(vec![quick]), &running, 1, T0);
    match &p.ops[0].actions[0] {
        Action::StopContainers(list) => assert_eq!(list[0].1, MIN_STOP_GRACE),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_deleted_pod_that_never_started_ends_failed_with_unknown_containers() {
    let mut r = rec();
    let deleting = pod(json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}));
    let p = run(
        &mut r,
        &desired(vec![deleting]),
        &Snapshot::default(),
        1,
        T0,
    );
    assert!(p.ops.is_empty(), "nothing to stop and nothing created");
    assert!(plan_terminal(&p));
    assert_eq!(status(&p)["phase"], "Failed");
    let t = &status(&p)["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(137), Some("ContainerStatusUnknown"))
    );
}

#[test]
fn objects_not_on_the_node_wait_and_missing_ones_are_kubelets_errors() {
    let mut r = rec();
    let env_pod = pod(
        json!({"spec": {"containers": [{"name": "app", "image": "busybox:1",
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}]}]}}),
    );
    let with_sb = Snapshot {
        sandboxes: vec![sandbox("sb1", true)],
        containers: vec![],
    };
    let mut d = desired(vec![env_pod]);
    let p = run(&mut r, &d, &with_sb, 1, T0);
    assert!(
        p.ops.iter().all(|o| !kinds(o).contains(&"start")),
        "not started without its configmap"
    );
    assert_eq!(
        waiting(&p),
        (
            "ContainerCreating".into(),
            "waiting for configmap default/cfg from the cloud".into()
        )
    );
    d.missing.insert(
        (bus::ObjectKind::ConfigMap, "default".into(), "cfg".into()),
        "configmap \"cfg\" not found".into(),
    );
    let p = run(&mut r, &d, &with_sb, 2, T0);
    assert_eq!(
        waiting(&p),
        (
            "CreateContainerConfigError".into(),
            "configmap \"cfg\" not found".into()
        )
    );
    // Once it arrives, the container starts.
    d.missing.clear();
    d.configmaps.insert(
        ("default".into(), "cfg".into()),
        std::rc::Rc::new(json!({"data": {"k": "v"}})),
    );
    let p = run(&mut r, &d, &with_sb, 3, T0);
    let start = p.ops.iter().flat_map(|o| &o.actions).find_map(|a| match a {
        Action::StartContainer { container, .. } => Some(container),
        _ => None,
    });
    assert_eq!(start.unwrap().env, [("X".to_owned(), "v".to_owned())]);
    // A volume's missing configmap keeps the pod creating, with kubelet's mount message.
    let mut r = rec();
    let vol_pod = pod(json!({"spec": {"volumes": [{"name": "v", "configMap": {"name": "gone"}}]}}));
    let mut d = desired(vec![vol_pod]);
    d.missing.insert(
        (bus::ObjectKind::ConfigMap, "default".into(), "gone".into()),
        "configmap \"gone\" not found".into(),
    );
    let p = run(&mut r, &d, &Snapshot::default(), 1, T0);
    assert!(p.ops.is_empty(), "no sandbox without its volumes");
    assert_eq!(
        waiting(&p),
        (
            "ContainerCreating".into(),
            "MountVolume.SetUp failed for volume \"v\" : configmap \"gone\" not found".into()
        )
    );
}

#[test]
fn image_pulls_back_off_as_kubelets_do() {
    let mut r = rec();
    let d = desired(vec![pod(json!({}))]);
    let with_sb = Snapshot {
        sandboxes: vec![sandbox("sb1", true)],
        containers: vec![],
    };
    let p = run(&mut r, &d, &with_sb, 1, T0);
    assert_eq!(kinds(&p.ops[0]), ["start"]);
    r.on_op_done(
        "u1",
        vec![Failure::Start {
            container: "app".into(),
            error: StartError::Pull("not found".into()),
        }],
        None,
        1,
        T0,
    );
    let p = run(&mut r, &d, &with_sb, 2, T0 + SEC);
    assert!(p.ops.is_empty(), "not retried during the back-off");
    assert_eq!(waiting(&p), ("ErrImagePull".into(), "not found".into()));
    let p = run(&mut r, &d, &with_sb, 3, T0 + 2 * SEC);
    assert_eq!(
        waiting(&p),
        (
            "ImagePullBackOff".into(),
            "Back-off pulling image \"busybox:1\": ErrImagePull: not found".into()
        )
    );
    assert_eq!(r.next_due_ns(&with_sb, T0 + 2 * SEC), Some(T0 + 10 * SEC));
    let p = run(&mut r, &d, &with_sb, 4, T0 + 10 * SEC);
    assert_eq!(kinds(&p.ops[0]), ["start"], "retried after 10 s");
}

#[test]
fn volumes_are_written_first_and_again_only_when_their_contents_change() {
    let mut r = rec();
    let vol_pod = pod(json!({"spec": {"volumes": [{"name": "v", "configMap": {"name": "cfg"}}]}}));
    let mut d = desired(vec![vol_pod]);
    d.configmaps.insert(
        ("default".into(), "cfg".into()),
        std::rc::Rc::new(json!({"data": {"k": "1"}})),
    );
    let p = run(&mut r, &d, &Snapshot::default(), 1, T0);
    assert_eq!(kinds(&p.ops[0]), ["volumes", "run-sandbox"]);
    let Action::WriteVolumes {
        fingerprint,
        volumes,
    } = &p.ops[0].actions[0]
    else {
        unreachable!()
    };
    assert!(matches!(&volumes["v"], Content::Files(f) if f[0].data == b"1"));
    r.on_op_done("u1", vec![], Some(*fingerprint), 1, T0);
    let with_sb = Snapshot {
        sandboxes: vec![sandbox("sb1", true)],
        containers: vec![container("c1", 0, CState::Running, T0, 0, 0)],
    };
    assert!(
        run(&mut r, &d, &with_sb, 2, T0).ops.is_empty(),
        "unchanged: not rewritten"
    );
    d.configmaps.insert(
        ("default".into(), "cfg".into()),
        std::rc::Rc::new(json!({"data": {"k": "2"}})),
    );
    let p = run(&mut r, &d, &with_sb, 3, T0);
    assert_eq!(
        kinds(&p.ops[0]),
        ["volumes"],
        "a changed configmap reaches the running pod's volume"
    );
}

#[test]
fn a_failing_sandbox_backs_off_and_says_why() {
    let mut r = rec();
    let d = desired(vec![pod(json!({}))]);
    let p = run(&mut r, &d, &Snapshot::default(), 1, T0);
    assert!(kinds(&p.ops[0]).contains(&"run-sandbox"));
    r.on_op_done(
        "u1",
        vec![Failure::Sandbox("no pause image".into())],
        None,
        1,
        T0,
    );
    let p = run(&mut r, &d, &Snapshot::default(), 2, T0 + SEC);
    assert!(p.ops.is_empty());
    assert_eq!(
        waiting(&p),
        ("ContainerCreating".into(), "no pause image".into())
    );
    let p = run(&mut r, &d, &Snapshot::default(), 3, T0 + 2 * SEC);
    assert_eq!(kinds(&p.ops[0]), ["run-sandbox"]);
}

#[test]
fn pods_no_longer_desired_are_torn_down() {
    let mut r = rec();
    let leftover = Snapshot {
        sandboxes: vec![sandbox("sb1", true)],
        containers: vec![container("c1", 0, CState::Running, T0, 0, 0)],
    };
    let p = run(&mut r, &desired(vec![]), &leftover, 1, T0);
    assert_eq!(
        kinds(&p.ops[0]),
        ["stop", "remove", "remove-sandbox", "remove-dir"]
    );
    assert!(p.reports.is_empty());
}

#[test]
fn liveness_failures_restart_the_container_and_readiness_gates_ready() {
    let mut r = rec();
    let probed = pod(
        json!({"spec": {"containers": [{"name": "app", "image": "busybox:1",
        "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 5, "failureThreshold": 2},
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 5}}]}}),
    );
    let d = desired(vec![probed]);
    let running = Snapshot {
        sandboxes: vec![sandbox("sb1", true)],
        containers: vec![container("c1", 0, CState::Running, T0, 0, 0)],
    };
    let p = run(&mut r, &d, &running, 1, T0);
    assert_eq!(p.probes.len(), 2);
    let tcp = p.probes.iter().find(|x| !x.liveness).unwrap();
    assert_eq!(
        (tcp.host.as_str(), &tcp.action),
        ("10.88.0.5", &ProbeAction::Tcp { port: 8080 })
    );
    assert_eq!(
        status(&p)["containerStatuses"][0]["ready"],
        false,
        "not ready before a readiness success"
    );
    assert!(
        run(&mut r, &d, &running, 2, T0).probes.is_empty(),
        "a probe in flight is not run twice"
    );
    let spec = PodSpec::parse(&d.pods[0]).unwrap();
    let live = spec.containers[0].liveness.clone().unwrap();
    let ready = spec.containers[0].readiness.clone().unwrap();
    r.on_probe("c1", false, true, &ready, T0);
    r.on_probe("c1", true, false, &live, T0);
    let p = run(&mut r, &d, &running, 3, T0 + SEC);
    assert_eq!(status(&p)["containerStatuses"][0]["ready"], true);
    assert!(p.probes.is_empty(), "the period has not passed");
    let p = run(&mut r, &d, &running, 4, T0 + 5 * SEC);
    assert_eq!(p.probes.len(), 2, "due again after the period");
    r.on_probe("c1", true, false, &live, T0 + 5 * SEC);
    r.on_probe("c1", false, true, &ready, T0 + 5 * SEC);
    let p = run(&mut r, &d, &running, 5, T0 + 6 * SEC);
    match &p.ops[0].actions[..] {
        [Action::StopContainers(list)] => assert_eq!(list[0].0, "c1"),
        other => panic!("two liveness failures stop the container: {other:?}"),
    }
}

#[test]
fn without_a_runtime_pods_say_why_they_wait() {
    let mut r = rec();
    let p = r.plan(
        &desired(vec![pod(json!({}))]),
        &Snapshot::default(),
        Pass {
            epoch: 1,
            node_ip: "10.0.0.2",
            now_ns: T0,
            act: false,
            runtime_problem: Some("no container runtime is configured on this node"),
        },
    );
    assert!(p.ops.is_empty());
    assert_eq!(status(&p)["phase"], "Pending");
    assert_eq!(
        waiting(&p),
        (
            "ContainerCreating".into(),
            "no container runtime is configured on this node".into()
        )
    );
    assert_eq!(status(&p)["startTime"], proto::time::rfc3339(T0 / SEC));
}
