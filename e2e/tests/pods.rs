//! Edged end to end: real cloudcore, edgecore and containerd (private socket, local images).
//! `cloudcore apply` a pod → it runs → `get pods` shows it Running and Ready; crashes restart
//! with growing back-off; a configMap volume holds the ConfigMap's data; deleting removes
//! sandbox and containers; an offline cold boot brings the pod back and a returning cloud does
//! not recreate it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use e2e::containerd::{Containerd, BUSYBOX};
use e2e::pods::{container_status, pod, running_and_ready};
use e2e::{wait_for, Cloud, Edge, Proc};
use rustix::process::Signal;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

fn start_edge(cloud: &Cloud, ctrd: &Containerd) -> (Edge, Proc) {
    let edge = Edge::new("edge0");
    let out = edge.join_with(cloud, &cloud.token(), &ctrd.endpoint());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    edge.set_config("crash_backoff", json!("1s"));
    edge.set_config("pod_sync_period", json!("300ms"));
    let run = edge.run("1s");
    cloud.wait_ready("edge0", true, T);
    (edge, run)
}

/// Containers the runtime holds for pods of this edgecore, by pod name: (id, state). A
/// containerd that was just started again answers "not initialized" until its CRI plugin
/// is up: that is only "not yet".
fn runtime_containers(ctrd: &Containerd) -> HashMap<String, Vec<(String, i32)>> {
    let c = cri::CriClient::new(&ctrd.endpoint()).unwrap();
    let list = e2e::wait_for(
        "containerd's CRI to answer",
        Duration::from_secs(30),
        || smol::block_on(c.with(c.list_containers(None))).ok(),
    );
    let mut out: HashMap<String, Vec<(String, i32)>> = HashMap::new();
    for x in list {
        let pod = x
            .labels
            .get("io.kubernetes.pod.name")
            .cloned()
            .unwrap_or_default();
        out.entry(pod).or_default().push((x.id, x.state));
    }
    out
}

const APP: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data: {greeting: "hello from the cloud"}
---
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  nodeName: edge0
  hostNetwork: true
  containers:
  - name: app
    image: localhost/busybox:test
    command: [sh, -c, "sleep 3600"]
    env:
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: app-config, key: greeting}}}
    volumeMounts: [{name: config, mountPath: /config, readOnly: true}]
    readinessProbe: {exec: {command: [test, -f, /config/greeting]}, periodSeconds: 1}
    resources: {limits: {memory: 64Mi, cpu: 250m}}
  volumes: [{name: config, configMap: {name: app-config}}]
"#;

#[test]
fn pods_run_restart_with_back_off_mount_config_and_are_removed() {
    let ctrd = Containerd::start();
    let cloud = Cloud::start(&[]);
    let (_edge, _run) = start_edge(&cloud, &ctrd);
    cloud.apply_ok(APP);
    cloud.apply_ok(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: crasher}\nspec:\n  nodeName: edge0\n  hostNetwork: true\n  \
         containers: [{name: app, image: localhost/busybox:test, command: [sh, -c, \"exit 3\"]}]\n",
    );
    wait_for("web Running and Ready", T, || {
        running_and_ready(&cloud, "web").then_some(())
    });
    let table = String::from_utf8(cloud.cli(&["get", "pods"]).stdout).unwrap();
    let row = table
        .lines()
        .find(|l| l.starts_with("web"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        row.contains("1/1") && row.contains("Running") && row.contains("edge0"),
        "{table}"
    );
    // The cloud holds the state the edge reported, and only it: a strategic merge replaces
    // containerStatuses (no stale `waiting` beside `running`).
    let state = container_status(&cloud, "web")["state"].clone();
    assert_eq!(
        state.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["running"],
        "{state}"
    );
    let conds = pod(&cloud, "web").unwrap()["status"]["conditions"].clone();
    let types: Vec<&str> = conds
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled"
        ]
    );
    assert!(conds
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["lastTransitionTime"].is_string()));
    let node = cloud.admin("GET", "/api/v1/nodes/edge0", b"").1;
    assert!(
        node["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("containerd://"),
        "{node}"
    );

    // The configMap volume's file and the env var hold the ConfigMap's data.
    let web_id = container_status(&cloud, "web")["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("containerd://")
        .to_owned();
    let c = cri::CriClient::new(&ctrd.endpoint()).unwrap();
    smol::block_on(c.with(async {
        let out = c
            .exec_sync(
                &web_id,
                vec!["cat".into(), "/config/greeting".into()],
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from the cloud");
        let out = c
            .exec_sync(
                &web_id,
                vec!["sh".into(), "-c".into(), "echo -n $GREETING".into()],
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from the cloud");
    }));

    // The crasher: restartCount rises, exit code 3 is reported, and the gaps between
    // restarts grow (1 s, 2 s, 4 s back-off).
    e2e::pods::assert_crash_backoff(&cloud, "crasher", 4, 3, Duration::from_secs(90));
    let describe = String::from_utf8(cloud.cli(&["get", "pods"]).stdout).unwrap();
    assert!(
        describe.lines().any(|l| l.starts_with("crasher")
            && (l.contains("CrashLoopBackOff") || l.contains("Error") || l.contains("Running"))),
        "{describe}"
    );

    // Deleting the pod removes its containers and sandbox from the runtime.
    assert!(cloud.cli(&["delete", "pod", "web"]).status.success());
    wait_for("web's containers removed", T, || {
        (!runtime_containers(&ctrd).contains_key("web")).then_some(())
    });
    wait_for("web's sandbox removed", T, || {
        let c = cri::CriClient::new(&ctrd.endpoint()).unwrap();
        let sandboxes = smol::block_on(c.with(async { c.list_pod_sandbox(None).await.unwrap() }));
        (!sandboxes
            .iter()
            .any(|s| s.labels.get("io.kubernetes.pod.name").map(String::as_str) == Some("web")))
        .then_some(())
    });
}

#[test]
fn offline_cold_boot_brings_pods_back_and_the_cloud_does_not_recreate_them() {
    let mut ctrd = Containerd::start();
    let cloud = Cloud::start(&[]);
    let (edge, mut run) = start_edge(&cloud, &ctrd);
    cloud.apply_ok(APP);
    wait_for("web Running and Ready", T, || {
        running_and_ready(&cloud, "web").then_some(())
    });

    // Cloud gone for good (for now); then a power cut: edgecore, containers and containerd.
    let stopped = cloud.stop(true);
    run.signal(Signal::KILL);
    run.wait_exit(T);
    ctrd.crash();
    ctrd.start_again();
    let _run = edge.run("1s");
    let booted = Instant::now();
    let id = wait_for(
        "web running again with the cloud down",
        Duration::from_secs(30),
        || {
            runtime_containers(&ctrd)
                .get("web")?
                .iter()
                .find(|(_, st)| *st == cri::v1::ContainerState::ContainerRunning as i32)
                .map(|(id, _)| id.clone())
        },
    );
    eprintln!("pod back {:?} after the cold boot", booted.elapsed());

    // The cloud returns: the pod is reported Running with the same container.
    let cloud = stopped.start(&[]);
    cloud.wait_ready("edge0", true, T);
    wait_for("status from the rebooted edge", T, || {
        (container_status(&cloud, "web")["containerID"] == format!("containerd://{id}")
            && running_and_ready(&cloud, "web"))
        .then_some(())
    });
    // Give the reconnect a few sync passes to do anything it would do, then check nothing was recreated.
    std::thread::sleep(Duration::from_secs(2));
    let running: Vec<String> = runtime_containers(&ctrd)["web"]
        .iter()
        .filter(|(_, st)| *st == cri::v1::ContainerState::ContainerRunning as i32)
        .map(|(i, _)| i.clone())
        .collect();
    assert_eq!(
        running,
        vec![id],
        "the container was recreated after the cloud came back"
    );
    let _ = BUSYBOX;
}

// Written once, run on both runtime adapters: containerd through CRI, and the direct one.
#[test]
fn liveness_restarts_never_policy_completes_and_secret_and_empty_dir_volumes_mount() {
    let ctrd = Containerd::start();
    let cloud = Cloud::start(&[]);
    let (_edge, _run) = start_edge(&cloud, &ctrd);
    liveness_never_and_volumes(&cloud);
}

#[test]
fn direct_liveness_restarts_never_policy_completes_and_secret_and_empty_dir_volumes_mount() {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    let _cleanup = e2e::direct::Cleanup::new(&edge);
    let _run = e2e::direct::start_edge(&cloud, &edge);
    liveness_never_and_volumes(&cloud);
}

fn liveness_never_and_volumes(cloud: &Cloud) {
    cloud.apply_ok(
        r#"apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {pw: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: volumes}
spec:
  nodeName: edge0
  hostNetwork: true
  containers:
  - name: app
    image: localhost/busybox:test
    command: [sleep, "3600"]
    volumeMounts: [{name: s, mountPath: /secret, readOnly: true}, {name: scratch, mountPath: /scratch}]
    readinessProbe:
      exec: {command: [sh, -c, "test \"$(cat /secret/pw)\" = s3cret && touch /scratch/ok && test -f /scratch/ok"]}
      periodSeconds: 1
  volumes: [{name: s, secret: {secretName: creds}}, {name: scratch, emptyDir: {}}]
---
apiVersion: v1
kind: Pod
metadata: {name: unhealthy}
spec:
  nodeName: edge0
  hostNetwork: true
  containers:
  - name: app
    image: localhost/busybox:test
    command: [sleep, "3600"]
    livenessProbe: {exec: {command: ["false"]}, periodSeconds: 1, failureThreshold: 2}
---
apiVersion: v1
kind: Pod
metadata: {name: once}
spec:
  nodeName: edge0
  hostNetwork: true
  restartPolicy: Never
  containers: [{name: app, image: localhost/busybox:test, command: [sh, -c, "exit 0"]}]
"#,
    );
    wait_for(
        "secret and emptyDir volumes usable (readiness passes)",
        T,
        || running_and_ready(cloud, "volumes").then_some(()),
    );
    wait_for("liveness failures restart the container", T, || {
        (container_status(cloud, "unhealthy")["restartCount"].as_u64() >= Some(1)).then_some(())
    });
    wait_for("restartPolicy Never: the pod completes", T, || {
        (pod(cloud, "once")?["status"]["phase"] == "Succeeded").then_some(())
    });
    std::thread::sleep(Duration::from_secs(2)); // several sync passes: a Never pod must stay done
    assert_eq!(container_status(cloud, "once")["restartCount"], 0);
    assert_eq!(
        container_status(cloud, "once")["state"]["terminated"]["exitCode"],
        0
    );
}
