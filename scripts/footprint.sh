#!/usr/bin/env bash
# The footprint report: one table, against DESIGN.md §8's budgets, of
#   - the stripped size of each release binary per target,
#   - edgecore on this host, idle and connected (no pods), embedded MQTT broker off and on:
#     VmRSS, RssAnon, threads, descriptors, join and Ready time,
#   - edgecore in 64 MB aarch64 and armv7 QEMU VMs after joining and serving a device twin:
#     VmRSS, RssAnon, threads and the MemAvailable left,
#   - edgecore in a 64 MB aarch64 VM with one pod on crun (direct runtime): VmRSS, MemAvailable
#     left, time to the pod Running.
# Builds what it needs first. FOOTPRINT_SECS=N changes the 30 s idle period on the host.
source "$(dirname "$0")/env.sh"
ensure_rust
ensure_cross
ensure_qemu
log "release binaries for this host"
cargo build --release --locked -p cloudcore -p edgecore -p mqtt-cli
bash cross/build.sh
cargo bench --locked -p qemu-tests --bench footprint
