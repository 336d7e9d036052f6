#!/usr/bin/env bash
# Cross-builds release edgecore and edge-mqtt (the small MQTT client) for the gateway targets
# and prints their stripped sizes.
#
#   cross/build.sh [TARGET...]   default: aarch64-unknown-linux-musl (static musl),
#                                armv7-unknown-linux-gnueabihf and riscv64gc-unknown-linux-gnu
#                                (static glibc)
#
# Installs the rustup targets, Debian's cross gcc packages and qemu-user when missing.
# Linkers and runners come from .cargo/config.toml. Binaries land in
# $CARGO_TARGET_DIR/<target>/release/{edgecore,edge-mqtt}.
source "$(dirname "$0")/../scripts/env.sh"
ensure_rust
ensure_cross
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${CROSS_TARGETS[@]}")
for t in "${targets[@]}"; do
  log "building edgecore and edge-mqtt for $t"
  cargo build --release --locked -p edgecore -p mqtt-cli --target "$t"
done
printf '%-34s %-10s %10s  %s\n' TARGET BINARY BYTES LINKAGE
for t in "${targets[@]}"; do
  for b in edgecore edge-mqtt; do
    f="$CARGO_TARGET_DIR/$t/release/$b"
    printf '%-34s %-10s %10s  %s\n' "$t" "$b" "$(stat -c %s "$f")" "$(file -b "$f" | grep -o 'statically linked\|dynamically linked')"
  done
done
