//! `edgecore`: the edge agent binary. Parses the command line, then either enrolls with a cloud
//! (`join`) or runs the static module table on one single-threaded executor (`run`).

#![forbid(unsafe_code)]

mod certs;
mod config;
#[cfg(feature = "direct")]
mod image_cmd;
mod join;
mod meta;
mod provision;
mod run;
mod tls;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use lexopt::prelude::*;
use support::cli::{duration, text, usage, UsageError};

const USAGE: &str = "\
edgecore: the edge agent of a KubeEdge-compatible edge system

USAGE:
    edgecore join --cloud <HOST> --token <TOKEN> [--node-name <NAME>] [--data-dir <DIR>] [--force]
    edgecore run [--data-dir <DIR> | --config <FILE>] [--provision <FILE>]
    edgecore meta list [pods|configmaps|secrets] [--data-dir <DIR>] [-o json]
    edgecore meta get <kind> <namespace>/<name> [--data-dir <DIR>]
    edgecore meta check [--data-dir <DIR>]
    edgecore image import <ARCHIVE> [--name <IMAGE>] [--data-dir <DIR>]
    edgecore image list [--data-dir <DIR>]
    edgecore --version

COMMANDS:
    join    Enroll with a cloud: check its CA against the token, get a node certificate
            and write <data-dir>/edgecore.json. Nothing is written unless every step works.
            Refuses to replace a working enrollment unless --force is given.
    run     Connect to the cloud, register this node and keep it reported Ready.
            Reconnects on its own; SIGTERM or SIGINT closes the tunnel cleanly.
            Not enrolled yet and a provisioning file found (--provision, else
            /boot/edgecore-provision.json, else /etc/edgecore/provision.json): joins from
            it once and removes its token first.
    meta    Show what MetaManager stored from the cloud (works while edgecore runs, and
            with no cloud at all); `check` verifies every record's checksum. A corrupt
            record is named on stderr and makes the command exit 1.
    image   The image store of the direct runtime: `import` an oci-archive or
            docker-archive tarball (digests verified; works while edgecore runs), `list`.

JOIN OPTIONS:
    --cloud <HOST>          Address or host name of cloudcore (no port)
    --token <TOKEN>         Enrollment token from `cloudcore token`
    --token-file <FILE>     Read the token from a file instead
    --node-name <NAME>      Node name (default: this machine's host name)
    --data-dir <DIR>        Where to keep certificates and config [default: /var/lib/edgecore]
    --ws-port <PORT>        CloudHub WebSocket port [default: 10000]
    --cert-port <PORT>      CloudHub certificate port [default: 10002]
    --project-id <ID>       Project id in the tunnel URL [default: upstream's]
    --cri-endpoint <URL>    Container runtime socket, unix:///path; an empty value runs no pods
                            [default: unix:///run/containerd/containerd.sock]
    --runtime <cri|direct>  How pods run: through the CRI socket, or with no daemon,
                            edgecore running OCI bundles itself [default: cri]
    --oci-runtime <PATH>    The OCI runtime binary of `direct` (crun; runc is accepted)
                            [default: /usr/bin/crun]
    --force                 Enroll again over a working enrollment (new key and certificate)

RUN OPTIONS:
    --data-dir <DIR>        Data dir holding edgecore.json [default: /var/lib/edgecore]
    --config <FILE>         Config file (overrides --data-dir)
    --provision <FILE>      Provisioning file to enroll from when not enrolled yet
    --heartbeat <DURATION>  Keepalive period, e.g. 15s (overrides the config)
    --status-interval <D>   Node status period (overrides the config)
    --lease-interval <D>    Node lease renewal period (overrides the config)
    --log-level <LEVEL>     error, warn, info, debug or trace (overrides the config)

EXIT CODES:
    0 success or clean shutdown, 1 runtime failure, 2 bad command line or config
";

/// Writes a file atomically (see `support::write_atomic`), naming the path on failure.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    support::write_atomic(path, data, mode)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_default()
}

fn cmd_join(mut p: lexopt::Parser) -> anyhow::Result<()> {
    let (mut cloud, mut token, mut node, mut dir) = (None, None, None, None);
    let (mut ws_port, mut cert_port, mut project, mut cri) = (10000u16, 10002u16, None, None);
    let (mut runtime, mut oci_runtime) = (None, None);
    let mut force = false;
    while let Some(arg) = p.next()? {
        match arg {
            Long("cloud") => cloud = Some(text(p.value()?)?),
            Long("token") => token = Some(text(p.value()?)?),
            Long("token-file") => {
                let f = PathBuf::from(p.value()?);
                token = Some(
                    std::fs::read_to_string(&f)
                        .with_context(|| format!("cannot read token file {}", f.display()))?,
                );
            }
            Long("node-name") => node = Some(text(p.value()?)?),
            Long("data-dir") => dir = Some(PathBuf::from(p.value()?)),
            Long("ws-port") => ws_port = p.value()?.parse()?,
            Long("cert-port") => cert_port = p.value()?.parse()?,
            Long("project-id") => project = Some(text(p.value()?)?),
            Long("cri-endpoint") => cri = Some(text(p.value()?)?),
            Long("runtime") => runtime = Some(text(p.value()?)?),
            Long("oci-runtime") => oci_runtime = Some(PathBuf::from(p.value()?)),
            Long("force") => force = true,
            Long("help") | Short('h') => {
                print!("{USAGE}");
                return Ok(());
            }
            _ => return Err(UsageError(arg.unexpected().to_string()).into()),
        }
    }
    let Some(cloud) = cloud else {
        return usage("join needs --cloud <HOST>");
    };
    let Some(token) = token else {
        return usage("join needs --token <TOKEN> or --token-file <FILE>");
    };
    let node_name = node.unwrap_or_else(hostname);
    let data_dir = dir.unwrap_or_else(|| PathBuf::from(config::DEFAULT_DATA_DIR));
    if let Some(enrolled) = provision::working_enrollment(&data_dir).filter(|_| !force) {
        bail!(
            "{} already holds a working enrollment ({enrolled}); joining again replaces its key \
             and certificate: pass --force to do that",
            data_dir.display()
        );
    }
    join::join(join::JoinArgs {
        cloud,
        token: token.trim().to_owned(),
        node_name,
        data_dir,
        ws_port,
        cert_port,
        project_id: project,
        cri_endpoint: cri,
        runtime,
        oci_runtime,
    })
}

fn cmd_run(mut p: lexopt::Parser) -> anyhow::Result<()> {
    let (mut dir, mut file, mut provision) = (None, None, None);
    let (mut heartbeat, mut status, mut lease, mut level) = (None, None, None, None);
    while let Some(arg) = p.next()? {
        match arg {
            Long("data-dir") => dir = Some(PathBuf::from(p.value()?)),
            Long("config") => file = Some(PathBuf::from(p.value()?)),
            Long("provision") => provision = Some(PathBuf::from(p.value()?)),
            Long("heartbeat") => heartbeat = Some(duration(p.value()?)?),
            Long("status-interval") => status = Some(duration(p.value()?)?),
            Long("lease-interval") => lease = Some(duration(p.value()?)?),
            Long("log-level") => level = Some(text(p.value()?)?),
            Long("help") | Short('h') => {
                print!("{USAGE}");
                return Ok(());
            }
            _ => return Err(UsageError(arg.unexpected().to_string()).into()),
        }
    }
    let named_config = file.is_some();
    let path = file.unwrap_or_else(|| {
        dir.unwrap_or_else(|| PathBuf::from(config::DEFAULT_DATA_DIR))
            .join(config::CONFIG_FILE)
    });
    // First boot: enroll from a provisioning file (a config named by --config is not one
    // provisioning writes, so it is left alone unless --provision asks for it).
    if !named_config || provision.is_some() {
        let data_dir = path.parent().unwrap_or(Path::new("."));
        provision::before_run(data_dir, provision.as_deref())?;
    }
    let mut cfg = config::Config::load(&path).map_err(|e| UsageError(format!("{e:#}")))?;
    if let Some(h) = heartbeat {
        cfg.heartbeat = h;
    }
    if let Some(s) = status {
        cfg.status_interval = s;
    }
    if let Some(l) = lease {
        cfg.lease_interval = l;
    }
    if let Some(l) = level {
        cfg.log_level = l;
    }
    cfg.validate().map_err(|e| UsageError(format!("{e:#}")))?;
    run::run(cfg)
}

fn real_main() -> anyhow::Result<()> {
    let mut p = lexopt::Parser::from_env();
    match p.next()? {
        Some(Value(cmd)) => match cmd.to_str() {
            Some("join") => {
                support::init_logger(log::LevelFilter::Warn);
                cmd_join(p)
            }
            Some("run") => cmd_run(p),
            Some("meta") => meta::cmd_meta(p),
            #[cfg(feature = "direct")]
            Some("image") => image_cmd::cmd_image(p),
            #[cfg(not(feature = "direct"))]
            Some("image") => usage("this edgecore was built without the direct runtime (feature `direct`), which `image` is for"),
            _ => usage(format!("unknown command {cmd:?}")),
        },
        Some(Long("version")) | Some(Short('V')) => {
            println!(
                "edgecore {} ({})",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::ARCH
            );
            Ok(())
        }
        Some(Long("help")) | Some(Short('h')) => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => usage(other.unexpected().to_string()),
        None => {
            eprint!("{USAGE}");
            bail!(UsageError("a command is needed".into()))
        }
    }
}

fn main() -> ExitCode {
    support::cli::exit("edgecore", real_main())
}
