#!/usr/bin/env bash
# The main job: a cloudcore and an edgecore on this machine, the edge enrolled with a token,
# connected over mutual TLS and shown Ready.
#
#   scripts/demo.sh          run, show the node, stop both
#   scripts/demo.sh --keep   leave both running (their PIDs and data dirs are printed)
source "$(dirname "$0")/env.sh"
ensure_rust
keep=0
[ "${1:-}" = "--keep" ] && keep=1

log "building release cloudcore and edgecore"
cargo build --release --locked -p cloudcore -p edgecore
bin="$CARGO_TARGET_DIR/release"
demo="${DEMO_DIR:-$(mktemp -d /tmp/edgecore-demo.XXXXXX)}"
mkdir -p "$demo"
pids=()
cleanup() {
  [ "$keep" = 1 ] && return
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

log "starting cloudcore (data in $demo/cloud, log in $demo/cloudcore.log)"
"$bin/cloudcore" serve --data-dir "$demo/cloud" --bind 127.0.0.1 --ws-port 0 --cert-port 0 \
  --admin-bind 127.0.0.1:0 >"$demo/cloudcore.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$demo/cloud/cloudcore.addr" ] && break; sleep 0.1; done
[ -s "$demo/cloud/cloudcore.addr" ] || { cat "$demo/cloudcore.log"; exit 1; }
addr_port() { sed -E "s/.*\"$1\":\"[^\"]*:([0-9]+)\".*/\1/" "$demo/cloud/cloudcore.addr"; }
ws_port=$(addr_port ws)
cert_port=$(addr_port cert)

log "making an enrollment token and joining edge node demo-edge"
token=$("$bin/cloudcore" token --data-dir "$demo/cloud")
"$bin/edgecore" join --cloud 127.0.0.1 --ws-port "$ws_port" --cert-port "$cert_port" \
  --token "$token" --node-name demo-edge --data-dir "$demo/edge"

log "starting edgecore (log in $demo/edgecore.log)"
"$bin/edgecore" run --data-dir "$demo/edge" >"$demo/edgecore.log" 2>&1 &
edge_pid=$!
pids+=($edge_pid)

log "waiting for the node to turn Ready"
for _ in $(seq 300); do
  "$bin/cloudcore" get nodes --data-dir "$demo/cloud" 2>/dev/null | grep -q '^demo-edge .* Ready ' && break
  sleep 0.1
done
"$bin/cloudcore" get nodes -o wide --data-dir "$demo/cloud"
"$bin/cloudcore" get nodes --data-dir "$demo/cloud" | grep -q '^demo-edge .* Ready ' || {
  echo "node did not turn Ready; logs:" >&2; cat "$demo/cloudcore.log" "$demo/edgecore.log" >&2; exit 1; }

log "deploying a sample workload: a pod bound to demo-edge, using a configmap"
"$bin/cloudcore" apply --data-dir "$demo/cloud" -f - <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata: {name: hello-config}
data: {message: "hello from the cloud"}
---
apiVersion: v1
kind: Pod
metadata: {name: hello, labels: {app: hello}}
spec:
  nodeName: demo-edge
  containers:
  - name: hello
    image: busybox
    command: [sh, -c, "cat /config/message; sleep 3600"]
    volumeMounts: [{name: config, mountPath: /config}]
  volumes: [{name: config, configMap: {name: hello-config}}]
YAML
for _ in $(seq 100); do
  "$bin/cloudcore" describe pod hello --data-dir "$demo/cloud" | grep -q Delivered && break
  sleep 0.1
done
"$bin/cloudcore" get pods -o wide --data-dir "$demo/cloud"
"$bin/cloudcore" describe pod hello --data-dir "$demo/cloud"
log "what the gateway stored (served from its own store, with or without a cloud)"
"$bin/edgecore" meta list --data-dir "$demo/edge"
"$bin/cloudcore" describe pod hello --data-dir "$demo/cloud" | grep -q Delivered || {
  echo "the pod was not delivered; logs:" >&2; cat "$demo/cloudcore.log" "$demo/edgecore.log" >&2; exit 1; }
echo "(running it as a container is the next release: Edged on containerd)"
echo
echo "edgecore (pid $edge_pid): $(grep -E '^(VmRSS|Threads)' /proc/$edge_pid/status | tr -s ' \t' ' ' | paste -sd, -)"
echo "binary sizes: cloudcore $(stat -c %s "$bin/cloudcore") B, edgecore $(stat -c %s "$bin/edgecore") B"
if [ "$keep" = 1 ]; then
  echo "left running: cloudcore pid ${pids[0]}, edgecore pid $edge_pid; data in $demo"
  echo "try: $bin/cloudcore get nodes --data-dir $demo/cloud"
else
  echo "stopping (run with --keep to leave them running)"
fi
