//! The runtime port on CRI v1 (containerd, CRI-O, any CRI socket).
//!
//! What must survive a restart lives in the runtime itself: sandboxes and containers carry
//! the pod uid, name, namespace and container name as labels and the restart count as their
//! CRI attempt number, so after an edgecore or containerd restart they are found and adopted,
//! never recreated.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use cri::{v1, CriClient};

use super::runtime::{
    CState, ContainerObs, ContainerSpec, Runtime, SandboxObs, SandboxSpec, Snapshot, StartError,
};
use super::spec::PullPolicy;

pub const L_MANAGED: &str = "edgecore.io/managed";
pub const L_UID: &str = "io.kubernetes.pod.uid";
pub const L_NAME: &str = "io.kubernetes.pod.name";
pub const L_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const L_CONTAINER: &str = "io.kubernetes.container.name";

/// The CRI adapter.
pub struct CriRuntime {
    cri: Rc<CriClient>,
    pull_log: std::cell::RefCell<bus::Throttle>,
}

impl CriRuntime {
    pub fn new(endpoint: &str) -> Result<Self, cri::CriError> {
        Ok(CriRuntime {
            cri: Rc::new(CriClient::new(endpoint)?),
            pull_log: Default::default(),
        })
    }

    /// The client, whose connection must be driven beside every call.
    pub fn client(&self) -> Rc<CriClient> {
        self.cri.clone()
    }

    fn sandbox_config(s: &SandboxSpec) -> v1::PodSandboxConfig {
        let network = if s.host_network {
            v1::NamespaceMode::Node
        } else {
            v1::NamespaceMode::Pod
        };
        let mut labels = s.labels.clone();
        labels.insert(L_MANAGED.into(), "true".into());
        labels.insert(L_UID.into(), s.uid.clone());
        labels.insert(L_NAME.into(), s.name.clone());
        labels.insert(L_NAMESPACE.into(), s.namespace.clone());
        v1::PodSandboxConfig {
            metadata: Some(v1::PodSandboxMetadata {
                name: s.name.clone(),
                uid: s.uid.clone(),
                namespace: s.namespace.clone(),
                attempt: s.attempt,
            }),
            hostname: if s.host_network {
                String::new()
            } else {
                s.name.clone()
            },
            log_directory: s.log_dir.display().to_string(),
            labels,
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

    async fn ensure_image(&self, image: &str, pull: PullPolicy) -> Result<(), StartError> {
        let present = self
            .cri
            .image_status(image)
            .await
            .map_err(|e| StartError::Pull(e.to_string()))?
            .is_some();
        match pull {
            PullPolicy::Never if !present => Err(StartError::NeverPull),
            PullPolicy::Never => Ok(()),
            PullPolicy::IfNotPresent if present => Ok(()),
            _ => match self.cri.pull_image(image).await {
                Ok(_) => Ok(()),
                // A gateway offline from its registry still runs what it has: Always is
                // honoured when the registry answers, the local copy used when it does not.
                Err(e) if present => {
                    // Every start of an offline gateway tries again: one line a minute.
                    if let Some(n) = self.pull_log.borrow_mut().allow(std::time::Instant::now()) {
                        log::warn!("pulling {image} failed ({e}); using the local copy{n}");
                    }
                    Ok(())
                }
                Err(e) => Err(StartError::Pull(e.to_string())),
            },
        }
    }
}

fn state(s: i32) -> CState {
    match s {
        x if x == v1::ContainerState::ContainerCreated as i32 => CState::Created,
        x if x == v1::ContainerState::ContainerRunning as i32 => CState::Running,
        x if x == v1::ContainerState::ContainerExited as i32 => CState::Exited,
        _ => CState::Unknown,
    }
}

impl Runtime for CriRuntime {
    async fn version(&self) -> Result<String, String> {
        let v = self.cri.version().await.map_err(|e| e.to_string())?;
        // kubelet prints the version through semver parsing, which drops a leading `v`.
        let ver = v.runtime_version.trim_start_matches('v');
        Ok(format!("{}://{ver}", v.runtime_name))
    }

    async fn observe(&self) -> Result<Snapshot, String> {
        let managed: HashMap<String, String> = [(L_MANAGED.to_owned(), "true".to_owned())]
            .into_iter()
            .collect();
        let sandboxes = self
            .cri
            .list_pod_sandbox(Some(v1::PodSandboxFilter {
                label_selector: managed.clone(),
                ..Default::default()
            }))
            .await
            .map_err(|e| e.to_string())?;
        let containers = self
            .cri
            .list_containers(Some(v1::ContainerFilter {
                label_selector: managed,
                ..Default::default()
            }))
            .await
            .map_err(|e| e.to_string())?;
        // The list has no exit codes or times: one status call per container, all at once.
        let statuses = futures_util::future::join_all(
            containers.iter().map(|c| self.cri.container_status(&c.id)),
        )
        .await;
        let ips = futures_util::future::join_all(
            sandboxes
                .iter()
                .filter(|s| s.state == v1::PodSandboxState::SandboxReady as i32)
                .map(|s| async move { (s.id.clone(), self.cri.pod_sandbox_status(&s.id).await) }),
        )
        .await;
        let label = |l: &HashMap<String, String>, k: &str| l.get(k).cloned().unwrap_or_default();
        let mut snap = Snapshot::default();
        for s in &sandboxes {
            let ip = ips
                .iter()
                .find(|(id, _)| *id == s.id)
                .and_then(|(_, st)| st.as_ref().ok())
                .and_then(|st| st.network.as_ref())
                .map(|n| n.ip.clone())
                .unwrap_or_default();
            snap.sandboxes.push(SandboxObs {
                id: s.id.clone(),
                uid: label(&s.labels, L_UID),
                name: label(&s.labels, L_NAME),
                namespace: label(&s.labels, L_NAMESPACE),
                attempt: s.metadata.as_ref().map_or(0, |m| m.attempt),
                ready: s.state == v1::PodSandboxState::SandboxReady as i32,
                created_ns: s.created_at,
                ip,
            });
        }
        for (c, st) in containers.iter().zip(statuses) {
            let st = match st {
                Ok(st) => Some(st),
                // Removed between the list and the status call: gone.
                Err(e) if e.is_not_found() => continue,
                Err(_) => None,
            };
            snap.containers.push(ContainerObs {
                id: c.id.clone(),
                sandbox_id: c.pod_sandbox_id.clone(),
                uid: label(&c.labels, L_UID),
                name: label(&c.labels, L_CONTAINER),
                attempt: c.metadata.as_ref().map_or(0, |m| m.attempt),
                state: state(st.as_ref().map_or(c.state, |s| s.state)),
                created_ns: c.created_at,
                started_ns: st.as_ref().map_or(0, |s| s.started_at),
                finished_ns: st.as_ref().map_or(0, |s| s.finished_at),
                exit_code: st.as_ref().map_or(0, |s| s.exit_code),
                reason: st.as_ref().map(|s| s.reason.clone()).unwrap_or_default(),
                message: st.as_ref().map(|s| s.message.clone()).unwrap_or_default(),
                image: c
                    .image
                    .as_ref()
                    .map(|i| i.image.clone())
                    .unwrap_or_default(),
                image_ref: c.image_ref.clone(),
            });
        }
        Ok(snap)
    }

    async fn run_sandbox(&self, s: &SandboxSpec) -> Result<String, String> {
        let _ = std::fs::create_dir_all(&s.log_dir);
        self.cri
            .run_pod_sandbox(Self::sandbox_config(s))
            .await
            .map_err(|e| e.to_string())
    }

    async fn stop_sandbox(&self, id: &str) -> Result<(), String> {
        self.cri
            .stop_pod_sandbox(id)
            .await
            .map_err(|e| e.to_string())
    }

    async fn remove_sandbox(&self, id: &str) -> Result<(), String> {
        match self.cri.stop_pod_sandbox(id).await {
            Err(e) if !e.is_not_found() => return Err(e.to_string()),
            _ => {}
        }
        match self.cri.remove_pod_sandbox(id).await {
            Err(e) if !e.is_not_found() => Err(e.to_string()),
            _ => Ok(()),
        }
    }

    async fn start_container(
        &self,
        sandbox_id: &str,
        sandbox: &SandboxSpec,
        c: &ContainerSpec,
    ) -> Result<String, StartError> {
        self.ensure_image(&c.image, c.pull).await?;
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
        let mut labels = Self::sandbox_config(sandbox).labels;
        labels.insert(L_CONTAINER.into(), c.name.clone());
        let cfg = v1::ContainerConfig {
            metadata: Some(v1::ContainerMetadata {
                name: c.name.clone(),
                attempt: c.attempt,
            }),
            image: Some(v1::ImageSpec {
                image: c.image.clone(),
                annotations: Default::default(),
            }),
            command: c.command.clone(),
            args: c.args.clone(),
            working_dir: c.working_dir.clone(),
            envs: c
                .env
                .iter()
                .map(|(k, v)| v1::KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            mounts: c
                .mounts
                .iter()
                .map(|m| v1::Mount {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.clone(),
                    readonly: m.read_only,
                })
                .collect(),
            labels,
            log_path: c.log_path.clone(),
            linux: Some(v1::LinuxContainerConfig {
                resources: Some(resources),
                security_context: None,
            }),
            ..Default::default()
        };
        let id = self
            .cri
            .create_container(sandbox_id, cfg, Self::sandbox_config(sandbox))
            .await
            .map_err(|e| StartError::Create(e.to_string()))?;
        if let Err(e) = self.cri.start_container(&id).await {
            // A created container that never started is removed, so the next attempt can
            // reuse its name.
            let _ = self.cri.remove_container(&id).await;
            return Err(StartError::Start(e.to_string()));
        }
        Ok(id)
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), String> {
        match self.cri.stop_container(id, grace).await {
            Err(e) if !e.is_not_found() => Err(e.to_string()),
            _ => Ok(()),
        }
    }

    async fn remove_container(&self, id: &str) -> Result<(), String> {
        match self.cri.remove_container(id).await {
            Err(e) if !e.is_not_found() => Err(e.to_string()),
            _ => Ok(()),
        }
    }

    async fn exec(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<i32, String> {
        self.cri
            .exec_sync(id, cmd.to_vec(), timeout)
            .await
            .map(|r| r.exit_code)
            .map_err(|e| e.to_string())
    }
}
