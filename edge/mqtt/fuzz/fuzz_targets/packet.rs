//! Fuzzes the MQTT codec with bytes a broker or a client (anything on port 1883) could send.
//! Run: `cd edge/mqtt/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run packet corpus/packet`
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mqtt::fuzz(data));
