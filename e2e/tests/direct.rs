//! Edged on the daemonless runtime, end to end: real cloudcore and edgecore, edgecore running
//! OCI bundles with crun or runc (no containerd), the busybox image imported from an OCI archive.
//! A pod in its own network namespace runs to Running and Ready (an exec probe through
//! `crun exec`), logs in the CRI format; a crasher restarts with growing back-off and its exit
//! code; edgecore killed with SIGKILL leaves the container running and adopts it when it
//! starts again; a delete stops it with SIGTERM (it runs its trap) and removes everything.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::direct::{oci_list as crun_list, oci_runtime, Cleanup};
use e2e::pods::{container_status, pod, running_and_ready};
use e2e::{wait_for, Cloud, Edge, TempDir};
use rustix::process::Signal;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
/// An edge joined to `cloud` in direct mode with a 300 ms pod sync (and `extra` config), its
/// containers cleaned up when the guard goes, running and Ready.
fn direct_edge(cloud: &Cloud, extra: &[(&str, Value)]) -> (Edge, Cleanup, e2e::Proc) {
    let edge = Edge::new("edge0");
    let cleanup = Cleanup::new(&edge);
    let out = edge.join_direct(cloud, oci_runtime());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    edge.set_config("pod_sync_period", serde_json::json!("300ms"));
    for (k, v) in extra {
        edge.set_config(k, v.clone());
    }
    let run = edge.run("1s");
    cloud.wait_ready("edge0", true, T);
    (edge, cleanup, run)
}

fn web(host: &Path) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  nodeName: edge0
  terminationGracePeriodSeconds: 20
  containers:
  - name: app
    image: localhost/busybox:test
    command: [sh, -c, "echo start >> /host/starts; echo hello; echo oops >&2; trap 'echo term > /host/term; exit 0' TERM; while true; do sleep 0.2; done"]
    env: [{{name: GREETING, value: hi}}]
    volumeMounts: [{{name: host, mountPath: /host}}]
    readinessProbe: {{exec: {{command: [sh, -c, "test \"$GREETING\" = hi && test \"$(hostname)\" = web"]}}, periodSeconds: 1}}
    resources: {{limits: {{memory: 64Mi, cpu: 250m}}}}
  volumes: [{{name: host, hostPath: {{path: {}}}}}]
"#,
        host.display()
    )
}

const CRASHER: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: crasher}\nspec:\n  nodeName: edge0\n  hostNetwork: true\n  \
    containers: [{name: app, image: localhost/busybox:test, command: [sh, -c, \"exit 3\"]}]\n";

#[test]
fn direct_pods_run_restart_survive_a_killed_edgecore_and_stop_gracefully() {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    let _cleanup = Cleanup::new(&edge);
    let mut run = e2e::direct::start_edge(&cloud, &edge);
    wait_for("the node reports crun as its runtime", T, || {
        let node = cloud.admin("GET", "/api/v1/nodes/edge0", b"").1;
        let v = node["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()?
            .to_owned();
        let name = Path::new(oci_runtime())
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        v.starts_with(&format!("{name}://")).then_some(())
    });

    let host = TempDir::new("direct-host");
    cloud.apply_ok(&web(host.path()));
    cloud.apply_ok(CRASHER);
    let t0 = Instant::now();
    while !running_and_ready(&cloud, "web") {
        assert!(
            t0.elapsed() < T,
            "web not Running and Ready: {}\n{}",
            pod(&cloud, "web").unwrap_or_default()["status"],
            run.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let id = container_status(&cloud, "web")["containerID"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, status, pid) = crun_list(&edge)
        .into_iter()
        .find(|(c, _, _)| id.ends_with(c.as_str()))
        .expect("crun runs web");
    assert_eq!(status, "running");

    // The pod's limits are the container's cgroup's (v1 controllers or the v2 tree).
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let v1 = |ctl: &str| {
        cg.lines()
            .find_map(|l| l.split_once(&format!(":{ctl}:")).map(|(_, p)| p.to_owned()))
    };
    let (memory, cpu) = match (v1("memory"), v1("cpu"), v1("cpu,cpuacct")) {
        (Some(m), c, cc) => (
            std::fs::read_to_string(format!("/sys/fs/cgroup/memory{m}/memory.limit_in_bytes")),
            std::fs::read_to_string(format!(
                "/sys/fs/cgroup/{}{}/cpu.cfs_quota_us",
                if c.is_some() { "cpu" } else { "cpu,cpuacct" },
                c.or(cc).unwrap_or_default()
            )),
        ),
        _ => {
            let p = cg.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
            (
                std::fs::read_to_string(format!("/sys/fs/cgroup{p}/memory.max")),
                std::fs::read_to_string(format!("/sys/fs/cgroup{p}/cpu.max")),
            )
        }
    };
    assert_eq!(memory.unwrap().trim(), (64u64 << 20).to_string(), "{cg}");
    assert!(cpu.unwrap().trim().starts_with("25000"), "{cg}");

    // Its own network namespace (not the host's), and logs in the CRI format.
    let ns = |p: i64| std::fs::read_link(format!("/proc/{p}/ns/net")).unwrap();
    assert_ne!(
        ns(pid),
        ns(std::process::id() as i64),
        "web has its own netns"
    );
    let uid = pod(&cloud, "web").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let log = edge
        .dir
        .path()
        .join("pods")
        .join(&uid)
        .join("logs/app/0.log");
    let text = wait_for("web's log", T, || {
        let t = std::fs::read_to_string(&log).ok()?;
        (t.contains(" stdout F hello\n") && t.contains(" stderr F oops\n")).then_some(t)
    });
    let first = text.lines().next().unwrap();
    let ts = first.split(' ').next().unwrap();
    assert!(
        ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
        "{first}"
    );

    // The crasher: restarts with its exit code, and the back-off grows.
    e2e::pods::assert_crash_backoff(&cloud, "crasher", 3, 3, Duration::from_secs(60));

    // edgecore killed: the container runs on, and the next edgecore adopts it.
    run.signal(Signal::KILL);
    assert_eq!(
        run.wait_exit(Duration::from_secs(10)),
        None,
        "killed by the signal"
    );
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "web outlives edgecore"
    );
    let run = edge.run("1s");
    run.wait_log("adopted container", T);
    cloud.wait_ready("edge0", true, T);
    wait_for("web Running and Ready after the restart", T, || {
        running_and_ready(&cloud, "web").then_some(())
    });
    assert_eq!(container_status(&cloud, "web")["containerID"], id.as_str());
    assert_eq!(container_status(&cloud, "web")["restartCount"], 0);

    // A delete stops the adopted container with SIGTERM: its trap runs.
    assert!(cloud.cli(&["delete", "pod", "web"]).status.success());
    wait_for("web deleted", T, || {
        pod(&cloud, "web").is_none().then_some(())
    });
    assert_eq!(
        std::fs::read_to_string(host.path().join("term")).unwrap(),
        "term\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.path().join("starts")).unwrap(),
        "start\n",
        "one container for web in the whole test: adopted, never recreated"
    );
    wait_for("web's container gone from crun", T, || {
        (!crun_list(&edge)
            .iter()
            .any(|(c, _, _)| id.ends_with(c.as_str())))
        .then_some(())
    });
    // Its sandbox goes with it (the network namespace unmounted): only the crasher's is left.
    wait_for("web's sandbox removed", T, || {
        let n = std::fs::read_dir(edge.dir.path().join("direct/sandboxes"))
            .unwrap()
            .count();
        (n == 1).then_some(())
    });
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let netns = mounts
        .lines()
        .filter(|l| l.contains(&edge.dir.path().display().to_string()) && l.contains("netns"))
        .count();
    assert_eq!(
        netns, 0,
        "the crasher has host networking, web's netns is unmounted"
    );
    drop(run);
}

#[test]
fn a_missing_oci_runtime_is_named_with_how_to_set_it() {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    let out = edge.join_direct(&cloud, "/nonexistent/crun");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/crun")
            && err.contains("--oci-runtime")
            && err.contains("apt-get install crun"),
        "{err}"
    );
    assert!(!edge.config_path().exists(), "a failed join writes nothing");
}

/// A real registry on loopback: the pod's image is pulled (gzip layers, digests checked),
/// an image the registry lacks fails its pod with the registry's answer, and with the
/// registry gone a pod whose image is `Always` pulled starts from the local copy.
#[test]
fn direct_pods_pull_from_a_registry_and_survive_it_going_away() {
    let mut registry = e2e::registry::Registry::start();
    registry.push(&e2e::containerd::busybox_archive(), "busybox:pulled");
    let image = registry.image("busybox:pulled");
    let cloud = Cloud::start(&[]);
    let (edge, _cleanup, _run) = direct_edge(&cloud, &[]);
    let pod_yaml = |name: &str, image: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: edge0\n  hostNetwork: true\n  \
             containers: [{{name: app, image: \"{image}\", imagePullPolicy: Always, command: [sleep, \"3600\"]}}]\n"
        )
    };
    cloud.apply_ok(&pod_yaml("pulled", &image));
    cloud.apply_ok(&pod_yaml("missing", &registry.image("nope:1")));
    wait_for("the pulled pod Running", T, || {
        (pod(&cloud, "pulled")?["status"]["phase"] == "Running").then_some(())
    });
    let cs = container_status(&cloud, "pulled");
    let image_id = cs["imageID"].as_str().unwrap_or("").to_owned();
    assert!(
        image_id.starts_with(&format!("127.0.0.1:{}/busybox@sha256:", registry.port)),
        "{cs}"
    );
    // Its layers came gzip-compressed (skopeo compressed them on the push).
    let hex = image_id.rsplit("sha256:").next().unwrap();
    let manifest =
        std::fs::read_to_string(edge.dir.path().join("images/blobs/sha256").join(hex)).unwrap();
    assert!(manifest.contains("gzip"), "{manifest}");
    let listed = Command::new(e2e::bin("edgecore"))
        .args(["image", "list", "--data-dir"])
        .arg(edge.dir.path())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&image),
        "{listed:?}"
    );
    let waiting = wait_for("the missing image reported", T, || {
        let w = container_status(&cloud, "missing")["state"]["waiting"].clone();
        let reason = w["reason"].as_str()?.to_owned();
        (reason == "ErrImagePull" || reason == "ImagePullBackOff").then_some(w)
    });
    assert!(waiting.to_string().contains("404"), "{waiting}");

    registry.stop();
    cloud.apply_ok(&pod_yaml("offline", &image));
    wait_for(
        "a pod from the local copy with the registry gone",
        T,
        || (pod(&cloud, "offline")?["status"]["phase"] == "Running").then_some(()),
    );
    assert_eq!(pod(&cloud, "pulled").unwrap()["status"]["phase"], "Running");
}

/// A registry with token auth (its own token server wanting a password): a pod whose
/// `imagePullSecrets` hold the password pulls and runs; one without them is refused with
/// the registry's answer.
#[test]
fn direct_pods_pull_with_image_pull_secrets_from_a_token_registry() {
    let registry = e2e::registry::Registry::start_with_auth("puller", "s3cret");
    registry.push(&e2e::containerd::busybox_archive(), "private/busybox:1");
    let image = registry.image("private/busybox:1");
    let cloud = Cloud::start(&[]);
    let (_edge, _cleanup, _run) = direct_edge(&cloud, &[]);
    let auths = serde_json::json!({"auths": {format!("127.0.0.1:{}", registry.port): {"username": "puller", "password": "s3cret"}}});
    cloud.apply_ok(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: reg}}\ntype: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: '{auths}'\n"
    ));
    let pod_yaml = |name: &str, secrets: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: edge0\n  hostNetwork: true\n{secrets}  \
             containers: [{{name: app, image: \"{image}\", command: [sleep, \"3600\"]}}]\n"
        )
    };
    // Without the secret first: refused by the token server, nothing pulled.
    cloud.apply_ok(&pod_yaml("anonymous", ""));
    let w = wait_for("the anonymous pull refused", T, || {
        let w = container_status(&cloud, "anonymous")["state"]["waiting"].clone();
        w["message"].as_str()?.contains("token").then_some(w)
    });
    assert!(w.to_string().contains("401"), "{w}");
    assert!(
        !w.to_string().contains("s3cret"),
        "no password in a status: {w}"
    );
    cloud.apply_ok(&pod_yaml(
        "authorized",
        "  imagePullSecrets: [{name: reg}]\n",
    ));
    wait_for("the pod with the pull secret Running", T, || {
        (pod(&cloud, "authorized")?["status"]["phase"] == "Running").then_some(())
    });
}

/// A power cut: edgecore and the containers die, the mounts (root filesystems, the pod's
/// network namespace) are gone, the records and the OCI runtime's state stay. The next
/// edgecore sees the exits, gives the pod a new sandbox (its namespace is only a file now)
/// and a new container, and reports it Running again.
#[test]
fn direct_pods_come_back_after_a_power_cut() {
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    let cleanup = Cleanup::new(&edge);
    let mut run = e2e::direct::start_edge(&cloud, &edge);
    let host = TempDir::new("direct-host");
    cloud.apply_ok(&web(host.path()));
    wait_for("web Running and Ready", T, || {
        running_and_ready(&cloud, "web").then_some(())
    });
    let before = container_status(&cloud, "web")["containerID"].clone();

    run.signal(Signal::KILL);
    assert_eq!(run.wait_exit(Duration::from_secs(10)), None);
    cleanup.power_cut(&edge);
    let run = edge.run("1s");
    wait_for("web Running and Ready after the power cut", T, || {
        (running_and_ready(&cloud, "web")
            && container_status(&cloud, "web")["containerID"] != before)
            .then_some(())
    });
    assert!(
        run.log().contains("lost its network namespace"),
        "{}",
        run.log()
    );
    assert_eq!(
        std::fs::read_to_string(host.path().join("starts")).unwrap(),
        "start\nstart\n"
    );
    // The old sandbox is gone: one left, and its namespace is a live mount again.
    wait_for("one sandbox", T, || {
        let n = std::fs::read_dir(edge.dir.path().join("direct/sandboxes"))
            .unwrap()
            .count();
        (n == 1).then_some(())
    });
}

/// A registry speaking HTTPS with a certificate from its own CA (`images/certs.d/<host:port>`
/// says a loopback registry speaks HTTPS): refused (unknown issuer) until the CA is in its
/// `ca.crt`, then pulled and run.
#[test]
fn direct_pods_pull_over_https_once_the_registrys_ca_is_trusted() {
    let registry = e2e::registry::Registry::start_tls();
    registry.push(&e2e::containerd::busybox_archive(), "tls/busybox:1");
    let cloud = Cloud::start(&[]);
    let (edge, _cleanup, _run) = direct_edge(&cloud, &[("crash_backoff", serde_json::json!("1s"))]);
    // certs.d/<host:port> says the loopback registry speaks HTTPS; its CA is not there yet.
    let dir = edge
        .dir
        .path()
        .join(format!("images/certs.d/127.0.0.1:{}", registry.port));
    std::fs::create_dir_all(&dir).unwrap();
    cloud.apply_ok(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: tls}}\nspec:\n  nodeName: edge0\n  hostNetwork: true\n  \
         containers: [{{name: app, image: \"{}\", command: [sleep, \"3600\"]}}]\n",
        registry.image("tls/busybox:1")
    ));
    let w = wait_for("the untrusted registry refused", T, || {
        let w = container_status(&cloud, "tls")["state"]["waiting"].clone();
        w["message"].as_str()?.contains("certificate").then_some(w)
    });
    assert!(w.to_string().contains("UnknownIssuer"), "{w}");
    std::fs::write(dir.join("ca.crt"), registry.ca_pem.as_ref().unwrap()).unwrap();
    wait_for("the pod Running once the CA is trusted", T, || {
        (pod(&cloud, "tls")?["status"]["phase"] == "Running").then_some(())
    });
}
