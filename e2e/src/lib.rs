//! Harness for end-to-end tests: starts real `cloudcore` and `edgecore` processes on loopback
//! with private data dirs, drives them through their command lines, and stops them by PID.
//!
//! The binaries are the ones cargo built next to the test executable (`cargo build --bins`
//! first; the project's test script does that). Waiting is by polling an observable condition
//! with a deadline, never by sleeping a fixed time.

#![forbid(unsafe_code)]

pub mod containerd;
pub mod direct;
pub mod mqtt;
pub mod pods;
pub mod proxy;
pub mod registry;
pub mod upstream_cloud;
pub mod upstream_edge;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The cargo target dir the running test or bench was built in.
pub fn target_root() -> PathBuf {
    // <target>/<profile>/deps/<exe>
    let exe = std::env::current_exe().expect("test executable path");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

/// `VmRSS`, `RssAnon`, `VmHWM` (KiB) and `Threads` of a process, from /proc.
pub fn proc_status(pid: u32) -> [u64; 4] {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    [
        field("VmRSS:"),
        field("RssAnon:"),
        field("VmHWM:"),
        field("Threads:"),
    ]
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A binary built by cargo next to the running test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("deps dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --bins` before the e2e tests",
        p.display()
    );
    p
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "e2e-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process whose stderr is collected, killed when dropped.
pub struct Proc {
    pub child: Child,
    log: Arc<Mutex<String>>,
    /// The threads copying stdout and stderr into `log`.
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
        let log = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            }));
        }
        Proc {
            child,
            log,
            readers,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the output contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        wait_for(&format!("log line {needle:?}"), timeout, || {
            self.log().contains(needle).then_some(())
        })
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("pid");
        rustix::process::kill_process(pid, sig).expect("signal");
    }

    /// Waits for exit and returns the status code (None if killed by a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = &mut self.child;
        let code = wait_for("process exit", timeout, || {
            child.try_wait().expect("try_wait")
        })
        .code();
        // Its last lines may still be in the pipes: `log` has them once the readers reach
        // the end. Bounded, since a process it started may hold the pipes open.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.readers.iter().all(|r| r.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        code
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running cloudcore on loopback with free ports.
pub struct Cloud {
    pub proc: Proc,
    pub dir: TempDir,
    pub ws: SocketAddr,
    pub cert: SocketAddr,
    /// The Kubernetes API (`--api-port`).
    pub api: SocketAddr,
}

impl Cloud {
    pub fn start(extra: &[&str]) -> Cloud {
        let dir = TempDir::new("cloud");
        Self::start_in(dir, extra)
    }

    pub fn start_in(dir: TempDir, extra: &[&str]) -> Cloud {
        let _ = std::fs::remove_file(dir.path().join("cloudcore.addr"));
        let mut cmd = Command::new(bin("cloudcore"));
        cmd.args([
            "serve",
            "--bind",
            "127.0.0.1",
            "--ws-port",
            "0",
            "--cert-port",
            "0",
            "--api-port",
            "0",
            "--admin-bind",
            "127.0.0.1:0",
            "--log-level",
            "debug",
            "--data-dir",
        ])
        .arg(dir.path())
        .args(extra);
        let proc = Proc::spawn(cmd);
        let addr_file = dir.path().join("cloudcore.addr");
        let addrs: Value = wait_for("cloudcore to listen", Duration::from_secs(20), || {
            serde_json::from_slice(&std::fs::read(&addr_file).ok()?).ok()
        });
        let parse = |k: &str| addrs[k].as_str().unwrap().parse().unwrap();
        Cloud {
            ws: parse("ws"),
            cert: parse("cert"),
            api: parse("api"),
            proc,
            dir,
        }
    }

    /// Stops cloudcore, keeping its data dir and ports to start it again: SIGKILL when
    /// `kill` (a crash), else SIGTERM with a clean exit asserted.
    pub fn stop(self, kill: bool) -> StoppedCloud {
        let Cloud {
            mut proc,
            dir,
            ws,
            cert,
            api,
        } = self;
        if kill {
            proc.signal(rustix::process::Signal::KILL);
            proc.wait_exit(Duration::from_secs(30));
        } else {
            proc.signal(rustix::process::Signal::TERM);
            let code = proc.wait_exit(Duration::from_secs(30));
            assert_eq!(
                code,
                Some(0),
                "cloudcore did not stop cleanly: {}",
                proc.log()
            );
        }
        StoppedCloud {
            dir,
            ws: ws.port(),
            cert: cert.port(),
            api: api.port(),
        }
    }

    pub fn token(&self) -> String {
        let out = self.cli(&["token"]);
        assert!(
            out.status.success(),
            "cloudcore token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Runs a cloudcore CLI command against this cloud's data dir.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin("cloudcore"))
            .args(args)
            .arg("--data-dir")
            .arg(self.dir.path())
            .output()
            .expect("run cloudcore")
    }

    /// `cloudcore get nodes -o json`.
    pub fn nodes(&self) -> Value {
        let out = self.cli(&["get", "nodes", "-o", "json"]);
        assert!(
            out.status.success(),
            "get nodes failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("NodeList JSON")
    }

    /// `cloudcore apply -f -` with `manifest` on standard input.
    pub fn apply(&self, manifest: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(bin("cloudcore"))
            .args(["apply", "-f", "-", "--data-dir"])
            .arg(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run cloudcore apply");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn apply_ok(&self, manifest: &str) {
        let out = self.apply(manifest);
        assert!(
            out.status.success(),
            "apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// One admin API call, straight over HTTP (for streams of requests too fast for the CLI).
    /// The admin API's address (from the data dir's `cloudcore.addr`).
    pub fn admin_addr(&self) -> SocketAddr {
        let addrs: Value =
            serde_json::from_slice(&std::fs::read(self.dir.path().join("cloudcore.addr")).unwrap())
                .unwrap();
        addrs["admin"].as_str().unwrap().parse().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn admin(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let addr = self.admin_addr();
        let token = std::fs::read_to_string(self.dir.path().join("admin.token")).unwrap();
        let mut tcp = std::net::TcpStream::connect(addr).expect("admin API reachable");
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let auth = format!("Bearer {}", token.trim());
        let r = support::http::exchange_limited(
            &mut tcp,
            method,
            &addr.to_string(),
            path,
            &[("Authorization", &auth)],
            body,
            256 << 20,
        )
        .expect("admin exchange");
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }

    /// What `node` acknowledged: name → resourceVersion, for objects of `kind` (`Pod`, ...).
    pub fn synced(&self, node: &str, kind: &str) -> std::collections::BTreeMap<String, u64> {
        let (status, v) = self.admin("GET", &format!("/api/v1/sync/{node}"), b"");
        assert_eq!(status, 200, "{v}");
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["kind"] == kind)
            .map(|i| {
                (
                    i["name"].as_str().unwrap().to_owned(),
                    i["resourceVersion"].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }

    /// The reported value of twin `property` of Device `default/<device>` in the cloud's
    /// status, if any.
    pub fn reported_twin(&self, device: &str, property: &str) -> Option<String> {
        let (status, d) = self.admin("GET", &format!("/api/v1/devices/default/{device}"), b"");
        if status != 200 {
            return None;
        }
        d["status"]["twins"]
            .as_array()?
            .iter()
            .find(|t| t["propertyName"] == property)?["reported"]["value"]
            .as_str()
            .map(str::to_owned)
    }

    /// Ready condition status of `node` ("True"/"False"), None if not registered.
    pub fn ready(&self, node: &str) -> Option<String> {
        let list = self.nodes();
        let n = list["items"]
            .as_array()?
            .iter()
            .find(|n| n["metadata"]["name"] == node)?
            .clone();
        n["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")
            .and_then(|c| c["status"].as_str().map(str::to_owned))
    }

    pub fn wait_ready(&self, node: &str, want: bool, timeout: Duration) {
        let want = if want { "True" } else { "False" };
        wait_for(&format!("node {node} Ready={want}"), timeout, || {
            (self.ready(node).as_deref() == Some(want)).then_some(())
        })
    }
}

/// A stopped cloudcore's data dir (CA, objects, nodes) and ports.
pub struct StoppedCloud {
    pub dir: TempDir,
    ws: u16,
    cert: u16,
    api: u16,
}

impl StoppedCloud {
    /// Starts cloudcore again on the same data dir and ports, so joined edges and API clients
    /// find it.
    pub fn start(self, extra: &[&str]) -> Cloud {
        let (ws, cert, api) = (
            self.ws.to_string(),
            self.cert.to_string(),
            self.api.to_string(),
        );
        // The API's port too: API clients resume their watches at the same address.
        let mut args = vec![
            "--ws-port",
            ws.as_str(),
            "--cert-port",
            cert.as_str(),
            "--api-port",
            api.as_str(),
        ];
        args.extend_from_slice(extra);
        Cloud::start_in(self.dir, &args)
    }
}

/// An edge data dir, joined or not.
pub struct Edge {
    pub dir: TempDir,
    pub name: String,
}

impl Edge {
    pub fn new(name: &str) -> Edge {
        Edge {
            dir: TempDir::new(name),
            name: name.to_owned(),
        }
    }

    /// `edgecore join` against `cloud` with `token`.
    pub fn join(&self, cloud: &Cloud, token: &str) -> Output {
        self.join_with(cloud, token, "")
    }

    /// `edgecore join` with a CRI endpoint (empty: this edge runs no pods). With `--force`:
    /// tests join again over an enrollment on purpose (tests/provision.rs checks the refusal).
    pub fn join_with(&self, cloud: &Cloud, token: &str, cri: &str) -> Output {
        let out = Command::new(bin("edgecore"))
            .args([
                "join",
                "--force",
                "--cloud",
                "127.0.0.1",
                "--token",
                token,
                "--node-name",
                &self.name,
                "--cri-endpoint",
                cri,
            ])
            .args([
                "--ws-port",
                &cloud.ws.port().to_string(),
                "--cert-port",
                &cloud.cert.port().to_string(),
            ])
            .arg("--data-dir")
            .arg(self.dir.path())
            .output()
            .expect("run edgecore join");
        if out.status.success() {
            self.private_broker();
        }
        out
    }

    /// `edgecore join` for the daemonless runtime (`--runtime direct`, the OCI runtime
    /// binary `oci_runtime`).
    pub fn join_direct(&self, cloud: &Cloud, oci_runtime: &str) -> Output {
        let out = Command::new(bin("edgecore"))
            .args(["join", "--cloud", "127.0.0.1", "--token", &cloud.token()])
            .args([
                "--node-name",
                &self.name,
                "--runtime",
                "direct",
                "--oci-runtime",
                oci_runtime,
            ])
            .args(["--ws-port", &cloud.ws.port().to_string()])
            .args(["--cert-port", &cloud.cert.port().to_string()])
            .arg("--data-dir")
            .arg(self.dir.path())
            .output()
            .expect("run edgecore join");
        if out.status.success() {
            self.private_broker();
        }
        out
    }

    /// `edgecore image import <archive>` into this edge's image store.
    pub fn import_image(&self, archive: &Path) -> Output {
        Command::new(bin("edgecore"))
            .args(["image", "import"])
            .arg(archive)
            .arg("--data-dir")
            .arg(self.dir.path())
            .output()
            .expect("run edgecore image import")
    }

    pub fn join_ok(&self, cloud: &Cloud) {
        let out = self.join(cloud, &cloud.token());
        assert!(
            out.status.success(),
            "join failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.private_broker();
    }

    /// Gives this edge's embedded MQTT broker a free loopback port, so edges of tests running
    /// side by side do not compete for 1883. Returns the port.
    pub fn private_broker(&self) -> u16 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        self.set_config(
            "eventbus",
            serde_json::json!({ "embedded": true, "broker": format!("127.0.0.1:{port}") }),
        );
        port
    }

    /// Everything MetaManager stored, through `edgecore meta list -o json` (works while
    /// edgecore runs and while it is stopped).
    pub fn meta(&self) -> Vec<Value> {
        let out = Command::new(bin("edgecore"))
            .args(["meta", "list", "-o", "json", "--data-dir"])
            .arg(self.dir.path())
            .output()
            .expect("run edgecore meta");
        assert!(
            out.status.success(),
            "edgecore meta list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("meta list JSON")
    }

    /// The stored object of `kind` (`Pod`, `ConfigMap`, `Secret`) named `name` in `default`.
    pub fn stored(&self, kind: &str, name: &str) -> Option<Value> {
        self.meta().into_iter().find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"] == name
                && o["metadata"]["namespace"] == "default"
        })
    }

    /// Points this edge's tunnel at `addr` (an upstream-shaped test cloud, say), keeping
    /// the enrollment.
    pub fn use_cloud(&self, addr: SocketAddr) {
        let cfg: Value =
            serde_json::from_slice(&std::fs::read(self.config_path()).unwrap()).unwrap();
        let mut cloud = cfg["cloud"].clone();
        cloud["server"] = serde_json::json!(addr.to_string());
        self.set_config("cloud", cloud);
    }

    /// Sets one top-level key of edgecore.json.
    pub fn set_config(&self, key: &str, value: Value) {
        let path = self.config_path();
        let mut cfg: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        cfg[key] = value;
        std::fs::write(&path, cfg.to_string()).unwrap();
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("edgecore.json")
    }

    /// `edgecore run` with fast timers so tests take seconds, not minutes.
    pub fn run(&self, heartbeat: &str) -> Proc {
        self.run_with(&[
            "--heartbeat",
            heartbeat,
            "--status-interval",
            heartbeat,
            "--lease-interval",
            heartbeat,
            "--log-level",
            "debug",
        ])
    }

    /// `edgecore run` with the given extra arguments.
    pub fn run_with(&self, args: &[&str]) -> Proc {
        let mut cmd = Command::new(bin("edgecore"));
        cmd.arg("run")
            .args(args)
            .arg("--data-dir")
            .arg(self.dir.path());
        Proc::spawn(cmd)
    }
}
