//! The official Kubernetes Python client (`pip install kubernetes`, in the venv
//! `scripts/env.sh` makes) against cloudcore's API, through `e2e/scripts/kube_client.py`: a
//! kubeconfig from `cloudcore kubeconfig`, pods listed with a label selector, a ConfigMap
//! patched (strategic merge), ConfigMaps deleted by label (deletecollection), and a pod watch
//! with bookmarks that survives cloudcore restarts: resumed from its last resourceVersion when
//! the restarted server can serve it (nothing replayed), refused `410 Gone` when a change it
//! was not told of is lost with the history, upon which the client lists again.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use e2e::{Cloud, TempDir};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);
/// Where `scripts/env.sh` installs the client (`ensure_python_client`).
const DEFAULT_PYTHON: &str = "/var/cache/edgecore/pyvenv/bin/python";

fn python() -> PathBuf {
    let p = PathBuf::from(
        std::env::var("EDGECORE_KUBE_PYTHON").unwrap_or_else(|_| DEFAULT_PYTHON.into()),
    );
    assert!(
        p.exists(),
        "the Python client's venv is needed at {} (scripts/env.sh's ensure_python_client makes it)",
        p.display()
    );
    p
}

/// The script's JSON lines, as they come.
struct Lines {
    child: Child,
    rx: Receiver<Value>,
}

impl Lines {
    fn spawn(args: &[&str]) -> Lines {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kube_client.py");
        let mut child = Command::new(python())
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("run the Python client");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line).unwrap_or(json!({ "text": line }));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        Lines { child, rx }
    }

    fn next(&self) -> Value {
        self.rx
            .recv_timeout(T)
            .expect("the Python client printed nothing more (see its stderr)")
    }

    /// Lines up to and including the first that `done` accepts.
    fn until(&self, what: &str, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + T;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) => {
                    let end = done(&v);
                    seen.push(v);
                    if end {
                        return seen;
                    }
                }
                Err(_) => panic!("no {what} from the Python client; it said {seen:?}"),
            }
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        // Ours, by its own handle; gone already when the test passed.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn added(name: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == "ADDED" && v["name"] == name
}

fn pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: x}}}}\n\
         spec:\n  nodeName: elsewhere\n  containers: [{{name: app, image: localhost/busybox:test}}]\n"
    )
}

const START: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data: {greeting: hello, other: "2"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: doomed-a, labels: {doomed: "yes"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: doomed-b, labels: {doomed: "yes"}}
---
apiVersion: v1
kind: Pod
metadata: {name: unlabelled}
spec:
  nodeName: elsewhere
  containers: [{name: app, image: localhost/busybox:test}]
"#;

/// Whether any line tells of an older pod as new.
fn replayed(lines: &[Value], old: &[&str]) -> bool {
    lines
        .iter()
        .any(|v| v["type"] == "ADDED" && old.iter().any(|n| v["name"] == *n))
}

#[test]
fn the_python_client_lists_patches_and_watches_across_restarts() {
    let cloud = Cloud::start(&[]);
    cloud.apply_ok(START);
    cloud.apply_ok(&pod("before"));
    let dir = TempDir::new("pyclient");
    let out = cloud.cli(&["kubeconfig"]);
    assert!(out.status.success());
    let kubeconfig = dir.path().join("admin.kubeconfig");
    std::fs::write(&kubeconfig, &out.stdout).unwrap();
    let py = Lines::spawn(&[
        kubeconfig.to_str().unwrap(),
        "default",
        "app=x",
        "app-config",
        "after2",
    ]);

    let listed = py.next();
    assert_eq!(listed["list"], json!(["before"]), "{listed}");
    let patched = py.next();
    assert_eq!(
        patched["patched"],
        json!({ "greeting": "hi", "other": "2" }),
        "a strategic merge keeps the other keys: {patched}"
    );
    let deleted = py.next();
    assert_eq!(deleted["deleted_collection"], "ConfigMapList", "{deleted}");
    let left = cloud.cli(&["get", "configmaps", "-o", "json"]);
    let left: Value = serde_json::from_slice(&left.stdout).unwrap();
    let names: Vec<&str> = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .filter(|n| *n != "kube-root-ca.crt")
        .collect();
    assert_eq!(names, ["app-config"], "deletecollection by label");
    // From the list's version: nothing to catch up on, and the bookmark asked for.
    let first = py.until("a bookmark", |v| v["type"] == "BOOKMARK");
    assert_eq!(first.len(), 1, "nothing but the bookmark: {first:?}");
    let rv = |v: &Value| v["rv"].as_str().unwrap().parse::<u64>().unwrap();
    // At the store's version: past the list's, by the patch.
    assert!(rv(&first[0]) > rv(&listed), "{first:?} {listed}");
    cloud.apply_ok(&pod("during"));
    py.until("the new pod", added("during"));

    // A restart with nothing changed since the last event: the client resumes from its
    // version, which the new server serves, and is told only what comes after.
    let cloud = cloud.stop(false).start(&[]);
    cloud.apply_ok(&pod("after1"));
    let resumed = py.until("the pod made after the restart", added("after1"));
    assert!(
        resumed.iter().any(|v| v.get("broken").is_some()),
        "the watch broke: {resumed:?}"
    );
    assert!(
        !resumed.iter().any(|v| v.get("gone").is_some()),
        "resumed without a relist: {resumed:?}"
    );
    assert!(!replayed(&resumed, &["before", "during"]), "{resumed:?}");

    // A change the pod watcher is not told of (a ConfigMap's) moves the version past its
    // last one; the restart loses the history that covered it: 410, then a fresh list.
    cloud.apply_ok(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-config}\ndata: {greeting: again}\n",
    );
    let cloud = cloud.stop(false).start(&[]);
    let relisted = py.until("a relist", |v| v.get("relist").is_some());
    let gone = relisted
        .iter()
        .find(|v| v.get("gone").is_some())
        .unwrap_or_else(|| panic!("no 410 before the relist: {relisted:?}"));
    assert!(
        gone["reason"]
            .as_str()
            .unwrap()
            .contains("too old resource version"),
        "{gone}"
    );
    assert_eq!(
        relisted.last().unwrap()["relist"],
        json!(["after1", "before", "during"])
    );
    cloud.apply_ok(&pod("after2"));
    let tail = py.until("the last pod", added("after2"));
    assert!(
        !replayed(&tail, &["before", "during", "after1"]),
        "{tail:?}"
    );
    let mut py = py;
    let status = py.child.wait().unwrap();
    assert!(status.success(), "the Python client ended {status}");
}
