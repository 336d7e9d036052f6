//! What the node object says about this machine, read from /proc, /etc and statvfs.
//!
//! Every read is best effort: a missing file gives an empty or zero value rather than an
//! error, because a minimal initramfs (no /etc/os-release, no machine-id) must still register.

use std::fs;
use std::path::Path;

/// Static facts, read once at start.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeFacts {
    pub hostname: String,
    pub cpus: u32,
    pub memory_kib: u64,
    pub ephemeral_kib: u64,
    pub kernel: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
    /// Go's GOARCH spelling (`amd64`, `arm64`, `arm`, `riscv64`).
    pub arch: &'static str,
    /// `containerd://1.6.20` once the runtime answered; empty before or without one.
    pub runtime_version: String,
    /// Pre-allocated huge pages: `(hugepages-<size> resource name, bytes)`, every size the
    /// kernel offers, 0 included, as kubelet lists them.
    pub hugepages: Vec<(String, u64)>,
}

/// `hugepages-2Mi` for 2048 kB pages (Kubernetes' `HugePageResourceName`).
pub fn hugepage_name(kib: u64) -> String {
    let (n, unit) = if kib.is_multiple_of(1024 * 1024) {
        (kib / (1024 * 1024), "Gi")
    } else if kib.is_multiple_of(1024) {
        (kib / 1024, "Mi")
    } else {
        (kib, "Ki")
    };
    format!("hugepages-{n}{unit}")
}

/// Huge page pools under `dir` (`/sys/kernel/mm/hugepages`): `hugepages-<N>kB/nr_hugepages`.
pub fn read_hugepages(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(kib) = name
            .strip_prefix("hugepages-")
            .and_then(|r| r.strip_suffix("kB"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let count: u64 = fs::read_to_string(e.path().join("nr_hugepages"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        out.push((hugepage_name(kib), kib * 1024 * count));
    }
    out.sort();
    out
}

/// A sample of what changes: used for the pressure conditions.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pressure {
    pub mem_available_kib: u64,
    pub mem_total_kib: u64,
    pub disk_available_kib: u64,
    pub disk_total_kib: u64,
}

fn read_trim(p: &str) -> String {
    fs::read_to_string(p)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Go's GOARCH for the architecture this binary was built for.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "x86" => "386",
        other => other,
    }
}

/// `(MemTotal, MemAvailable)` in KiB from /proc/meminfo text.
pub fn parse_meminfo(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

/// `PRETTY_NAME` from os-release text.
pub fn parse_os_release(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .unwrap_or_else(|| "Linux".to_owned())
}

fn disk_kib(path: &Path) -> (u64, u64) {
    match rustix::fs::statvfs(path) {
        Ok(s) => {
            let kib = |blocks: u64| blocks.saturating_mul(s.f_frsize) / 1024;
            (kib(s.f_bavail), kib(s.f_blocks))
        }
        Err(_) => (0, 0),
    }
}

/// Reads the static facts. `data_dir` decides which filesystem is "ephemeral storage".
pub fn read_facts(data_dir: &Path) -> NodeFacts {
    let (memory_kib, _) = parse_meminfo(&read_trim("/proc/meminfo"));
    let os = fs::read_to_string("/etc/os-release")
        .or_else(|_| fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    NodeFacts {
        hostname: read_trim("/proc/sys/kernel/hostname"),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        memory_kib,
        ephemeral_kib: disk_kib(data_dir).1,
        kernel: read_trim("/proc/sys/kernel/osrelease"),
        os_image: parse_os_release(&os),
        machine_id: read_trim("/etc/machine-id"),
        boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
        arch: go_arch(),
        runtime_version: String::new(),
        hugepages: read_hugepages(Path::new("/sys/kernel/mm/hugepages")),
    }
}

/// Samples memory and disk headroom.
pub fn read_pressure(data_dir: &Path) -> Pressure {
    let (mem_total_kib, mem_available_kib) = parse_meminfo(&read_trim("/proc/meminfo"));
    let (disk_available_kib, disk_total_kib) = disk_kib(data_dir);
    Pressure {
        mem_available_kib,
        mem_total_kib,
        disk_available_kib,
        disk_total_kib,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo_and_os_release() {
        let m = "MemTotal:       24684092 kB\nMemFree:  100 kB\nMemAvailable:   24000000 kB\n";
        assert_eq!(parse_meminfo(m), (24684092, 24000000));
        assert_eq!(parse_meminfo(""), (0, 0));
        assert_eq!(
            parse_os_release("ID=debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(parse_os_release(""), "Linux");
    }

    #[test]
    fn hugepage_pools() {
        assert_eq!(hugepage_name(2048), "hugepages-2Mi");
        assert_eq!(hugepage_name(1024 * 1024), "hugepages-1Gi");
        assert_eq!(hugepage_name(64), "hugepages-64Ki");
        let dir = std::env::temp_dir().join(format!("hp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for (size, n) in [("2048kB", "3"), ("1048576kB", "0")] {
            let d = dir.join(format!("hugepages-{size}"));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("nr_hugepages"), n).unwrap();
        }
        fs::create_dir_all(dir.join("other")).unwrap();
        assert_eq!(
            read_hugepages(&dir),
            [
                ("hugepages-1Gi".to_owned(), 0),
                ("hugepages-2Mi".to_owned(), 3 * 2048 * 1024)
            ]
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn reads_this_machine() {
        let f = read_facts(Path::new("/"));
        assert!(f.cpus >= 1);
        assert!(f.memory_kib > 0);
        assert!(!f.kernel.is_empty());
        assert_eq!(f.arch, go_arch());
    }
}
