//! Runs the MQTT fuzz target's body over its seed corpus and seeded mutations on the stable
//! toolchain: no input from a broker can panic the codec.

use std::path::Path;

fn corpus() -> Vec<Vec<u8>> {
    // Relative to the package root, where cargo runs tests: a path baked in at compile time
    // would point into whichever clone built this binary first (the target dir is shared).
    let dir = Path::new("fuzz/corpus/packet");
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    v.sort();
    assert!(v.len() >= 10);
    v
}

#[test]
fn seeds_and_mutations_never_panic() {
    let seeds = corpus();
    for s in &seeds {
        mqtt::fuzz(s);
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n.max(1) as u64) as usize
    };
    for _ in 0..50_000 {
        let mut d = seeds[rnd(seeds.len())].clone();
        match rnd(3) {
            0 if !d.is_empty() => {
                let i = rnd(d.len());
                d[i] = rnd(256) as u8;
            }
            1 => {
                let cut = rnd(d.len() + 1);
                d.truncate(cut);
            }
            _ => {
                let other = seeds[rnd(seeds.len())].clone();
                d.extend(other);
            }
        }
        mqtt::fuzz(&d);
    }
}
