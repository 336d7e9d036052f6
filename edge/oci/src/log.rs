//! Container output in the CRI log format, what kubelet and `kubectl logs` read:
//! `<RFC 3339 with nanoseconds> <stdout|stderr> <F|P> <line>\n`, `P` for the pieces of a line
//! longer than [`MAX_LINE_BYTES`] and `F` for its last piece.
//!
//! [`Framer`] is the sans-IO part (bytes in, framed lines out); [`LogFile`] appends them to the
//! container's log file, bounded by [`MAX_FILE_BYTES`] and rotated to one `.1` file, so a
//! chatty container uses at most twice that on the gateway's flash.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Longest piece of a line in one record (containerd's and CRI-O's 16 KiB).
pub const MAX_LINE_BYTES: usize = 16 << 10;
/// A log file is rotated when the next record would take it over this size.
pub const MAX_FILE_BYTES: u64 = 2 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// `2024-06-10T08:00:10.123456789Z` from Unix nanoseconds.
pub fn timestamp(unix_ns: i64) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let nanos = unix_ns.rem_euclid(1_000_000_000);
    let base = proto::time::rfc3339(secs);
    format!("{}.{nanos:09}Z", &base[..base.len() - 1])
}

/// Splits one stream's bytes into CRI log records.
#[derive(Debug)]
pub struct Framer {
    stream: Stream,
    /// The start of a line whose end has not arrived (< [`MAX_LINE_BYTES`]).
    pending: Vec<u8>,
}

impl Framer {
    pub fn new(stream: Stream) -> Self {
        Framer {
            stream,
            pending: Vec::new(),
        }
    }

    fn record(&self, tag: char, line: &[u8], now_ns: i64, out: &mut Vec<u8>) {
        out.extend_from_slice(timestamp(now_ns).as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.stream.name().as_bytes());
        out.push(b' ');
        out.push(tag as u8);
        out.push(b' ');
        out.extend_from_slice(line);
        out.push(b'\n');
    }

    /// Appends the records `data` completes to `out`.
    pub fn push(&mut self, mut data: &[u8], now_ns: i64, out: &mut Vec<u8>) {
        while !data.is_empty() {
            match data.iter().position(|b| *b == b'\n') {
                Some(i) if self.pending.len() + i <= MAX_LINE_BYTES => {
                    let mut line = std::mem::take(&mut self.pending);
                    line.extend_from_slice(&data[..i]);
                    self.record('F', &line, now_ns, out);
                    data = &data[i + 1..];
                }
                _ => {
                    let room = MAX_LINE_BYTES - self.pending.len();
                    let take = room.min(data.len());
                    self.pending.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.pending.len() == MAX_LINE_BYTES && !data.is_empty() {
                        // Over-long line: this piece goes out as partial. A newline right
                        // after it ends the line with an empty full record, as containerd does.
                        let piece = std::mem::take(&mut self.pending);
                        self.record('P', &piece, now_ns, out);
                    }
                }
            }
        }
    }

    /// The stream ended: a last line without its newline is written as full.
    pub fn finish(&mut self, now_ns: i64, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.record('F', &line, now_ns, out);
        }
    }
}

/// A container's log file, appended to and rotated at [`MAX_FILE_BYTES`].
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Option<std::fs::File>,
    size: u64,
    max: u64,
}

impl LogFile {
    pub fn new(path: &Path) -> Self {
        Self::with_limit(path, MAX_FILE_BYTES)
    }

    pub fn with_limit(path: &Path, max: u64) -> Self {
        LogFile {
            path: path.to_owned(),
            file: None,
            size: 0,
            max,
        }
    }

    /// Appends whole records (never split across a rotation).
    pub fn write(&mut self, records: &[u8]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = f.metadata()?.len();
            self.file = Some(f);
        }
        if self.size > 0 && self.size + records.len() as u64 > self.max {
            self.file = None;
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, &old)?;
            self.size = 0;
            return self.write(records);
        }
        let f = self.file.as_mut().expect("opened above");
        f.write_all(records)?;
        self.size += records.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_718_006_410_000_000_042;

    fn frame(chunks: &[&[u8]]) -> String {
        let mut f = Framer::new(Stream::Stdout);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, T, &mut out);
        }
        f.finish(T, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamp_has_nanoseconds() {
        assert_eq!(timestamp(T), "2024-06-10T08:00:10.000000042Z");
    }

    #[test]
    fn lines_are_framed_across_chunks_and_the_last_one_is_flushed() {
        assert_eq!(
            frame(&[b"hel", b"lo\nwor", b"ld\n\nend"]),
            "2024-06-10T08:00:10.000000042Z stdout F hello\n\
             2024-06-10T08:00:10.000000042Z stdout F world\n\
             2024-06-10T08:00:10.000000042Z stdout F \n\
             2024-06-10T08:00:10.000000042Z stdout F end\n"
        );
        let mut f = Framer::new(Stream::Stderr);
        let mut out = Vec::new();
        f.push(b"oops\n", 0, &mut out);
        assert_eq!(out, b"1970-01-01T00:00:00.000000000Z stderr F oops\n");
    }

    #[test]
    fn long_lines_are_split_into_partial_records() {
        let mut long = vec![b'x'; MAX_LINE_BYTES * 2 + 5];
        long.push(b'\n');
        let text = frame(&[&long[..100], &long[100..]]);
        let tags: Vec<&str> = text.lines().map(|l| l.split(' ').nth(2).unwrap()).collect();
        assert_eq!(tags, ["P", "P", "F"]);
        let sizes: Vec<usize> = text
            .lines()
            .map(|l| l.split(' ').nth(3).unwrap().len())
            .collect();
        assert_eq!(sizes, [MAX_LINE_BYTES, MAX_LINE_BYTES, 5]);
    }

    #[test]
    fn the_file_rotates_at_its_limit_and_keeps_one_old_file() {
        let dir = std::env::temp_dir().join(format!("oci-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("app/0.log");
        let mut log = LogFile::with_limit(&path, 100);
        for i in 0..5 {
            log.write(format!("{i}{}\n", "a".repeat(38)).as_bytes())
                .unwrap();
        }
        // 40-byte records, 100 bytes a file: 2 per file; 5 records → the 3rd file holds one.
        let cur = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(dir.join("app/0.log.1")).unwrap();
        assert!(cur.starts_with('4') && cur.len() == 40, "{cur}");
        assert!(old.starts_with('2') && old.len() == 80, "{old}");
        // Reopened (after a restart), the size already there counts.
        let mut log = LogFile::with_limit(&path, 100);
        log.write(&[b'b'; 40]).unwrap();
        log.write(&[b'c'; 40]).unwrap();
        assert_eq!(std::fs::read(dir.join("app/0.log.1")).unwrap().len(), 80);
        assert_eq!(std::fs::read(&path).unwrap(), [b'c'; 40]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
