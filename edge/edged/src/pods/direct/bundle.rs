//! What a container is made of: its bundle's spec from the pod's container and the image's
//! config (kubelet's rules), its root filesystem (an overlay on the image's unpacked layers),
//! and the network namespace its sandbox holds.

use std::path::{Path, PathBuf};

use oci::{BundleSpec, Mount, Network};

use super::records::SandboxRec;
use crate::pods::runtime::ContainerSpec;

/// Image config user (`uid`, `uid:gid`, or a name in the rootfs' /etc/passwd).
pub fn user(rootfs: &Path, user: &str) -> Result<(u32, u32), String> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && (f[0] == u || f[2] == u));
    let uid = match u.parse() {
        Ok(n) => n,
        Err(_) => entry
            .as_ref()
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(|| format!("user {u:?} is not in the image's /etc/passwd"))?,
    };
    let gid = match g {
        Some(g) => g
            .parse()
            .map_err(|_| format!("group {g:?} must be numeric"))?,
        None => entry.as_ref().and_then(|f| f[3].parse().ok()).unwrap_or(0),
    };
    Ok((uid, gid))
}

/// Mounts the container's root: the image's layers as the lower dir of an overlay.
pub fn mount_rootfs(lower: &Path, dir: &Path) -> Result<PathBuf, String> {
    let (rootfs, upper, work) = (dir.join("rootfs"), dir.join("upper"), dir.join("work"));
    for d in [&rootfs, &upper, &work] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let data = std::ffi::CString::new(opts).map_err(|e| e.to_string())?;
    rustix::mount::mount(
        "overlay",
        &rootfs,
        "overlay",
        rustix::mount::MountFlags::empty(),
        data.as_c_str(),
    )
    .map_err(|e| {
        format!(
            "mounting the overlay root filesystem at {}: {e}",
            rootfs.display()
        )
    })?;
    Ok(rootfs)
}

/// The bundle of container `id` of `sandbox`: the pod's spec over the image's defaults.
pub fn spec(
    id: &str,
    sandbox: &SandboxRec,
    c: &ContainerSpec,
    img: &image::Image,
    rootfs: &Path,
) -> Result<BundleSpec, String> {
    let ic = &img.config;
    // kubelet's rule: command replaces the entrypoint, args the cmd.
    let args: Vec<String> = match (c.command.is_empty(), c.args.is_empty()) {
        (false, _) => c.command.iter().chain(&c.args).cloned().collect(),
        (true, false) => ic.entrypoint.iter().chain(&c.args).cloned().collect(),
        (true, true) => ic.entrypoint.iter().chain(&ic.cmd).cloned().collect(),
    };
    if args.is_empty() {
        return Err(format!(
            "image {} has no command and the container gives none",
            img.name
        ));
    }
    let mut env: Vec<String> = ic.env.clone();
    for (k, v) in &c.env {
        env.retain(|e| e.split('=').next() != Some(k.as_str()));
        env.push(format!("{k}={v}"));
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    let (uid, gid) = user(rootfs, &ic.user)?;
    Ok(BundleSpec {
        args,
        env,
        cwd: if c.working_dir.is_empty() {
            ic.working_dir.clone()
        } else {
            c.working_dir.clone()
        },
        uid,
        gid,
        hostname: sandbox.netns.as_ref().map(|_| sandbox.name.clone()),
        network: match &sandbox.netns {
            Some(p) => Network::Joined(p.clone()),
            None => Network::Host,
        },
        mounts: c
            .mounts
            .iter()
            .map(|m| Mount {
                source: m.host_path.clone(),
                destination: m.container_path.clone(),
                read_only: m.read_only,
            })
            .collect(),
        cgroups_path: format!("/edgecore/{id}"),
        memory_limit: c.memory_limit,
        cpu_shares: c
            .cpu_millis_request
            .or(c.cpu_millis_limit)
            .map(oci::bundle::cpu_shares),
        cpu_quota: c.cpu_millis_limit.map(oci::bundle::cpu_quota),
        rootfs: "rootfs".into(),
    })
}

/// Whether `path` holds a network namespace (a bind mount of nsfs, whose device differs
/// from its directory's), not the plain file left after a reboot.
pub fn is_netns(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent().unwrap_or(Path::new("/"));
    match (std::fs::metadata(path), std::fs::metadata(dir)) {
        (Ok(f), Ok(d)) => f.dev() != d.dev(),
        _ => false,
    }
}

/// A new network namespace kept by a bind mount at `path`, its loopback up (`unshare` and
/// `ip` from util-linux and iproute2, or BusyBox's).
pub async fn netns(path: &Path) -> Result<(), String> {
    std::fs::write(path, b"").map_err(|e| format!("{}: {e}", path.display()))?;
    let mut arg = std::ffi::OsString::from("--net=");
    arg.push(path);
    let out = smol::process::Command::new("unshare")
        .arg(&arg)
        .arg("true")
        .output()
        .await
        .map_err(|e| format!("making a network namespace needs `unshare` (util-linux): {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(path);
        return Err(format!(
            "making a network namespace: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let lo = smol::process::Command::new("nsenter")
        .arg(&arg)
        .args(["ip", "link", "set", "lo", "up"])
        .output()
        .await;
    if !matches!(&lo, Ok(o) if o.status.success()) {
        log::warn!("the pod network namespace {} has no loopback (`nsenter` and `ip` are needed to bring it up)", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entrypoint: &[&str], cmd: &[&str]) -> image::Image {
        image::Image {
            name: "localhost/app:1".into(),
            manifest_digest: String::new(),
            config_digest: String::new(),
            layers: Vec::new(),
            config: image::ImageConfig {
                entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                env: vec!["PATH=/bin".into(), "MODE=image".into()],
                working_dir: "/srv".into(),
                user: String::new(),
            },
        }
    }

    fn container(command: &[&str], args: &[&str]) -> ContainerSpec {
        ContainerSpec {
            name: "app".into(),
            attempt: 0,
            image: "localhost/app:1".into(),
            pull: crate::pods::spec::PullPolicy::IfNotPresent,
            registry_auth: Vec::new(),
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            working_dir: String::new(),
            env: vec![("MODE".into(), "pod".into()), ("X".into(), "1".into())],
            mounts: vec![crate::pods::runtime::MountSpec {
                host_path: "/d/pods/u/volumes/cfg".into(),
                container_path: "/cfg".into(),
                read_only: true,
            }],
            cpu_millis_limit: Some(500),
            cpu_millis_request: Some(100),
            memory_limit: Some(32 << 20),
            log_path: "app/0.log".into(),
        }
    }

    fn sandbox(netns: Option<&str>) -> SandboxRec {
        SandboxRec {
            id: "s".into(),
            uid: "u".into(),
            name: "web".into(),
            namespace: "default".into(),
            attempt: 0,
            created_ns: 0,
            ready: true,
            netns: netns.map(str::to_owned),
        }
    }

    #[test]
    fn command_and_args_follow_kubelets_rules() {
        let img = image(&["/entry"], &["--default"]);
        let root = Path::new("/nonexistent");
        let sb = sandbox(None);
        let args =
            |c: &[&str], a: &[&str]| spec("c", &sb, &container(c, a), &img, root).unwrap().args;
        assert_eq!(args(&[], &[]), ["/entry", "--default"]);
        assert_eq!(
            args(&[], &["--mine"]),
            ["/entry", "--mine"],
            "args replace the cmd"
        );
        assert_eq!(
            args(&["/bin/sh"], &[]),
            ["/bin/sh"],
            "command replaces both"
        );
        assert_eq!(args(&["/bin/sh"], &["-c", "x"]), ["/bin/sh", "-c", "x"]);
        let none = image(&[], &[]);
        let e = spec("c", &sb, &container(&[], &[]), &none, root).unwrap_err();
        assert!(e.contains("no command"), "{e}");
    }

    #[test]
    fn env_cwd_limits_mounts_and_network_come_from_the_pod() {
        let img = image(&[], &["/x"]);
        let b = spec(
            "c1",
            &sandbox(Some("/d/netns")),
            &container(&[], &[]),
            &img,
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(
            b.env,
            ["PATH=/bin", "MODE=pod", "X=1"],
            "the pod's value wins"
        );
        assert_eq!(
            b.cwd, "/srv",
            "the image's working dir when the pod gives none"
        );
        assert_eq!(b.network, Network::Joined("/d/netns".into()));
        assert_eq!(b.hostname.as_deref(), Some("web"));
        assert_eq!(b.mounts[0].destination, "/cfg");
        assert!(b.mounts[0].read_only);
        assert_eq!(b.cpu_shares, Some(102), "from the request");
        assert_eq!(b.cpu_quota, Some(50_000), "from the limit");
        assert_eq!(b.memory_limit, Some(32 << 20));
        assert_eq!(b.cgroups_path, "/edgecore/c1");
        let host = spec(
            "c1",
            &sandbox(None),
            &container(&[], &[]),
            &img,
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!((host.network, host.hostname), (Network::Host, None));
    }

    #[test]
    fn users_resolve_numerically_or_from_the_images_passwd() {
        let root = std::env::temp_dir().join(format!("direct-user-{}", std::process::id()));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0::/:/bin/sh\napp:x:1000:1001::/:/bin/sh\n",
        )
        .unwrap();
        assert_eq!(user(&root, "").unwrap(), (0, 0));
        assert_eq!(user(&root, "app").unwrap(), (1000, 1001));
        assert_eq!(
            user(&root, "1000").unwrap(),
            (1000, 1001),
            "the passwd gid of a known uid"
        );
        assert_eq!(user(&root, "7:8").unwrap(), (7, 8));
        assert!(user(&root, "nobody").unwrap_err().contains("nobody"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
