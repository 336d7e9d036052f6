//! First-boot provisioning: a gateway image carries a provisioning file (cloud address, an
//! enrollment token or a file holding one, the node name or a rule for it), and `edgecore run`
//! enrolls from it once, removes the token and from then on just runs.
//!
//! The file is JSON, like `edgecore.json`, and unknown keys are errors:
//!
//! ```json
//! { "cloud": "192.0.2.10", "token_file": "edgecore.token",
//!   "node_name_from": "mac:eth0", "node_name_prefix": "gw-",
//!   "cri_endpoint": "", "config": { "log_level": "warn" } }
//! ```
//!
//! Order of the steps, so that a power cut at any instant is recovered by the next boot:
//! 1. `join` writes key, certificate and CA, then `edgecore.json` (atomically, last): its
//!    presence is what "enrolled" means; the data dir is then fsynced.
//! 2. The file's `config` keys are merged into `edgecore.json` (atomically).
//! 3. The token is removed (the token file deleted, or the key dropped from the provisioning
//!    file), and that directory fsynced.
//!
//! A boot that finds `edgecore.json` and a provisioning file still holding a token finishes
//! steps 2 and 3 (both idempotent) and does not join again. Before step 1 completes nothing is
//! written, so the next boot joins with the same token.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::Value;

use crate::config::{Config, Pki, CONFIG_FILE};
use crate::UsageError;

/// Where `edgecore run` looks for a provisioning file when none is named, in this order: the
/// boot partition first (written per device, on the flashing machine), then the image.
pub const SEARCH_PATHS: &[&str] = &[
    "/boot/edgecore-provision.json",
    "/etc/edgecore/provision.json",
];

/// Largest provisioning or token file read (both are a few hundred bytes).
const MAX_FILE_BYTES: u64 = 64 << 10;

/// Keys of `edgecore.json` that provisioning itself sets and `config` may not.
const OWN_KEYS: &[&str] = &["node_name", "data_dir", "cloud"];

/// The provisioning file as written by an integrator.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provisioning {
    /// Address or host name of cloudcore, no port.
    pub cloud: String,
    #[serde(default = "ws_port")]
    pub ws_port: u16,
    #[serde(default = "cert_port")]
    pub cert_port: u16,
    /// The enrollment token itself...
    #[serde(default)]
    pub token: Option<String>,
    /// ...or a file holding it; a relative path is relative to the provisioning file.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// A fixed node name...
    #[serde(default)]
    pub node_name: Option<String>,
    /// ...or a rule: `mac` (first network interface with a device), `mac:<interface>`,
    /// `machine-id` (/etc/machine-id) or `hostname`. Neither: the host name.
    #[serde(default)]
    pub node_name_from: Option<String>,
    /// Put before a name made by a rule (`gw-` + `525400123456`).
    #[serde(default)]
    pub node_name_prefix: String,
    #[serde(default)]
    pub project_id: Option<String>,
    /// Container runtime socket; empty runs no pods [default: containerd's].
    #[serde(default)]
    pub cri_endpoint: Option<String>,
    /// `cri` or `direct`, and the OCI runtime of `direct`, as `join --runtime`/`--oci-runtime`.
    #[serde(default)]
    pub runtime: Option<String>,
    #[serde(default)]
    pub oci_runtime: Option<PathBuf>,
    /// Top-level keys of `edgecore.json` to set after enrolling (`log_level`, `eventbus`,
    /// `modules`, `reserved`, ...), checked as `edgecore.json` is.
    #[serde(default)]
    pub config: serde_json::Map<String, Value>,
}

fn ws_port() -> u16 {
    10000
}
fn cert_port() -> u16 {
    10002
}

/// How the node name is made.
#[derive(Debug, Clone, PartialEq)]
pub enum NameRule {
    Fixed(String),
    /// The MAC address of this interface, or of the first one with a device.
    Mac(Option<String>),
    MachineId,
    Hostname,
}

impl Provisioning {
    /// Parses and checks everything that does not need the machine or the cloud.
    pub fn parse(text: &[u8]) -> anyhow::Result<Provisioning> {
        let p: Provisioning = serde_json::from_slice(text)?;
        if p.cloud.trim().is_empty() {
            bail!("\"cloud\" is empty");
        }
        match (&p.token, &p.token_file) {
            (Some(_), Some(_)) => bail!("give \"token\" or \"token_file\", not both"),
            (None, None) => bail!("needs \"token\" or \"token_file\""),
            _ => {}
        }
        p.rule()?;
        for k in p.config.keys() {
            if OWN_KEYS.contains(&k.as_str()) {
                bail!("\"config\" may not set {k:?}: provisioning sets it");
            }
        }
        Ok(p)
    }

    pub fn rule(&self) -> anyhow::Result<NameRule> {
        Ok(match (&self.node_name, self.node_name_from.as_deref()) {
            (Some(_), Some(_)) => bail!("give \"node_name\" or \"node_name_from\", not both"),
            (Some(n), None) => {
                proto::validate_node_name(n).map_err(anyhow::Error::msg)?;
                NameRule::Fixed(n.clone())
            }
            (None, None) | (None, Some("hostname")) => NameRule::Hostname,
            (None, Some("machine-id")) => NameRule::MachineId,
            (None, Some("mac")) => NameRule::Mac(None),
            (None, Some(r)) => match r.strip_prefix("mac:") {
                Some(iface) if !iface.is_empty() && !iface.contains('/') => {
                    NameRule::Mac(Some(iface.to_owned()))
                }
                _ => bail!(
                    "\"node_name_from\" {r:?} is not a rule: use mac, mac:<interface>, machine-id or hostname"
                ),
            },
        })
    }

    /// The token file's path, relative ones resolved against the provisioning file's dir.
    fn token_path(&self, file: &Path) -> Option<PathBuf> {
        self.token_file.as_ref().map(|t| match file.parent() {
            Some(dir) if t.is_relative() => dir.join(t),
            _ => t.clone(),
        })
    }
}

/// The node name a rule gives on the machine whose root is `root` (`/` but in tests).
pub fn node_name(rule: &NameRule, prefix: &str, root: &Path) -> anyhow::Result<String> {
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p)
            .map(|s| s.trim().to_owned())
            .with_context(|| format!("cannot read {}", p.display()))
    };
    let made = match rule {
        NameRule::Fixed(n) => return Ok(n.clone()),
        NameRule::Hostname => read(root.join("proc/sys/kernel/hostname"))?.to_lowercase(),
        NameRule::MachineId => {
            let id = read(root.join("etc/machine-id"))?;
            if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("/etc/machine-id holds {id:?}, not a machine id (32 hex digits)");
            }
            id.to_lowercase()
        }
        NameRule::Mac(iface) => {
            let net = root.join("sys/class/net");
            let iface = match iface {
                Some(i) => i.clone(),
                // The first interface backed by a device: not lo, bridges or veths, which
                // a container runtime may add later and whose addresses are made up.
                None => {
                    let mut names: Vec<String> = std::fs::read_dir(&net)
                        .with_context(|| format!("cannot list {}", net.display()))?
                        .filter_map(Result::ok)
                        .filter(|e| e.path().join("device").exists())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect();
                    names.sort();
                    names.into_iter().next().with_context(|| {
                        format!("no network interface with a device in {}", net.display())
                    })?
                }
            };
            let mac = read(net.join(&iface).join("address"))?;
            let hex: String = mac.chars().filter(|c| *c != ':').collect();
            if hex.len() != 12
                || !hex.bytes().all(|b| b.is_ascii_hexdigit())
                || hex == "000000000000"
            {
                bail!("interface {iface} has no MAC address ({mac:?})");
            }
            hex.to_lowercase()
        }
    };
    let name = format!("{prefix}{made}");
    proto::validate_node_name(&name).map_err(anyhow::Error::msg)?;
    Ok(name)
}

/// A working enrollment in `data_dir`: its config loads and its key and a certificate that
/// has not expired are there. What `join` refuses to replace without `--force`.
pub fn working_enrollment(data_dir: &Path) -> Option<String> {
    let cfg = Config::load(&data_dir.join(CONFIG_FILE)).ok()?;
    let pki = Pki::in_dir(data_dir);
    std::fs::metadata(&pki.key).ok()?;
    let pem = pem::parse(std::fs::read(&pki.cert).ok()?).ok()?;
    let (_, not_after) = crate::certs::validity(pem.contents())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    (not_after > now).then(|| {
        format!(
            "node {} with the cloud at {}, certificate valid for {} more days",
            cfg.node_name,
            cfg.cloud.server,
            (not_after - now) / 86_400
        )
    })
}

/// The provisioning file to use: `explicit`, else the first of [`SEARCH_PATHS`] that exists.
fn find(explicit: Option<&Path>) -> Option<PathBuf> {
    match explicit {
        Some(p) => Some(p.to_owned()),
        None => SEARCH_PATHS.iter().map(PathBuf::from).find(|p| p.exists()),
    }
}

fn read_bounded(path: &Path) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if len > MAX_FILE_BYTES {
        bail!(
            "{} is {len} bytes, more than a provisioning file holds ({MAX_FILE_BYTES})",
            path.display()
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Run before `edgecore run` loads its config: enrolls from a provisioning file when the data
/// dir holds no enrollment yet, or finishes an enrollment a power cut interrupted. Nothing to
/// do (no provisioning file, or one already used) is `Ok`. A malformed file is a
/// [`UsageError`] (exit 2: rebooting will not fix it); a failed join is a runtime error
/// (exit 1), which the init system retries with back-off.
pub fn before_run(data_dir: &Path, explicit: Option<&Path>) -> anyhow::Result<()> {
    let enrolled = data_dir.join(CONFIG_FILE).exists();
    let Some(file) = find(explicit) else {
        return Ok(());
    };
    let text = match read_bounded(&file) {
        Ok(t) => t,
        // Nothing left to finish: a used provisioning file may have been removed by hand.
        Err(_) if enrolled => return Ok(()),
        Err(e) => return Err(UsageError(format!("provisioning file: {e:#}")).into()),
    };
    let p = Provisioning::parse(&text)
        .map_err(|e| UsageError(format!("provisioning file {}: {e:#}", file.display())))?;
    let token_path = p.token_path(&file);
    let token_left = match &token_path {
        Some(t) => t.exists(),
        None => p.token.is_some(),
    };
    if enrolled && !token_left {
        return Ok(());
    }
    if !enrolled {
        let token = match (&p.token, &token_path) {
            (Some(t), _) => t.clone(),
            (None, Some(t)) => String::from_utf8(read_bounded(t)?)
                .with_context(|| format!("{} is not text", t.display()))?,
            (None, None) => unreachable!("parse requires a token or a token file"),
        };
        let node_name = node_name(&p.rule()?, &p.node_name_prefix, Path::new("/"))?;
        // The config the join will write, with the overrides: refused now, before the cloud
        // issues a certificate, if it would not load.
        let mut planned = Config::new(&node_name, data_dir, String::new(), String::new());
        if let Some(ep) = &p.cri_endpoint {
            planned.cri_endpoint = ep.clone();
        }
        if let Some(r) = &p.runtime {
            planned.runtime = r.clone();
        }
        merged(planned, &p.config)
            .map_err(|e| UsageError(format!("provisioning file {}: {e:#}", file.display())))?;
        eprintln!(
            "edgecore: provisioning from {}: joining {} as node {node_name}",
            file.display(),
            p.cloud
        );
        crate::join::join(crate::join::JoinArgs {
            cloud: p.cloud.clone(),
            token: token.trim().to_owned(),
            node_name,
            data_dir: data_dir.to_owned(),
            ws_port: p.ws_port,
            cert_port: p.cert_port,
            project_id: p.project_id.clone(),
            cri_endpoint: p.cri_endpoint.clone(),
            runtime: p.runtime.clone(),
            oci_runtime: p.oci_runtime.clone(),
        })
        .context("provisioning: the join failed")?;
        sync_dir(data_dir)?;
    }
    // Steps 2 and 3 (see the module comment); also what a boot after a cut between them does.
    let path = data_dir.join(CONFIG_FILE);
    let cfg = Config::load(&path)?;
    merged(cfg, &p.config)?.save(&path)?;
    sync_dir(data_dir)?;
    // A token that cannot be removed (a boot partition mounted read-only) does not stop the
    // gateway: it is enrolled, and the token expires on its own. Every boot says so again.
    match remove_token(&file, &text, token_path.as_deref()) {
        Ok(from) => eprintln!(
            "edgecore: provisioned; the token was removed from {}",
            from.display()
        ),
        Err(e) => eprintln!(
            "edgecore: warning: enrolled, but the token is still there: {e:#}; remove it by hand"
        ),
    }
    Ok(())
}

/// `cfg` with the provisioning file's `config` keys set, checked as a loaded config is.
fn merged(cfg: Config, overrides: &serde_json::Map<String, Value>) -> anyhow::Result<Config> {
    if overrides.is_empty() {
        return Ok(cfg);
    }
    let mut v = serde_json::to_value(&cfg)?;
    for (k, val) in overrides {
        v[k] = val.clone();
    }
    let cfg: Config = serde_json::from_value(v).context("\"config\" does not fit edgecore.json")?;
    cfg.validate().context("\"config\"")?;
    Ok(cfg)
}

/// Deletes the token file, or rewrites the provisioning file without its `token`. Returns
/// the file the token was removed from.
fn remove_token(file: &Path, text: &[u8], token_file: Option<&Path>) -> anyhow::Result<PathBuf> {
    let target = match token_file {
        Some(t) => {
            std::fs::remove_file(t)
                .with_context(|| format!("cannot remove the token file {}", t.display()))?;
            t.to_owned()
        }
        None => {
            let mut v: Value = serde_json::from_slice(text)?;
            if let Some(o) = v.as_object_mut() {
                o.remove("token");
            }
            let mode = {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata(file)?.permissions().mode() & 0o7777
            };
            crate::write_atomic(file, serde_json::to_string_pretty(&v)?.as_bytes(), mode)?;
            file.to_owned()
        }
    };
    if let Some(dir) = target.parent() {
        sync_dir(dir)?;
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> anyhow::Result<Provisioning> {
        Provisioning::parse(s.as_bytes())
    }

    #[test]
    fn the_file_needs_a_cloud_one_token_and_at_most_one_name() {
        let p = parse(r#"{"cloud":"10.0.2.2","token":"t"}"#).unwrap();
        assert_eq!((p.ws_port, p.cert_port), (10000, 10002));
        assert_eq!(p.rule().unwrap(), NameRule::Hostname);
        for (bad, why) in [
            (r#"{"token":"t"}"#, "missing field `cloud`"),
            (r#"{"cloud":"c"}"#, "needs \"token\" or \"token_file\""),
            (r#"{"cloud":"c","token":"t","token_file":"f"}"#, "not both"),
            (
                r#"{"cloud":"c","token":"t","node_name":"a","node_name_from":"mac"}"#,
                "not both",
            ),
            (
                r#"{"cloud":"c","token":"t","node_name_from":"serial"}"#,
                "is not a rule",
            ),
            (
                r#"{"cloud":"c","token":"t","node_name":"Gw_1"}"#,
                "lower-case",
            ),
            (
                r#"{"cloud":"c","token":"t","tokn":"x"}"#,
                "unknown field `tokn`",
            ),
            (
                r#"{"cloud":"c","token":"t","config":{"cloud":{}}}"#,
                "may not set \"cloud\"",
            ),
        ] {
            let e = format!("{:#}", parse(bad).unwrap_err());
            assert!(e.contains(why), "{bad}: {e}");
        }
        let p = parse(r#"{"cloud":"c","token_file":"tok","node_name_from":"mac:eth1"}"#).unwrap();
        assert_eq!(p.rule().unwrap(), NameRule::Mac(Some("eth1".into())));
        assert_eq!(
            p.token_path(Path::new("/boot/edgecore-provision.json")),
            Some(PathBuf::from("/boot/tok"))
        );
    }

    #[test]
    fn names_come_from_the_mac_the_machine_id_or_the_host_name() {
        let root = std::env::temp_dir().join(format!("provision-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (iface, mac, dev) in [
            ("eth0", "52:54:00:12:34:56", true),
            ("docker0", "02:42:ac:11:00:02", false),
            ("lo", "00:00:00:00:00:00", false),
        ] {
            let d = root.join("sys/class/net").join(iface);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("address"), format!("{mac}\n")).unwrap();
            if dev {
                std::fs::create_dir_all(d.join("device")).unwrap();
            }
        }
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("proc/sys/kernel")).unwrap();
        std::fs::write(
            root.join("etc/machine-id"),
            "0123456789ABCDEF0123456789abcdef\n",
        )
        .unwrap();
        std::fs::write(root.join("proc/sys/kernel/hostname"), "Gateway7\n").unwrap();

        let name = |r: NameRule, prefix: &str| node_name(&r, prefix, &root);
        assert_eq!(name(NameRule::Mac(None), "gw-").unwrap(), "gw-525400123456");
        assert_eq!(
            name(NameRule::Mac(Some("docker0".into())), "").unwrap(),
            "0242ac110002"
        );
        let e = format!(
            "{:#}",
            name(NameRule::Mac(Some("lo".into())), "").unwrap_err()
        );
        assert!(e.contains("no MAC address"), "{e}");
        let e = format!(
            "{:#}",
            name(NameRule::Mac(Some("wlan0".into())), "").unwrap_err()
        );
        assert!(e.contains("wlan0/address"), "{e}");
        assert_eq!(
            name(NameRule::MachineId, "gw-").unwrap(),
            "gw-0123456789abcdef0123456789abcdef"
        );
        assert_eq!(name(NameRule::Hostname, "").unwrap(), "gateway7");
        // A prefix that makes an invalid name is refused with the name.
        let e = format!("{:#}", name(NameRule::Hostname, "-").unwrap_err());
        assert!(e.contains("\"-gateway7\""), "{e}");
        std::fs::write(root.join("etc/machine-id"), "uninitialized\n").unwrap();
        assert!(name(NameRule::MachineId, "").is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn config_overrides_are_checked_as_edgecore_json() {
        let cfg = Config::new("n", Path::new("/d"), "c:1".into(), "c:2".into());
        let o = |s: &str| serde_json::from_str::<serde_json::Map<String, Value>>(s).unwrap();
        let c = merged(cfg.clone(), &o(r#"{"log_level":"warn","cri_endpoint":""}"#)).unwrap();
        assert_eq!(
            (c.log_level.as_str(), c.cri_endpoint.as_str()),
            ("warn", "")
        );
        assert_eq!(c.node_name, "n");
        let e = format!(
            "{:#}",
            merged(cfg.clone(), &o(r#"{"log_levl":"warn"}"#)).unwrap_err()
        );
        assert!(e.contains("log_levl"), "{e}");
        let e = format!(
            "{:#}",
            merged(cfg, &o(r#"{"heartbeat":"1h"}"#)).unwrap_err()
        );
        assert!(e.contains("heartbeat"), "{e}");
    }
    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("provision-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_bad_file_is_refused_before_anything_is_written() {
        let root = tmp("bad");
        let data = root.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let file = root.join("provision.json");
        for (text, why) in [
            ("{\"cloud\":\"c\"", "EOF while parsing"),
            (
                r#"{"cloud":"c","token":"t","node_name_from":"mac:"}"#,
                "is not a rule",
            ),
            (
                r#"{"cloud":"c","token":"t","config":{"heartbeat":"1h"}}"#,
                "heartbeat",
            ),
            (r#"{"cloud":"c","token_file":"missing"}"#, "missing"),
        ] {
            std::fs::write(&file, text).unwrap();
            let before = files(&root);
            let e = format!("{:#}", before_run(&data, Some(&file)).unwrap_err());
            assert!(e.contains(why), "{text}: {e}");
            assert_eq!(files(&root), before, "{text}");
            assert!(files(&data).is_empty());
        }
        // Named but absent, not enrolled: an error naming the file.
        let e = format!(
            "{:#}",
            before_run(&data, Some(&root.join("nope.json"))).unwrap_err()
        );
        assert!(e.contains("nope.json"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_enrolled_node_only_finishes_what_a_cut_interrupted() {
        let root = tmp("enrolled");
        let data = root.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let cfg = Config::new("gw", &data, "c:1".into(), "c:2".into());
        cfg.save(&data.join(CONFIG_FILE)).unwrap();
        // Enrolled, the token still in the file (a cut after join): no join (the cloud
        // "c" does not exist, so one would fail), the config merged, the token removed.
        let file = root.join("provision.json");
        std::fs::write(
            &file,
            r#"{"cloud":"c","token":"secret","node_name":"gw","config":{"log_level":"warn"}}"#,
        )
        .unwrap();
        before_run(&data, Some(&file)).unwrap();
        let left: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(left.get("token"), None);
        assert_eq!(left["node_name"], "gw");
        let loaded = Config::load(&data.join(CONFIG_FILE)).unwrap();
        assert_eq!(loaded.log_level, "warn");
        // A token file is deleted.
        std::fs::write(root.join("tok"), "secret\n").unwrap();
        std::fs::write(&file, r#"{"cloud":"c","token_file":"tok"}"#).unwrap();
        before_run(&data, Some(&file)).unwrap();
        assert!(!root.join("tok").exists());
        // Used up: nothing more happens, and a removed file is fine too.
        let before = files(&root);
        before_run(&data, Some(&file)).unwrap();
        assert_eq!(files(&root), before);
        std::fs::remove_file(&file).unwrap();
        before_run(&data, Some(&file)).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }
}
