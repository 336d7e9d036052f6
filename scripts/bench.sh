#!/usr/bin/env bash
# Benchmarks, printed as tables against DESIGN.md §8's budgets:
#   footprint  binary sizes per target; edgecore idle RSS, threads, descriptors, enrollment and
#              Ready latency on this host; edgecore's memory in 64 MB aarch64 and armv7 VMs
#              and the MemAvailable it leaves (FOOTPRINT_SECS=N changes the 30 s idle period)
#   delivery   edgecore RSS and store size with 300 objects, redb next to sled; apply →
#              edge acknowledgement throughput and p50/p99 latency for 1,000 pods
#   pods       apply → Running for 1 and 20 pods on containerd; edgecore RSS and CPU with 21
#   runtimes   RSS and PSS of the runtime side per pod: containerd (daemon, shims, pauses) next
#              to the direct runtime (edgecore alone), and apply → Running for 10 pods on each
#   broker     the embedded MQTT broker next to mosquitto: msg/s and latency at QoS 0/1/2,
#              1 → 50 fan-out, 50 → 1 fan-in (messages lost), peak RSS
source "$(dirname "$0")/env.sh"
ensure_rust
ensure_runtime
bash scripts/footprint.sh
# The delivery bench compares store backends, so its edgecore carries both.
cargo build --release --locked -p edgecore --features sled
cargo bench --locked -p e2e --bench delivery
# Pods on a private containerd (started and stopped by the bench itself).
cargo build --release --locked -p edgecore
cargo bench --locked -p e2e --bench pods
cargo build --release --locked -p cloudcore
cargo bench --locked -p e2e --bench runtimes
# Devices: 1,000 devices and 50 MQTT clients, embedded broker next to mosquitto.
cargo bench --locked -p e2e --bench devices
# The broker alone: throughput and latency per QoS, fan-out, fan-in, next to mosquitto.
cargo bench --locked -p e2e --bench broker
