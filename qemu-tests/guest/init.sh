#!/bin/sh
# PID 1 of a qemu-tests VM. Mounts the kernel filesystems, loads the modules, brings up the
# virtio network (the host's cloudcore is at QEMU's user-mode gateway 10.0.2.2), reports the
# memory left after boot and runs the scenario the harness put at /etc/scenario.sh (twin.sh or
# pod.sh). Lines starting with "EK-" are for the harness; everything else is diagnostics it
# shows when a step fails. /etc/ek.env (written by the harness) sets NODE, WS, CERT, TOKEN and
# what the scenario needs.

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /tmp /var/lib

fail() {
    echo "EK-FAIL $*"
    poweroff -f
}
kb() { grep "^$1:" "$2" | tr -s ' \t' ' ' | cut -d' ' -f2; }

. /etc/ek.env
for m in $(cat /etc/modules); do
    insmod "/lib/modules/$m.ko" || fail "insmod $m"
done
ip link set lo up
ip link set eth0 up || fail "no eth0: the virtio network did not come up"
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
hostname "$NODE"
echo "EK-BOOTED uptime_s=$(cut -d' ' -f1 /proc/uptime) memtotal_kb=$(kb MemTotal /proc/meminfo) memavail_kb=$(kb MemAvailable /proc/meminfo)"

. /etc/scenario.sh
