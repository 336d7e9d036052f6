//! Debian's crun for a guest, with the shared libraries it loads. crun is dynamically linked
//! (libsystemd, libseccomp, libcap, libyajl and what those need), so the guest gets its whole
//! ELF closure: every `DT_NEEDED` entry, followed from crun through the libraries, found in the
//! unpacked packages of [`CRUN_PACKAGES`] and placed where the dynamic loader looks (the
//! multiarch directory the package put it in), plus the loader at crun's `PT_INTERP` path.
//! Cached like the kernels: one directory per crun version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::debian::{copy, download_all, finish, newest, prune, resolve, run};
use crate::Arch;

/// crun and the packages of its shared libraries (Debian 12). A library missing here is an
/// error naming it, so a Debian update that adds one is caught at once.
pub const CRUN_PACKAGES: &[&str] = &[
    "crun",
    "libc6",
    "libcap2",
    "libseccomp2",
    "libsystemd0",
    "libyajl2",
    "libgcrypt20",
    "libgpg-error0",
    "liblz4-1",
    "liblzma5",
    "libzstd1",
];

/// Where crun lives in the guest (the edgecore config's `oci_runtime`).
pub const GUEST_CRUN: &str = "/bin/crun";

/// Files to put in the guest: `(guest path, cached file)`.
#[derive(Debug, Clone)]
pub struct CrunKit {
    pub files: Vec<(String, PathBuf)>,
}

const LIST: &str = "files.list";

/// Makes sure `cache/<arch>/crun_<version>` holds crun and its libraries and returns them.
pub fn crun_kit(arch: &Arch, cache: &Path) -> Result<CrunKit, String> {
    let dir = cache.join(arch.debian);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let d = match resolve(&format!("crun:{}", arch.debian)) {
        Ok((version, _)) => {
            let d = dir.join(format!("crun_{version}"));
            if !d.join("complete").exists() {
                fetch(arch, &d)?;
                prune(&dir, "crun_", &d);
            }
            d
        }
        Err(e) => newest(&dir, "crun_").ok_or(e)?,
    };
    let list =
        std::fs::read_to_string(d.join(LIST)).map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(CrunKit {
        files: list
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(guest, file)| (guest.to_owned(), d.join(file)))
            .collect(),
    })
}

fn fetch(arch: &Arch, into: &Path) -> Result<(), String> {
    let pkgs: Vec<String> = CRUN_PACKAGES
        .iter()
        .map(|p| format!("{p}:{}", arch.debian))
        .collect();
    let scratch = download_all(&pkgs, into)?;
    let root = scratch.join("root");
    let crun = root.join("usr/bin/crun");
    let staged = into.with_extension("staged");
    let _ = std::fs::remove_dir_all(&staged);
    std::fs::create_dir_all(&staged).map_err(|e| e.to_string())?;

    // Every shared object of the packages by file name → its path relative to the root.
    let mut libs = BTreeMap::new();
    for d in ["lib", "usr/lib"] {
        index_libs(&root, &root.join(d), &mut libs);
    }
    let mut list = format!("{GUEST_CRUN}\tcrun\n");
    copy(&crun, &staged.join("crun"))?;
    let interp = interpreter(&crun)?;
    let mut todo = vec![crun];
    let mut done: Vec<String> = Vec::new();
    while let Some(elf) = todo.pop() {
        for name in needed(&elf)? {
            if done.contains(&name) {
                continue;
            }
            if done.len() > 64 {
                return Err("crun's libraries need more than 64 others: a loop?".into());
            }
            let rel: &PathBuf = libs.get(&name).ok_or_else(|| {
                format!(
                    "{name}, needed by {}, is in none of {CRUN_PACKAGES:?}",
                    elf.display()
                )
            })?;
            // /usr/lib/<triple> and /lib/<triple> are one directory in a merged-/usr
            // system; the guest has only /lib.
            let guest_dir = Path::new("/").join(rel.strip_prefix("usr").unwrap_or(rel));
            let guest_dir = guest_dir.parent().unwrap_or(Path::new("/lib"));
            list.push_str(&format!("{}/{name}\t{name}\n", guest_dir.display()));
            if interp.ends_with(&name) && Path::new(&interp) != guest_dir.join(&name) {
                list.push_str(&format!("{interp}\t{name}\n"));
            }
            copy(&root.join(rel), &staged.join(&name))?;
            done.push(name);
            todo.push(staged.join(done.last().unwrap()));
        }
    }
    std::fs::write(staged.join(LIST), list).map_err(|e| e.to_string())?;
    finish(&scratch, &staged, into)
}

fn index_libs(root: &Path, dir: &Path, into: &mut BTreeMap<String, PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        // Symlinks (libfoo.so.1 → libfoo.so.1.2.3) count: DT_NEEDED names the link.
        if p.is_dir() && !p.is_symlink() {
            index_libs(root, &p, into);
        } else if name.contains(".so") {
            if let Ok(rel) = p.strip_prefix(root) {
                into.entry(name).or_insert_with(|| rel.to_owned());
            }
        }
    }
}

fn readelf(args: &[&str], elf: &Path) -> Result<String, String> {
    run(Command::new("readelf").args(args).arg(elf))
        .map_err(|e| format!("{e} (readelf comes with binutils)"))
}

/// The `DT_NEEDED` entries of `elf`.
fn needed(elf: &Path) -> Result<Vec<String>, String> {
    Ok(readelf(&["-d", "-W"], elf)?
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next().map(str::to_owned))
        .collect())
}

/// The program interpreter (`PT_INTERP`) of `elf`.
fn interpreter(elf: &Path) -> Result<String, String> {
    readelf(&["-l", "-W"], elf)?
        .lines()
        .find_map(|l| {
            l.split("program interpreter: ")
                .nth(1)?
                .split(']')
                .next()
                .map(str::to_owned)
        })
        .ok_or_else(|| format!("{} has no program interpreter", elf.display()))
}
