//! Runs pods through the CRI: compares the desired pods (from MetaManager) with the sandboxes
//! and containers the runtime reports, converges by create, restart and remove, and computes
//! each pod's status.
//!
//! All state that must survive a restart lives in the runtime itself, as labels and attempt
//! numbers on sandboxes and containers: after an edgecore or containerd restart, running
//! containers are found again and adopted, never recreated. Restart back-off is derived from
//! the exited container's finish time and attempt number, so it survives restarts too.

pub mod spec;
pub mod status;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bus::DesiredPods;
use cri::{v1, CriClient, CriError};
use serde_json::Value;

use self::spec::{Container, EnvSource, PodSpec, ProbeAction, PullPolicy, RestartPolicy, Volume};
use self::status::{Observed, State};

const L_MANAGED: &str = "edgecore.io/managed";
const L_UID: &str = "io.kubernetes.pod.uid";
const L_NAME: &str = "io.kubernetes.pod.name";
const L_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const L_CONTAINER: &str = "io.kubernetes.container.name";

/// Longest crash back-off (kubelet's 5 minutes).
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

fn nanos_to_rfc3339(ns: i64) -> String {
    if ns <= 0 {
        return String::new();
    }
    proto::time::rfc3339(ns / 1_000_000_000)
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[derive(Default)]
struct ProbeState {
    last_run: Option<Instant>,
    successes: u32,
    failures: u32,
    ready: bool,
}

/// Where a container goes: its pod, sandbox and prepared volumes.
struct Placement<'a> {
    spec: &'a PodSpec,
    sandbox: &'a str,
    sb_cfg: &'a v1::PodSandboxConfig,
    volumes: &'a HashMap<String, PathBuf>,
    desired: &'a DesiredPods,
}

/// Edged's container side.
pub struct PodRuntime {
    cri: std::rc::Rc<CriClient>,
    root: PathBuf,
    backoff_base: Duration,
    /// Why a container could not be created, by (pod uid, container name).
    errors: HashMap<(String, String), (String, String)>,
    /// Readiness and liveness bookkeeping by container id.
    probes: HashMap<(String, bool), ProbeState>,
    /// The last status sent per pod uid, so unchanged statuses are not resent.
    sent: HashMap<String, String>,
    /// The last runtime error logged, so an absent runtime logs once, not every pass.
    last_error: Option<String>,
}

fn labels(spec: &PodSpec) -> HashMap<String, String> {
    [
        (L_MANAGED, "true".to_owned()),
        (L_UID, spec.uid.clone()),
        (L_NAME, spec.name.clone()),
        (L_NAMESPACE, spec.namespace.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Data of a configmap (`data`, plus decoded `binaryData`) or a secret (decoded `data`).
fn object_data(obj: &Value, secret: bool) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (k, v) in obj["data"].as_object().into_iter().flatten() {
        let s = v.as_str().unwrap_or("");
        let bytes = if secret {
            b64_decode(s).unwrap_or_default()
        } else {
            s.as_bytes().to_vec()
        };
        out.push((k.clone(), bytes));
    }
    if !secret {
        for (k, v) in obj["binaryData"].as_object().into_iter().flatten() {
            out.push((
                k.clone(),
                b64_decode(v.as_str().unwrap_or("")).unwrap_or_default(),
            ));
        }
    }
    out
}

fn write_if_changed(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if std::fs::read(path).ok().as_deref() == Some(data) {
        return Ok(());
    }
    let tmp = path.with_extension("edgecore-tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(tmp, path)
}

impl PodRuntime {
    pub fn new(endpoint: &str, root: PathBuf, backoff_base: Duration) -> Result<Self, CriError> {
        Ok(PodRuntime {
            cri: std::rc::Rc::new(CriClient::new(endpoint)?),
            root,
            backoff_base,
            errors: HashMap::new(),
            probes: HashMap::new(),
            sent: HashMap::new(),
            last_error: None,
        })
    }

    /// The runtime client, to drive its connection beside the pod loop.
    pub fn client(&self) -> std::rc::Rc<CriClient> {
        self.cri.clone()
    }

    /// `containerd://1.6.20`, for the node's `containerRuntimeVersion`.
    pub async fn runtime_version(&mut self) -> Result<String, CriError> {
        let v = self.cri.version().await?;
        Ok(format!("{}://{}", v.runtime_name, v.runtime_version))
    }

    /// Forget what was reported, so every pod's status is sent again (after a reconnect).
    pub fn resend_all(&mut self) {
        self.sent.clear();
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root.join(uid)
    }

    /// Writes configmap and secret volumes (and makes emptyDirs); returns volume → host path.
    fn prepare_volumes(
        &self,
        spec: &PodSpec,
        desired: &DesiredPods,
    ) -> Result<HashMap<String, PathBuf>, String> {
        let mut paths = HashMap::new();
        for (name, vol) in &spec.volumes {
            let dir = self.pod_dir(&spec.uid).join("volumes").join(name);
            let path = match vol {
                Volume::HostPath { path } => PathBuf::from(path),
                Volume::EmptyDir => {
                    std::fs::create_dir_all(&dir).map_err(|e| format!("volume {name}: {e}"))?;
                    dir
                }
                Volume::ConfigMap {
                    name: obj,
                    optional,
                }
                | Volume::Secret {
                    name: obj,
                    optional,
                } => {
                    let secret = matches!(vol, Volume::Secret { .. });
                    let map = if secret {
                        &desired.secrets
                    } else {
                        &desired.configmaps
                    };
                    std::fs::create_dir_all(&dir).map_err(|e| format!("volume {name}: {e}"))?;
                    match map.get(&(spec.namespace.clone(), obj.clone())) {
                        Some(o) => {
                            for (k, data) in object_data(o, secret) {
                                if k.contains('/') || k == ".." {
                                    continue;
                                }
                                write_if_changed(&dir.join(&k), &data)
                                    .map_err(|e| format!("volume {name}: {e}"))?;
                            }
                        }
                        None if *optional => {}
                        None => {
                            let kind = if secret { "secret" } else { "configmap" };
                            return Err(format!(
                                "{kind} {}/{obj} is not on this node yet",
                                spec.namespace
                            ));
                        }
                    }
                    dir
                }
            };
            paths.insert(name.clone(), path);
        }
        Ok(paths)
    }

    fn env(
        spec: &PodSpec,
        c: &Container,
        desired: &DesiredPods,
    ) -> Result<Vec<v1::KeyValue>, String> {
        let lookup = |secret: bool, name: &str| {
            let map = if secret {
                &desired.secrets
            } else {
                &desired.configmaps
            };
            map.get(&(spec.namespace.clone(), name.to_owned()))
                .map(|o| object_data(o, secret))
        };
        let mut out = Vec::new();
        for (secret_src, name, prefix, optional) in &c.env_from {
            match lookup(!secret_src, name) {
                Some(data) => {
                    for (k, v) in data {
                        out.push(v1::KeyValue {
                            key: format!("{prefix}{k}"),
                            value: String::from_utf8_lossy(&v).into_owned(),
                        });
                    }
                }
                None if *optional => {}
                None => {
                    return Err(format!(
                        "{} {name} for envFrom is not on this node",
                        if *secret_src { "configmap" } else { "secret" }
                    ))
                }
            }
        }
        for (key, src) in &c.env {
            let value = match src {
                EnvSource::Value(v) => Some(v.clone()),
                EnvSource::ConfigMapKey {
                    name,
                    key: k,
                    optional,
                }
                | EnvSource::SecretKey {
                    name,
                    key: k,
                    optional,
                } => {
                    let secret = matches!(src, EnvSource::SecretKey { .. });
                    let found = lookup(secret, name)
                        .and_then(|d| d.into_iter().find(|(dk, _)| dk == k))
                        .map(|(_, v)| String::from_utf8_lossy(&v).into_owned());
                    match found {
                        Some(v) => Some(v),
                        None if *optional => None,
                        None => {
                            return Err(format!(
                                "env {key}: key {k:?} of {} {name} not found",
                                if secret { "secret" } else { "configmap" }
                            ))
                        }
                    }
                }
            };
            if let Some(value) = value {
                out.push(v1::KeyValue {
                    key: key.clone(),
                    value,
                });
            }
        }
        Ok(out)
    }

    fn sandbox_config(&self, spec: &PodSpec, attempt: u32) -> v1::PodSandboxConfig {
        let network = if spec.host_network {
            v1::NamespaceMode::Node
        } else {
            v1::NamespaceMode::Pod
        };
        v1::PodSandboxConfig {
            metadata: Some(v1::PodSandboxMetadata {
                name: spec.name.clone(),
                uid: spec.uid.clone(),
                namespace: spec.namespace.clone(),
                attempt,
            }),
            hostname: if spec.host_network {
                String::new()
            } else {
                spec.name.clone()
            },
            log_directory: self.pod_dir(&spec.uid).join("logs").display().to_string(),
            labels: labels(spec),
            linux: Some(v1::LinuxPodSandboxConfig {
                cgroup_parent: String::new(),
                security_context: Some(v1::LinuxSandboxSecurityContext {
                    namespace_options: Some(v1::NamespaceOption {
                        network: network as i32,
                        pid: v1::NamespaceMode::Container as i32,
                        ipc: v1::NamespaceMode::Pod as i32,
                    }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    async fn ensure_image(&mut self, c: &Container) -> Result<(), (String, String)> {
        let present = self
            .cri
            .image_status(&c.image)
            .await
            .map_err(|e| ("ErrImagePull".to_owned(), e.to_string()))?
            .is_some();
        match c.pull {
            PullPolicy::Never if !present => Err((
                "ErrImageNeverPull".into(),
                format!(
                    "image {} is not present and imagePullPolicy is Never",
                    c.image
                ),
            )),
            PullPolicy::Never => Ok(()),
            PullPolicy::IfNotPresent if present => Ok(()),
            _ => match self.cri.pull_image(&c.image).await {
                Ok(_) => Ok(()),
                // A gateway offline from its registry still runs what it has: Always is honoured
                // when the registry answers, the local copy is used when it does not.
                Err(e) if present => {
                    log::warn!("pulling {} failed ({e}); using the local copy", c.image);
                    Ok(())
                }
                Err(e) => Err(("ErrImagePull".into(), e.to_string())),
            },
        }
    }

    async fn create_container(
        &mut self,
        at: &Placement<'_>,
        c: &Container,
        attempt: u32,
    ) -> Result<String, (String, String)> {
        let (spec, desired) = (at.spec, at.desired);
        self.ensure_image(c).await?;
        let envs = Self::env(spec, c, desired)
            .map_err(|m| ("CreateContainerConfigError".to_owned(), m))?;
        let mut mounts = Vec::new();
        for m in &c.mounts {
            let Some(host) = at.volumes.get(&m.volume) else {
                return Err((
                    "CreateContainerConfigError".into(),
                    format!("volumeMount {} names no volume", m.volume),
                ));
            };
            let host = match &m.sub_path {
                Some(sp) => host.join(sp),
                None => host.clone(),
            };
            mounts.push(v1::Mount {
                container_path: m.path.clone(),
                host_path: host.display().to_string(),
                readonly: m.read_only,
            });
        }
        let mut resources = v1::LinuxContainerResources::default();
        if let Some(millis) = c.cpu_millis_limit {
            resources.cpu_period = 100_000;
            resources.cpu_quota = (millis as i64 * 100).max(1000);
        }
        if let Some(millis) = c.cpu_millis_request.or(c.cpu_millis_limit) {
            resources.cpu_shares = ((millis * 1024) / 1000).max(2) as i64;
        }
        if let Some(bytes) = c.memory_limit {
            resources.memory_limit_in_bytes = bytes as i64;
        }
        let mut l = labels(spec);
        l.insert(L_CONTAINER.into(), c.name.clone());
        let cfg = v1::ContainerConfig {
            metadata: Some(v1::ContainerMetadata {
                name: c.name.clone(),
                attempt,
            }),
            image: Some(v1::ImageSpec {
                image: c.image.clone(),
                annotations: Default::default(),
            }),
            command: c.command.clone(),
            args: c.args.clone(),
            working_dir: c.working_dir.clone(),
            envs,
            mounts,
            labels: l,
            log_path: format!("{}/{attempt}.log", c.name),
            linux: Some(v1::LinuxContainerConfig {
                resources: Some(resources),
                security_context: None,
            }),
            ..Default::default()
        };
        let id = self
            .cri
            .create_container(at.sandbox, cfg, at.sb_cfg.clone())
            .await
            .map_err(|e| ("CreateContainerError".to_owned(), e.to_string()))?;
        self.cri
            .start_container(&id)
            .await
            .map_err(|e| ("RunContainerError".to_owned(), e.to_string()))?;
        Ok(id)
    }

    /// Tears down a sandbox and everything in it.
    async fn remove_sandbox(
        &mut self,
        sb: &v1::PodSandbox,
        containers: &[v1::Container],
        grace: Duration,
    ) {
        for c in containers.iter().filter(|c| c.pod_sandbox_id == sb.id) {
            if c.state == v1::ContainerState::ContainerRunning as i32 {
                let _ = self.cri.stop_container(&c.id, grace).await;
            }
            let _ = self.cri.remove_container(&c.id).await;
        }
        if let Err(e) = self.cri.stop_pod_sandbox(&sb.id).await {
            log::warn!("stopping sandbox {}: {e}", sb.id);
        }
        if let Err(e) = self.cri.remove_pod_sandbox(&sb.id).await {
            log::warn!("removing sandbox {}: {e}", sb.id);
        }
    }

    async fn probe(
        &mut self,
        action: &ProbeAction,
        container: &str,
        host: &str,
        timeout: Duration,
    ) -> bool {
        match action {
            ProbeAction::Exec(cmd) => {
                matches!(self.cri.exec_sync(container, cmd.clone(), timeout).await, Ok(r) if r.exit_code == 0)
            }
            ProbeAction::Tcp { port } => tcp_check(host, *port, timeout, None).await,
            ProbeAction::Http { port, path } => tcp_check(host, *port, timeout, Some(path)).await,
        }
    }

    /// One convergence pass. Returns status patches `(namespace, name, patch)` to send.
    pub async fn sync(
        &mut self,
        desired: &DesiredPods,
        node_ip: &str,
    ) -> Vec<(String, String, String)> {
        let managed: HashMap<String, String> = [(L_MANAGED.to_owned(), "true".to_owned())]
            .into_iter()
            .collect();
        let listed = async {
            let sandboxes = self
                .cri
                .list_pod_sandbox(Some(v1::PodSandboxFilter {
                    label_selector: managed.clone(),
                    ..Default::default()
                }))
                .await?;
            let containers = self
                .cri
                .list_containers(Some(v1::ContainerFilter {
                    label_selector: managed,
                    ..Default::default()
                }))
                .await?;
            Ok::<_, CriError>((sandboxes, containers))
        }
        .await;
        let (sandboxes, containers) = match listed {
            Ok(x) => {
                if self.last_error.take().is_some() {
                    log::info!("container runtime reachable again");
                }
                x
            }
            Err(e) => {
                let msg = e.to_string();
                if self.last_error.as_deref() != Some(msg.as_str()) {
                    log::warn!("{msg}; retrying");
                    self.last_error = Some(msg);
                }
                return Vec::new();
            }
        };
        let specs: Vec<PodSpec> = desired
            .pods
            .iter()
            .filter_map(|p| match PodSpec::parse(p) {
                Ok(s) => Some(s),
                Err(e) => {
                    log::warn!("cannot run pod {}: {e}", p["metadata"]["name"]);
                    None
                }
            })
            .collect();

        // Pods no longer desired: remove their sandboxes, containers and files.
        for sb in &sandboxes {
            let uid = sb.labels.get(L_UID).cloned().unwrap_or_default();
            if !specs.iter().any(|s| s.uid == uid) {
                log::info!(
                    "removing pod {}/{}",
                    sb.labels.get(L_NAMESPACE).map_or("", |s| s),
                    sb.labels.get(L_NAME).map_or("", |s| s)
                );
                self.remove_sandbox(sb, &containers, Duration::from_secs(10))
                    .await;
                let _ = std::fs::remove_dir_all(self.pod_dir(&uid));
            }
        }

        let mut patches = Vec::new();
        for spec in &specs {
            let status = self
                .sync_pod(spec, desired, &sandboxes, &containers, node_ip)
                .await;
            let text = status.to_string();
            if self.sent.get(&spec.uid) != Some(&text) {
                self.sent.insert(spec.uid.clone(), text.clone());
                patches.push((spec.namespace.clone(), spec.name.clone(), text));
            }
        }
        // Bookkeeping only for what still exists: pods still desired, containers the runtime
        // listed this pass (a crash-looping container gets a new id per restart, so probe state
        // would otherwise grow without bound).
        self.sent
            .retain(|uid, _| specs.iter().any(|s| s.uid == *uid));
        self.errors
            .retain(|(uid, _), _| specs.iter().any(|s| s.uid == *uid));
        self.probes
            .retain(|(id, _), _| containers.iter().any(|c| c.id == *id));
        patches
    }

    async fn sync_pod(
        &mut self,
        spec: &PodSpec,
        desired: &DesiredPods,
        sandboxes: &[v1::PodSandbox],
        containers: &[v1::Container],
        node_ip: &str,
    ) -> Value {
        let mine: Vec<&v1::PodSandbox> = sandboxes
            .iter()
            .filter(|s| s.labels.get(L_UID) == Some(&spec.uid))
            .collect();
        let newest = mine.iter().max_by_key(|s| s.created_at).copied();
        let volumes = match self.prepare_volumes(spec, desired) {
            Ok(v) => v,
            Err(msg) => {
                let obs = all_waiting(spec, "ContainerCreating", &msg);
                return status::pod_status(spec, false, "", node_ip, "", &obs);
            }
        };
        // A sandbox that is not ready (host rebooted, runtime restarted without its shims)
        // is replaced by a new attempt.
        let (sandbox, attempt) = match newest {
            Some(sb) if sb.state == v1::PodSandboxState::SandboxReady as i32 => (
                Some(sb.id.clone()),
                sb.metadata.as_ref().map_or(0, |m| m.attempt),
            ),
            other => {
                let attempt = other
                    .and_then(|s| s.metadata.as_ref())
                    .map_or(0, |m| m.attempt + 1);
                for sb in &mine {
                    self.remove_sandbox(sb, containers, Duration::from_secs(0))
                        .await;
                }
                match self
                    .cri
                    .run_pod_sandbox(self.sandbox_config(spec, attempt))
                    .await
                {
                    Ok(id) => {
                        log::info!(
                            "pod {}/{}: sandbox {} started",
                            spec.namespace,
                            spec.name,
                            &id[..12.min(id.len())]
                        );
                        (Some(id), attempt)
                    }
                    Err(e) => {
                        log::warn!(
                            "pod {}/{}: cannot start its sandbox: {e}",
                            spec.namespace,
                            spec.name
                        );
                        self.errors.insert(
                            (spec.uid.clone(), String::new()),
                            ("SandboxError".into(), e.to_string()),
                        );
                        (None, attempt)
                    }
                }
            }
        };
        let Some(sandbox) = sandbox else {
            let (reason, message) = self
                .errors
                .get(&(spec.uid.clone(), String::new()))
                .cloned()
                .unwrap_or_default();
            let obs = all_waiting(spec, &reason, &message);
            return status::pod_status(spec, false, "", node_ip, "", &obs);
        };
        self.errors.remove(&(spec.uid.clone(), String::new()));
        let sb_status = self.cri.pod_sandbox_status(&sandbox).await.ok();
        let pod_ip = if spec.host_network {
            node_ip.to_owned()
        } else {
            sb_status
                .as_ref()
                .and_then(|s| s.network.as_ref())
                .map(|n| n.ip.clone())
                .unwrap_or_default()
        };
        let probe_host = if spec.host_network || pod_ip.is_empty() {
            "127.0.0.1".to_owned()
        } else {
            pod_ip.clone()
        };
        let start_time = sb_status
            .as_ref()
            .map(|s| nanos_to_rfc3339(s.created_at))
            .unwrap_or_default();
        let sb_cfg = self.sandbox_config(spec, attempt);

        let mut observed = Vec::new();
        for c in &spec.containers {
            let mut mine: Vec<&v1::Container> = containers
                .iter()
                .filter(|x| {
                    x.pod_sandbox_id == sandbox && x.labels.get(L_CONTAINER) == Some(&c.name)
                })
                .collect();
            mine.sort_by_key(|x| x.metadata.as_ref().map_or(0, |m| m.attempt));
            let latest = mine.last().copied();
            let key = (spec.uid.clone(), c.name.clone());
            let mut obs = Observed {
                name: c.name.clone(),
                image: c.image.clone(),
                image_id: String::new(),
                container_id: String::new(),
                restart_count: latest
                    .and_then(|l| l.metadata.as_ref())
                    .map_or(0, |m| m.attempt),
                ready: false,
                state: State::Waiting {
                    reason: "ContainerCreating".into(),
                    message: String::new(),
                },
                last: None,
            };
            let mut create_attempt = None;
            match latest {
                None => create_attempt = Some(0),
                Some(l) => {
                    let st = self.cri.container_status(&l.id).await.ok();
                    obs.container_id = l.id.clone();
                    obs.image_id = l.image_ref.clone();
                    if mine.len() > 1 {
                        if let Some(prev) = mine.get(mine.len() - 2) {
                            if let Ok(ps) = self.cri.container_status(&prev.id).await {
                                obs.last = Some(terminated(&ps));
                            }
                        }
                    }
                    match st {
                        Some(s) if s.state == v1::ContainerState::ContainerRunning as i32 => {
                            obs.state = State::Running {
                                started_at: nanos_to_rfc3339(s.started_at),
                            };
                            obs.ready = self
                                .run_probes(c, &l.id, &probe_host, s.started_at, spec.grace_secs)
                                .await;
                        }
                        Some(s) if s.state == v1::ContainerState::ContainerCreated as i32 => {
                            let _ = self.cri.start_container(&l.id).await;
                        }
                        Some(s) if s.state == v1::ContainerState::ContainerExited as i32 => {
                            obs.state = terminated(&s);
                            let restart = match spec.restart {
                                RestartPolicy::Always => true,
                                RestartPolicy::OnFailure => s.exit_code != 0,
                                RestartPolicy::Never => false,
                            };
                            if restart {
                                let attempt = s.metadata.as_ref().map_or(0, |m| m.attempt);
                                let backoff = self
                                    .backoff_base
                                    .saturating_mul(1 << attempt.min(16))
                                    .min(MAX_BACKOFF);
                                let ready_at =
                                    s.finished_at.saturating_add(backoff.as_nanos() as i64);
                                if now_nanos() >= ready_at {
                                    create_attempt = Some(attempt + 1);
                                } else {
                                    obs.last = Some(obs.state.clone());
                                    obs.state = State::Waiting {
                                        reason: "CrashLoopBackOff".into(),
                                        message: format!(
                                            "back-off {}s restarting failed container {}",
                                            backoff.as_secs(),
                                            c.name
                                        ),
                                    };
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            if let Some(attempt) = create_attempt {
                // Keep the last exited container (for lastState); older ones go.
                if mine.len() > 1 {
                    for old in &mine[..mine.len() - 1] {
                        let _ = self.cri.remove_container(&old.id).await;
                    }
                }
                match self
                    .create_container(
                        &Placement {
                            spec,
                            sandbox: &sandbox,
                            sb_cfg: &sb_cfg,
                            volumes: &volumes,
                            desired,
                        },
                        c,
                        attempt,
                    )
                    .await
                {
                    Ok(id) => {
                        log::info!(
                            "pod {}/{}: container {} started (attempt {attempt})",
                            spec.namespace,
                            spec.name,
                            c.name
                        );
                        self.errors.remove(&key);
                        if let Some(prev) = latest {
                            if let Ok(ps) = self.cri.container_status(&prev.id).await {
                                obs.last = Some(terminated(&ps));
                            }
                        }
                        obs.container_id = id;
                        obs.restart_count = attempt;
                        obs.state = State::Running {
                            started_at: proto::time::rfc3339(now_nanos() / 1_000_000_000),
                        };
                        obs.ready = c.readiness.is_none();
                    }
                    Err((reason, message)) => {
                        log::warn!(
                            "pod {}/{}: container {}: {reason}: {message}",
                            spec.namespace,
                            spec.name,
                            c.name
                        );
                        obs.state = State::Waiting {
                            reason: reason.clone(),
                            message: message.clone(),
                        };
                        self.errors.insert(key, (reason, message));
                    }
                }
            }
            observed.push(obs);
        }
        status::pod_status(spec, true, &pod_ip, node_ip, &start_time, &observed)
    }

    /// Runs due liveness and readiness probes; returns readiness. A container failing its
    /// liveness probe is stopped, and restarted by the restart policy.
    async fn run_probes(
        &mut self,
        c: &Container,
        id: &str,
        host: &str,
        started_ns: i64,
        grace: u64,
    ) -> bool {
        let age = Duration::from_nanos(now_nanos().saturating_sub(started_ns).max(0) as u64);
        for (liveness, probe) in [(true, &c.liveness), (false, &c.readiness)] {
            let Some(p) = probe else { continue };
            let key = (id.to_owned(), liveness);
            let due = {
                let st = self.probes.entry(key.clone()).or_default();
                age >= Duration::from_secs(p.initial_delay_secs)
                    && st
                        .last_run
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(p.period_secs))
            };
            if !due {
                continue;
            }
            let ok = self
                .probe(&p.action, id, host, Duration::from_secs(p.timeout_secs))
                .await;
            let st = self.probes.entry(key).or_default();
            st.last_run = Some(Instant::now());
            if ok {
                st.successes += 1;
                st.failures = 0;
                if st.successes >= p.success_threshold {
                    st.ready = true;
                }
            } else {
                st.failures += 1;
                st.successes = 0;
                if st.failures >= p.failure_threshold {
                    st.ready = false;
                    if liveness {
                        log::info!(
                            "container {} failed its liveness probe {} times; restarting it",
                            c.name,
                            st.failures
                        );
                        st.failures = 0;
                        let _ = self
                            .cri
                            .stop_container(id, Duration::from_secs(grace.min(30)))
                            .await;
                    }
                }
            }
        }
        match &c.readiness {
            None => true,
            Some(_) => self
                .probes
                .get(&(id.to_owned(), false))
                .is_some_and(|s| s.ready),
        }
    }
}

/// Every container of `spec` waiting for the same reason (no sandbox, volumes not ready).
fn all_waiting(spec: &PodSpec, reason: &str, message: &str) -> Vec<Observed> {
    spec.containers
        .iter()
        .map(|c| Observed {
            name: c.name.clone(),
            image: c.image.clone(),
            image_id: String::new(),
            container_id: String::new(),
            restart_count: 0,
            ready: false,
            state: State::Waiting {
                reason: reason.to_owned(),
                message: message.to_owned(),
            },
            last: None,
        })
        .collect()
}

fn terminated(s: &v1::ContainerStatus) -> State {
    State::Terminated {
        exit_code: s.exit_code,
        reason: if !s.reason.is_empty() {
            s.reason.clone()
        } else if s.exit_code == 0 {
            "Completed".into()
        } else {
            "Error".into()
        },
        started_at: nanos_to_rfc3339(s.started_at),
        finished_at: nanos_to_rfc3339(s.finished_at),
    }
}

/// A TCP probe, or an HTTP GET probe when `path` is given (2xx/3xx is success).
async fn tcp_check(host: &str, port: u16, timeout: Duration, path: Option<&str>) -> bool {
    use smol::future::FutureExt;
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(ip) = host.parse::<std::net::IpAddr>() else {
        return false;
    };
    let addr = std::net::SocketAddr::new(ip, port);
    let check = async {
        let mut s = smol::net::TcpStream::connect(addr).await.ok()?;
        let Some(path) = path else { return Some(true) };
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: edgecore-probe\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = vec![0u8; 64];
        let n = s.read(&mut buf).await.ok()?;
        let line = String::from_utf8_lossy(&buf[..n]);
        let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    check
        .or(async {
            smol::Timer::after(timeout).await;
            None
        })
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_object_data() {
        assert_eq!(b64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(b64_decode("czNjcmV0").unwrap(), b"s3cret");
        assert!(b64_decode("!!").is_none());
        let cm = serde_json::json!({"data": {"a": "1"}, "binaryData": {"b": "AAE="}});
        assert_eq!(
            object_data(&cm, false),
            vec![("a".into(), b"1".to_vec()), ("b".into(), vec![0, 1])]
        );
        let s = serde_json::json!({"data": {"pw": "aGVsbG8="}});
        assert_eq!(
            object_data(&s, true),
            vec![("pw".into(), b"hello".to_vec())]
        );
    }

    #[test]
    fn tcp_and_http_probes() {
        smol::block_on(async {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            std::thread::spawn(move || {
                for s in l.incoming().take(2).flatten() {
                    use std::io::{Read, Write};
                    let mut s = s;
                    let mut b = [0u8; 256];
                    let _ = s.read(&mut b);
                    let _ = s.write_all(b"HTTP/1.1 503 Unavailable\r\n\r\n");
                }
            });
            assert!(tcp_check("127.0.0.1", port, Duration::from_secs(2), None).await);
            assert!(
                !tcp_check("127.0.0.1", port, Duration::from_secs(2), Some("/healthz")).await,
                "503 is a failure"
            );
            let closed = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            assert!(!tcp_check("127.0.0.1", closed, Duration::from_secs(2), None).await);
        });
    }
}
