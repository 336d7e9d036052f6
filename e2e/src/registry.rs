//! A private OCI registry for tests: Debian's `docker-registry` on a free loopback port,
//! storing under a temp dir, stopped by PID; images pushed into it with `skopeo` from the
//! archives the tests build.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{wait_for, Proc, TempDir};

pub struct Registry {
    pub dir: TempDir,
    pub proc: Option<Proc>,
    pub port: u16,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = TempDir::new("registry");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp: {{addr: \"127.0.0.1:{port}\"}}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&config);
        let proc = Proc::spawn(cmd);
        wait_for("the registry listening", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Registry {
            dir,
            proc: Some(proc),
            port,
        }
    }

    /// `127.0.0.1:<port>/<name>`.
    pub fn image(&self, name: &str) -> String {
        format!("127.0.0.1:{}/{name}", self.port)
    }

    /// Pushes an OCI archive as `name`, its layers gzip-compressed on the way.
    pub fn push(&self, archive: &Path, name: &str) {
        let out = Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--dest-compress-format",
                "gzip",
                "--dest-compress",
            ])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{}", self.image(name)))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the registry (SIGKILL, as a registry host going away).
    pub fn stop(&mut self) {
        self.proc.take();
    }
}
