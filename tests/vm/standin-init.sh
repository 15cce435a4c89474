#!/bin/busybox sh
# shellcheck shell=dash
# standin-init.sh — the shell-script /init nodeinit is measured against, and
# a proof of the VM harness without nodeinit.
#
# Owns: nothing but its own smoke checks. Up to the "done" marker it does
# exactly the work of the VM test's exec scenario (run-vm-test.sh, exec.toml),
# in the order a busybox init would (cf. pact's pact-init-wrapper.sh), so the
# harness's `boot ratio nodeinit/standin` is honest:
#   - the early mounts nodeinit makes (proc, sysfs, devtmpfs, devpts,
#     /dev/shm, /run, cgroup2 with nsdelegate,memory_recursiveprot);
#   - every module of modules.load (the same --module list), in list order;
#   - cpu io memory pids in the root's subtree_control, the slices cgroupfs's
#     create_hierarchy makes (pact.slice, its infra/network/gpu/audit slices,
#     workload.slice), the same controllers in each slice's subtree_control;
#   - the same uenv image (/images/vmtest.sqfs) on a read-only loop device,
#     mounted squashfs at /run/pact/uenv/vmtest (the squashfs plugin's path);
#   - the readiness file /run/pact/ready holding the node id from the
#     kernel command line (the readiness plugin's file).
# Then it prints "done uptime=" (the harness's end point: nodeinit's is the
# exec of the agent) and only after that runs its own smoke checks (io.max
# on the virtio disk, a dynamically linked binary), which nodeinit's exec
# scenario leaves to the agent. Busybox applets are called by full name so
# the image needs no /bin links.
bb=/bin/busybox
say() { echo "STANDIN: $*"; }
fail() { echo "STANDIN-FAIL: $*"; $bb sync; $bb poweroff -f; }
$bb mkdir -p /proc /sys /dev /run
$bb mount -t proc proc /proc || fail "mount proc"
$bb mount -t sysfs sysfs /sys || fail "mount sysfs"
$bb mount -t devtmpfs -o mode=0755 devtmpfs /dev || fail "mount devtmpfs"
$bb mkdir -p /dev/pts /dev/shm
$bb mount -t devpts -o mode=0620,ptmxmode=0666 devpts /dev/pts || fail "mount devpts"
$bb mount -t tmpfs -o mode=1777 tmpfs /dev/shm || fail "mount /dev/shm"
$bb mount -t tmpfs -o mode=0755 tmpfs /run || fail "mount /run"
$bb mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup || fail "mount cgroup2"
say "pid=$$ uptime=$($bb cut -d' ' -f1 /proc/uptime)"
kver=$($bb uname -r)
while read -r rel; do
    $bb insmod "/lib/modules/$kver/$rel" || fail "insmod $rel"
done < "/lib/modules/$kver/modules.load"
cg=/sys/fs/cgroup
for c in cpu io memory pids; do echo "+$c" > $cg/cgroup.subtree_control || fail "enable $c"; done
for slice in pact.slice pact.slice/infra.slice pact.slice/network.slice pact.slice/gpu.slice \
    pact.slice/audit.slice workload.slice; do
    $bb mkdir -p "$cg/$slice" || fail "mkdir $slice"
    for c in cpu io memory pids; do echo "+$c" > "$cg/$slice/cgroup.subtree_control" || fail "enable $c in $slice"; done
done
$bb mkdir -p /run/pact/uenv/vmtest
loop=$($bb losetup -f) || fail "losetup -f"
$bb losetup -r "$loop" /images/vmtest.sqfs || fail "losetup $loop"
$bb mount -t squashfs -o ro "$loop" /run/pact/uenv/vmtest || fail "mount squashfs"
node_id=$($bb sed -n 's/.*nodeinit.node_id=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "$node_id" > /run/pact/ready.tmp && $bb mv /run/pact/ready.tmp /run/pact/ready || fail "ready file"
say "done uptime=$($bb cut -d' ' -f1 /proc/uptime)"
# --- smoke checks, not part of the measured work ---
say "pact.slice controllers: $($bb cat $cg/pact.slice/cgroup.controllers)"
say "modules loaded: $($bb cut -d' ' -f1 /proc/modules | $bb tr '\n' ' ')"
say "uenv file: $($bb cat /run/pact/uenv/vmtest/hello.txt)"
say "ready file: $($bb cat /run/pact/ready)"
# virtio_blk probes asynchronously; wait for the block device to appear
# (bounded: the harness timeout is the real limit).
i=0; while [ ! -e /sys/block/vda/dev ] && [ $i -lt 200 ]; do $bb usleep 50000; i=$((i+1)); done
[ -e /sys/block/vda/dev ] || fail "no /sys/block/vda"
dev=$($bb cat /sys/block/vda/dev)
$bb mkdir -p $cg/pact.slice/t.scope
echo "$dev rbps=1048576 wbps=2097152" > $cg/pact.slice/t.scope/io.max || fail "io.max write"
say "io.max: $($bb cat $cg/pact.slice/t.scope/io.max)"
$bb rmdir $cg/pact.slice/t.scope
/bin/bash -c 'echo "STANDIN: dynamic bash ok, ${BASH_VERSION}"' || fail "dynamic binary"
say "cmdline node id: $node_id"
echo "STANDIN-PASS"
$bb umount /run/pact/uenv/vmtest
$bb sync
$bb poweroff -f
