#!/usr/bin/env bash
# The main job: a cloudcore and an edgecore on this machine, the edge enrolled with a token,
# connected over mutual TLS and shown Ready, and a sample pod (with a ConfigMap volume) applied
# in the cloud and shown running as a container on the edge, through containerd.
#
#   scripts/demo.sh          run, show, stop everything it started
#   scripts/demo.sh --keep   leave it all running (PIDs and data dirs are printed)
#
# Needs root: it starts a private containerd (its own socket and root, never the system one).
source "$(dirname "$0")/env.sh"
ensure_rust
ensure_runtime
keep=0
[ "${1:-}" = "--keep" ] && keep=1

log "building release cloudcore and edgecore"
cargo build --release --locked -p cloudcore -p edgecore -p e2e --bin cloudcore --bin edgecore --bin testbed
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
"$bin/cloudcore" serve --data-dir "$demo/cloud" --bind 127.0.0.1 --ws-port 0 --cert-port 0 --api-port 0 \
  --admin-bind 127.0.0.1:0 >"$demo/cloudcore.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$demo/cloud/cloudcore.addr" ] && break; sleep 0.1; done
[ -s "$demo/cloud/cloudcore.addr" ] || { cat "$demo/cloudcore.log"; exit 1; }
addr_port() { sed -E "s/.*\"$1\":\"[^\"]*:([0-9]+)\".*/\1/" "$demo/cloud/cloudcore.addr"; }
ws_port=$(addr_port ws)
cert_port=$(addr_port cert)

log "starting a private containerd with locally built images (log in $demo/containerd.log)"
"$bin/testbed" containerd >"$demo/containerd.out" 2>"$demo/containerd.log" &
pids+=($!)
for _ in $(seq 600); do grep -q '^ready ' "$demo/containerd.out" 2>/dev/null && break; sleep 0.1; done
endpoint=$(sed -n 's/^ready //p' "$demo/containerd.out")
[ -n "$endpoint" ] || { echo "containerd did not start:" >&2; cat "$demo/containerd.log" >&2; exit 1; }

log "making an enrollment token and joining edge node demo-edge"
token=$("$bin/cloudcore" token --data-dir "$demo/cloud")
"$bin/edgecore" join --cloud 127.0.0.1 --ws-port "$ws_port" --cert-port "$cert_port" \
  --token "$token" --node-name demo-edge --data-dir "$demo/edge" --cri-endpoint "$endpoint"

# The embedded MQTT broker's default port (1883) may belong to a system broker: pick a free one.
mqtt_port=11883
while (exec 3<>"/dev/tcp/127.0.0.1/$mqtt_port") 2>/dev/null; do mqtt_port=$((mqtt_port + 1)); done
sed -i "s/127.0.0.1:1883/127.0.0.1:$mqtt_port/" "$demo/edge/edgecore.json"

log "starting edgecore (log in $demo/edgecore.log; embedded MQTT broker on 127.0.0.1:$mqtt_port)"
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
  hostNetwork: true
  containers:
  - name: hello
    image: localhost/busybox:test
    command: [sh, -c, "cat /config/message; echo; sleep 3600"]
    volumeMounts: [{name: config, mountPath: /config}]
  volumes: [{name: config, configMap: {name: hello-config}}]
YAML
log "waiting for the pod to run on the edge"
for _ in $(seq 600); do
  "$bin/cloudcore" get pods --data-dir "$demo/cloud" | grep -q '^hello .*1/1 .*Running' && break
  sleep 0.1
done
"$bin/cloudcore" get pods -o wide --data-dir "$demo/cloud"
"$bin/cloudcore" describe pod hello --data-dir "$demo/cloud"
log "what the gateway stored (served from its own store, with or without a cloud)"
"$bin/edgecore" meta list --data-dir "$demo/edge"
log "the container's output, from its log on the gateway (CRI log format)"
for _ in $(seq 50); do [ -s "$(ls "$demo"/edge/pods/*/logs/hello/0.log 2>/dev/null | head -1)" ] && break; sleep 0.1; done
cat "$demo"/edge/pods/*/logs/hello/0.log 2>/dev/null | tail -3 || true
echo
"$bin/cloudcore" get pods --data-dir "$demo/cloud" | grep -q '^hello .*1/1 .*Running' || {
  echo "the pod is not running; logs:" >&2; cat "$demo/cloudcore.log" "$demo/edgecore.log" >&2; exit 1; }
echo
echo "edgecore (pid $edge_pid): $(grep -E '^(VmRSS|Threads)' /proc/$edge_pid/status | tr -s ' \t' ' ' | paste -sd, -)"
echo "binary sizes: cloudcore $(stat -c %s "$bin/cloudcore") B, edgecore $(stat -c %s "$bin/edgecore") B"
if [ "$keep" = 1 ]; then
  echo "left running: cloudcore pid ${pids[0]}, containerd testbed pid ${pids[1]}, edgecore pid $edge_pid; data in $demo"
  echo "try: $bin/cloudcore get nodes --data-dir $demo/cloud"
else
  echo "stopping (run with --keep to leave them running)"
fi
