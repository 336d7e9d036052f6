//! A Linux initramfs: an uncompressed cpio archive in the kernel's "newc" format, written
//! directly (no `cpio` tool, no root needed for the device node), so building one per test run
//! takes milliseconds.

/// Builds the archive entry by entry; parents must be added before their children.
#[derive(Debug, Default)]
pub struct Initramfs {
    out: Vec<u8>,
    ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Initramfs {
    pub fn new() -> Initramfs {
        Initramfs::default()
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.entry(path, S_IFDIR | mode, 2, (0, 0), b"")
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.entry(path, S_IFREG | mode, 1, (0, 0), data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> &mut Self {
        self.entry(path, S_IFCHR | mode, 1, (major, minor), b"")
    }

    /// The archive, closed with the trailer entry.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), b"");
        self.out
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> &mut Self {
        let name = path.trim_start_matches('/');
        self.ino += 1;
        // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
        // rdevminor, namesize (with its NUL), check
        let fields = [
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
        self
    }

    /// Header+name and data each end on a 4-byte boundary.
    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// The real `cpio` reads the archive back: names, types, modes, link target, device
    /// numbers and contents.
    #[test]
    fn cpio_reads_back_what_was_written() {
        let mut a = Initramfs::new();
        a.dir("/bin", 0o755)
            .file("/bin/hello", 0o755, b"#!/bin/sh\necho hi\n")
            .symlink("/bin/sh", "busybox")
            .dir("/dev", 0o755)
            .char_dev("/dev/console", 0o600, 5, 1)
            .file("/odd", 0o644, b"12345");
        let archive = a.finish();
        assert!(archive.len().is_multiple_of(4));

        let mut cpio = Command::new("cpio")
            .args(["-itv", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cpio is needed (apt-get install cpio; scripts/test.sh does)");
        cpio.stdin.take().unwrap().write_all(&archive).unwrap();
        let out = cpio.wait_with_output().unwrap();
        assert!(out.status.success());
        let listing = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<Vec<&str>> = listing
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines.len(), 6, "{listing}");
        assert_eq!(
            (lines[0][0], *lines[0].last().unwrap()),
            ("drwxr-xr-x", "bin")
        );
        assert_eq!(lines[1][0], "-rwxr-xr-x");
        assert_eq!(lines[1][4], "18", "{listing}");
        assert!(listing.contains("bin/sh -> busybox"), "{listing}");
        assert!(lines[4][0].starts_with("crw-------"), "{listing}");
        assert!(listing.contains("5,"), "{listing}");

        let dir = std::env::temp_dir().join(format!("initramfs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut x = Command::new("cpio")
            .args([
                "-id",
                "--quiet",
                "--no-absolute-filenames",
                "bin/hello",
                "odd",
            ])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        x.stdin.take().unwrap().write_all(&archive).unwrap();
        assert!(x.wait().unwrap().success());
        assert_eq!(
            std::fs::read(dir.join("bin/hello")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(std::fs::read(dir.join("odd")).unwrap(), b"12345");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
