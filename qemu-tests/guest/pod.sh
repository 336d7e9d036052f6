# The pod scenario (sourced by init.sh): edgecore on its daemonless runtime with crun runs the
# pod the host applied for this node, from the busybox image imported out of the disk. The pod
# copies its ConfigMap to the hostPath /var/lib/pod-out, crashes once, then runs; its exec
# liveness probe touches /var/lib/pod-out/probed, which tells this script the restarted
# container runs and edgecore probes it. Then edgecore is killed and started again: the same
# container must still run, adopted (the new edgecore probes it) rather than recreated.
#
# The root filesystem is the disk (/dev/vda, ext4, holding crun, its libraries and the image
# archive), as on a gateway with flash: crun's pivot_root cannot leave the initramfs (rootfs is
# no mount it can move), so stage one copies the initramfs onto the disk and switch_root
# (which frees the initramfs) runs this script again as stage two.

if [ -z "$EK_ON_DISK" ]; then
    mkdir -p /disk
    mount -t ext4 /dev/vda /disk || fail "mount the disk /dev/vda"
    cp -a /bin /etc /disk/ || fail "copy the initramfs onto the disk"
    mkdir -p /disk/proc /disk/sys /disk/dev /disk/tmp /disk/var/lib
    for m in /proc /sys /dev; do mount --move $m /disk$m || fail "move $m"; done
    export EK_ON_DISK=1
    exec switch_root /disk /bin/sh /etc/scenario.sh
fi

export PATH=/bin
fail() {
    echo "EK-FAIL $*"
    poweroff -f
}
kb() { grep "^$1:" "$2" | tr -s ' \t' ' ' | cut -d' ' -f2; }
. /etc/ek.env
DATA=/var/lib/edgecore
OUT=/var/lib/pod-out
mkdir -p $OUT
# cgroup v2 only, as on a current gateway distribution (crun refuses hybrid layouts).
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "mount cgroup2"
echo "EK-ROOT memavail_kb=$(kb MemAvailable /proc/meminfo) uptime_s=$(cut -d' ' -f1 /proc/uptime)"
crun --version >/tmp/crun-version 2>&1 || fail "crun does not run: $(cat /tmp/crun-version)"

edgecore join --cloud 10.0.2.2 --ws-port "$WS" --cert-port "$CERT" --token "$TOKEN" \
    --node-name "$NODE" --data-dir $DATA --runtime direct --oci-runtime /bin/crun \
    || fail "edgecore join"
# A 1 s crash back-off instead of 10 s keeps the crash-and-restart step short.
sed -i 's/"crash_backoff": "10s"/"crash_backoff": "1s"/' $DATA/edgecore.json
grep -q '"crash_backoff": "1s"' $DATA/edgecore.json || fail "no crash_backoff in $(cat $DATA/edgecore.json)"
edgecore image import /images/busybox.tar --data-dir $DATA || fail "edgecore image import"
echo "EK-JOINED uptime_s=$(cut -d' ' -f1 /proc/uptime)"
edgecore run --data-dir $DATA --log-level info &
EDGE=$!

# Waits up to $2 seconds for file $1 (0.1 s polls).
wait_file() {
    n=0
    while [ ! -e "$1" ]; do
        n=$((n + 1))
        [ $n -gt $(($2 * 10)) ] && return 1
        kill -0 $EDGE 2>/dev/null || fail "edgecore exited while waiting for $1"
        sleep 0.1
    done
}
oci() { crun --root $DATA/direct/oci "$@"; }
# The running containers' ids, comma-separated (the crashed one stays listed, stopped).
running() { oci list | awk '$3 == "running" { printf "%s%s", s, $1; s = "," }'; }

wait_file $OUT/probed 120 || fail "the pod's liveness probe never ran: $(oci list)"
echo "EK-POD-CONFIG $(cat $OUT/greeting)"
S=/proc/$EDGE/status
echo "EK-FOOTPRINT rss_kb=$(kb VmRSS $S) anon_kb=$(kb RssAnon $S) hwm_kb=$(kb VmHWM $S) threads=$(kb Threads $S) memavail_kb=$(kb MemAvailable /proc/meminfo) uptime_s=$(cut -d' ' -f1 /proc/uptime)"

BEFORE=$(running)
kill -9 $EDGE
wait $EDGE
rm $OUT/probed
edgecore run --data-dir $DATA --log-level info &
EDGE=$!
wait_file $OUT/probed 60 || fail "the restarted edgecore never probed the pod: $(oci list)"
echo "EK-ADOPTED before=$BEFORE after=$(running)"
wait $EDGE
fail "edgecore exited with status $?"
