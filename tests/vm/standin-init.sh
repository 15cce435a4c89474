#!/bin/busybox sh
# shellcheck shell=dash
# standin-init.sh — a stand-in /init proving the VM harness without nodeinit.
#
# Owns: nothing but its own smoke checks. It does what nodeinit's PID 1 work
# will do (mounts, cgroup2 controllers, module loading, a squashfs uenv mount,
# io.max on the virtio disk), prints one STANDIN-... marker per step for the
# harness to grep, and powers off. Busybox applets are called by full name so
# the image needs no /bin links.
bb=/bin/busybox
say() { echo "STANDIN: $*"; }
fail() { echo "STANDIN-FAIL: $*"; $bb sync; $bb poweroff -f; }
$bb mkdir -p /proc /sys /dev /run /sys/fs/cgroup
$bb mount -t proc proc /proc || fail "mount proc"
$bb mount -t sysfs sysfs /sys || fail "mount sysfs"
$bb mount -t devtmpfs devtmpfs /dev || fail "mount devtmpfs"
$bb mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || fail "mount cgroup2"
say "pid=$$ uptime=$($bb cut -d' ' -f1 /proc/uptime)"
say "root controllers: $($bb cat /sys/fs/cgroup/cgroup.controllers)"
for c in cpu memory io pids; do echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control || fail "enable $c"; done
$bb mkdir -p /sys/fs/cgroup/pact.slice
say "pact.slice controllers: $($bb cat /sys/fs/cgroup/pact.slice/cgroup.controllers)"
kver=$($bb uname -r)
while read -r rel; do
    $bb insmod "/lib/modules/$kver/$rel" || fail "insmod $rel"
done < "/lib/modules/$kver/modules.load"
say "modules loaded: $($bb cut -d' ' -f1 /proc/modules | $bb tr '\n' ' ')"
# virtio_blk probes asynchronously; wait for the block device to appear
# (bounded: the harness timeout is the real limit).
i=0; while [ ! -e /sys/block/vda/dev ] && [ $i -lt 200 ]; do $bb usleep 50000; i=$((i+1)); done
[ -e /sys/block/vda/dev ] || fail "no /sys/block/vda"
dev=$($bb cat /sys/block/vda/dev)
$bb mkdir -p /sys/fs/cgroup/pact.slice/t.scope
echo "+io" > /sys/fs/cgroup/pact.slice/cgroup.subtree_control || fail "enable io in pact.slice"
echo "$dev rbps=1048576 wbps=2097152" > /sys/fs/cgroup/pact.slice/t.scope/io.max || fail "io.max write"
say "io.max: $($bb cat /sys/fs/cgroup/pact.slice/t.scope/io.max)"
$bb rmdir /sys/fs/cgroup/pact.slice/t.scope
$bb mkdir -p /run/pact/uenv/test
loop=$($bb losetup -f) || fail "losetup -f"
$bb losetup -r "$loop" /images/test.sqfs || fail "losetup $loop"
$bb mount -t squashfs -o ro "$loop" /run/pact/uenv/test || fail "mount squashfs"
say "uenv file: $($bb cat /run/pact/uenv/test/hello.txt)"
/bin/bash -c 'echo "STANDIN: dynamic bash ok, ${BASH_VERSION}"' || fail "dynamic binary"
say "cmdline node id: $($bb sed -n 's/.*nodeinit.node_id=\([^ ]*\).*/\1/p' /proc/cmdline)"
say "done uptime=$($bb cut -d' ' -f1 /proc/uptime)"
echo "STANDIN-PASS"
$bb umount /run/pact/uenv/test
$bb sync
$bb poweroff -f
