//! The runtime port: what the reconciler observes ([`Snapshot`]) and asks for ([`Runtime`]),
//! in terms of pods, sandboxes and containers, not of any one runtime's API. The CRI adapter
//! ([`super::cri_runtime`]) implements it for containerd and any CRI socket; a daemonless
//! adapter can implement it the same way, and the reconciler is written once.
//!
//! Every method takes `&self`: calls for different pods may run at the same time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::spec::PullPolicy;

/// A container's state as the runtime reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CState {
    Created,
    Running,
    Exited,
    Unknown,
}

/// A pod sandbox (network namespace and the containers' parent) of a pod.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxObs {
    pub id: String,
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub attempt: u32,
    pub ready: bool,
    pub created_ns: i64,
    /// The pod's IP on the runtime's network (empty with host networking).
    pub ip: String,
}

/// A container of a pod.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerObs {
    pub id: String,
    pub sandbox_id: String,
    pub uid: String,
    pub name: String,
    /// The restart count: each restart is a new container with the next attempt number.
    pub attempt: u32,
    pub state: CState,
    pub created_ns: i64,
    pub started_ns: i64,
    pub finished_ns: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub image: String,
    pub image_ref: String,
}

/// Everything the runtime runs for edgecore at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub sandboxes: Vec<SandboxObs>,
    pub containers: Vec<ContainerObs>,
}

/// A sandbox to create.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxSpec {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub attempt: u32,
    pub host_network: bool,
    pub log_dir: PathBuf,
    pub labels: HashMap<String, String>,
}

/// A bind mount of a container.
#[derive(Clone, Debug, PartialEq)]
pub struct MountSpec {
    pub host_path: String,
    pub container_path: String,
    pub read_only: bool,
}

/// Credentials for one registry host (`127.0.0.1:5000`, `docker.io`), from the pod's
/// `imagePullSecrets`.
#[derive(Clone, PartialEq)]
pub struct RegistryAuth {
    pub registry: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    // Never the password in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryAuth({}, {})", self.registry, self.username)
    }
}

/// A container to create and start, fully resolved (env, mounts, limits).
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerSpec {
    pub name: String,
    pub attempt: u32,
    pub image: String,
    pub pull: PullPolicy,
    /// Credentials for pulling the image.
    pub registry_auth: Vec<RegistryAuth>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: String,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<MountSpec>,
    pub cpu_millis_limit: Option<u64>,
    pub cpu_millis_request: Option<u64>,
    pub memory_limit: Option<u64>,
    /// Relative to the sandbox's log directory.
    pub log_path: String,
}

/// Why a container did not start, in kubelet's reasons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartError {
    /// `ErrImagePull` (the runtime's message).
    Pull(String),
    /// `ErrImageNeverPull`: not present and the policy forbids pulling.
    NeverPull,
    /// `CreateContainerError`.
    Create(String),
    /// `RunContainerError`.
    Start(String),
}

/// The runtime operations the reconciler needs. Errors are the runtime's messages.
#[allow(async_fn_in_trait)] // implemented and used within edgecore's single-threaded executor
pub trait Runtime {
    /// `<name>://<version>` for the node's `containerRuntimeVersion`.
    async fn version(&self) -> Result<String, String>;
    async fn observe(&self) -> Result<Snapshot, String>;
    async fn run_sandbox(&self, s: &SandboxSpec) -> Result<String, String>;
    async fn stop_sandbox(&self, id: &str) -> Result<(), String>;
    async fn remove_sandbox(&self, id: &str) -> Result<(), String>;
    /// Pulls the image if the policy says so, creates and starts the container.
    async fn start_container(
        &self,
        sandbox_id: &str,
        sandbox: &SandboxSpec,
        c: &ContainerSpec,
    ) -> Result<String, StartError>;
    /// SIGTERM (the image's stop signal), then SIGKILL after `grace`.
    async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), String>;
    async fn remove_container(&self, id: &str) -> Result<(), String>;
    /// Runs a command in a container; its exit code.
    async fn exec(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<i32, String>;
}
