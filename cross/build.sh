#!/usr/bin/env bash
# Cross-builds release edgecore for the gateway targets and prints their stripped sizes.
#
#   cross/build.sh [TARGET...]   default: aarch64-unknown-linux-musl (static musl),
#                                armv7-unknown-linux-gnueabihf and riscv64gc-unknown-linux-gnu
#                                (static glibc)
#
# Installs the rustup targets, Debian's cross gcc packages and qemu-user when missing.
# Linkers and runners come from .cargo/config.toml. Binaries land in
# $CARGO_TARGET_DIR/<target>/release/edgecore.
source "$(dirname "$0")/../scripts/env.sh"
ensure_rust
ensure_cross
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${CROSS_TARGETS[@]}")
for t in "${targets[@]}"; do
  log "building edgecore for $t"
  cargo build --release --locked -p edgecore --target "$t"
done
printf '%-34s %10s  %s\n' TARGET BYTES LINKAGE
for t in "${targets[@]}"; do
  f="$CARGO_TARGET_DIR/$t/release/edgecore"
  printf '%-34s %10s  %s\n' "$t" "$(stat -c %s "$f")" "$(file -b "$f" | grep -o 'statically linked\|dynamically linked')"
done
