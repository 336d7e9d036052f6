#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this). Installs what it needs first.
#
#   1. rustfmt and clippy (-D warnings) over the workspace
#   2. unit, golden and end-to-end tests (real cloudcore and edgecore processes on loopback),
#      and the image trees' lints (Buildroot's check-package too when BUILDROOT_DIR is set)
#   3. release cross builds for aarch64 (static musl), armv7 and riscv64 (static glibc), each
#      run under qemu-user
#   4. the logic crates' unit tests built for each gateway target, run under qemu-user
#   5. edgecore in 64 MB aarch64 and armv7 VMs (qemu-system, Debian kernels cached in the
#      target dir), paired with a cloudcore on this host
source "$(dirname "$0")/env.sh"
ensure_rust
ensure_runtime
ensure_lint
ensure_cross
ensure_qemu
ensure_python_client

log "cargo target dir: $CARGO_TARGET_DIR"
log "rustfmt"
cargo fmt --all -- --check
log "clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
log "building binaries for the end-to-end tests"
cargo build --locked --workspace --bins
log "tests"
cargo test --locked --workspace --no-fail-fast
log "the sled store backend (a cargo feature)"
cargo clippy --locked -p store --features sled --all-targets -- -D warnings
cargo test --locked -p store --features sled
log "cross builds"
bash cross/build.sh
log "cross-built binaries under qemu-user"
cargo test --locked -p e2e --test cross -- --ignored
for t in "${CROSS_TARGETS[@]}"; do
  log "unit tests on $t (qemu-user)"
  cargo test --locked --target "$t" "${CROSS_TEST_CRATES[@]}"
done
log "edgecore in 64 MB aarch64 and armv7 VMs (qemu-system)"
cargo test --locked -p qemu-tests --test vm -- --ignored
