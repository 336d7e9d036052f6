//! A private containerd for tests: its own config, root, state and socket under a temp dir,
//! started by the harness and stopped by PID, with test images built locally and imported
//! (there is no registry to pull from).
//!
//! Images: `localhost/busybox:test` (busybox-static, `/bin/sh` and every applet) and
//! `localhost/pause:test` (the same layer, sleeping forever) as the sandbox image. Both are OCI
//! image layouts made here: one uncompressed layer, a config and a manifest.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use crate::{wait_for, Proc, TempDir};

pub const BUSYBOX: &str = "localhost/busybox:test";
pub const PAUSE: &str = "localhost/pause:test";
const HOST_BUSYBOX: &str = "/usr/bin/busybox";

fn sha256_hex(data: &[u8]) -> String {
    proto::token::hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// Builds an OCI archive holding `name` with the static `busybox` (of Go architecture `arch`,
/// its applets listed by this host's busybox-static) and `cmd`; returns its path.
pub fn build_image(work: &Path, name: &str, cmd: &[&str], busybox: &Path, arch: &str) -> PathBuf {
    let rootfs = work.join(format!("rootfs-{}", sha256_hex(name.as_bytes())));
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::copy(busybox, bin.join("busybox")).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (apt-get install busybox-static)",
            busybox.display()
        )
    });
    let list = Command::new(HOST_BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = bin.join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    let layout = work.join(format!("layout-{}", sha256_hex(name.as_bytes())));
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let layer_path = work.join("layer.tar");
    let st = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(&rootfs)
        .args(["-cf"])
        .arg(&layer_path)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let layer = std::fs::read(&layer_path).unwrap();
    let layer_digest = sha256_hex(&layer);
    std::fs::write(blobs.join(&layer_digest), &layer).unwrap();
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": { "Env": ["PATH=/bin"], "Cmd": cmd },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_digest}")] }
    })
    .to_string();
    let config_digest = sha256_hex(config.as_bytes());
    std::fs::write(blobs.join(&config_digest), &config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_digest}"), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{layer_digest}"), "size": layer.len() }]
    })
    .to_string();
    let manifest_digest = sha256_hex(manifest.as_bytes());
    std::fs::write(blobs.join(&manifest_digest), &manifest).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{manifest_digest}"), "size": manifest.len(),
            "annotations": { "io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap() } }]
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let archive = work.join(format!("{}.tar", sha256_hex(name.as_bytes())));
    let st = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    archive
}

/// The image archives, built once per test process into the cargo target dir (so nothing is
/// left in /tmp, and a later run can reuse the dir).
fn images() -> &'static [(String, PathBuf)] {
    static IMAGES: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        // Test binaries run one after another, so one shared directory is safe; its content
        // is rebuilt each process because it is cheap and keeps stale images impossible.
        let work = crate::target_root().join("e2e-images");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        vec![
            (
                BUSYBOX.to_owned(),
                build_image(
                    &work,
                    BUSYBOX,
                    &["/bin/sh"],
                    HOST_BUSYBOX.as_ref(),
                    go_arch(),
                ),
            ),
            (
                PAUSE.to_owned(),
                build_image(
                    &work,
                    PAUSE,
                    &["/bin/sleep", "2147483647"],
                    HOST_BUSYBOX.as_ref(),
                    go_arch(),
                ),
            ),
        ]
    })
}

/// The busybox test image (`localhost/busybox:test`) as an OCI archive, for runtimes that
/// import archives themselves (edgecore's direct runtime).
pub fn busybox_archive() -> PathBuf {
    images()[0].1.clone()
}

pub struct Containerd {
    pub dir: TempDir,
    pub proc: Option<Proc>,
    pub socket: PathBuf,
}

impl Containerd {
    /// Starts a private containerd and imports the test images.
    pub fn start() -> Containerd {
        assert!(
            Path::new("/usr/bin/containerd").exists() && Path::new("/usr/sbin/runc").exists(),
            "containerd and runc are needed: apt-get install containerd runc busybox-static (scripts/test.sh does)"
        );
        let dir = TempDir::new("containerd");
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  # Sandboxed build machines refuse negative oom_score_adj; keep scores at containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = socket.display(),
            d = d.display(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let mut c = Containerd {
            dir,
            proc: None,
            socket,
        };
        c.launch();
        for (name, archive) in images() {
            let out = c.ctr(
                &["images", "import", "--no-unpack", "--all-platforms"],
                Some(archive),
            );
            assert!(
                out.status.success(),
                "importing {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        c
    }

    fn launch(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let mut cmd = Command::new("/usr/bin/containerd");
        cmd.arg("--config").arg(self.dir.path().join("config.toml"));
        self.proc = Some(Proc::spawn(cmd));
        let sock = self.socket.clone();
        wait_for("containerd socket", Duration::from_secs(30), || {
            sock.exists().then_some(())
        });
        // The socket exists before the CRI plugin answers; wait for a real answer.
        let me = &*self;
        wait_for("containerd to answer", Duration::from_secs(30), || {
            me.ctr(&["version"], None).status.success().then_some(())
        });
    }

    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Runs `ctr` against this containerd in the CRI namespace.
    pub fn ctr(&self, args: &[&str], file: Option<&Path>) -> Output {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .args(["-n", "k8s.io"])
            .args(args);
        if let Some(f) = file {
            cmd.arg(f);
        }
        cmd.output().expect("run ctr")
    }

    /// Kills containerd (SIGKILL, as a crash or power cut would) and starts it again on the
    /// same root. Running containers' shims survive, as they do on a real host.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// A power cut for the runtime: containers (their shims), then containerd, all SIGKILLed.
    pub fn crash(&mut self) {
        self.kill_shims();
        self.kill();
    }

    /// Starts containerd again on the same root after [`Containerd::crash`] or a kill.
    pub fn start_again(&mut self) {
        self.launch();
    }

    fn kill_shims(&self) {
        for pid in self.shims() {
            if let Some(p) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
    }

    pub fn kill(&mut self) {
        if let Some(p) = self.proc.take() {
            drop(p); // Proc's drop kills by PID and reaps
        }
    }

    /// PIDs of the shims this containerd started (their command line names our socket).
    pub fn shims(&self) -> Vec<i32> {
        let needle = self.socket.display().to_string();
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("containerd-shim") && cmdline.contains(&needle) {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Containers first (through their shims, which we started), then containerd, then
        // whatever mounts it left under our directory.
        self.kill_shims();
        self.kill();
        let dir = self.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&dir))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for m in points {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
    }
}
