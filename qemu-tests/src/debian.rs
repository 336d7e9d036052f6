//! What a test VM boots, fetched from Debian: the generic kernel of an architecture with the
//! modules its virtio network needs, and busybox-static. `apt-get download` fetches the
//! packages (the foreign architecture must be enabled), `dpkg-deb -x` unpacks them, and only
//! the few files a VM needs are kept in a cache directory, one directory per package version,
//! so later runs (and runs without a network) reuse them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Arch;

/// A kernel with the modules to load, in load order, and a static busybox.
#[derive(Debug, Clone)]
pub struct GuestKit {
    /// `linux-image-…_<version>`, for the report.
    pub kernel_package: String,
    pub kernel: PathBuf,
    /// `(module name, file)`, dependencies first.
    pub modules: Vec<(String, PathBuf)>,
    pub busybox: PathBuf,
}

impl GuestKit {
    /// The modules to load, in order, through `last` (with its dependencies), or all of them
    /// when `last` is `None`. A wanted module's dependencies come before it in the load order,
    /// so what the first wanted modules need is a prefix of it.
    pub fn modules_through(&self, last: Option<&str>) -> &[(String, PathBuf)] {
        match last.and_then(|l| self.modules.iter().position(|(m, _)| m == l)) {
            Some(i) => &self.modules[..=i],
            None => &self.modules,
        }
    }
}

/// Makes sure `cache/<arch>/` holds the current kernel and busybox of `arch` and returns them.
/// `modules` are the modules the guest loads (with their dependencies, found in modules.dep;
/// ones built into the kernel are skipped).
pub fn guest_kit(arch: &Arch, cache: &Path, modules: &[&str]) -> Result<GuestKit, String> {
    let dir = cache.join(arch.debian);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let kernel_pkg = resolve(&format!("{}:{}", arch.kernel_meta, arch.debian))
        .and_then(|(_, deps)| {
            deps.into_iter()
                .find(|d| d.starts_with("linux-image-"))
                .ok_or_else(|| format!("{} depends on no linux-image package", arch.kernel_meta))
        })
        .and_then(|name| Ok((resolve(&format!("{name}:{}", arch.debian))?.0, name)));
    let kernel_dir = match kernel_pkg {
        Ok((version, name)) => {
            let d = dir.join(format!("{name}_{version}"));
            // A cached kernel fetched for another module set is fetched again.
            let same_modules = std::fs::read_to_string(d.join("modules.wanted"))
                .is_ok_and(|w| w == modules.join("\n"));
            if !d.join("complete").exists() || !same_modules {
                fetch_kernel(arch, &name, &d, modules)?;
                prune(&dir, "linux-image-", &d);
            }
            d
        }
        // No package index (offline, or the architecture not enabled): a kernel cached
        // earlier still does.
        Err(e) => newest(&dir, "linux-image-").ok_or(e)?,
    };
    let busybox_dir = match resolve(&format!("busybox-static:{}", arch.debian)) {
        Ok((version, _)) => {
            let d = dir.join(format!("busybox-static_{version}"));
            if !d.join("complete").exists() {
                fetch_busybox(arch, &d)?;
                prune(&dir, "busybox-static_", &d);
            }
            d
        }
        Err(e) => newest(&dir, "busybox-static_").ok_or(e)?,
    };
    let order = std::fs::read_to_string(kernel_dir.join("modules.load"))
        .map_err(|e| format!("{}: {e}", kernel_dir.display()))?;
    Ok(GuestKit {
        kernel_package: kernel_dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        kernel: kernel_dir.join("vmlinuz"),
        modules: order
            .lines()
            .filter(|l| !l.is_empty())
            .map(|m| (m.to_owned(), kernel_dir.join(format!("{m}.ko"))))
            .collect(),
        busybox: busybox_dir.join("busybox"),
    })
}

/// `apt-cache show`: the candidate version of `pkg` (`name:arch`) and the names it depends on.
pub(crate) fn resolve(pkg: &str) -> Result<(String, Vec<String>), String> {
    let out =
        run(Command::new("apt-cache").args(["show", "--no-all-versions", pkg])).map_err(|e| {
            let arch = pkg.rsplit(':').next().unwrap_or_default();
            format!(
                "{e}\nIs the {arch} architecture enabled? `dpkg --add-architecture {arch} && \
                 apt-get update` (scripts/test.sh does this)"
            )
        })?;
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .map(str::to_owned)
    };
    let version = field("Version:").ok_or_else(|| format!("apt-cache show {pkg}: no Version"))?;
    let deps = field("Depends:")
        .unwrap_or_default()
        .split(',')
        .filter_map(|d| d.split_whitespace().next().map(str::to_owned))
        .collect();
    Ok((version, deps))
}

pub(crate) fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{:?} {:?} failed: {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Downloads and unpacks `pkg` into a fresh scratch directory under `into`'s parent.
fn download(pkg: &str, into: &Path) -> Result<PathBuf, String> {
    download_all(&[pkg.to_owned()], into)
}

/// Downloads `pkgs` and unpacks them all into one tree, `<scratch>/root`.
pub(crate) fn download_all(pkgs: &[String], into: &Path) -> Result<PathBuf, String> {
    let scratch = into.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    eprintln!("qemu-tests: downloading {}", pkgs.join(" "));
    // A stalled mirror must not hang the test: bounded per-connection timeouts, a few retries.
    run(Command::new("apt-get")
        .args([
            "-o",
            "Acquire::http::Timeout=30",
            "-o",
            "Acquire::https::Timeout=30",
        ])
        .args(["-o", "Acquire::Retries=3", "download", "-q"])
        .args(pkgs)
        .current_dir(&scratch))?;
    let debs: Vec<PathBuf> = std::fs::read_dir(&scratch)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    if debs.len() != pkgs.len() {
        return Err(format!(
            "apt-get download {} left {} .deb files",
            pkgs.join(" "),
            debs.len()
        ));
    }
    let root = scratch.join("root");
    for deb in debs {
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    }
    Ok(scratch)
}

fn fetch_kernel(arch: &Arch, name: &str, into: &Path, wanted: &[&str]) -> Result<(), String> {
    let scratch = download(&format!("{name}:{}", arch.debian), into)?;
    let root = scratch.join("root");
    let vmlinuz = find_file(&root.join("boot"), "vmlinuz-")
        .ok_or_else(|| format!("{name} has no /boot/vmlinuz-*"))?;
    // The package ships no modules.dep (depmod makes it on install): dependencies come from
    // each module's own `.modinfo` (`depends=`), files from a walk of the module tree.
    let moddir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .filter_map(|d| std::fs::read_dir(root.join(d)).ok())
        .flat_map(|d| d.filter_map(Result::ok))
        .map(|e| e.path())
        .find(|p| p.join("kernel").is_dir())
        .ok_or_else(|| format!("{name} has no lib/modules/<version>/kernel"))?;
    let mut files = BTreeMap::new();
    index_modules(&moddir.join("kernel"), &mut files);
    let builtin = std::fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    let builtin: Vec<String> = builtin.lines().map(module_name).collect();
    let order = load_order(wanted, |m| {
        if builtin.iter().any(|b| b == m) {
            return Ok(None);
        }
        let path = files
            .get(m)
            .ok_or_else(|| format!("module {m} is neither in {name} nor built into it"))?;
        let bytes = read_module(path)?;
        Ok(Some((path.clone(), modinfo_depends(&bytes))))
    })?;

    let staged = into.with_extension("staged");
    let _ = std::fs::remove_dir_all(&staged);
    std::fs::create_dir_all(&staged).map_err(|e| e.to_string())?;
    copy(&vmlinuz, &staged.join("vmlinuz"))?;
    let mut names = String::new();
    for (module, src) in &order {
        std::fs::write(staged.join(format!("{module}.ko")), read_module(src)?)
            .map_err(|e| e.to_string())?;
        names.push_str(module);
        names.push('\n');
    }
    std::fs::write(staged.join("modules.load"), names).map_err(|e| e.to_string())?;
    std::fs::write(staged.join("modules.wanted"), wanted.join("\n")).map_err(|e| e.to_string())?;
    finish(&scratch, &staged, into)
}

fn fetch_busybox(arch: &Arch, into: &Path) -> Result<(), String> {
    let scratch = download(&format!("busybox-static:{}", arch.debian), into)?;
    let staged = into.with_extension("staged");
    let _ = std::fs::remove_dir_all(&staged);
    std::fs::create_dir_all(&staged).map_err(|e| e.to_string())?;
    let bin = ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| scratch.join("root").join(p))
        .find(|p| p.exists())
        .ok_or("busybox-static has no busybox binary")?;
    copy(&bin, &staged.join("busybox"))?;
    finish(&scratch, &staged, into)
}

/// Marks `staged` complete and moves it into place in one rename, then drops the scratch.
pub(crate) fn finish(scratch: &Path, staged: &Path, into: &Path) -> Result<(), String> {
    std::fs::write(staged.join("complete"), b"").map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(into);
    std::fs::rename(staged, into).map_err(|e| format!("{}: {e}", into.display()))?;
    let _ = std::fs::remove_dir_all(scratch);
    Ok(())
}

pub(crate) fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}

/// The entries of `dir` whose names start with `prefix` (none if `dir` cannot be read).
fn entries(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect()
}

fn find_file(dir: &Path, prefix: &str) -> Option<PathBuf> {
    entries(dir, prefix).into_iter().next()
}

/// Removes other complete versions beside `keep` (an old kernel is 10 MB of cache).
pub(crate) fn prune(dir: &Path, prefix: &str, keep: &Path) {
    for p in entries(dir, prefix) {
        if p != keep {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

/// The most recently completed cached directory starting with `prefix`.
pub(crate) fn newest(dir: &Path, prefix: &str) -> Option<PathBuf> {
    entries(dir, prefix)
        .into_iter()
        .filter_map(|p| {
            let done = p
                .join("complete")
                .metadata()
                .and_then(|m| m.modified())
                .ok()?;
            Some((done, p))
        })
        .max()
        .map(|(_, p)| p)
}

/// A module's name from its file name: `virtio_net.ko.xz` → `virtio_net` (dashes are
/// underscores, as the kernel sees it).
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

fn index_modules(dir: &Path, into: &mut BTreeMap<String, PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            index_modules(&p, into);
        } else if p.to_string_lossy().contains(".ko") {
            into.insert(module_name(&p.to_string_lossy()), p);
        }
    }
}

/// A module file's bytes, decompressed when it is `.ko.xz` (Debian from 13 on).
fn read_module(path: &Path) -> Result<Vec<u8>, String> {
    let name = path.to_string_lossy();
    if name.ends_with(".ko") {
        std::fs::read(path).map_err(|e| format!("{name}: {e}"))
    } else if name.ends_with(".ko.xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(path)
            .output()
            .map_err(|e| format!("xz: {e}"))?;
        if !out.status.success() {
            return Err(format!("xz -dc {name} failed"));
        }
        Ok(out.stdout)
    } else {
        Err(format!(
            "{name}: only plain and xz-compressed modules are supported"
        ))
    }
}

/// The `depends=` entry of a module's `.modinfo` section (NUL-separated `key=value` strings).
pub fn modinfo_depends(module: &[u8]) -> Vec<String> {
    module
        .split(|b| *b == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|d| {
            String::from_utf8_lossy(d)
                .split(',')
                .filter(|m| !m.is_empty())
                .map(|m| m.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default()
}

/// The modules to load for `wanted`, dependencies first. `lookup` gives a module's file and
/// dependencies, or `None` when it is built into the kernel.
pub fn load_order<P: Clone>(
    wanted: &[&str],
    mut lookup: impl FnMut(&str) -> Result<Option<(P, Vec<String>)>, String>,
) -> Result<Vec<(String, P)>, String> {
    let mut order: Vec<(String, P)> = Vec::new();
    let mut done: Vec<String> = Vec::new();
    // Depth-first with an explicit stack: (module, its dependencies already visited?).
    let mut stack: Vec<(String, bool)> = wanted
        .iter()
        .rev()
        .map(|w| (w.replace('-', "_"), false))
        .collect();
    let mut found: BTreeMap<String, Option<(P, Vec<String>)>> = BTreeMap::new();
    while let Some((m, expanded)) = stack.pop() {
        if done.contains(&m) {
            continue;
        }
        if stack.len() > 256 {
            return Err(format!("module dependencies around {m} loop"));
        }
        if !found.contains_key(&m) {
            let info = lookup(&m)?;
            found.insert(m.clone(), info);
        }
        match &found[&m] {
            None => done.push(m),
            Some((path, deps)) if expanded || deps.iter().all(|d| done.contains(d)) => {
                order.push((m.clone(), path.clone()));
                done.push(m);
            }
            Some((_, deps)) => {
                let deps = deps.clone();
                stack.push((m, true));
                stack.extend(deps.into_iter().rev().map(|d| (d, false)));
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_load_after_their_dependencies_and_builtins_are_skipped() {
        let table: BTreeMap<&str, (&str, &[&str])> = [
            ("virtio_net", ("net/virtio_net.ko", &["net_failover"][..])),
            ("net_failover", ("net/net_failover.ko", &["failover"][..])),
            ("failover", ("core/failover.ko", &[][..])),
            ("virtio_mmio", ("virtio/virtio_mmio.ko.xz", &["virtio"][..])),
        ]
        .into_iter()
        .collect();
        let lookup = |m: &str| match m {
            "virtio" => Ok(None),
            _ => table
                .get(m)
                .map(|(p, d)| Some((p.to_string(), d.iter().map(|s| s.to_string()).collect())))
                .ok_or_else(|| format!("no module {m}")),
        };
        let order = load_order(&["virtio_mmio", "virtio_net", "virtio"], lookup).unwrap();
        let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["virtio_mmio", "failover", "net_failover", "virtio_net"]
        );
        assert_eq!(order[0].1, "virtio/virtio_mmio.ko.xz");
        assert!(load_order(&["nosuch"], lookup)
            .unwrap_err()
            .contains("nosuch"));
    }

    #[test]
    fn depends_comes_from_modinfo() {
        let modinfo = b"\0license=GPL\0depends=net_failover,virtio-ring\0name=virtio_net\0";
        assert_eq!(modinfo_depends(modinfo), ["net_failover", "virtio_ring"]);
        assert!(modinfo_depends(b"\0depends=\0name=failover\0").is_empty());
    }
}
