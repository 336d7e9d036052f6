#!/usr/bin/env bash
# Benchmarks: builds release binaries for the host and the gateway targets, then prints the
# footprint table (edgecore RSS, threads, descriptors, enrollment and Ready latency, binary
# sizes against DESIGN.md §8). FOOTPRINT_SECS=N changes the 30 s connected period.
source "$(dirname "$0")/env.sh"
ensure_rust
cargo build --release --locked -p cloudcore -p edgecore
bash cross/build.sh
cargo bench --locked -p e2e --bench footprint
