//! What the direct runtime keeps on disk about its sandboxes and containers, so that after an
//! edgecore restart it knows what it runs (the OCI runtime knows only ids, pids and bundles):
//! one JSON record per sandbox (`sandboxes/<id>/sandbox.json`) and per container
//! (`containers/<id>/container.json`), written to a temporary file and renamed.

use std::path::Path;

use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Bundle written, not started yet.
    Created,
    Running,
    Exited,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SandboxRec {
    pub id: String,
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub attempt: u32,
    pub created_ns: i64,
    pub ready: bool,
    /// The bind-mounted network namespace; `None` with host networking.
    pub netns: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ContainerRec {
    pub id: String,
    pub sandbox_id: String,
    pub uid: String,
    pub name: String,
    pub attempt: u32,
    pub image: String,
    pub image_ref: String,
    pub phase: Phase,
    pub created_ns: i64,
    pub started_ns: i64,
    pub finished_ns: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// The container's init process and its start time (`/proc/<pid>/stat` field 22), so a
    /// reused pid is never taken for it.
    pub pid: i32,
    pub pid_start: u64,
    pub log_path: String,
}

pub fn write_json(path: &Path, v: &Value) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, v.to_string())?;
    std::fs::rename(&tmp, path)
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or("").to_owned()
}
fn i(v: &Value, k: &str) -> i64 {
    v[k].as_i64().unwrap_or(0)
}

impl SandboxRec {
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "uid": self.uid, "name": self.name, "namespace": self.namespace,
               "attempt": self.attempt, "created_ns": self.created_ns, "ready": self.ready,
               "netns": self.netns})
    }

    pub fn load(path: &Path) -> Option<SandboxRec> {
        let v = read_json(path)?;
        Some(SandboxRec {
            id: v["id"].as_str()?.to_owned(),
            uid: s(&v, "uid"),
            name: s(&v, "name"),
            namespace: s(&v, "namespace"),
            attempt: i(&v, "attempt") as u32,
            created_ns: i(&v, "created_ns"),
            ready: v["ready"].as_bool().unwrap_or(false),
            netns: v["netns"].as_str().map(str::to_owned),
        })
    }
}

impl ContainerRec {
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "sandbox_id": self.sandbox_id, "uid": self.uid, "name": self.name,
               "attempt": self.attempt, "image": self.image, "image_ref": self.image_ref,
               "phase": match self.phase { Phase::Created => "created", Phase::Running => "running", Phase::Exited => "exited" },
               "created_ns": self.created_ns, "started_ns": self.started_ns,
               "finished_ns": self.finished_ns, "exit_code": self.exit_code,
               "reason": self.reason, "message": self.message, "pid": self.pid,
               "pid_start": self.pid_start, "log_path": self.log_path})
    }

    pub fn load(path: &Path) -> Option<ContainerRec> {
        let v = read_json(path)?;
        Some(ContainerRec {
            id: v["id"].as_str()?.to_owned(),
            sandbox_id: s(&v, "sandbox_id"),
            uid: s(&v, "uid"),
            name: s(&v, "name"),
            attempt: i(&v, "attempt") as u32,
            image: s(&v, "image"),
            image_ref: s(&v, "image_ref"),
            phase: match v["phase"].as_str() {
                Some("running") => Phase::Running,
                Some("exited") => Phase::Exited,
                _ => Phase::Created,
            },
            created_ns: i(&v, "created_ns"),
            started_ns: i(&v, "started_ns"),
            finished_ns: i(&v, "finished_ns"),
            exit_code: i(&v, "exit_code") as i32,
            reason: s(&v, "reason"),
            message: s(&v, "message"),
            pid: i(&v, "pid") as i32,
            pid_start: v["pid_start"].as_u64().unwrap_or(0),
            log_path: s(&v, "log_path"),
        })
    }
}

/// A process's start time and whether it has ended (a zombie has), from `/proc/<pid>/stat`.
pub fn proc_start(pid: i32) -> Option<(u64, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields count from its end.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, *state == "Z" || *state == "X"))
}

/// Whether the process recorded as `pid` started at `start` still runs.
pub fn alive(pid: i32, start: u64) -> bool {
    pid > 0 && matches!(proc_start(pid), Some((s, false)) if s == start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let c = ContainerRec {
            id: "c1".into(),
            sandbox_id: "s1".into(),
            uid: "u".into(),
            name: "app".into(),
            attempt: 3,
            image: "busybox".into(),
            image_ref: "docker.io/library/busybox@sha256:00".into(),
            phase: Phase::Exited,
            created_ns: 1,
            started_ns: 2,
            finished_ns: 3,
            exit_code: 137,
            reason: "Error".into(),
            message: String::new(),
            pid: 42,
            pid_start: 99,
            log_path: "/l/app/3.log".into(),
        };
        let dir = std::env::temp_dir().join(format!("direct-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("container.json");
        write_json(&p, &c.to_json()).unwrap();
        assert_eq!(ContainerRec::load(&p).unwrap(), c);
        let s = SandboxRec {
            id: "s1".into(),
            uid: "u".into(),
            name: "web".into(),
            namespace: "default".into(),
            attempt: 1,
            created_ns: 5,
            ready: true,
            netns: Some("/x/netns".into()),
        };
        write_json(&p, &s.to_json()).unwrap();
        assert_eq!(SandboxRec::load(&p).unwrap(), s);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id() as i32;
        let (start, ended) = proc_start(me).unwrap();
        assert!(!ended);
        assert!(alive(me, start));
        assert!(!alive(me, start + 1), "a reused pid is another process");
    }
}
