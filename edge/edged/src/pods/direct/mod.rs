//! The runtime port without a daemon: edgecore writes OCI bundles itself and runs them with an
//! OCI runtime binary (crun by default, runc accepted), under `<data dir>/direct`:
//!
//! ```text
//! oci/                         the OCI runtime's --root: its state, ours alone
//! sandboxes/<id>/sandbox.json  a pod sandbox: no process, only a record and, without host
//!                              networking, a network namespace bind-mounted at ./netns
//! containers/<id>/             a container's bundle: config.json, rootfs (overlay of the
//!                              image's unpacked layers with ./upper), stdout and stderr FIFOs,
//!                              container.json (its record)
//! ```
//!
//! edgecore is the child subreaper (`PR_SET_CHILD_SUBREAPER`): the container's init process,
//! left by `crun create`, becomes edgecore's child, and its exit code is collected with
//! `waitpid` on every observation. After an edgecore restart, containers that still run
//! (`crun list`, and a live pid with the recorded start time) are adopted; they are no longer
//! edgecore's children, so if one exits later its exit code is unknown and reported as 255
//! with reason `Unknown` (a shim per container would keep it; the point here is no extra
//! process per pod).
//!
//! Images come from [`image::ImageStore`] under `<data dir>/images`: imported archives, or
//! pulled from a registry by the pull policy with the pod's `imagePullSecrets`.

mod bundle;
mod logs;
mod records;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use image::ImageStore;
use oci::OciRuntime;

use self::records::{alive, proc_start, write_json, ContainerRec, Phase, SandboxRec};
use super::runtime::{
    CState, ContainerObs, ContainerSpec, RegistryAuth, Runtime, SandboxObs, SandboxSpec, Snapshot,
    StartError,
};
use super::spec::PullPolicy;

/// How often a stopping container is checked for its exit.
const STOP_POLL: Duration = Duration::from_millis(50);
/// How long a SIGKILLed container may take to be gone.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Exit code reported when edgecore could not collect it (not its child after a restart).
pub const UNKNOWN_EXIT: i32 = 255;

pub use super::DirectConfig;

fn now_ns() -> i64 {
    super::now_ns()
}

fn new_id() -> String {
    (0..4)
        .map(|_| format!("{:016x}", fastrand::u64(..)))
        .collect()
}

#[derive(Default)]
struct State {
    sandboxes: HashMap<String, SandboxRec>,
    containers: HashMap<String, ContainerRec>,
    /// Containers whose init process is edgecore's child (started by this process).
    children: std::collections::HashSet<String>,
    /// Running containers found at start-up are checked against the OCI runtime once.
    adopted: bool,
}

/// The direct adapter.
pub struct DirectRuntime {
    oci: OciRuntime,
    dir: PathBuf,
    images: ImageStore,
    state: RefCell<State>,
    /// Runs the log pumps beside whatever the adapter is driven with.
    pumps: smol::LocalExecutor<'static>,
    /// Pulls failing on an offline gateway repeat with every start: one line a minute.
    pull_log: RefCell<bus::Throttle>,
}

impl DirectRuntime {
    /// Opens (or makes) the runtime's directories and loads its records. Fails only when the
    /// data dir cannot be written; a missing OCI runtime is reported by [`Runtime::version`]
    /// like an unreachable CRI socket (the node says why, pods wait).
    pub fn new(cfg: &DirectConfig) -> Result<Self, String> {
        let dir = cfg.data_dir.join("direct");
        for d in ["oci", "sandboxes", "containers"] {
            std::fs::create_dir_all(dir.join(d))
                .map_err(|e| format!("{}: {e}", dir.join(d).display()))?;
        }
        let images = ImageStore::open(&cfg.data_dir.join("images")).map_err(|e| e.to_string())?;
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .map_err(|e| format!("cannot become the child subreaper: {e}"))?;
        let mut state = State::default();
        for e in std::fs::read_dir(dir.join("sandboxes"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Some(mut s) = SandboxRec::load(&e.path().join("sandbox.json")) {
                // After a reboot the namespace's bind mount is gone and the file is only a
                // file: the sandbox is not ready, so the pod gets a new one.
                let lost = s
                    .netns
                    .as_deref()
                    .is_some_and(|p| !bundle::is_netns(Path::new(p)));
                if s.ready && lost {
                    log::info!("sandbox {} lost its network namespace (reboot?)", s.id);
                    s.ready = false;
                }
                state.sandboxes.insert(s.id.clone(), s);
            }
        }
        for e in std::fs::read_dir(dir.join("containers"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Some(c) = ContainerRec::load(&e.path().join("container.json")) {
                state.containers.insert(c.id.clone(), c);
            }
        }
        Ok(DirectRuntime {
            oci: OciRuntime::new(&cfg.oci_runtime, &dir.join("oci")),
            dir,
            images,
            state: RefCell::new(state),
            pumps: smol::LocalExecutor::new(),
            pull_log: Default::default(),
        })
    }

    /// Runs `fut` with the log pumps beside it.
    pub async fn with<T>(&self, fut: impl std::future::Future<Output = T>) -> T {
        self.pumps.run(fut).await
    }

    fn cdir(&self, id: &str) -> PathBuf {
        self.dir.join("containers").join(id)
    }

    fn sdir(&self, id: &str) -> PathBuf {
        self.dir.join("sandboxes").join(id)
    }

    fn save_container(&self, c: &ContainerRec) {
        let p = self.cdir(&c.id).join("container.json");
        if let Err(e) = write_json(&p, &c.to_json()) {
            log::warn!("cannot record container {}: {e}", c.id);
        }
    }

    fn save_sandbox(&self, s: &SandboxRec) {
        let p = self.sdir(&s.id).join("sandbox.json");
        if let Err(e) = write_json(&p, &s.to_json()) {
            log::warn!("cannot record sandbox {}: {e}", s.id);
        }
    }

    /// Marks a container exited with what is known of its end.
    fn exited(&self, c: &mut ContainerRec, code: Option<i32>) {
        c.phase = Phase::Exited;
        c.finished_ns = now_ns();
        match code {
            Some(code) => {
                c.exit_code = code;
                c.reason = if code == 0 { "Completed" } else { "Error" }.into();
            }
            None => {
                c.exit_code = UNKNOWN_EXIT;
                c.reason = "Unknown".into();
                c.message = "the container exited while edgecore was not its parent (after an edgecore restart); its exit code is unknown".into();
            }
        }
        self.save_container(c);
    }

    /// Collects the exits of running containers: `waitpid` for edgecore's children, the
    /// process table for adopted ones.
    fn reap(&self) {
        let mut st = self.state.borrow_mut();
        let State {
            containers,
            children,
            ..
        } = &mut *st;
        for c in containers
            .values_mut()
            .filter(|c| c.phase == Phase::Running)
        {
            let code = if children.contains(&c.id) {
                let pid = rustix::process::Pid::from_raw(c.pid);
                match pid.map(|p| {
                    rustix::process::waitpid(Some(p), rustix::process::WaitOptions::NOHANG)
                }) {
                    Some(Ok(None)) => continue,
                    Some(Ok(Some((_, ws)))) => {
                        children.remove(&c.id);
                        Some(
                            ws.exit_status()
                                .or(ws.terminating_signal().map(|s| 128 + s)),
                        )
                    }
                    // Not our child after all: judged by the process table.
                    _ => {
                        children.remove(&c.id);
                        (!alive(c.pid, c.pid_start)).then_some(None)
                    }
                }
            } else {
                (!alive(c.pid, c.pid_start)).then_some(None)
            };
            if let Some(code) = code {
                self.exited(c, code);
            }
        }
    }

    /// Once after start-up: containers recorded running are adopted when the OCI runtime
    /// still runs them, their log pumps restarted; the rest have exited meanwhile. Runtime
    /// containers without a record (edgecore died between create and record) are deleted.
    async fn adopt(&self) -> Result<(), String> {
        if self.state.borrow().adopted {
            return Ok(());
        }
        let listed = self.oci.list().await?;
        let mut st = self.state.borrow_mut();
        st.adopted = true;
        for l in &listed {
            if !st.containers.contains_key(&l.id) {
                let oci = self.oci.clone();
                let id = l.id.clone();
                self.pumps
                    .spawn(async move {
                        let _ = oci.delete(&id).await;
                    })
                    .detach();
            }
        }
        let ids: Vec<String> = st.containers.keys().cloned().collect();
        for id in ids {
            let c = st.containers.get_mut(&id).expect("listed");
            if c.phase == Phase::Exited {
                continue;
            }
            let running = listed
                .iter()
                .any(|l| l.id == id && l.status == oci::Status::Running && l.pid == c.pid)
                && alive(c.pid, c.pid_start);
            if running {
                log::info!(
                    "adopted container {} of pod {} (pid {})",
                    &id[..12],
                    c.uid,
                    c.pid
                );
                let dir = self.cdir(&id);
                match logs::open_readers(&dir) {
                    Ok(r) => self
                        .pumps
                        .spawn(logs::pump(r, PathBuf::from(&c.log_path)))
                        .detach(),
                    Err(e) => log::warn!("container {}: its output is not logged: {e}", &id[..12]),
                }
            } else {
                self.exited(c, None);
            }
        }
        Ok(())
    }

    /// Removes a container's directory, its root unmounted first.
    fn remove_dir(&self, id: &str) {
        let dir = self.cdir(id);
        let _ = rustix::mount::unmount(dir.join("rootfs"), rustix::mount::UnmountFlags::DETACH);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("cannot remove {}: {e}", dir.display());
            }
        }
    }

    /// The image by the pull policy, pulled from its registry when the policy says so (a
    /// registry that does not answer leaves a local copy in use), and its unpacked layers.
    /// Pull and unpack are blocking file and network work: off the executor.
    async fn image(
        &self,
        reference: &str,
        pull: PullPolicy,
        auth: &[RegistryAuth],
    ) -> Result<(image::Image, PathBuf), StartError> {
        let local = self.images.get(reference);
        let want = match (pull, &local) {
            (PullPolicy::Never, None) => return Err(StartError::NeverPull),
            (PullPolicy::Never, Some(_)) | (PullPolicy::IfNotPresent, Some(_)) => false,
            _ => true,
        };
        let img = match local {
            Some(i) if !want => i,
            local => {
                let (store, r) = (self.images.clone(), reference.to_owned());
                let host = image::reference::normalize(reference)
                    .and_then(|n| n.split('/').next().map(super::pull_secrets::registry_host));
                let creds = auth
                    .iter()
                    .find(|a| Some(&a.registry) == host.as_ref())
                    .map(|a| image::registry::Credentials {
                        username: a.username.clone(),
                        password: a.password.clone(),
                    });
                let pull = move || image::registry::pull(&store, &r, creds.as_ref());
                match smol::unblock(pull).await {
                    Ok(i) => i,
                    Err(e) => match local {
                        Some(i) => {
                            if let Some(n) =
                                self.pull_log.borrow_mut().allow(std::time::Instant::now())
                            {
                                log::warn!(
                                    "pulling {reference} failed ({e}); using the local copy{n}"
                                );
                            }
                            i
                        }
                        None => return Err(StartError::Pull(e.to_string())),
                    },
                }
            }
        };
        let (store, i) = (self.images.clone(), img.clone());
        let lower = smol::unblock(move || store.rootfs(&i))
            .await
            .map_err(|e| StartError::Pull(e.to_string()))?;
        Ok((img, lower))
    }

    /// Everything of `start_container` up to a created container; its id and the readers.
    async fn create(
        &self,
        sandbox_id: &str,
        sandbox: &SandboxSpec,
        c: &ContainerSpec,
    ) -> Result<(String, (std::fs::File, std::fs::File)), StartError> {
        let sb = self
            .state
            .borrow()
            .sandboxes
            .get(sandbox_id)
            .cloned()
            .ok_or_else(|| StartError::Create(format!("sandbox {sandbox_id} does not exist")))?;
        let (img, lower) = self.image(&c.image, c.pull, &c.registry_auth).await?;
        let id = new_id();
        let dir = self.cdir(&id);
        let log_path = sandbox.log_dir.join(&c.log_path);
        let mut rec = ContainerRec {
            id: id.clone(),
            sandbox_id: sandbox_id.to_owned(),
            uid: sb.uid.clone(),
            name: c.name.clone(),
            attempt: c.attempt,
            image: c.image.clone(),
            image_ref: img.image_ref(),
            phase: Phase::Created,
            created_ns: now_ns(),
            started_ns: 0,
            finished_ns: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            pid: 0,
            pid_start: 0,
            log_path: log_path.display().to_string(),
        };
        let made = (|| {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let rootfs = bundle::mount_rootfs(&lower, &dir)?;
            let spec = bundle::spec(&id, &sb, c, &img, &rootfs)?;
            std::fs::write(dir.join("config.json"), spec.config().to_string())
                .map_err(|e| e.to_string())?;
            logs::make_fifos(&dir).map_err(|e| format!("making the output FIFOs: {e}"))?;
            write_json(&dir.join("container.json"), &rec.to_json()).map_err(|e| e.to_string())?;
            let w = logs::open_writers(&dir).map_err(|e| e.to_string())?;
            let r = logs::open_readers(&dir).map_err(|e| e.to_string())?;
            Ok::<_, String>((w, r))
        })();
        let (w, r) = match made {
            Ok(x) => x,
            Err(e) => {
                self.remove_dir(&id);
                return Err(StartError::Create(e));
            }
        };
        if let Err(e) = self.oci.create(&id, &dir, &dir.join("pid"), w.0, w.1).await {
            let _ = self.oci.delete(&id).await;
            self.remove_dir(&id);
            return Err(StartError::Create(e));
        }
        let pid: i32 = std::fs::read_to_string(dir.join("pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0);
        rec.pid = pid;
        rec.pid_start = proc_start(pid).map_or(0, |(s, _)| s);
        self.save_container(&rec);
        let mut st = self.state.borrow_mut();
        st.containers.insert(id.clone(), rec);
        st.children.insert(id.clone());
        Ok((id, r))
    }

    fn phase(&self, id: &str) -> Option<Phase> {
        self.state.borrow().containers.get(id).map(|c| c.phase)
    }

    /// Waits up to `limit` for the container to be gone.
    async fn wait_exit(&self, id: &str, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        loop {
            self.reap();
            if self.phase(id) != Some(Phase::Running) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            smol::Timer::after(STOP_POLL).await;
        }
    }
}

fn obs_state(p: Phase) -> CState {
    match p {
        Phase::Created => CState::Created,
        Phase::Running => CState::Running,
        Phase::Exited => CState::Exited,
    }
}

impl Runtime for DirectRuntime {
    async fn version(&self) -> Result<String, String> {
        OciRuntime::check(self.oci.bin())?;
        let (name, v) = self.oci.version().await?;
        Ok(format!("{name}://{v}"))
    }

    async fn observe(&self) -> Result<Snapshot, String> {
        self.adopt().await?;
        self.reap();
        let st = self.state.borrow();
        let mut snap = Snapshot::default();
        for s in st.sandboxes.values() {
            snap.sandboxes.push(SandboxObs {
                id: s.id.clone(),
                uid: s.uid.clone(),
                name: s.name.clone(),
                namespace: s.namespace.clone(),
                attempt: s.attempt,
                ready: s.ready,
                created_ns: s.created_ns,
                ip: String::new(),
            });
        }
        for c in st.containers.values() {
            snap.containers.push(ContainerObs {
                id: c.id.clone(),
                sandbox_id: c.sandbox_id.clone(),
                uid: c.uid.clone(),
                name: c.name.clone(),
                attempt: c.attempt,
                state: obs_state(c.phase),
                created_ns: c.created_ns,
                started_ns: c.started_ns,
                finished_ns: c.finished_ns,
                exit_code: c.exit_code,
                reason: c.reason.clone(),
                message: c.message.clone(),
                image: c.image.clone(),
                image_ref: c.image_ref.clone(),
            });
        }
        Ok(snap)
    }

    async fn run_sandbox(&self, s: &SandboxSpec) -> Result<String, String> {
        let _ = std::fs::create_dir_all(&s.log_dir);
        let id = new_id();
        let dir = self.sdir(&id);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let netns = if s.host_network {
            None
        } else {
            let path = dir.join("netns");
            match bundle::netns(&path).await {
                Ok(()) => Some(path.display().to_string()),
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
            }
        };
        let rec = SandboxRec {
            id: id.clone(),
            uid: s.uid.clone(),
            name: s.name.clone(),
            namespace: s.namespace.clone(),
            attempt: s.attempt,
            created_ns: now_ns(),
            ready: true,
            netns,
        };
        self.save_sandbox(&rec);
        self.state.borrow_mut().sandboxes.insert(id.clone(), rec);
        Ok(id)
    }

    async fn stop_sandbox(&self, id: &str) -> Result<(), String> {
        // As CRI's StopPodSandbox: its containers are stopped (killed) with it.
        let ids: Vec<String> = self
            .state
            .borrow()
            .containers
            .values()
            .filter(|c| c.sandbox_id == id && c.phase == Phase::Running)
            .map(|c| c.id.clone())
            .collect();
        for c in ids {
            self.stop_container(&c, Duration::ZERO).await?;
        }
        let rec = {
            let mut st = self.state.borrow_mut();
            st.sandboxes.get_mut(id).map(|s| {
                s.ready = false;
                s.clone()
            })
        };
        if let Some(rec) = rec {
            self.save_sandbox(&rec);
        }
        Ok(())
    }

    async fn remove_sandbox(&self, id: &str) -> Result<(), String> {
        self.stop_sandbox(id).await?;
        let ids: Vec<String> = self
            .state
            .borrow()
            .containers
            .values()
            .filter(|c| c.sandbox_id == id)
            .map(|c| c.id.clone())
            .collect();
        for c in ids {
            self.remove_container(&c).await?;
        }
        let dir = self.sdir(id);
        let _ = rustix::mount::unmount(dir.join("netns"), rustix::mount::UnmountFlags::DETACH);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("{}: {e}", dir.display()))
            }
            _ => {}
        }
        self.state.borrow_mut().sandboxes.remove(id);
        Ok(())
    }

    async fn start_container(
        &self,
        sandbox_id: &str,
        sandbox: &SandboxSpec,
        c: &ContainerSpec,
    ) -> Result<String, StartError> {
        let (id, readers) = self.create(sandbox_id, sandbox, c).await?;
        let log = sandbox.log_dir.join(&c.log_path);
        self.pumps.spawn(logs::pump(readers, log)).detach();
        if let Err(e) = self.oci.start(&id).await {
            let _ = self.remove_container(&id).await;
            return Err(StartError::Start(e));
        }
        let rec = {
            let mut st = self.state.borrow_mut();
            let c = st.containers.get_mut(&id).expect("created above");
            c.phase = Phase::Running;
            c.started_ns = now_ns();
            c.clone()
        };
        self.save_container(&rec);
        Ok(id)
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), String> {
        self.reap();
        match self.phase(id) {
            None | Some(Phase::Exited) => return Ok(()),
            Some(Phase::Created) => {
                // Never started: nothing to signal.
                let mut c = self.state.borrow().containers[id].clone();
                self.exited(&mut c, Some(UNKNOWN_EXIT));
                self.state.borrow_mut().containers.insert(id.to_owned(), c);
                return Ok(());
            }
            Some(Phase::Running) => {}
        }
        if !grace.is_zero() {
            // A failed TERM (it exited meanwhile) is seen by the wait.
            let _ = self.oci.kill(id, "TERM").await;
            if self.wait_exit(id, grace).await {
                return Ok(());
            }
        }
        let _ = self.oci.kill(id, "KILL").await;
        if self.wait_exit(id, KILL_WAIT).await {
            Ok(())
        } else {
            Err(format!(
                "container {id} did not exit within {KILL_WAIT:?} of SIGKILL"
            ))
        }
    }

    async fn remove_container(&self, id: &str) -> Result<(), String> {
        if self.phase(id) == Some(Phase::Running) {
            self.stop_container(id, Duration::ZERO).await?;
        }
        self.oci.delete(id).await?;
        self.remove_dir(id);
        let mut st = self.state.borrow_mut();
        st.containers.remove(id);
        st.children.remove(id);
        Ok(())
    }

    async fn exec(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<i32, String> {
        self.oci.exec(id, cmd, timeout).await
    }
}
