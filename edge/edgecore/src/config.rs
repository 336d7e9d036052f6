//! edgecore's configuration file (`<data-dir>/edgecore.json`), written by `edgecore join`.
//!
//! JSON because edgecore already carries a JSON parser for the wire; unknown keys are an error
//! so that a typo is reported instead of silently ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// File name of the config inside the data dir.
pub const CONFIG_FILE: &str = "edgecore.json";
/// Data dir when none is given.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/edgecore";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node_name: String,
    /// Where certificates and state live; relative paths below are inside it.
    pub data_dir: PathBuf,
    pub cloud: CloudConfig,
    /// Keepalive period; a link silent for two of these is redialled.
    #[serde(with = "duration_text")]
    pub heartbeat: Duration,
    #[serde(with = "duration_text")]
    pub status_interval: Duration,
    #[serde(with = "duration_text")]
    pub lease_interval: Duration,
    #[serde(default = "default_log_level")]
    pub log_level: String,
    #[serde(default)]
    pub modules: Modules,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub eventbus: EventBusConfig,
    /// CRI endpoint of the container runtime; empty runs no pods.
    #[serde(default = "default_cri")]
    pub cri_endpoint: String,
    /// How pods run: `cri` (a CRI socket, `cri_endpoint`) or `direct` (no daemon: edgecore
    /// runs OCI bundles with `oci_runtime`).
    #[serde(default = "default_runtime")]
    pub runtime: String,
    /// The OCI runtime binary of the direct runtime (crun; runc is accepted).
    #[serde(default = "default_oci_runtime")]
    pub oci_runtime: PathBuf,
    /// First restart back-off of a crashed container, doubling up to 5 minutes.
    #[serde(default = "default_crash_backoff", with = "duration_text")]
    pub crash_backoff: Duration,
    /// How often running pods are compared with what the cloud asked for.
    #[serde(default = "default_pod_sync", with = "duration_text")]
    pub pod_sync_period: Duration,
    /// Renew the edge certificate at 70–90 % of its lifetime (upstream `rotateCertificates`).
    #[serde(default = "default_true")]
    pub rotate_certificates: bool,
    /// What the node's allocatable resources leave out (kubelet's `systemReserved` plus
    /// `kubeReserved`, and its hard eviction thresholds).
    #[serde(default)]
    pub reserved: Reserved,
}

/// Quantities held back from the node's allocatable resources.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Reserved {
    /// CPU for the system and edgecore (`"250m"`).
    #[serde(default = "zero")]
    pub cpu: String,
    #[serde(default = "zero")]
    pub memory: String,
    #[serde(default = "zero", rename = "ephemeral-storage")]
    pub ephemeral_storage: String,
    /// kubelet's `evictionHard` `memory.available` [default: 100Mi].
    #[serde(
        default = "default_eviction_memory",
        rename = "eviction-memory-available"
    )]
    pub eviction_memory_available: String,
    /// kubelet's `evictionHard` `nodefs.available`, in percent of the data filesystem
    /// [default: 10%].
    #[serde(
        default = "default_eviction_nodefs",
        rename = "eviction-nodefs-available"
    )]
    pub eviction_nodefs_available: String,
}

impl Default for Reserved {
    fn default() -> Self {
        Reserved {
            cpu: zero(),
            memory: zero(),
            ephemeral_storage: zero(),
            eviction_memory_available: default_eviction_memory(),
            eviction_nodefs_available: default_eviction_nodefs(),
        }
    }
}

fn zero() -> String {
    "0".into()
}
fn default_eviction_memory() -> String {
    "100Mi".into()
}
fn default_eviction_nodefs() -> String {
    "10%".into()
}

/// [`Reserved`] in base units.
#[derive(Clone, Debug, PartialEq)]
pub struct ReservedValues {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub ephemeral_bytes: u64,
    pub eviction_memory_bytes: u64,
    pub eviction_nodefs_percent: u64,
}

impl Reserved {
    /// The reservations in base units; names the key of a value that is not a quantity.
    pub fn resolve(&self) -> anyhow::Result<ReservedValues> {
        let q = |key: &str, v: &str, millis: bool| {
            proto::quantity::units(v, millis)
                .with_context(|| format!("reserved.{key} {v:?} is not a Kubernetes quantity"))
        };
        let pct = self
            .eviction_nodefs_available
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<u64>().ok())
            .filter(|p| *p <= 100)
            .with_context(|| {
                format!(
                    "reserved.eviction-nodefs-available {:?} must be a percentage such as \"10%\"",
                    self.eviction_nodefs_available
                )
            })?;
        Ok(ReservedValues {
            cpu_millis: q("cpu", &self.cpu, true)?,
            memory_bytes: q("memory", &self.memory, false)?,
            ephemeral_bytes: q("ephemeral-storage", &self.ephemeral_storage, false)?,
            eviction_memory_bytes: q(
                "eviction-memory-available",
                &self.eviction_memory_available,
                false,
            )?,
            eviction_nodefs_percent: pct,
        })
    }
}

fn default_true() -> bool {
    true
}

fn default_cri() -> String {
    cri::DEFAULT_ENDPOINT.into()
}
/// The runtime choices.
pub const RUNTIME_CRI: &str = "cri";
pub const RUNTIME_DIRECT: &str = "direct";

fn default_runtime() -> String {
    RUNTIME_CRI.into()
}
fn default_oci_runtime() -> PathBuf {
    "/usr/bin/crun".into()
}
fn default_crash_backoff() -> Duration {
    Duration::from_secs(10)
}
fn default_pod_sync() -> Duration {
    Duration::from_secs(2)
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `redb` (default) or `sled` (only in builds with the `sled` feature).
    #[serde(default = "default_backend")]
    pub backend: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: default_backend(),
        }
    }
}

fn default_backend() -> String {
    "redb".into()
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// CloudHub WebSocket server, `host:port`.
    pub server: String,
    /// Certificate server, `host:port`.
    pub cert_server: String,
    #[serde(default = "default_project")]
    pub project_id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Modules {
    #[serde(default = "yes")]
    pub edged: bool,
    #[serde(default = "yes")]
    pub metamanager: bool,
    #[serde(default = "yes")]
    pub eventbus: bool,
    #[serde(default = "yes")]
    pub devicetwin: bool,
}

impl Default for Modules {
    fn default() -> Self {
        Modules {
            edged: true,
            metamanager: true,
            eventbus: true,
            devicetwin: true,
        }
    }
}

/// The MQTT broker EventBus connects to (upstream's default: the local broker on 1883).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventBusConfig {
    /// Run the embedded broker on `broker`'s address (default), or use an existing broker there.
    #[serde(default = "yes")]
    pub embedded: bool,
    #[serde(default = "default_broker")]
    pub broker: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// Largest MQTT packet accepted.
    #[serde(default = "default_max_packet")]
    pub max_packet_bytes: usize,
    /// TLS to an external broker: the CA that signed its certificate, and optionally a client
    /// certificate and key. Absent: plain TCP (the embedded broker is loopback-only).
    #[serde(default)]
    pub tls: Option<MqttTls>,
    /// Embedded broker: clients connected at once; more get CONNACK 0x03 (server unavailable).
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
    /// Embedded broker: topic filters no client may subscribe to (SUBACK 0x80), e.g.
    /// `$hw/events/node/#` to keep local clients off node events. A filter is refused when a
    /// pattern here matches it as written (`secret/#` refuses `secret/a` and `secret/+`); a
    /// broader filter such as `#` is not refused.
    #[serde(default)]
    pub deny_subscribe: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttTls {
    pub ca: PathBuf,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

impl Default for EventBusConfig {
    fn default() -> Self {
        EventBusConfig {
            embedded: true,
            broker: default_broker(),
            username: String::new(),
            password: String::new(),
            max_packet_bytes: default_max_packet(),
            tls: None,
            max_clients: default_max_clients(),
            deny_subscribe: Vec::new(),
        }
    }
}

fn default_broker() -> String {
    "127.0.0.1:1883".into()
}
fn default_max_packet() -> usize {
    256 << 10
}
fn default_max_clients() -> usize {
    64
}

fn yes() -> bool {
    true
}
fn default_log_level() -> String {
    "info".into()
}
fn default_project() -> String {
    proto::DEFAULT_PROJECT_ID.into()
}

mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.subsec_millis() == 0 {
            s.serialize_str(&format!("{}s", d.as_secs()))
        } else {
            s.serialize_str(&format!("{}ms", d.as_millis()))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        support::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// Paths of the TLS material inside the data dir.
#[derive(Clone, Debug)]
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Config {
    pub fn new(node_name: &str, data_dir: &Path, server: String, cert_server: String) -> Config {
        Config {
            node_name: node_name.to_owned(),
            data_dir: data_dir.to_owned(),
            cloud: CloudConfig {
                server,
                cert_server,
                project_id: default_project(),
            },
            heartbeat: Duration::from_secs(15),
            status_interval: Duration::from_secs(10),
            lease_interval: Duration::from_secs(10),
            log_level: default_log_level(),
            modules: Modules::default(),
            store: StoreConfig::default(),
            eventbus: EventBusConfig::default(),
            cri_endpoint: default_cri(),
            runtime: default_runtime(),
            oci_runtime: default_oci_runtime(),
            crash_backoff: default_crash_backoff(),
            pod_sync_period: default_pod_sync(),
            rotate_certificates: true,
            reserved: Reserved::default(),
        }
    }

    pub fn store_backend(&self) -> anyhow::Result<store::Backend> {
        self.store.backend.parse().map_err(anyhow::Error::msg)
    }

    /// Path of the metadata store file.
    pub fn store_path(&self) -> anyhow::Result<PathBuf> {
        Ok(self.data_dir.join(store::file_name(self.store_backend()?)))
    }

    pub fn pki(&self) -> Pki {
        Pki::in_dir(&self.data_dir)
    }

    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read(path).with_context(|| {
            format!(
                "cannot read {} (has this gateway joined a cloud? run `edgecore join` first, or give \
                 `edgecore run` a provisioning file)",
                path.display()
            )
        })?;
        proto::limits::check_json_depth(&text, proto::limits::MAX_JSON_DEPTH)
            .with_context(|| format!("{} is not a valid edgecore config", path.display()))?;
        let cfg: Config = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a valid edgecore config", path.display()))?;
        cfg.validate()
            .with_context(|| format!("in {}", path.display()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        proto::validate_node_name(&self.node_name).map_err(anyhow::Error::msg)?;
        for (what, d) in [
            ("heartbeat", self.heartbeat),
            ("status_interval", self.status_interval),
            ("lease_interval", self.lease_interval),
        ] {
            if d < Duration::from_millis(100) || d > Duration::from_secs(600) {
                bail!("{what} {d:?} must be between 100ms and 10m");
            }
        }
        if self.heartbeat > Duration::from_secs(29) {
            bail!(
                "heartbeat {:?} must stay under cloudcore's 30 s keepalive timeout",
                self.heartbeat
            );
        }
        support::parse_level(&self.log_level).map_err(anyhow::Error::msg)?;
        self.store_backend()?;
        if self.eventbus.embedded && self.eventbus.tls.is_some() {
            bail!("eventbus.tls is for an external broker; the embedded one listens on loopback without TLS (set eventbus.embedded to false)");
        }
        match self.runtime.as_str() {
            RUNTIME_CRI if !self.cri_endpoint.is_empty() => {
                cri::socket_path(&self.cri_endpoint)?;
            }
            RUNTIME_CRI => {}
            RUNTIME_DIRECT if self.oci_runtime.as_os_str().is_empty() => {
                bail!("runtime \"direct\" needs oci_runtime, the path of a crun or runc binary")
            }
            RUNTIME_DIRECT if !cfg!(feature = "direct") => {
                bail!("runtime \"direct\": this edgecore was built without the direct runtime (feature `direct`)")
            }
            RUNTIME_DIRECT => {}
            other => bail!("runtime {other:?} must be \"cri\" or \"direct\""),
        }
        self.reserved.resolve()?;
        Ok(())
    }

    /// Writes the config atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        crate::write_atomic(path, text.as_bytes(), 0o644)
    }
}

impl Pki {
    pub fn in_dir(data_dir: &Path) -> Pki {
        let d = data_dir.join("pki");
        Pki {
            ca: d.join("ca.crt"),
            cert: d.join("edge.crt"),
            key: d.join("edge.key"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_typos() {
        let c = Config::new(
            "edge0",
            Path::new("/tmp/x"),
            "127.0.0.1:10000".into(),
            "127.0.0.1:10002".into(),
        );
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains("\"heartbeat\":\"15s\""));
        let back: Config = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c);
        let typo = text.replace("\"heartbeat\"", "\"heartbeet\"");
        assert!(serde_json::from_str::<Config>(&typo).is_err());
        let mut bad = c.clone();
        bad.heartbeat = Duration::from_secs(40);
        assert!(bad.validate().is_err());
        let r = c.reserved.resolve().unwrap();
        assert_eq!(
            (r.eviction_memory_bytes, r.eviction_nodefs_percent),
            (100 << 20, 10)
        );
        let mut bad = c.clone();
        bad.reserved.memory = "lots".into();
        let e = bad.validate().unwrap_err();
        assert!(format!("{e:#}").contains("reserved.memory"), "{e:#}");
        let mut bad = c.clone();
        bad.reserved.eviction_nodefs_available = "10".into();
        assert!(bad.validate().is_err());
        // An old config has no runtime keys: CRI, as before.
        let old = text.replace(",\"runtime\":\"cri\"", "");
        assert!(!old.contains("\"runtime\""));
        assert_eq!(serde_json::from_str::<Config>(&old).unwrap().runtime, "cri");
        let mut bad = c.clone();
        bad.runtime = "docker".into();
        let e = bad.validate().unwrap_err();
        assert!(format!("{e:#}").contains("\"cri\" or \"direct\""), "{e:#}");
        let mut direct = c.clone();
        direct.runtime = "direct".into();
        direct.cri_endpoint = "not a socket".into();
        if cfg!(feature = "direct") {
            direct
                .validate()
                .expect("the CRI endpoint is not used in direct mode");
        } else {
            assert!(
                direct.validate().is_err(),
                "a build without it refuses direct"
            );
        }
    }

    #[test]
    fn a_config_nested_past_the_depth_limit_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("edgecore-cfg-depth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("edgecore.json");
        let deep = format!("{{\"x\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        std::fs::write(&path, deep).unwrap();
        let e = format!("{:#}", Config::load(&path).unwrap_err());
        assert!(
            e.contains("nested deeper than the limit of 64 levels"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
