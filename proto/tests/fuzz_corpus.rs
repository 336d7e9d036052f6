//! Runs the fuzz target's body over its seed corpus and deterministic mutations of it (bit
//! flips, truncations, splices) on the stable toolchain, so CI exercises the same contract as
//! `cargo fuzz` does: no input panics.

use std::path::Path;

fn corpus() -> Vec<Vec<u8>> {
    // Relative to the package root, where cargo runs tests: a path baked in at compile time
    // would point into whichever clone built this binary first (the target dir is shared).
    let dir = Path::new("fuzz/corpus/frame");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    assert!(out.len() >= 15, "seed corpus lost files");
    out
}

#[test]
fn seed_corpus_never_panics() {
    for seed in corpus() {
        proto::fuzzing::frame(&seed);
    }
}

#[test]
fn mutated_corpus_never_panics() {
    let seeds = corpus();
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    for _ in 0..20_000 {
        let mut data = seeds[rng.usize(..seeds.len())].clone();
        match rng.u8(..4) {
            0 if !data.is_empty() => {
                let i = rng.usize(..data.len());
                data[i] ^= 1 << rng.u8(..8);
            }
            1 => data.truncate(rng.usize(..=data.len())),
            2 => {
                let other = &seeds[rng.usize(..seeds.len())];
                let cut = rng.usize(..=other.len());
                let at = rng.usize(..=data.len());
                data.splice(at..at, other[..cut].iter().copied());
            }
            _ if !data.is_empty() => {
                let i = rng.usize(..data.len());
                const BYTES: &[u8] = b"{}[]\",:\\0/ \x00\xff";
                data[i] = BYTES[rng.usize(..BYTES.len())];
            }
            _ => {}
        }
        proto::fuzzing::frame(&data);
    }
}
