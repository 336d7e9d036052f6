//! The store's guarantees, on real files: the contract, identity, checksums on flipped bytes,
//! migration of stores from before checksums, and recovery from a full disk (a small tmpfs).

use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::*;

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    let _ = std::fs::remove_file(&p);
    p
}

fn redb(p: &Path) -> Store {
    Store::open(p, Backend::Redb).unwrap()
}

fn contract(s: &dyn KvStore) {
    assert_eq!(s.get(b"a").unwrap(), None);
    s.apply(&[
        Op::Put(b"p/1".to_vec(), b"one".to_vec()),
        Op::Put(b"p/2".to_vec(), b"two".to_vec()),
        Op::Put(b"q/1".to_vec(), b"x".to_vec()),
    ])
    .unwrap();
    assert_eq!(s.get(b"p/1").unwrap().as_deref(), Some(&b"one"[..]));
    let scan = s.scan_prefix(b"p/").unwrap();
    assert_eq!(scan.len(), 2);
    assert_eq!(scan[1], (b"p/2".to_vec(), b"two".to_vec()));
    s.delete(b"p/1").unwrap();
    assert_eq!(s.scan_prefix(b"p/").unwrap().len(), 1);
    assert!(s.bytes_written() >= 16);
    let all = s.scan_prefix(b"").unwrap();
    assert!(
        all.iter().all(|(k, _)| !k.starts_with(frame::RESERVED)),
        "the store's own keys stay out of scans: {all:?}"
    );
}

#[test]
fn redb_meets_the_contract_and_persists() {
    let p = tmp("redb");
    contract(&redb(&p));
    let s = redb(&p);
    assert_eq!(s.get(b"p/2").unwrap().as_deref(), Some(&b"two"[..]));
    assert_eq!(s.get(b"p/1").unwrap(), None);
}

#[test]
fn read_only_view_works_beside_a_writer() {
    let p = tmp("ro");
    let w = redb(&p);
    w.put(b"k", b"v1").unwrap();
    let r = ReadOnly::open(&p).unwrap();
    assert_eq!(r.get(b"k").unwrap().as_deref(), Some(&b"v1"[..]));
    w.put(b"k", b"v2").unwrap();
    assert_eq!(
        r.get(b"k").unwrap().as_deref(),
        Some(&b"v2"[..]),
        "reader sees later commits"
    );
}

#[test]
fn a_truncated_file_is_a_clear_error() {
    let p = tmp("trunc");
    redb(&p).put(b"k", b"v").unwrap();
    let len = std::fs::metadata(&p).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(len / 3).unwrap();
    drop(f);
    match Store::open(&p, Backend::Redb) {
        Err(e @ StoreError::Open { .. }) => {
            assert!(e.to_string().contains(&p.display().to_string()), "{e}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a file cut to a third must not open as if whole"),
    }
}

#[test]
fn a_store_keeps_its_epoch_and_a_deleted_or_emptied_file_gets_a_new_one() {
    let p = tmp("epoch");
    let first = redb(&p).epoch().to_owned();
    assert_eq!(first.len(), 32, "{first}");
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
    assert_eq!(redb(&p).epoch(), first, "reopening keeps the identity");

    std::fs::remove_file(&p).unwrap();
    let second = redb(&p).epoch().to_owned();
    assert_ne!(second, first, "a deleted store comes back as another store");

    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(0)
        .unwrap();
    let third = redb(&p).epoch().to_owned();
    assert_ne!(
        third, second,
        "an emptied store comes back as another store"
    );
    assert_ne!(third, first);
}

/// Writes `pairs` bare, as every store before checksums held them.
fn legacy_store(p: &Path, pairs: &[(&[u8], &[u8])]) {
    let db = redb::Database::create(p).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let mut t = tx
            .open_table(redb::TableDefinition::<&[u8], &[u8]>::new("kv"))
            .unwrap();
        for (k, v) in pairs {
            t.insert(*k, *v).unwrap();
        }
    }
    tx.commit().unwrap();
}

#[test]
fn a_store_from_before_checksums_opens_and_is_migrated_once() {
    let p = tmp("legacy");
    legacy_store(
        &p,
        &[
            (b"obj/pod/default/web", b"\x01old"),
            (b"dev/default/d", b"{}"),
        ],
    );
    // Read-only, before any new edgecore opened it: bare values, as written.
    let ro = ReadOnly::open(&p).unwrap();
    assert_eq!(
        ro.get(b"obj/pod/default/web").unwrap().as_deref(),
        Some(&b"\x01old"[..])
    );
    drop(ro);

    let s = redb(&p);
    assert_eq!(
        s.get(b"obj/pod/default/web").unwrap().as_deref(),
        Some(&b"\x01old"[..])
    );
    assert_eq!(s.scan_prefix(b"").unwrap().len(), 2);
    let epoch = s.epoch().to_owned();
    drop(s);
    // Migrated: the values are framed now, and a reader checks them.
    let ro = ReadOnly::open(&p).unwrap();
    assert_eq!(
        ro.scan_prefix(b"dev/").unwrap(),
        vec![(b"dev/default/d".to_vec(), b"{}".to_vec())]
    );
    drop(ro);
    let again = redb(&p);
    assert_eq!(again.epoch(), epoch);
    assert_eq!(again.bytes_written(), 0, "migration happens once");
}

/// Flips `n` bytes in the middle of every copy of `needle` in the file (a copy-on-write store
/// may still hold older copies in free pages). Returns how many copies were hit.
fn flip_in_file(p: &Path, needle: &[u8], n: usize) -> usize {
    let mut bytes = std::fs::read(p).unwrap();
    let mut hits = 0;
    let mut i = 0;
    while i + needle.len() <= bytes.len() {
        if &bytes[i..i + needle.len()] == needle {
            let mid = i + needle.len() / 2 - n / 2;
            for b in &mut bytes[mid..mid + n] {
                *b ^= 0xA5;
            }
            hits += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    std::fs::write(p, bytes).unwrap();
    hits
}

#[test]
fn sixty_four_flipped_bytes_in_a_record_are_an_error_naming_its_key() {
    let p = tmp("flip");
    let payload: Vec<u8> = (0..300u32).map(|i| b'a' + (i % 26) as u8).collect();
    {
        let s = redb(&p);
        s.put(b"obj/pod/default/good", b"fine").unwrap();
        s.put(b"obj/pod/default/web", &payload).unwrap();
    }
    assert!(
        flip_in_file(&p, &payload, 64) >= 1,
        "payload not found in the file"
    );

    let s = redb(&p);
    let e = s.get(b"obj/pod/default/web").unwrap_err();
    assert!(
        matches!(&e, StoreError::Corrupt { key, .. } if key == "obj/pod/default/web"),
        "{e}"
    );
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
    let e = s.scan_prefix(b"obj/").unwrap_err();
    assert!(e.to_string().contains("obj/pod/default/web"), "{e}");
    let (good, bad) = s.scan_checked(b"obj/").unwrap();
    assert_eq!(
        good,
        vec![(b"obj/pod/default/good".to_vec(), b"fine".to_vec())]
    );
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].key, b"obj/pod/default/web");
    assert_eq!(
        s.get(b"obj/pod/default/good").unwrap().as_deref(),
        Some(&b"fine"[..]),
        "the other records are unharmed"
    );
    // Writing the key again repairs it.
    s.put(b"obj/pod/default/web", b"new").unwrap();
    assert_eq!(
        s.get(b"obj/pod/default/web").unwrap().as_deref(),
        Some(&b"new"[..])
    );
    drop(s);

    // The read-only view (`edgecore meta`) sees the same.
    let p2 = tmp("flip-ro");
    redb(&p2).put(b"obj/cm/default/x", &payload).unwrap();
    flip_in_file(&p2, &payload, 64);
    let ro = ReadOnly::open(&p2).unwrap();
    let (good, bad) = ro.scan_checked(b"obj/").unwrap();
    assert!(good.is_empty());
    assert_eq!(bad[0].key, b"obj/cm/default/x");
    assert!(ro.get(b"obj/cm/default/x").is_err());
}

/// An in-memory backend whose writes fail on demand: the health rules on their own.
#[derive(Default)]
struct Flaky {
    kv: RefCell<std::collections::BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Writes at least this large fail (`None`: none fail).
    fail_from: std::cell::Cell<Option<u64>>,
    message: RefCell<String>,
}

impl Engine for Rc<Flaky> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.kv.borrow().get(key).cloned())
    }
    fn scan(&self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        Ok(self
            .kv
            .borrow()
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    fn apply(&self, ops: &[Op]) -> Result<(), WriteFault> {
        if self.fail_from.get().is_some_and(|n| batch_bytes(ops) >= n) {
            return Err(WriteFault {
                message: self.message.borrow().clone(),
                no_space: true,
            });
        }
        let mut kv = self.kv.borrow_mut();
        for op in ops {
            match op {
                Op::Put(k, v) => kv.insert(k.clone(), v.clone()),
                Op::Delete(k) => kv.remove(k),
            };
        }
        Ok(())
    }
}

#[test]
fn health_turns_on_the_first_fault_and_back_only_on_a_write_as_large_as_the_failed_one() {
    let flaky = Rc::new(Flaky::default());
    let s = Store::on(Box::new(flaky.clone()), Path::new("mem")).unwrap();
    let seen: Rc<RefCell<Vec<Health>>> = Rc::default();
    let log = seen.clone();
    s.on_health(move |h| log.borrow_mut().push(h.clone()));
    s.put(b"k", b"v").unwrap();
    assert!(
        seen.borrow().is_empty(),
        "writable all along: nothing to report"
    );

    flaky.fail_from.set(Some(1000));
    *flaky.message.borrow_mut() = "No space left on device (os error 28)".into();
    assert!(s.put(b"big", &[0; 2000]).is_err());
    *flaky.message.borrow_mut() = "cannot reopen after a failed write".into();
    assert!(s.put(b"big", &[0; 1500]).is_err());
    let first = Health::Unwritable(WriteFault {
        message: "No space left on device (os error 28)".into(),
        no_space: true,
    });
    assert_eq!(
        *seen.borrow(),
        vec![first.clone()],
        "one change, the first cause"
    );

    // A small write fits, but says nothing about the large ones.
    s.put(b"small", b"x").unwrap();
    assert_eq!(s.health(), first);
    assert!(
        s.probe().is_err(),
        "the probe is as large as the smallest failure"
    );
    flaky.fail_from.set(Some(1 << 30));
    s.probe().unwrap();
    assert_eq!(s.health(), Health::Writable);
    assert_eq!(seen.borrow().len(), 2);
    assert!(
        flaky.kv.borrow().get(frame::PROBE_KEY).is_none(),
        "the probe gives its space back"
    );
    s.put(b"k", b"w").unwrap();
    assert_eq!(seen.borrow().len(), 2);
}

/// A size-limited tmpfs mounted under a temp dir, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(name: &str, size: &str) -> Result<Tmpfs, String> {
        let dir = tmp(name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Writes 64 KiB chunks to `path` until the filesystem is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x55u8; 64 << 10];
    let mut n = 0u64;
    // Bounded: a 4 MiB filesystem is full long before this.
    for _ in 0..1024 {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k as u64,
        }
    }
    let _ = f.sync_all();
    n
}

#[test]
fn a_full_disk_makes_the_store_unwritable_and_it_recovers_when_space_returns() {
    let fs = match Tmpfs::mount("tmpfs", "4m") {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("SKIPPED: cannot mount a tmpfs here ({e}); run as root to test a full disk");
            return;
        }
    };
    let p = fs.0.join("edgecore.redb");
    let s = redb(&p);
    let seen: Rc<RefCell<Vec<Health>>> = Rc::default();
    let log = seen.clone();
    s.on_health(move |h| log.borrow_mut().push(h.clone()));
    s.put(b"obj/before", b"stored before the disk filled")
        .unwrap();
    let filler = fs.0.join("filler");
    assert!(fill(&filler) > 0);

    let big = vec![7u8; 256 << 10];
    let e = s.put(b"obj/during", &big).unwrap_err();
    let StoreError::Write(f) = &e else {
        panic!("a write on a full disk must be a write error: {e}")
    };
    assert!(f.no_space, "{f}");
    assert!(matches!(s.health(), Health::Unwritable(_)));
    assert_eq!(seen.borrow().len(), 1);
    // Reads keep working while it cannot write.
    assert_eq!(
        s.get(b"obj/before").unwrap().as_deref(),
        Some(&b"stored before the disk filled"[..])
    );
    assert!(s.probe().is_err(), "still full");
    assert!(s.put(b"obj/during", &big).is_err());
    // A small write may still fit in pages the file already has; it proves nothing about
    // the write that failed, so the store stays unwritable.
    let _ = s.put(b"obj/small", b"x");
    assert!(matches!(s.health(), Health::Unwritable(_)));

    std::fs::remove_file(&filler).unwrap();
    s.probe().expect("space returned: the probe writes");
    assert_eq!(s.health(), Health::Writable);
    assert_eq!(seen.borrow().len(), 2, "{:?}", seen.borrow());
    s.put(b"obj/during", &big)
        .expect("writes work again, no reopen by the caller");
    assert_eq!(
        s.get(b"obj/during").unwrap().map(|v| v.len()),
        Some(big.len())
    );
    drop(s);
    // Durable, and nothing half-written from the failed attempts.
    let s = redb(&p);
    assert_eq!(
        s.get(b"obj/during").unwrap().map(|v| v.len()),
        Some(big.len())
    );
    assert!(s.get(b"obj/before").unwrap().is_some());
}

#[cfg(feature = "sled")]
#[test]
fn sled_meets_the_contract_and_persists() {
    let p = tmp("sled");
    let epoch = {
        let s = Store::open(&p, Backend::Sled).unwrap();
        contract(&s);
        s.epoch().to_owned()
    };
    let s = Store::open(&p, Backend::Sled).unwrap();
    assert_eq!(s.get(b"p/2").unwrap().as_deref(), Some(&b"two"[..]));
    assert_eq!(s.epoch(), epoch);
}
