//! Fuzzes every parser that sees bytes from the wire: frames, resource paths, reply shapes,
//! tokens. Run: `cd proto/fuzz && cargo fuzz run frame corpus/frame`
//! (on a stable toolchain: `RUSTC_BOOTSTRAP=1 cargo fuzz run frame corpus/frame`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proto::fuzzing::frame(data));
