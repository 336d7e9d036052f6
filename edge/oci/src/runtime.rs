//! The OCI runtime binary (crun by default, runc accepted: both take the same commands and
//! flags used here), one command per operation, each under a deadline.
//!
//! State lives in the runtime's own `--root`, private to this edgecore (its data dir), so
//! `list` names only its containers and two edgecores on one host never meet.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use smol::process::Command;

/// Longest any runtime command may take, exec aside (which has its own timeout).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of a runtime's error output kept in a message.
const MAX_ERROR_BYTES: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
    Other,
}

/// A container as `state`/`list` report it.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    pub id: String,
    pub status: Status,
    /// The container's init process on the host (0 when stopped).
    pub pid: i32,
    pub bundle: String,
}

fn status(s: &str) -> Status {
    match s {
        "creating" => Status::Creating,
        "created" => Status::Created,
        "running" => Status::Running,
        "paused" => Status::Paused,
        "stopped" => Status::Stopped,
        _ => Status::Other,
    }
}

fn parse_state(v: &Value) -> Option<State> {
    Some(State {
        id: v["id"].as_str()?.to_owned(),
        status: status(v["status"].as_str().unwrap_or("")),
        pid: v["pid"].as_i64().unwrap_or(0) as i32,
        bundle: v["bundle"].as_str().unwrap_or("").to_owned(),
    })
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let start = text.len().saturating_sub(MAX_ERROR_BYTES);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    text[start..].to_owned()
}

/// The runtime binary and its state root.
#[derive(Clone, Debug)]
pub struct OciRuntime {
    bin: PathBuf,
    root: PathBuf,
}

impl OciRuntime {
    pub fn new(bin: &Path, root: &Path) -> Self {
        OciRuntime {
            bin: bin.to_owned(),
            root: root.to_owned(),
        }
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// What to tell the user when the binary is not there.
    pub fn missing(bin: &Path) -> String {
        format!(
            "the OCI runtime {} is missing: install crun (Debian: apt-get install crun) or set \
             \"oci_runtime\" in edgecore.json (edgecore join --oci-runtime) to a crun or runc binary",
            bin.display()
        )
    }

    /// Whether the binary exists and is executable, before anything needs it.
    pub fn check(bin: &Path) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(bin) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
            Ok(_) => Err(format!("{} is not an executable file", bin.display())),
            Err(_) => Err(Self::missing(bin)),
        }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(&self.root);
        c.stdin(Stdio::null()).kill_on_drop(true);
        c
    }

    /// Runs a command to its end under [`CALL_TIMEOUT`]: its stdout, or its error output.
    async fn run(&self, what: &str, mut cmd: Command) -> Result<Vec<u8>, String> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Self::missing(&self.bin),
            _ => format!("{}: {e}", self.bin.display()),
        })?;
        let out = smol::future::or(async { Some(child.output().await) }, async {
            smol::Timer::after(CALL_TIMEOUT).await;
            None
        })
        .await
        .ok_or_else(|| format!("{what} took longer than {CALL_TIMEOUT:?}"))?
        .map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(format!("{what}: {}", tail(&out.stderr)))
        }
    }

    /// `(name, version)`, from the first line of `--version` (`crun version 1.8.1`,
    /// `runc version 1.1.5`).
    pub async fn version(&self) -> Result<(String, String), String> {
        let mut c = Command::new(&self.bin);
        c.arg("--version").stdin(Stdio::null()).kill_on_drop(true);
        let out = self.run("version", c).await?;
        let text = String::from_utf8_lossy(&out);
        let first = text.lines().next().unwrap_or("");
        let mut words = first.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(name), Some("version"), Some(v)) => Ok((name.to_owned(), v.to_owned())),
            _ => Err(format!(
                "{} --version printed {first:?}, not `<name> version <x>`",
                self.bin.display()
            )),
        }
    }

    /// Creates the container from `bundle`; its init process waits for [`Self::start`], with
    /// `stdout` and `stderr` as its output. The runtime's own errors go to `bundle/runtime.log`.
    pub async fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        stdout: std::fs::File,
        stderr: std::fs::File,
    ) -> Result<(), String> {
        let log = bundle.join("runtime.log");
        let _ = std::fs::remove_file(&log);
        let mut c = Command::new(&self.bin);
        c.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&log)
            .args(["--log-format", "json", "create", "--bundle"])
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        let mut child = c.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Self::missing(&self.bin),
            _ => format!("{}: {e}", self.bin.display()),
        })?;
        // The Command holds the output ends: dropped here, so only the container has them.
        drop(c);
        let st = smol::future::or(async { Some(child.status().await) }, async {
            smol::Timer::after(CALL_TIMEOUT).await;
            None
        })
        .await
        .ok_or_else(|| format!("create took longer than {CALL_TIMEOUT:?}"))?
        .map_err(|e| format!("create: {e}"))?;
        if st.success() {
            return Ok(());
        }
        // JSON lines ({"msg": ...}); the last error is the reason.
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let msg = text
            .lines()
            .rev()
            .find_map(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .and_then(|v| v["msg"].as_str().map(str::to_owned))
            })
            .unwrap_or_else(|| tail(text.as_bytes()));
        Err(format!("create: {msg}"))
    }

    pub async fn start(&self, id: &str) -> Result<(), String> {
        let mut c = self.command();
        c.args(["start", id]);
        self.run("start", c).await.map(drop)
    }

    /// The container's state; `None` when the runtime does not know it.
    pub async fn state(&self, id: &str) -> Result<Option<State>, String> {
        let mut c = self.command();
        c.args(["state", id]);
        match self.run("state", c).await {
            Ok(out) => {
                let v: Value = serde_json::from_slice(&out).map_err(|e| format!("state: {e}"))?;
                Ok(parse_state(&v))
            }
            Err(e) if e.contains("does not exist") || e.contains("not found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every container under this root.
    pub async fn list(&self) -> Result<Vec<State>, String> {
        let mut c = self.command();
        c.args(["list", "--format", "json"]);
        let out = self.run("list", c).await?;
        if out.iter().all(u8::is_ascii_whitespace) {
            return Ok(Vec::new());
        }
        // runc prints `null` for none.
        let v: Value = serde_json::from_slice(&out).map_err(|e| format!("list: {e}"))?;
        Ok(v.as_array()
            .map(|a| a.iter().filter_map(parse_state).collect())
            .unwrap_or_default())
    }

    /// Sends `signal` (`TERM`, `KILL`) to the container's init process.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), String> {
        let mut c = self.command();
        c.args(["kill", id, signal]);
        self.run("kill", c).await.map(drop)
    }

    /// Deletes the container (killing it if it runs); one the runtime does not know is fine.
    pub async fn delete(&self, id: &str) -> Result<(), String> {
        let mut c = self.command();
        c.args(["delete", "--force", id]);
        match self.run("delete", c).await {
            Err(e) if e.contains("does not exist") || e.contains("not found") => Ok(()),
            r => r.map(drop),
        }
    }

    /// Runs `args` in the container; its exit code.
    pub async fn exec(&self, id: &str, args: &[String], timeout: Duration) -> Result<i32, String> {
        let mut c = self.command();
        c.args(["exec", id])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = c.spawn().map_err(|e| format!("exec: {e}"))?;
        let out = smol::future::or(async { Some(child.output().await) }, async {
            smol::Timer::after(timeout).await;
            None
        })
        .await
        .ok_or_else(|| format!("exec timed out after {timeout:?}"))?
        .map_err(|e| format!("exec: {e}"))?;
        out.status
            .code()
            .ok_or_else(|| format!("exec: {}", tail(&out.stderr)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_from_crun_and_runc_json() {
        let v: Value = serde_json::from_str(
            r#"[{"id":"c1","pid":42,"status":"running","bundle":"/b","created":"x"},
                {"id":"c2","pid":0,"status":"stopped","bundle":"/c"}]"#,
        )
        .unwrap();
        let s: Vec<State> = v
            .as_array()
            .unwrap()
            .iter()
            .filter_map(parse_state)
            .collect();
        assert_eq!(s[0].pid, 42);
        assert_eq!(s[0].status, Status::Running);
        assert_eq!(s[1].status, Status::Stopped);
    }

    #[test]
    fn a_missing_binary_names_itself_and_the_setting() {
        let e = OciRuntime::check(Path::new("/nonexistent/crun")).unwrap_err();
        assert!(
            e.contains("/nonexistent/crun") && e.contains("oci_runtime"),
            "{e}"
        );
        let rt = OciRuntime::new(Path::new("/nonexistent/crun"), Path::new("/tmp"));
        let e = smol::block_on(rt.version()).unwrap_err();
        assert!(e.contains("apt-get install crun"), "{e}");
    }

    #[test]
    fn error_tails_are_bounded_on_char_boundaries() {
        let long = "é".repeat(MAX_ERROR_BYTES);
        let t = tail(long.as_bytes());
        assert!(t.len() <= MAX_ERROR_BYTES && t.chars().all(|c| c == 'é'));
    }
}
