# Sourced by the project's scripts: installs what the build and tests need (idempotently) and
# points cargo at a persistent target dir outside the clone when one can be had.
#
#   EDGECORE_CACHE   persistent cache root [default: /var/cache/edgecore]; unset or unwritable
#                    means the clone's own ./target.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Persistent target dir: CI runs in a fresh clone each time, so keeping build output outside it
# turns a 10-minute cold build into a warm one, while an empty cache still works.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  cache="${EDGECORE_CACHE:-/var/cache/edgecore}"
  if mkdir -p "$cache/target" 2>/dev/null && [ -w "$cache/target" ]; then
    export CARGO_TARGET_DIR="$cache/target"
  else
    export CARGO_TARGET_DIR="$ROOT/target"
  fi
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

CROSS_TARGETS=(aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf riscv64gc-unknown-linux-gnu)

# apt packages, installed only when missing.
ensure_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # update may exit non-zero while one mirror index is mid-sync; the install below decides.
  $sudo apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_rust() {
  command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup first" >&2; exit 1; }
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
}

# The real container runtime the Edged tests drive (started privately by the test harness).
ensure_runtime() {
  ensure_apt containerd runc crun skopeo docker-registry busybox-static mosquitto mosquitto-clients
}

# Linters for the image trees (e2e/tests/images.rs): shellcheck, the Python modules Buildroot's
# utils/check-package imports (run when BUILDROOT_DIR names a Buildroot checkout), oelint-adv.
ensure_lint() {
  ensure_apt shellcheck python3-magic python3-flake8 python3-venv
  # oelint-adv (the Yocto layer's linter) is on PyPI only: a venv in the persistent cache.
  local venv="${EDGECORE_CACHE:-/var/cache/edgecore}/venv-oelint"
  if [ ! -x "$venv/bin/oelint-adv" ]; then
    log "installing oelint-adv into $venv"
    /usr/bin/python3 -m venv "$venv" && "$venv/bin/pip" install -q oelint-adv ||
      { echo "cannot install oelint-adv into $venv" >&2; exit 1; }
  fi
  export OELINT_ADV="$venv/bin/oelint-adv"
}

ensure_cross() {
  ensure_apt gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross \
    gcc-riscv64-linux-gnu libc6-dev-riscv64-cross qemu-user file
  local installed
  installed="$(rustup target list --installed)"
  for t in "${CROSS_TARGETS[@]}"; do
    grep -qx "$t" <<<"$installed" || { log "adding rustup target $t"; rustup target add "$t" >/dev/null; }
  done
}

# QEMU system emulation for the VM tests, and package indexes for the guest architectures:
# qemu-tests fetches the arm64/armhf kernels and busybox-static itself with apt-get download.
ensure_qemu() {
  # e2fsprogs: mkfs.ext4 -d makes the pod VM's disk; binutils: readelf follows crun's libraries.
  ensure_apt qemu-system-arm cpio xz-utils e2fsprogs binutils
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  local archs added=""
  archs="$(dpkg --print-foreign-architectures)"
  for a in arm64 armhf; do
    grep -qx "$a" <<<"$archs" || { log "enabling the $a architecture"; $sudo dpkg --add-architecture "$a"; added=1; }
  done
  # Update only when the index does not know the guest packages yet; it can exit non-zero
  # while one mirror index is mid-sync, so success is judged by what resolves afterwards.
  local pkgs=(linux-image-arm64:arm64 linux-image-armmp:armhf busybox-static:arm64 busybox-static:armhf crun:arm64)
  if [ -n "$added" ] || ! apt-cache show --no-all-versions "${pkgs[@]}" >/dev/null 2>&1; then
    log "updating the package index for arm64 and armhf"
    $sudo apt-get update -qq || true
    apt-cache show --no-all-versions "${pkgs[@]}" >/dev/null ||
      { echo "the package index has no ${pkgs[*]}" >&2; exit 1; }
  fi
}

# The official Kubernetes Python client (e2e/tests/python_client.rs), in a venv in the
# persistent cache next to the target dir (the clone's ./target without one);
# EDGECORE_KUBE_PYTHON points the test at it.
ensure_python_client() {
  ensure_apt python3-venv
  local venv
  venv="$(dirname "$CARGO_TARGET_DIR")/pyvenv"
  [ "$CARGO_TARGET_DIR" = "$ROOT/target" ] && venv="$ROOT/target/pyvenv"
  if ! "$venv/bin/python" -c 'import kubernetes' 2>/dev/null; then
    log "installing the Kubernetes Python client in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q kubernetes
  fi
  export EDGECORE_KUBE_PYTHON="$venv/bin/python"
}

# Logic crates whose unit tests also run on each gateway target under qemu-user.
CROSS_TEST_CRATES=(-p proto -p bus -p store -p devicetwin -p mqtt -p broker -p eventbus -p metamanager -p edgehub)
