#!/bin/busybox sh
# shellcheck shell=dash
# first-stage.sh — a stand-in for a provisioner's first stage (Warewulf's
# wwinit, a site's own initramfs): it knows nothing of nodeinit.
#
# Owns: getting the node image's root mounted and switching into it. It
# loads the drivers packed next to it (the Debian kernel has virtio and
# squashfs as modules), waits for the disk, mounts the squashfs node image
# read-only, moves /dev over (nodeinit must cope with what a first stage
# leaves mounted) and execs the image's /sbin/init — which the node image
# links to /usr/sbin/nodeinit. Prints FIRSTSTAGE markers for the harness.
bb=/bin/busybox
$bb mount -t devtmpfs devtmpfs /dev; $bb mount -t proc proc /proc
k=/lib/modules/$($bb uname -r); while read -r m; do $bb insmod "$k/$m"; done <"$k/modules.load"
i=0; while [ ! -b /dev/vda ] && [ $i -lt 400 ]; do $bb usleep 50000; i=$((i + 1)); done
# The two lines every first stage ends with: mount the node image, switch_root into its /sbin/init.
$bb mkdir -p /newroot && $bb mount -t squashfs -o ro /dev/vda /newroot || { echo "FIRSTSTAGE-FAIL: mount /dev/vda"; $bb poweroff -f; }
echo "FIRSTSTAGE: switch_root to /sbin/init"; $bb umount /proc; $bb mount -o move /dev /newroot/dev; exec $bb switch_root /newroot /sbin/init
