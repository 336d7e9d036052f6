//! The pod reconciler, sans-IO: [`Reconciler::plan`] compares the desired pods (from
//! MetaManager) with a [`Snapshot`] of the runtime at `now` and returns what to do, as
//! per-pod operations for the runner to execute against the runtime port, probes to run, and
//! each pod's kubelet-shaped status. The runner reports back with
//! [`Reconciler::on_op_done`] / [`Reconciler::on_probe`]. It never reads a clock or does IO,
//! so every rule below is tested on virtual time.
//!
//! - A pod has at most one operation in flight; a pod is planned again only from a snapshot
//!   taken after its last operation finished, so nothing is created twice.
//! - Creation: volumes written, a sandbox (recreated with the next attempt when not ready),
//!   then the containers (attempt numbers are restart counts).
//! - Restarts follow the restart policy with kubelet's crash back-off (`crash_backoff`
//!   doubling to 5 min, reset after 10 min of running), derived from the exited container's
//!   finish time, so it survives restarts of edgecore. Image pulls back off the same way
//!   (`ErrImagePull`, then `ImagePullBackOff`).
//! - Graceful deletion (`deletionTimestamp`): every running container is stopped with the
//!   grace period the cloud gave (SIGTERM, then SIGKILL; at least 2 s per container as
//!   kubelet), the sandbox stopped, and once nothing runs the status turns terminal; the
//!   runner then confirms the deletion to the cloud. Nothing is restarted meanwhile.
//! - Pods no longer desired are torn down and their files removed.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::Duration;

use bus::DesiredPods;

use super::env::{self, Addresses, EnvError};
use super::runtime::{
    CState, ContainerObs, ContainerSpec, MountSpec, SandboxObs, SandboxSpec, Snapshot, StartError,
};
use super::spec::{Container, PodSpec, Probe, ProbeAction, RestartPolicy};
use super::status::{self, ContainerView, PodView, State, Transitions};
use super::volumes::{self, Content, NodeResources, VolumeError};

/// Longest crash and pull back-off (kubelet's 5 minutes).
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long restarts with the first back-off again (kubelet: 10 min).
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// First retry of a failed image pull (kubelet: 10 s).
pub const PULL_BACKOFF: Duration = Duration::from_secs(10);
/// First retry of a failed sandbox; doubles to [`MAX_BACKOFF`].
pub const SANDBOX_BACKOFF: Duration = Duration::from_secs(2);
/// Shortest stop timeout per container (kubelet's `minimumGracePeriodInSeconds`).
pub const MIN_STOP_GRACE: Duration = Duration::from_secs(2);
/// Grace given to the containers of a pod that vanished without a graceful deletion.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(2);

const NS_PER_SEC: i64 = 1_000_000_000;

/// Reconciler settings.
#[derive(Clone, Debug)]
pub struct ReconcilerConfig {
    /// Where pod files live (`<data>/pods/<uid>/…`).
    pub root: PathBuf,
    /// First crash back-off (kubelet: 10 s).
    pub crash_backoff: Duration,
    /// The node's allocatable resources, for the downward API.
    pub node: NodeResources,
}

/// One step of an operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Write a pod's volume contents (with this fingerprint, recorded when done).
    WriteVolumes {
        volumes: BTreeMap<String, Content>,
        fingerprint: u64,
    },
    RunSandbox(SandboxSpec),
    StopSandbox(String),
    RemoveSandbox(String),
    /// Stops these containers at the same time, each with its grace period.
    StopContainers(Vec<(String, Duration)>),
    RemoveContainer(String),
    StartContainer {
        sandbox_id: String,
        sandbox: Box<SandboxSpec>,
        container: Box<ContainerSpec>,
    },
    RemovePodDir,
}

/// The circumstances of one planning pass.
#[derive(Clone, Copy, Debug)]
pub struct Pass<'a> {
    /// The number of the snapshot (one per observation, increasing).
    pub epoch: u64,
    pub node_ip: &'a str,
    pub now_ns: i64,
    /// False: only statuses are computed (no runtime, or it is unreachable).
    pub act: bool,
    /// Why pods cannot be started, for pods that would otherwise wait silently.
    pub runtime_problem: Option<&'a str>,
}

/// What to do for one pod, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    pub uid: String,
    pub actions: Vec<Action>,
}

/// How an action failed.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    Volumes(String),
    Sandbox(String),
    Start {
        container: String,
        error: StartError,
    },
    Other(String),
}

/// A probe to run now.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeRun {
    pub container_id: String,
    pub liveness: bool,
    pub action: ProbeAction,
    /// Where TCP and HTTP probes connect.
    pub host: String,
    pub timeout: Duration,
}

/// A pod's status, for the reporter.
#[derive(Clone, Debug, PartialEq)]
pub struct PodReport {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// The strategic-merge patch for `podpatch`.
    pub patch: serde_json::Value,
    /// Deleted and stopped: the deletion may be confirmed once this status is accepted.
    pub terminal: bool,
}

/// What one planning pass decided.
#[derive(Debug, Default)]
pub struct Plan {
    pub ops: Vec<Op>,
    pub probes: Vec<ProbeRun>,
    pub reports: Vec<PodReport>,
}

#[derive(Default)]
struct ProbeState {
    last_run_ns: Option<i64>,
    successes: u32,
    failures: u32,
    ready: bool,
    /// Liveness failed past its threshold: the container is stopped and restarted.
    kill: bool,
}

/// A back-off: how many failures, and not before when (in the caller's clock units) to try
/// again; each failure doubles the wait from `base` up to `max`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Retry {
    pub failures: u32,
    pub not_before: i64,
}

impl Retry {
    /// Records a failure at `now`; `unit` is the clock's length of one second.
    pub fn fail(&mut self, base: Duration, max: Duration, now: i64, unit: i64) {
        let d = base.saturating_mul(1 << self.failures.min(16)).min(max);
        self.failures += 1;
        self.not_before = now + (d.as_secs_f64() * unit as f64) as i64;
    }
}

#[derive(Default)]
struct PodState {
    other_log: bus::Throttle,
    /// The last error of each container, (reason, message).
    errors: HashMap<String, (String, String)>,
    /// Image pull back-off per container, with the last pull error.
    pulls: HashMap<String, (Retry, String, bool)>,
    sandbox: Option<(Retry, String)>,
    volumes: Option<u64>,
    transitions: Transitions,
    start_time: Option<String>,
    /// The snapshot epoch after which this pod may be planned again.
    settled_after: u64,
    busy: bool,
    /// Errors already logged, so a failing pod logs each once, not every pass.
    logged: HashSet<String>,
}

/// The reconciler's state.
pub struct Reconciler {
    cfg: ReconcilerConfig,
    pods: HashMap<String, PodState>,
    probes: HashMap<(String, bool), ProbeState>,
    probing: HashSet<(String, bool)>,
    /// `containerd`, for `containerID`s.
    runtime_name: String,
    /// Parse failures already logged, by pod uid.
    bad_pods: HashSet<String>,
}

fn rfc(ns: i64) -> String {
    if ns <= 0 {
        return String::new();
    }
    proto::time::rfc3339(ns / NS_PER_SEC)
}

/// The newest sandbox of a pod.
fn newest<'a>(sbs: &[&'a SandboxObs]) -> Option<&'a SandboxObs> {
    sbs.iter()
        .copied()
        .max_by_key(|s| (s.attempt, s.created_ns))
}

impl Reconciler {
    pub fn new(cfg: ReconcilerConfig) -> Self {
        Reconciler {
            cfg,
            pods: HashMap::new(),
            probes: HashMap::new(),
            probing: HashSet::new(),
            runtime_name: "containerd".into(),
            bad_pods: HashSet::new(),
        }
    }

    /// The runtime's name (`containerd` of `containerd://1.7.20`), for container ids.
    pub fn set_runtime(&mut self, version: &str) {
        if let Some((name, _)) = version.split_once("://") {
            self.runtime_name = name.to_owned();
        }
    }

    pub fn is_busy(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|p| p.busy)
    }

    fn log_once(st: &mut PodState, spec: &PodSpec, what: &str) {
        if st.logged.insert(what.to_owned()) {
            log::warn!("pod {}/{}: {what}", spec.namespace, spec.name);
        }
    }

    /// An operation ended: records what failed, and that the pod may be planned again from a
    /// snapshot newer than `epoch`.
    pub fn on_op_done(
        &mut self,
        uid: &str,
        failures: Vec<Failure>,
        volumes: Option<u64>,
        epoch: u64,
        now_ns: i64,
    ) {
        let st = self.pods.entry(uid.to_owned()).or_default();
        st.busy = false;
        st.settled_after = epoch;
        if volumes.is_some() {
            st.volumes = volumes;
        }
        let mut sandbox_failed = false;
        let mut failed_containers = HashSet::new();
        for f in failures {
            match f {
                Failure::Volumes(m) => {
                    st.volumes = None;
                    st.errors
                        .insert(String::new(), ("ContainerCreating".into(), m));
                }
                Failure::Sandbox(m) => {
                    sandbox_failed = true;
                    let (mut r, _) = st.sandbox.take().unwrap_or_default();
                    r.fail(SANDBOX_BACKOFF, MAX_BACKOFF, now_ns, NS_PER_SEC);
                    st.sandbox = Some((r, m));
                }
                Failure::Start { container, error } => {
                    failed_containers.insert(container.clone());
                    let (reason, message) = match &error {
                        StartError::Pull(m) => {
                            let e = st.pulls.entry(container.clone()).or_default();
                            e.0.fail(PULL_BACKOFF, MAX_BACKOFF, now_ns, NS_PER_SEC);
                            e.1 = m.clone();
                            e.2 = false; // shown as ErrImagePull once, then ImagePullBackOff
                            ("ErrImagePull".to_owned(), m.clone())
                        }
                        StartError::NeverPull => (
                            "ErrImageNeverPull".to_owned(),
                            String::new(), // filled with the image name when shown
                        ),
                        StartError::Create(m) => ("CreateContainerError".to_owned(), m.clone()),
                        StartError::Start(m) => ("RunContainerError".to_owned(), m.clone()),
                    };
                    st.errors.insert(container, (reason, message));
                }
                Failure::Other(m) => {
                    // Stops and removals are retried every pass: one line a minute per pod.
                    if let Some(n) = st.other_log.allow(std::time::Instant::now()) {
                        log::warn!("pod {uid}: {m}{n}");
                    }
                }
            }
        }
        if !sandbox_failed {
            st.sandbox = None;
            st.errors.remove("");
        }
        st.errors
            .retain(|k, _| k.is_empty() || failed_containers.contains(k));
        st.pulls
            .retain(|k, _| failed_containers.contains(k) || st.errors.contains_key(k));
    }

    /// A probe finished.
    pub fn on_probe(
        &mut self,
        container_id: &str,
        liveness: bool,
        ok: bool,
        probe: &Probe,
        now_ns: i64,
    ) {
        self.probing.remove(&(container_id.to_owned(), liveness));
        let st = self
            .probes
            .entry((container_id.to_owned(), liveness))
            .or_default();
        st.last_run_ns = Some(now_ns);
        if ok {
            st.successes += 1;
            st.failures = 0;
            if st.successes >= probe.success_threshold {
                st.ready = true;
            }
        } else {
            st.failures += 1;
            st.successes = 0;
            if st.failures >= probe.failure_threshold {
                st.ready = false;
                if liveness {
                    st.kill = true;
                }
            }
        }
    }

    /// One planning pass over `snap`.
    pub fn plan(&mut self, desired: &DesiredPods, snap: &Snapshot, pass: Pass) -> Plan {
        let Pass { epoch, act, .. } = pass;
        let mut plan = Plan::default();
        let mut specs = Vec::new();
        for p in &desired.pods {
            match PodSpec::parse(p) {
                Ok(s) => specs.push(s),
                Err(e) => {
                    let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_owned();
                    if self.bad_pods.insert(uid) {
                        log::warn!("cannot run pod {}: {e}", p["metadata"]["name"]);
                    }
                }
            }
        }
        let wanted: HashSet<&str> = specs.iter().map(|s| s.uid.as_str()).collect();
        // Pods no longer desired: torn down, their files removed.
        let mut orphans: BTreeMap<&str, Vec<&SandboxObs>> = BTreeMap::new();
        for sb in &snap.sandboxes {
            if !wanted.contains(sb.uid.as_str()) {
                orphans.entry(sb.uid.as_str()).or_default().push(sb);
            }
        }
        for (uid, sbs) in orphans {
            let st = self.pods.entry(uid.to_owned()).or_default();
            if !act || st.busy || epoch <= st.settled_after {
                continue;
            }
            if st.logged.insert("removing".into()) {
                log::info!("removing pod {}/{}", sbs[0].namespace, sbs[0].name);
            }
            let running: Vec<(String, Duration)> = snap
                .containers
                .iter()
                .filter(|c| c.uid == uid && c.state == CState::Running)
                .map(|c| (c.id.clone(), ORPHAN_GRACE))
                .collect();
            let mut actions = Vec::new();
            if !running.is_empty() {
                actions.push(Action::StopContainers(running));
            }
            for c in snap.containers.iter().filter(|c| c.uid == uid) {
                actions.push(Action::RemoveContainer(c.id.clone()));
            }
            actions.extend(sbs.iter().map(|s| Action::RemoveSandbox(s.id.clone())));
            actions.push(Action::RemovePodDir);
            st.busy = true;
            plan.ops.push(Op {
                uid: uid.to_owned(),
                actions,
            });
        }
        for spec in &specs {
            self.plan_pod(spec, desired, snap, pass, &mut plan);
        }
        // Bookkeeping only for what still exists: pods still desired or still tearing down,
        // containers the runtime listed (a crash-looping container gets a new id per restart).
        let present: HashSet<&str> = snap.sandboxes.iter().map(|s| s.uid.as_str()).collect();
        self.pods.retain(|uid, st| {
            wanted.contains(uid.as_str()) || present.contains(uid.as_str()) || st.busy
        });
        self.bad_pods.retain(|uid| {
            desired
                .pods
                .iter()
                .any(|p| p["metadata"]["uid"].as_str() == Some(uid))
        });
        let ids: HashSet<&str> = snap.containers.iter().map(|c| c.id.as_str()).collect();
        self.probes.retain(|(id, _), _| ids.contains(id.as_str()));
        plan
    }

    fn plan_pod(
        &mut self,
        spec: &PodSpec,
        desired: &DesiredPods,
        snap: &Snapshot,
        pass: Pass,
        plan: &mut Plan,
    ) {
        let Pass {
            epoch,
            node_ip,
            now_ns,
            act,
            runtime_problem,
        } = pass;
        let now_rfc = rfc(now_ns);
        let cfg = self.cfg.clone();
        let runtime = self.runtime_name.clone();
        let st = self.pods.entry(spec.uid.clone()).or_default();
        let can_act = act && !st.busy && epoch > st.settled_after;
        let sbs: Vec<&SandboxObs> = snap
            .sandboxes
            .iter()
            .filter(|s| s.uid == spec.uid)
            .collect();
        let current = newest(&sbs).filter(|s| s.ready);
        let pod_ip = match current {
            Some(_) if spec.host_network => node_ip.to_owned(),
            Some(s) => s.ip.clone(),
            None => String::new(),
        };
        let containers: Vec<&ContainerObs> = snap
            .containers
            .iter()
            .filter(|c| c.uid == spec.uid)
            .collect();
        if st.start_time.is_none() {
            st.start_time = Some(now_rfc.clone());
        }
        let sandbox_spec = |attempt: u32| SandboxSpec {
            uid: spec.uid.clone(),
            name: spec.name.clone(),
            namespace: spec.namespace.clone(),
            attempt,
            host_network: spec.host_network,
            log_dir: cfg.root.join(&spec.uid).join("logs"),
            labels: HashMap::new(),
        };
        let mut actions = Vec::new();
        let mut views = Vec::new();
        let mut terminal = false;

        if let Some(del) = spec.deletion {
            // Graceful deletion: stop everything, restart nothing.
            let grace = Duration::from_secs(del.grace_secs).max(MIN_STOP_GRACE);
            let running: Vec<(String, Duration)> = containers
                .iter()
                .filter(|c| c.state == CState::Running)
                .map(|c| (c.id.clone(), grace))
                .collect();
            let ready_sbs: Vec<&&SandboxObs> = sbs.iter().filter(|s| s.ready).collect();
            if can_act && (!running.is_empty() || !ready_sbs.is_empty()) {
                if st.logged.insert("stopping".into()) {
                    log::info!(
                        "pod {}/{}: deletion requested; stopping its containers (grace {}s)",
                        spec.namespace,
                        spec.name,
                        grace.as_secs()
                    );
                }
                if !running.is_empty() {
                    actions.push(Action::StopContainers(running.clone()));
                }
                actions.extend(ready_sbs.iter().map(|s| Action::StopSandbox(s.id.clone())));
            }
            terminal = running.is_empty() && ready_sbs.is_empty();
            for c in &spec.containers {
                let latest = latest_of(&containers, &c.name, None);
                let mut v = view_of(c, latest, &containers, &runtime);
                v.ready = false;
                if latest.is_none() && terminal {
                    // Never started: kubelet's TerminatePod marks it this way.
                    v.state = State::Terminated {
                        exit_code: 137,
                        reason: "ContainerStatusUnknown".into(),
                        message: "The container could not be located when the pod was terminated"
                            .into(),
                        started_at: String::new(),
                        finished_at: String::new(),
                        container_id: String::new(),
                    };
                }
                views.push(v);
            }
        } else {
            let at = Addresses {
                pod_ip: &pod_ip,
                host_ip: node_ip,
            };
            let vols = volumes::files(spec, desired, &cfg.node);
            let vols_ok = vols.is_ok();
            let mut volume_problem: Option<(String, String)> = None;
            // Moved, not cloned, into the action: volume contents can be megabytes.
            match vols {
                Ok(v) => {
                    let fp = fingerprint(&v);
                    if v.is_empty() {
                        st.volumes = Some(fp); // nothing to write
                    }
                    if can_act && st.volumes != Some(fp) {
                        actions.push(Action::WriteVolumes {
                            volumes: v,
                            fingerprint: fp,
                        });
                    }
                }
                Err(e) => {
                    if matches!(e, VolumeError::Missing { .. } | VolumeError::Invalid { .. }) {
                        Self::log_once(st, spec, &e.to_string());
                    }
                    volume_problem = Some(("ContainerCreating".into(), e.to_string()));
                }
            }
            if let Some((_, m)) = st.errors.get("") {
                volume_problem.get_or_insert(("ContainerCreating".into(), m.clone()));
            }
            // The sandbox: replaced by a new attempt when not ready (host rebooted, runtime
            // restarted without its shims), after its back-off if creating it failed.
            let mut sandbox_waiting: Option<String> = None;
            if current.is_none() {
                let attempt = newest(&sbs).map_or(0, |s| s.attempt + 1);
                let retry_at = st.sandbox.as_ref().map_or(0, |(r, _)| r.not_before);
                if let Some((_, m)) = &st.sandbox {
                    sandbox_waiting = Some(m.clone());
                    Self::log_once(st, spec, &format!("cannot start its sandbox: {m}"));
                }
                if can_act && vols_ok && now_ns >= retry_at {
                    for sb in &sbs {
                        actions.push(Action::RemoveSandbox(sb.id.clone()));
                    }
                    actions.push(Action::RunSandbox(sandbox_spec(attempt)));
                }
            }
            for c in &spec.containers {
                let in_sandbox = current.map(|s| s.id.as_str());
                let latest = latest_of(&containers, &c.name, in_sandbox);
                let mut v = view_of(c, latest, &containers, &runtime);
                let mut start: Option<u32> = None;
                match latest {
                    None => {
                        v.state = State::Waiting {
                            reason: "ContainerCreating".into(),
                            message: String::new(),
                        };
                        if let Some(m) = volume_problem
                            .as_ref()
                            .map(|(_, m)| m)
                            .or(sandbox_waiting.as_ref())
                        {
                            v.state = State::Waiting {
                                reason: "ContainerCreating".into(),
                                message: m.clone(),
                            };
                        }
                        if current.is_some() {
                            start = Some(0);
                        }
                    }
                    Some(l) if l.state == CState::Running => {
                        let (ready, kill) = Self::probe_plan(
                            &mut self.probes,
                            &mut self.probing,
                            c,
                            l,
                            &pod_ip,
                            spec.host_network,
                            now_ns,
                            &mut plan.probes,
                        );
                        v.ready = ready;
                        if kill && can_act {
                            log::info!(
                                "pod {}/{}: container {} failed its liveness probe; restarting it",
                                spec.namespace,
                                spec.name,
                                c.name
                            );
                            actions.push(Action::StopContainers(vec![(
                                l.id.clone(),
                                Duration::from_secs(spec.grace_secs).max(MIN_STOP_GRACE),
                            )]));
                            if let Some(p) = self.probes.get_mut(&(l.id.clone(), true)) {
                                p.kill = false;
                                p.failures = 0;
                            }
                        }
                    }
                    Some(l) if l.state == CState::Created => {
                        // Created but never started (a crash between the two): replaced.
                        if can_act {
                            actions.push(Action::RemoveContainer(l.id.clone()));
                        }
                        start = Some(l.attempt);
                    }
                    Some(l) if l.state == CState::Exited => {
                        let restart = match spec.restart {
                            RestartPolicy::Always => true,
                            RestartPolicy::OnFailure => l.exit_code != 0,
                            RestartPolicy::Never => false,
                        };
                        if restart {
                            let ran =
                                Duration::from_nanos((l.finished_ns - l.started_ns).max(0) as u64);
                            let backoff = if ran >= BACKOFF_RESET {
                                cfg.crash_backoff
                            } else {
                                cfg.crash_backoff
                                    .saturating_mul(1 << l.attempt.min(16))
                                    .min(MAX_BACKOFF)
                            };
                            let ready_at = l.finished_ns.saturating_add(backoff.as_nanos() as i64);
                            if now_ns >= ready_at {
                                start = Some(l.attempt + 1);
                            } else {
                                v.last = Some(v.state.clone());
                                v.state = State::Waiting {
                                    reason: "CrashLoopBackOff".into(),
                                    message: format!(
                                        "back-off {}s restarting failed container={} pod={}_{}({})",
                                        backoff.as_secs(),
                                        c.name,
                                        spec.name,
                                        spec.namespace,
                                        spec.uid
                                    ),
                                };
                            }
                        }
                    }
                    Some(_) => {}
                }
                if let Some(attempt) = start {
                    // Why it cannot start yet, as kubelet says it.
                    let envs = env::build(spec, c, desired, &cfg.node, &at);
                    let pull = st.pulls.get(&c.name).cloned();
                    let blocked: Option<(String, String)> = if let Some(p) = &volume_problem {
                        Some(p.clone())
                    } else if let Err(e) = &envs {
                        Some(match e {
                            EnvError::Config(m) => ("CreateContainerConfigError".into(), m.clone()),
                            EnvError::Waiting(m) => ("ContainerCreating".into(), m.clone()),
                        })
                    } else if let Some((_, msg, shown)) =
                        pull.filter(|(r, _, _)| now_ns < r.not_before)
                    {
                        let reason = if shown {
                            "ImagePullBackOff"
                        } else {
                            "ErrImagePull"
                        };
                        let message = if shown {
                            format!(
                                "Back-off pulling image \"{}\": ErrImagePull: {msg}",
                                c.image
                            )
                        } else {
                            msg
                        };
                        Some((reason.to_owned(), message))
                    } else {
                        None
                    };
                    if let Some(e) = st.pulls.get_mut(&c.name) {
                        e.2 = true;
                    }
                    match blocked {
                        Some((reason, message)) => {
                            if reason != "ContainerCreating" {
                                Self::log_once(
                                    st,
                                    spec,
                                    &format!("container {}: {reason}: {message}", c.name),
                                );
                            }
                            if latest.is_none()
                                || latest.is_some_and(|l| l.state == CState::Created)
                            {
                                v.state = State::Waiting { reason, message };
                            }
                        }
                        None => {
                            if let Some((reason, message)) = st.errors.get(&c.name).cloned() {
                                let message = if reason == "ErrImageNeverPull" {
                                    format!("Container image \"{}\" is not present with pull policy of Never", c.image)
                                } else {
                                    message.clone()
                                };
                                Self::log_once(
                                    st,
                                    spec,
                                    &format!("container {}: {reason}: {message}", c.name),
                                );
                                if latest.is_none() {
                                    v.state = State::Waiting {
                                        reason: reason.clone(),
                                        message,
                                    };
                                }
                            }
                            if can_act {
                                if let (Some(sb), Ok(envs)) = (current, envs) {
                                    // Keep the last exited container (for lastState); older ones go.
                                    let mine: Vec<&&ContainerObs> = containers
                                        .iter()
                                        .filter(|x| {
                                            x.name == c.name && Some(&x.id) != latest.map(|l| &l.id)
                                        })
                                        .collect();
                                    for old in mine {
                                        actions.push(Action::RemoveContainer(old.id.clone()));
                                    }
                                    actions.push(Action::StartContainer {
                                        sandbox_id: sb.id.clone(),
                                        sandbox: Box::new(sandbox_spec(sb.attempt)),
                                        container: Box::new(container_spec(
                                            c, attempt, envs, spec, desired, &cfg.root,
                                        )),
                                    });
                                }
                            }
                        }
                    }
                }
                views.push(v);
            }
        }
        if !actions.is_empty() {
            st.busy = true;
            plan.ops.push(Op {
                uid: spec.uid.clone(),
                actions,
            });
        }
        if !act {
            if let Some(problem) = runtime_problem {
                for v in views.iter_mut().filter(|v| v.container_id.is_empty()) {
                    v.state = State::Waiting {
                        reason: "ContainerCreating".into(),
                        message: problem.to_owned(),
                    };
                }
            }
        }
        let view = PodView {
            spec,
            sandbox_ready: current.is_some(),
            pod_ip,
            host_ip: node_ip.to_owned(),
            start_time: st.start_time.clone().unwrap_or_default(),
            containers: views,
            terminal: terminal && spec.deletion.is_some(),
        };
        let patch = status::pod_status(&view, &mut st.transitions, &now_rfc);
        plan.reports.push(PodReport {
            uid: spec.uid.clone(),
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            patch,
            terminal: view.terminal,
        });
    }

    /// Due probes of a running container, and its readiness. Deleted pods' liveness is not
    /// probed (kubelet forces it to success).
    #[allow(clippy::too_many_arguments)]
    fn probe_plan(
        probes: &mut HashMap<(String, bool), ProbeState>,
        probing: &mut HashSet<(String, bool)>,
        c: &Container,
        l: &ContainerObs,
        pod_ip: &str,
        host_network: bool,
        now_ns: i64,
        out: &mut Vec<ProbeRun>,
    ) -> (bool, bool) {
        let host = if host_network || pod_ip.is_empty() {
            "127.0.0.1".to_owned()
        } else {
            pod_ip.to_owned()
        };
        let age = Duration::from_nanos((now_ns - l.started_ns).max(0) as u64);
        let mut kill = false;
        for (liveness, probe) in [(true, &c.liveness), (false, &c.readiness)] {
            let Some(p) = probe else { continue };
            let key = (l.id.clone(), liveness);
            let st = probes.entry(key.clone()).or_default();
            if liveness && st.kill {
                kill = true;
            }
            let due = age >= Duration::from_secs(p.initial_delay_secs)
                && st.last_run_ns.is_none_or(|t| {
                    now_ns - t >= (p.period_secs as i64).saturating_mul(NS_PER_SEC)
                });
            if due && !probing.contains(&key) {
                probing.insert(key);
                out.push(ProbeRun {
                    container_id: l.id.clone(),
                    liveness,
                    action: p.action.clone(),
                    host: host.clone(),
                    timeout: Duration::from_secs(p.timeout_secs),
                });
            }
        }
        let ready = match &c.readiness {
            None => true,
            Some(_) => probes.get(&(l.id.clone(), false)).is_some_and(|s| s.ready),
        };
        (ready, kill)
    }

    /// When planning should run again even if nothing happens: the next back-off expiry or
    /// probe due. `None`: only on events and the periodic sync.
    pub fn next_due_ns(&self, snap: &Snapshot, now_ns: i64) -> Option<i64> {
        let mut next: Option<i64> = None;
        let mut consider = |t: i64| {
            if t > now_ns {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for st in self.pods.values() {
            if let Some((r, _)) = &st.sandbox {
                consider(r.not_before);
            }
            for (r, _, _) in st.pulls.values() {
                consider(r.not_before);
            }
        }
        for c in snap.containers.iter().filter(|c| c.state == CState::Exited) {
            // A crash back-off ends at most MAX_BACKOFF after the exit.
            let cap = c.finished_ns + MAX_BACKOFF.as_nanos() as i64;
            let backoff = self
                .cfg
                .crash_backoff
                .saturating_mul(1 << c.attempt.min(16))
                .min(MAX_BACKOFF);
            consider((c.finished_ns + backoff.as_nanos() as i64).min(cap));
        }
        next
    }
}

/// The newest container named `name` (in `sandbox` if given), by attempt.
fn latest_of<'a>(
    containers: &[&'a ContainerObs],
    name: &str,
    sandbox: Option<&str>,
) -> Option<&'a ContainerObs> {
    containers
        .iter()
        .copied()
        .filter(|c| c.name == name && sandbox.is_none_or(|s| c.sandbox_id == s))
        .max_by_key(|c| (c.attempt, c.created_ns))
}

fn terminated(c: &ContainerObs, runtime: &str) -> State {
    State::Terminated {
        exit_code: c.exit_code,
        reason: if !c.reason.is_empty() {
            c.reason.clone()
        } else if c.exit_code == 0 {
            "Completed".into()
        } else {
            "Error".into()
        },
        message: c.message.clone(),
        started_at: rfc(c.started_ns),
        finished_at: rfc(c.finished_ns),
        container_id: format!("{runtime}://{}", c.id),
    }
}

/// A container's status from its newest runtime container (and the one before, for
/// `lastState`).
fn view_of(
    c: &Container,
    latest: Option<&ContainerObs>,
    all: &[&ContainerObs],
    runtime: &str,
) -> ContainerView {
    let previous = latest.and_then(|l| {
        all.iter()
            .copied()
            .filter(|x| x.name == c.name && x.id != l.id && x.state == CState::Exited)
            .max_by_key(|x| (x.attempt, x.created_ns))
    });
    let state = match latest {
        None => State::Waiting {
            reason: "ContainerCreating".into(),
            message: String::new(),
        },
        Some(l) => match l.state {
            CState::Running => State::Running {
                started_at: rfc(l.started_ns),
            },
            CState::Exited => terminated(l, runtime),
            CState::Created | CState::Unknown => State::Waiting {
                reason: String::new(),
                message: String::new(),
            },
        },
    };
    ContainerView {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: latest.map(|l| l.image_ref.clone()).unwrap_or_default(),
        container_id: latest
            .map(|l| format!("{runtime}://{}", l.id))
            .unwrap_or_default(),
        restart_count: latest.map_or(0, |l| l.attempt),
        ready: false,
        state,
        last: previous.map(|p| terminated(p, runtime)),
    }
}

fn container_spec(
    c: &Container,
    attempt: u32,
    env: Vec<(String, String)>,
    spec: &PodSpec,
    desired: &DesiredPods,
    root: &std::path::Path,
) -> ContainerSpec {
    let vol_dir = root.join(&spec.uid).join("volumes");
    let mounts = c
        .mounts
        .iter()
        .filter_map(|m| {
            let host = match spec.volumes.get(&m.volume)? {
                super::spec::Volume::HostPath { path } => PathBuf::from(path),
                _ => vol_dir.join(&m.volume),
            };
            let host = match &m.sub_path {
                Some(sp) => host.join(sp),
                None => host,
            };
            Some(MountSpec {
                host_path: host.display().to_string(),
                container_path: m.path.clone(),
                read_only: m.read_only,
            })
        })
        .collect();
    ContainerSpec {
        name: c.name.clone(),
        attempt,
        image: c.image.clone(),
        pull: c.pull,
        registry_auth: super::pull_secrets::credentials(
            desired,
            &spec.namespace,
            &spec.pull_secrets,
        ),
        command: c.command.clone(),
        args: c.args.clone(),
        working_dir: c.working_dir.clone(),
        env,
        mounts,
        cpu_millis_limit: c.cpu_millis_limit,
        cpu_millis_request: c.cpu_millis_request,
        memory_limit: c.memory_limit,
        log_path: format!("{}/{attempt}.log", c.name),
    }
}

/// A stable digest of a pod's volume contents: unchanged contents are not rewritten.
fn fingerprint(v: &BTreeMap<String, Content>) -> u64 {
    let mut h = DefaultHasher::new();
    for (name, c) in v {
        name.hash(&mut h);
        match c {
            Content::Files(files) => {
                0u8.hash(&mut h);
                for f in files {
                    f.path.hash(&mut h);
                    f.data.hash(&mut h);
                    f.mode.hash(&mut h);
                }
            }
            Content::EmptyDir => 1u8.hash(&mut h),
            Content::HostPath(p) => {
                2u8.hash(&mut h);
                p.hash(&mut h);
            }
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests;
