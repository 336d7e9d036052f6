//! A container's output: its stdout and stderr are FIFOs under its directory, which the
//! container holds open read-write (so a write never fails with EPIPE while edgecore is down:
//! it fills the pipe and waits for edgecore to read again, nothing is lost). edgecore reads
//! them here and appends CRI log records to the container's log file.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use oci::log::{Framer, LogFile, Stream};
use smol::io::AsyncReadExt;

/// Bytes read from a FIFO at once.
const READ_BYTES: usize = 16 << 10;

pub const STDOUT: &str = "stdout";
pub const STDERR: &str = "stderr";

fn now_ns() -> i64 {
    super::super::now_ns()
}

/// Makes the two FIFOs of a container directory (again after a restart: kept if present).
pub fn make_fifos(dir: &Path) -> std::io::Result<()> {
    for name in [STDOUT, STDERR] {
        let p = dir.join(name);
        if !p.exists() {
            rustix::fs::mkfifoat(rustix::fs::CWD, &p, rustix::fs::Mode::from_raw_mode(0o600))?;
        }
    }
    Ok(())
}

/// The container's ends: each FIFO opened read-write and blocking (the container's
/// descriptors: a reader itself, so never EPIPE).
pub fn open_writers(dir: &Path) -> std::io::Result<(std::fs::File, std::fs::File)> {
    let open = |n: &str| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(n))
    };
    Ok((open(STDOUT)?, open(STDERR)?))
}

/// edgecore's ends, read-only and non-blocking. Opened after the container's (or while it
/// holds them), so a read sees end-of-file only when the container has exited.
pub fn open_readers(dir: &Path) -> std::io::Result<(std::fs::File, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = |n: &str| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(dir.join(n))
    };
    Ok((open(STDOUT)?, open(STDERR)?))
}

/// Copies both streams into the log file until the container closes them.
pub async fn pump(readers: (std::fs::File, std::fs::File), log: PathBuf) {
    let file = Rc::new(RefCell::new(LogFile::new(&log)));
    let (out, err) = readers;
    smol::future::zip(
        one(out, Stream::Stdout, file.clone()),
        one(err, Stream::Stderr, file),
    )
    .await;
}

async fn one(fifo: std::fs::File, stream: Stream, file: Rc<RefCell<LogFile>>) {
    let Ok(mut r) = smol::Async::new(fifo) else {
        return;
    };
    let mut framer = Framer::new(stream);
    let mut buf = vec![0u8; READ_BYTES];
    let mut out = Vec::new();
    let mut warned = false;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        framer.push(&buf[..n], now_ns(), &mut out);
        if let Err(e) = file.borrow_mut().write(&out) {
            // A full disk: the output is dropped (the container must not block on it).
            if !warned {
                log::warn!("container log write failed: {e}; its output is dropped meanwhile");
                warned = true;
            }
        }
        out.clear();
    }
    framer.finish(now_ns(), &mut out);
    let _ = file.borrow_mut().write(&out);
}
