//! The cross-built release edgecore for each gateway target starts under qemu-user.
//! Needs `cross/build.sh` first, so it is ignored by a plain `cargo test`; `scripts/test.sh`
//! runs it with `--ignored`.

use std::process::Command;

use e2e::target_root;

#[test]
#[ignore = "needs cross/build.sh; scripts/test.sh runs it"]
fn cross_built_edgecore_runs_under_qemu_user() {
    for (triple, qemu, sysroot, arch) in [
        (
            "aarch64-unknown-linux-musl",
            "qemu-aarch64",
            None,
            "aarch64",
        ),
        (
            "armv7-unknown-linux-gnueabihf",
            "qemu-arm",
            Some("/usr/arm-linux-gnueabihf"),
            "arm",
        ),
        (
            "riscv64gc-unknown-linux-gnu",
            "qemu-riscv64",
            Some("/usr/riscv64-linux-gnu"),
            "riscv64",
        ),
    ] {
        let bin = target_root().join(triple).join("release/edgecore");
        assert!(
            bin.exists(),
            "{} missing: run cross/build.sh",
            bin.display()
        );
        let mut cmd = Command::new(qemu);
        if let Some(s) = sysroot {
            cmd.args(["-L", s]);
        }
        let out = cmd
            .arg(&bin)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("{qemu}: {e}"));
        assert!(
            out.status.success(),
            "{triple}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            text.trim(),
            format!("edgecore {} ({arch})", env!("CARGO_PKG_VERSION")),
            "{triple}"
        );
        // Statically linked: nothing to load on a gateway but the binary itself.
        let file = Command::new("file").arg("-b").arg(&bin).output().unwrap();
        assert!(
            String::from_utf8_lossy(&file.stdout).contains("statically linked"),
            "{triple} is not static"
        );
        // Bad input gets the same clear exit code on the target as on the host.
        let mut bad = Command::new(qemu);
        if let Some(s) = sysroot {
            bad.args(["-L", s]);
        }
        assert_eq!(
            bad.arg(&bin)
                .arg("nonsense")
                .output()
                .unwrap()
                .status
                .code(),
            Some(2),
            "{triple}"
        );
    }
}
