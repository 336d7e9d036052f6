//! Per-record checksums and the store's own keys: pure functions over bytes, shared by every
//! backend.
//!
//! redb checksums its pages, but verifies them only when it repairs a file (after a crash, or
//! when asked to check the whole file); sled checks its log only at recovery. A byte flipped in
//! a value after that is handed back as if it were data. So every value carries its own
//! CRC-32 and every read checks it: a bad record is reported with its key, never decoded into
//! something plausible.
//!
//! Framed value: `[FRAME_VERSION][crc32 of payload, little endian][payload]`.
//!
//! Stores written before checksums existed hold bare values. The format marker
//! ([`FORMAT_KEY`]) says a store's values are all framed; a store without it is migrated on
//! its first writable open, every value framed in the same transaction that writes the
//! marker, so a store is never half framed.

use crate::{Op, Pairs, StoreError};

/// Keys the store keeps for itself; modules' keys never start with this (theirs are
/// `obj/`, `tok/`, `dev/`, `model/`, `twinq/`).
pub const RESERVED: &[u8] = b"store/";
/// Present (framed) in every store whose values are all framed.
pub const FORMAT_KEY: &[u8] = b"store/format";
/// The store's identity ([`crate::Store::epoch`]).
pub const EPOCH_KEY: &[u8] = b"store/epoch";
/// Written by [`crate::Store::probe`] to find out whether the store can write again.
pub const PROBE_KEY: &[u8] = b"store/probe";

/// First byte of a framed value. A new layout would take another number.
const FRAME_VERSION: u8 = 1;
const HEADER: usize = 5;

/// CRC-32 (IEEE 802.3, as zlib and gzip): a table of 1 KiB built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(FRAME_VERSION);
    out.extend_from_slice(&crc32(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of a framed value, or why it is not one.
fn check(bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < HEADER {
        return Err(format!(
            "{} bytes, shorter than the {HEADER}-byte record header",
            bytes.len()
        ));
    }
    if bytes[0] != FRAME_VERSION {
        return Err(format!("unknown record header {}", bytes[0]));
    }
    let want = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let payload = &bytes[HEADER..];
    let have = crc32(payload);
    if have != want {
        return Err(format!(
            "checksum mismatch (stored {want:08x}, computed {have:08x})"
        ));
    }
    Ok(payload)
}

/// The payload of the framed value stored under `key`, or [`StoreError::Corrupt`] naming it.
pub fn unframe<'a>(key: &[u8], bytes: &'a [u8]) -> Result<&'a [u8], StoreError> {
    check(bytes).map_err(|why| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        why,
    })
}

/// Frames the values of `ops`.
pub fn frame_ops(ops: &[Op]) -> Vec<Op> {
    ops.iter()
        .map(|op| match op {
            Op::Put(k, v) => Op::Put(k.clone(), frame(v)),
            Op::Delete(k) => Op::Delete(k.clone()),
        })
        .collect()
}

/// A record that failed its check, as [`crate::Store::scan_checked`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorruptRecord {
    pub key: Vec<u8>,
    pub why: String,
}

/// Splits raw pairs into good (unframed) ones and corrupt ones, leaving out the store's own
/// keys. `framed` is false only for a store from before checksums.
pub fn check_pairs(raw: Pairs, framed: bool) -> (Pairs, Vec<CorruptRecord>) {
    let mut good = Vec::with_capacity(raw.len());
    let mut bad = Vec::new();
    for (k, v) in raw {
        if k.starts_with(RESERVED) {
            continue;
        }
        if !framed {
            good.push((k, v));
            continue;
        }
        match check(&v) {
            Ok(p) => {
                let p = p.to_vec();
                good.push((k, p));
            }
            Err(why) => bad.push(CorruptRecord { key: k, why }),
        }
    }
    (good, bad)
}

/// The writes that turn a store of bare values (`raw`, everything in it) into a framed one:
/// every value framed, plus the format marker.
pub fn migration(raw: Pairs) -> Vec<Op> {
    let mut ops: Vec<Op> = raw
        .into_iter()
        .filter(|(k, _)| !k.starts_with(RESERVED))
        .map(|(k, v)| Op::Put(k, frame(&v)))
        .collect();
    ops.push(Op::Put(FORMAT_KEY.to_vec(), frame(&[FRAME_VERSION])));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        // The check value every CRC-32/ISO-HDLC implementation gives for "123456789".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn frames_round_trip_and_any_flipped_byte_is_caught() {
        let payload = b"\x01some postcard bytes {\"json\":true}";
        let framed = frame(payload);
        assert_eq!(unframe(b"k", &framed).unwrap(), payload);
        for i in 0..framed.len() {
            let mut bad = framed.clone();
            bad[i] ^= 0x40;
            let e = unframe(b"obj/pod/default/web", &bad).unwrap_err();
            assert!(
                e.to_string().contains("obj/pod/default/web"),
                "byte {i}: {e}"
            );
        }
        assert!(unframe(b"k", &framed[..3]).is_err(), "too short");
        assert!(unframe(b"k", &[]).is_err(), "empty");
    }

    #[test]
    fn checked_scans_split_good_from_corrupt_and_hide_own_keys() {
        let mut bad = frame(b"two");
        *bad.last_mut().unwrap() ^= 1;
        let raw = vec![
            (b"a/1".to_vec(), frame(b"one")),
            (b"a/2".to_vec(), bad),
            (EPOCH_KEY.to_vec(), frame(b"e")),
        ];
        let (good, corrupt) = check_pairs(raw, true);
        assert_eq!(good, vec![(b"a/1".to_vec(), b"one".to_vec())]);
        assert_eq!(corrupt.len(), 1);
        assert_eq!(corrupt[0].key, b"a/2");
        assert!(corrupt[0].why.contains("checksum"), "{}", corrupt[0].why);
    }

    #[test]
    fn migration_frames_every_bare_value_and_marks_the_store() {
        let ops = migration(vec![
            (b"obj/x".to_vec(), b"\x01bare".to_vec()),
            (b"dev/y".to_vec(), b"{}".to_vec()),
        ]);
        assert_eq!(ops.len(), 3);
        for op in &ops {
            let Op::Put(k, v) = op else { panic!() };
            unframe(k, v).unwrap();
        }
        assert!(matches!(&ops[2], Op::Put(k, _) if k == FORMAT_KEY));
    }
}
