//! The real kubectl (`/usr/bin/kubectl`, v1.32) against cloudcore's Kubernetes API: a real
//! cloudcore, a real edgecore running a pod on a private containerd, a kubeconfig from
//! `cloudcore kubeconfig`. Read workflows: `get` with kubectl's columns (`-o wide` too),
//! `-o json` as stored, label and field selectors, NotFound, `get -w`; no certificate is 401,
//! an edge's node certificate 403. Write workflows: `create`, `apply` (client-side, no
//! `--validate=false`), `replace` of a stale copy, `patch` of all three types, `label`,
//! `annotate`, `edit`, `delete --wait` of a pod an edge runs, `--dry-run=server`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use e2e::containerd::Containerd;
use e2e::{wait_for, Cloud, Edge, Proc, TempDir};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);
const KUBECTL: &str = "/usr/bin/kubectl";

/// Runs kubectl with `kubeconfig`, its discovery cache and HOME in `home`.
fn kubectl(home: &Path, kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(KUBECTL)
        .env("HOME", home)
        .env("KUBECONFIG", kubeconfig)
        .arg("--cache-dir")
        .arg(home.join("cache"))
        .args(args)
        .output()
        .expect("run kubectl")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The words of each line (kubectl pads its columns with spaces; multi-word column names
/// like NOMINATED NODE come out as two words).
fn words(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

fn row<'a>(table: &'a [Vec<String>], first: &[&str]) -> &'a [String] {
    table
        .iter()
        .find(|r| r.len() >= first.len() && r.iter().zip(first).all(|(a, b)| a == b))
        .unwrap_or_else(|| panic!("no row starting {first:?} in {table:?}"))
}

const APP: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: app-config, labels: {app: x}}
data: {greeting: hello, other: "2"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unlabelled}
data: {a: "1"}
---
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: x}}
spec:
  nodeName: edge0
  hostNetwork: true
  containers:
  - name: app
    image: localhost/busybox:test
    command: [sh, -c, "sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata: {name: waiting, namespace: team}
spec:
  nodeName: elsewhere
  containers: [{name: app, image: localhost/busybox:test}]
"#;

fn kubeconfig(cloud: &Cloud, dir: &Path) -> PathBuf {
    let out = cloud.cli(&["kubeconfig"]);
    let text = ok(&out);
    let path = dir.join("admin.kubeconfig");
    std::fs::write(&path, &text).unwrap();
    let doc: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(
        doc["clusters"][0]["cluster"]["server"],
        format!("https://127.0.0.1:{}", cloud.api.port()),
        "the first advertised address and the API port"
    );
    path
}

/// A kubeconfig for the same server with other credentials (`user` YAML, or none).
fn other_kubeconfig(admin: &Path, user: Value, path: &Path) -> PathBuf {
    let mut doc: Value = serde_yaml::from_str(&std::fs::read_to_string(admin).unwrap()).unwrap();
    doc["users"][0]["user"] = user;
    std::fs::write(path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    path.to_owned()
}

#[test]
fn kubectl_reads_nodes_pods_and_configmaps_with_a_real_clusters_columns() {
    assert!(
        Path::new(KUBECTL).exists(),
        "kubectl is needed at {KUBECTL}"
    );
    let ctrd = Containerd::start();
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    let out = edge.join_with(&cloud, &cloud.token(), &ctrd.endpoint());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _run = edge.run("1s");
    cloud.wait_ready("edge0", true, T);
    let home = TempDir::new("kubectl-home");
    let kc = kubeconfig(&cloud, home.path());
    let k = |args: &[&str]| kubectl(home.path(), &kc, args);

    // Nodes: kubectl's columns, the edge Ready with its kubelet version.
    let nodes = words(&ok(&k(&["get", "nodes"])));
    assert_eq!(nodes[0], ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    let edge_row = row(&nodes, &["edge0"]);
    assert_eq!(edge_row[1], "Ready", "{nodes:?}");
    assert!(edge_row[4].starts_with("v1.32.10-kubeedge"), "{nodes:?}");
    let wide = words(&ok(&k(&["get", "nodes", "-o", "wide"])));
    assert_eq!(
        wide[0],
        [
            "NAME",
            "STATUS",
            "ROLES",
            "AGE",
            "VERSION",
            "INTERNAL-IP",
            "EXTERNAL-IP",
            "OS-IMAGE",
            "KERNEL-VERSION",
            "CONTAINER-RUNTIME"
        ]
    );

    cloud.apply_ok(APP);
    wait_for("web Running and Ready in kubectl", T, || {
        let t = words(&ok(&k(&["get", "pods"])));
        let r = row(&t, &["web"]);
        (r[1] == "1/1" && r[2] == "Running").then_some(())
    });

    // All namespaces, wide: the NAMESPACE column kubectl adds, the pod printers' columns.
    let all = words(&ok(&k(&["get", "pods", "-A", "-o", "wide"])));
    assert_eq!(
        all[0],
        [
            "NAMESPACE",
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED",
            "NODE",
            "READINESS",
            "GATES"
        ]
    );
    let web = row(&all, &["default", "web"]);
    assert_eq!(
        (&web[2][..], &web[3][..], &web[4][..]),
        ("1/1", "Running", "0"),
        "{all:?}"
    );
    assert_eq!(&web[7..], ["edge0", "<none>", "<none>"], "{all:?}");
    let waiting = row(&all, &["team", "waiting"]);
    assert_eq!(
        (&waiting[2][..], &waiting[3][..]),
        ("0/1", "Pending"),
        "{all:?}"
    );
    assert_eq!(
        &waiting[6..],
        ["<none>", "elsewhere", "<none>", "<none>"],
        "{all:?}"
    );

    // `-o json` is the object as stored (read twice around it: the edge reports status).
    let stored = || {
        let (status, mut v) = cloud.admin("GET", "/api/v1/pods/default/web", b"");
        assert_eq!(status, 200);
        v["kind"] = json!("Pod");
        v["apiVersion"] = json!("v1");
        v
    };
    let same = (0..5).any(|_| {
        let before = stored();
        let got: Value =
            serde_json::from_str(&ok(&k(&["get", "pod", "web", "-o", "json"]))).unwrap();
        before == stored() && got == before
    });
    assert!(same, "kubectl's pod differs from the stored one");

    // Selectors are applied by the server.
    assert_eq!(
        ok(&k(&["get", "cm", "-l", "app=x", "-o", "name"])),
        "configmap/app-config\n"
    );
    assert_eq!(
        ok(&k(&["get", "configmaps", "-l", "app!=x", "-o", "name"])),
        "configmap/kube-root-ca.crt\nconfigmap/unlabelled\n"
    );
    assert_eq!(
        ok(&k(&[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "spec.nodeName=edge0",
            "-o",
            "name"
        ])),
        "pod/web\n"
    );
    assert_eq!(
        ok(&k(&[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "status.phase=Pending",
            "-o",
            "name"
        ])),
        "pod/waiting\n"
    );
    let cms = words(&ok(&k(&["get", "cm"])));
    assert_eq!(cms[0], ["NAME", "DATA", "AGE"]);
    assert_eq!(&row(&cms, &["app-config"])[1], "2");
    let leases = words(&ok(&k(&["get", "leases", "-n", "kube-node-lease"])));
    assert_eq!(leases[0], ["NAME", "HOLDER", "AGE"]);
    assert_eq!(&row(&leases, &["edge0"])[1], "edge0");
    let ns = words(&ok(&k(&["get", "ns"])));
    assert_eq!(&row(&ns, &["team"])[1], "Active");

    // Events as core/v1 Events: `get events` and the Events section of `describe`, which
    // selects them by the object's name, namespace, kind and uid.
    let events = words(&ok(&k(&["get", "events"])));
    assert_eq!(
        events[0],
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    );
    assert!(
        events
            .iter()
            .any(|r| r[2] == "Delivered" && r[3] == "pod/web"),
        "{events:?}"
    );
    let described = ok(&k(&["describe", "pod", "web"]));
    let section = described.split("Events:").nth(1).unwrap_or("");
    assert!(
        section.contains("Applied") && section.contains("Delivered"),
        "{described}"
    );
    // `get all` is the `all` category.
    assert!(ok(&k(&["get", "all", "-o", "name"]))
        .lines()
        .any(|l| l == "pod/web"));

    // A missing name: kubectl's NotFound error, exit 1.
    let missing = k(&["get", "pod", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr).trim(),
        "Error from server (NotFound): pods \"nope\" not found"
    );
    let bad = k(&["get", "pods", "--field-selector", "spec.color=red"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("field label not supported: spec.color"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // No client certificate: 401. (A bearer token this API does not know, because kubectl
    // with no credentials at all prompts for a password instead of sending the request.)
    let anon = other_kubeconfig(
        &kc,
        json!({ "token": "not-a-known-token" }),
        &home.path().join("anon.kubeconfig"),
    );
    let out = kubectl(home.path(), &anon, &["get", "pods"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("You must be logged in to the server (Unauthorized)"),
        "{err}"
    );

    // The edge's node certificate: 403, named as the apiserver names the refusal.
    let pki = edge.dir.path().join("pki");
    let node = other_kubeconfig(
        &kc,
        json!({ "client-certificate": pki.join("edge.crt"), "client-key": pki.join("edge.key") }),
        &home.path().join("node.kubeconfig"),
    );
    let out = kubectl(home.path(), &node, &["get", "pods"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "Error from server (Forbidden): pods is forbidden: User \"system:node:edge0\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"",
        "{}",
        cloud.proc.log()
    );
}

/// Whether a `--output-watch-events` line `<EVENT> <name> …` was printed.
fn saw(proc: &Proc, event: &str, name: &str) -> bool {
    words(&proc.log())
        .iter()
        .any(|r| r.len() > 1 && r[0] == event && r[1] == name)
}

#[test]
fn kubectl_get_watch_follows_additions_changes_and_deletions() {
    let cloud = Cloud::start(&[]);
    let home = TempDir::new("kubectl-watch");
    let kc = kubeconfig(&cloud, home.path());
    cloud.apply_ok("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: before}\ndata: {a: \"1\"}\n");
    let mut cmd = Command::new(KUBECTL);
    cmd.env("HOME", home.path())
        .env("KUBECONFIG", &kc)
        .arg("--cache-dir")
        .arg(home.path().join("cache"))
        .args(["get", "configmaps", "-w", "--output-watch-events"]);
    let watch = Proc::spawn(cmd);
    // kubectl lists first (the rows come as ADDED), then watches from the list's version.
    wait_for("the listed configmap", T, || {
        saw(&watch, "ADDED", "before").then_some(())
    });
    assert_eq!(words(&watch.log())[0], ["EVENT", "NAME", "DATA", "AGE"]);
    cloud
        .apply_ok("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: watched}\ndata: {a: \"1\"}\n");
    wait_for("ADDED watched", T, || {
        saw(&watch, "ADDED", "watched").then_some(())
    });
    cloud.apply_ok(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: watched}\ndata: {a: \"1\", b: \"2\"}\n",
    );
    wait_for("MODIFIED watched", T, || {
        saw(&watch, "MODIFIED", "watched").then_some(())
    });
    let out = cloud.cli(&["delete", "configmap", "watched"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("DELETED watched", T, || {
        saw(&watch, "DELETED", "watched").then_some(())
    });
    let log = watch.log();
    let modified = words(&log)
        .into_iter()
        .find(|r| r[0] == "MODIFIED")
        .unwrap();
    assert_eq!(modified[2], "2", "the row as changed: {log}");
    assert!(
        !saw(&watch, "MODIFIED", "before") && !saw(&watch, "DELETED", "before"),
        "an unchanged object is not told again: {log}"
    );
}

/// Writes `text` to `dir/name` and returns its path (as a `-f` argument).
fn file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

fn err(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

const SETTINGS: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast}\n";

#[test]
fn kubectl_creates_patches_labels_replaces_and_deletes_configmaps() {
    let cloud = Cloud::start(&[]);
    let home = TempDir::new("kubectl-writes");
    let kc = kubeconfig(&cloud, home.path());
    let k = |args: &[&str]| kubectl(home.path(), &kc, args);
    let cm = file(home.path(), "cm.yaml", SETTINGS);

    assert_eq!(
        ok(&k(&["create", "-f", &cm])),
        "configmap/settings created\n"
    );
    let stored = || {
        let (status, v) = cloud.admin("GET", "/api/v1/configmaps/default/settings", b"");
        assert_eq!(status, 200, "{v}");
        v
    };
    assert_eq!(stored()["data"], json!({ "mode": "fast" }));
    let old = ok(&k(&["get", "cm", "settings", "-o", "yaml"]));
    let taken = k(&["create", "-f", &cm]);
    assert_eq!(taken.status.code(), Some(1));
    assert!(
        err(&taken).contains("Error from server (AlreadyExists)")
            && err(&taken).contains("configmaps \"settings\" already exists"),
        "{}",
        err(&taken)
    );
    // Server-side dry run: answered, not stored.
    let dry = file(
        home.path(),
        "dry.yaml",
        &SETTINGS.replace("settings", "dry"),
    );
    assert!(ok(&k(&["create", "-f", &dry, "--dry-run=server"])).contains("(server dry run)"));
    assert_eq!(
        cloud.admin("GET", "/api/v1/configmaps/default/dry", b"").0,
        404
    );

    // kubectl's generators send protobuf.
    let lit = k(&[
        "create",
        "configmap",
        "lit",
        "--from-literal=a=b",
        "--from-literal=c=d",
    ]);
    assert_eq!(ok(&lit), "configmap/lit created\n");
    let (_, v) = cloud.admin("GET", "/api/v1/configmaps/default/lit", b"");
    assert_eq!(v["data"], json!({ "a": "b", "c": "d" }));
    assert!(v["metadata"].get("generateName").is_none(), "{v}");
    let sec = k(&[
        "create",
        "secret",
        "generic",
        "pw",
        "--from-literal=pw=hello",
    ]);
    assert_eq!(ok(&sec), "secret/pw created\n");
    assert_eq!(
        ok(&k(&["get", "secret", "pw", "-o", "jsonpath={.data.pw}"])),
        "aGVsbG8="
    );

    // The three patch types, label and annotate: each stored, each moving the version.
    let merge = k(&[
        "patch",
        "cm",
        "settings",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"mode":"slow","extra":"1"}}"#,
    ]);
    assert_eq!(ok(&merge), "configmap/settings patched\n");
    assert_eq!(stored()["data"], json!({ "mode": "slow", "extra": "1" }));
    let jp = k(&[
        "patch",
        "cm",
        "settings",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/data/extra"},{"op":"replace","path":"/data/mode","value":"json"}]"#,
    ]);
    assert_eq!(ok(&jp), "configmap/settings patched\n");
    assert_eq!(stored()["data"], json!({ "mode": "json" }));
    let failed = k(&[
        "patch",
        "cm",
        "settings",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/data/nope"}]"#,
    ]);
    assert_eq!(
        failed.status.code(),
        Some(1),
        "a JSON patch that does not apply"
    );
    ok(&k(&[
        "patch",
        "cm",
        "settings",
        "-p",
        r#"{"data":{"mode":"strategic"}}"#,
    ]));
    assert_eq!(stored()["data"]["mode"], "strategic");
    assert_eq!(
        ok(&k(&["label", "cm", "settings", "tier=edge"])),
        "configmap/settings labeled\n"
    );
    assert_eq!(
        ok(&k(&["annotate", "cm", "settings", "owner=ops"])),
        "configmap/settings annotated\n"
    );
    let meta = &stored()["metadata"];
    assert_eq!(
        (&meta["labels"]["tier"], &meta["annotations"]["owner"]),
        (&json!("edge"), &json!("ops"))
    );
    assert_eq!(
        ok(&k(&["get", "cm", "-l", "tier=edge", "-o", "name"])),
        "configmap/settings\n"
    );

    // Replacing with the copy read before the patches: its resourceVersion is stale.
    let old = file(
        home.path(),
        "old.yaml",
        &old.replace("mode: fast", "mode: stale"),
    );
    let stale = k(&["replace", "-f", &old]);
    assert_eq!(stale.status.code(), Some(1));
    assert!(
        err(&stale).contains("Error from server (Conflict)")
            && err(&stale).contains("the object has been modified; please apply your changes to the latest version and try again"),
        "{}",
        err(&stale)
    );
    assert_eq!(
        stored()["data"]["mode"],
        "strategic",
        "the stale copy is not stored"
    );
    // `kubectl edit` with an editor that changes one value: a strategic merge patch.
    let edit = Command::new(KUBECTL)
        .env("HOME", home.path())
        .env("KUBECONFIG", &kc)
        .env("KUBE_EDITOR", "sed -i s/strategic/edited/")
        .arg("--cache-dir")
        .arg(home.path().join("cache"))
        .args(["edit", "cm", "settings"])
        .output()
        .unwrap();
    assert_eq!(ok(&edit), "configmap/settings edited\n");
    assert_eq!(stored()["data"]["mode"], "edited");
    // Invalid: kubectl shows the field.
    // The status subresource: only the status changes.
    let lone = file(
        home.path(),
        "lone.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: lone}\nspec: {containers: [{name: c, image: i}]}\n",
    );
    assert_eq!(ok(&k(&["create", "-f", &lone])), "pod/lone created\n");
    let st = k(&[
        "patch",
        "pod",
        "lone",
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"message":"set by kubectl"},"metadata":{"labels":{"x":"y"}}}"#,
    ]);
    assert_eq!(ok(&st), "pod/lone patched\n");
    let (_, pod) = cloud.admin("GET", "/api/v1/pods/default/lone", b"");
    assert_eq!(pod["status"]["message"], "set by kubectl");
    assert!(pod["metadata"]["labels"].is_null(), "{pod}");
    let bad = file(
        home.path(),
        "bad.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec: {containers: []}\n",
    );
    let invalid = k(&["create", "-f", &bad]);
    assert_eq!(invalid.status.code(), Some(1));
    // kubectl prints an Invalid Status from its causes: the field as kube-apiserver names it.
    assert_eq!(
        err(&invalid),
        "The Pod \"bad\" is invalid: spec.containers: a pod needs at least one container"
    );

    assert_eq!(
        ok(&k(&["delete", "cm", "settings"])),
        "configmap \"settings\" deleted\n"
    );
    assert_eq!(
        cloud
            .admin("GET", "/api/v1/configmaps/default/settings", b"")
            .0,
        404
    );
    let gone = k(&["delete", "cm", "settings"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(err(&gone).contains("(NotFound)"), "{}", err(&gone));
}

const WEB: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: edge0
  hostNetwork: true
  terminationGracePeriodSeconds: 5
  containers:
  - name: app
    image: localhost/busybox:test
    command: [sh, -c, "trap 'exit 0' TERM; sleep 3600 & wait"]
"#;

#[test]
fn kubectl_applies_a_pod_to_an_edge_changes_it_and_deletes_it_waiting() {
    let ctrd = Containerd::start();
    let cloud = Cloud::start(&[]);
    let edge = Edge::new("edge0");
    let out = edge.join_with(&cloud, &cloud.token(), &ctrd.endpoint());
    assert!(out.status.success(), "{}", err(&out));
    let _run = edge.run("1s");
    cloud.wait_ready("edge0", true, T);
    let home = TempDir::new("kubectl-apply");
    let kc = kubeconfig(&cloud, home.path());
    let k = |args: &[&str]| kubectl(home.path(), &kc, args);

    let web = file(home.path(), "web.yaml", WEB);
    // Without --validate=false: the OpenAPI v3 served tells kubectl the server validates.
    let applied = k(&["apply", "-f", &web]);
    assert_eq!(ok(&applied), "pod/web created\n");
    assert_eq!(err(&applied), "", "no warning from apply");
    wait_for("web Running in kubectl", T, || {
        let t = words(&ok(&k(&["get", "pods"])));
        (row(&t, &["web"])[2] == "Running").then_some(())
    });
    // Unchanged re-apply; then a change (a label) that reaches the edge's store.
    assert_eq!(ok(&k(&["apply", "-f", &web])), "pod/web unchanged\n");
    let changed = file(
        home.path(),
        "web2.yaml",
        &WEB.replace("{app: web}", "{app: web, stage: two}"),
    );
    let reapplied = k(&["apply", "-f", &changed]);
    assert_eq!(ok(&reapplied), "pod/web configured\n");
    assert_eq!(err(&reapplied), "", "the patch computed without a warning");
    wait_for("the label on the edge", T, || {
        let p = edge.stored("Pod", "web")?;
        (p["metadata"]["labels"]["stage"] == "two").then_some(())
    });
    let (_, pod) = cloud.admin("GET", "/api/v1/pods/default/web", b"");
    assert!(
        pod["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .is_some_and(|a| a.contains("stage")),
        "{pod}"
    );
    assert_eq!(
        ok(&k(&["label", "pod", "web", "tier=gw"])),
        "pod/web labeled\n"
    );
    assert_eq!(
        ok(&k(&["annotate", "pod", "web", "note=hi"])),
        "pod/web annotated\n"
    );
    wait_for("label and annotation on the edge", T, || {
        let p = edge.stored("Pod", "web")?;
        (p["metadata"]["labels"]["tier"] == "gw" && p["metadata"]["annotations"]["note"] == "hi")
            .then_some(())
    });

    // An edge's node certificate may not write.
    let pki = edge.dir.path().join("pki");
    let node = other_kubeconfig(
        &kc,
        json!({ "client-certificate": pki.join("edge.crt"), "client-key": pki.join("edge.key") }),
        &home.path().join("node.kubeconfig"),
    );
    let out = kubectl(
        home.path(),
        &node,
        &["label", "pod", "web", "tier=hacked", "--overwrite"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err(&out).contains("Error from server (Forbidden)"),
        "{}",
        err(&out)
    );
    let out = kubectl(
        home.path(),
        &node,
        &["delete", "pod", "web", "--wait=false"],
    );
    assert!(
        err(&out).contains("cannot delete resource \"pods\""),
        "{}",
        err(&out)
    );

    // Delete waits: Terminating while the edge stops it, then gone, and kubectl returns.
    let deleted = k(&["delete", "pod", "web", "--wait", "--timeout=60s"]);
    assert_eq!(ok(&deleted), "pod \"web\" deleted\n");
    let missing = k(&["get", "pod", "web"]);
    assert_eq!(missing.status.code(), Some(1), "gone once kubectl returns");
    wait_for("the edge lets the pod go", T, || {
        edge.stored("Pod", "web").is_none().then_some(())
    });
}

/// `cloudcore kubeconfig --token`: kubectl with a bearer token instead of a certificate;
/// `api-token create` for another user (authenticated, not authorized); a revoked or unknown
/// token is 401 from the next request on.
#[test]
fn kubectl_with_bearer_tokens_until_they_are_revoked() {
    let cloud = Cloud::start(&[]);
    let home = TempDir::new("kubectl-token");
    let text = ok(&cloud.cli(&["kubeconfig", "--token"]));
    let doc: Value = serde_yaml::from_str(&text).unwrap();
    let user = &doc["users"][0]["user"];
    assert!(user.get("client-certificate-data").is_none(), "{text}");
    let token = user["token"].as_str().unwrap().to_owned();
    let admin = home.path().join("token.kubeconfig");
    std::fs::write(&admin, &text).unwrap();
    let kc = |args: &[&str]| kubectl(home.path(), &admin, args);
    ok(&kc(&[
        "create",
        "configmap",
        "by-token",
        "--from-literal=a=1",
    ]));
    assert!(ok(&kc(&["get", "configmaps"])).contains("by-token"));
    let stored = std::fs::read_to_string(cloud.dir.path().join("api-tokens")).unwrap();
    assert!(!stored.contains(&token), "kept hashed: {stored}");

    let viewer = ok(&cloud.cli(&["api-token", "create", "--user", "viewer", "--group", "ops"]));
    let viewer_kc = other_kubeconfig(
        &admin,
        json!({ "token": viewer.trim() }),
        &home.path().join("viewer.kubeconfig"),
    );
    let out = kubectl(home.path(), &viewer_kc, &["get", "pods"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("User \"viewer\" cannot list resource \"pods\""),
        "{err}"
    );

    let id = token.split('.').next().unwrap();
    ok(&cloud.cli(&["api-token", "revoke", id]));
    let listed = ok(&cloud.cli(&["api-token", "list"]));
    assert!(
        !listed.contains(id) && listed.contains("viewer"),
        "{listed}"
    );
    for kubeconfig in [
        admin.clone(),
        other_kubeconfig(
            &admin,
            json!({ "token": "000000.00000000000000000000000000000000" }),
            &home.path().join("unknown.kubeconfig"),
        ),
    ] {
        let out = kubectl(home.path(), &kubeconfig, &["get", "configmaps"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains("You must be logged in to the server (Unauthorized)"),
            "{err}"
        );
    }
    // Bad input: refused by name, nothing written.
    let out = cloud.cli(&["api-token", "create", "--user", "a b"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--user must be"));
}
