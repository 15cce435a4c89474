#!/usr/bin/env bash
# run-deploy-test.sh — boot nodeinit the way a site deploys it, under QEMU.
#
# Owns the deploy scenarios. The node image is what a site builds: the
# files extracted out of the .deb (dpkg-deb -x), the site's edit of
# /etc/nodeinit/nodeinit.toml, the libraries the package depends on (libc6,
# libgcc-s1), kernel modules, the VM test agent (tests/vm/agent) and a uenv
# image, packed read-only as a squashfs on the virtio disk (/dev/vda).
# The packing reuses tests/vm/mkinitramfs.sh (libraries via ldd, modules via
# modules.dep), the kernel tests/vm/fetch-kernel.sh, the boots
# tests/vm/boot-vm.sh; the agent runs the checks of run-vm-test.sh's exec
# scenario, which this script asserts on the console.
#
# Scenarios:
#   firststage  Warewulf-style: a busybox stand-in first stage mounts the
#               image and switch_roots to its /sbin/init -> /usr/sbin/nodeinit
#   dracut      Debian's dracut builds the initramfs with the 90nodeinit
#               module taken from the package; dracut mounts
#               root=/dev/vda rootfstype=squashfs ro and switch_roots to
#               init=/usr/sbin/nodeinit. The initramfs is checked too: the
#               module put nodeinit, its plugins, the site config and their
#               libraries in it, and that copy loads its plugins (chroot).
# Usage: run-deploy-test.sh [SCENARIO...]   (default: firststage dracut)
#
# Environment: DEPLOY_BOOT_TIMEOUT (seconds per boot, default 300: dracut
# alone takes ~15 s of emulated time), VM_CACHE (fetch-kernel.sh),
# DEPLOY_PACKAGES (dir with the .deb, default target/packages; built with
# packaging/build-packages.sh when missing).
# Touches the host only through apt-get install; dracut runs from a private
# copy of /usr/lib/dracut, so no module is installed on this machine.
# Ends with a `deploy-vm: N passed, M failed` line.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
vm=$repo/tests/vm
work=$repo/target/deploy-test
target_dir=${CARGO_TARGET_DIR:-$repo/target}
packages=${DEPLOY_PACKAGES:-$repo/target/packages}
boot_timeout=${DEPLOY_BOOT_TIMEOUT:-300}
# The same values as tests/vm/run-vm-test.sh and the agent's constants.
node_id=vm-node-01
hostname_fallback=vm-hostname-not-the-node-id
agent_path=/usr/bin/nodeinit-vm-agent
uenv_image=vmtest.sqfs
uenv_content="hello from the vmtest uenv"
root_modules=(loop squashfs virtio_pci virtio_blk)
firststage_modules=(virtio_pci virtio_blk squashfs)

passed=0 failed=0
declare -a failures=() summary=()

log() { echo "deploy-vm: $*" >&2; }
die() {
    echo "deploy-vm: error: $*" >&2
    echo "deploy-vm: $passed passed, $((failed + 1)) failed"
    exit 1
}
pass() { passed=$((passed + 1)); log "PASS $*"; }
fail() { failed=$((failed + 1)); failures+=("$*"); log "FAIL $*"; }
expect() { # scenario console description grep-pattern
    if grep -qE -- "$4" "$2"; then pass "$1: $3"; else fail "$1: $3 (no line matching /$4/ on the console)"; fi
}
refuse() { # scenario console description grep-pattern
    local hit
    if hit=$(grep -m1 -E -- "$4" "$2"); then fail "$1: $3 (console: $hit)"; else pass "$1: $3"; fi
}

# --- setup -------------------------------------------------------------------
ensure_packages() {
    local -a missing=()
    command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
    command -v mksquashfs >/dev/null || missing+=(squashfs-tools)
    command -v depmod >/dev/null || missing+=(kmod)
    command -v cpio >/dev/null || missing+=(cpio)
    command -v strip >/dev/null || missing+=(binutils)
    command -v dracut >/dev/null || missing+=(dracut-core)
    [[ -x /bin/busybox ]] && /bin/busybox --list 2>/dev/null | grep -qx switch_root || missing+=(busybox-static)
    ((${#missing[@]} == 0)) && return 0
    log "installing ${missing[*]}"
    apt-get update -qq >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
        die "apt-get install ${missing[*]} failed"
}

find_deb() {
    local -a debs
    shopt -s nullglob
    debs=("$packages"/nodeinit_*_amd64.deb)
    shopt -u nullglob
    if ((${#debs[@]} == 0)); then
        log "no .deb in $packages: running packaging/build-packages.sh"
        bash "$repo/packaging/build-packages.sh" >&2 || die "packaging/build-packages.sh failed"
        debs=("$packages"/nodeinit_*_amd64.deb)
    fi
    ((${#debs[@]} == 1)) || die "expected one nodeinit_*_amd64.deb in $packages, found ${#debs[@]}"
    DEB=${debs[0]}
}

build_agent() {
    log "building the VM test agent (tests/vm/agent)"
    (cd "$repo" && cargo build -q -p nodeinit-vm-agent) >&2 || die "cargo build -p nodeinit-vm-agent failed"
    [[ -f $target_dir/debug/nodeinit-vm-agent ]] || die "$target_dir/debug/nodeinit-vm-agent was not built"
}

# The site's edit of its conffile: the exec scenario of run-vm-test.sh —
# every backend required, the uenv image mounted during boot, exec of the
# agent, which checks the node and powers it off.
site_config() {
    cat <<EOF
[host]
plugin_dir = "/usr/lib/nodeinit/plugins"
on_failure = "poweroff"

[plugins.cgroup]
path = "cgroupfs"
required = true
[plugins.cgroup.options]
controllers = ["cpu", "memory", "io", "pids"]
require_controllers = true

[plugins.mount]
path = "squashfs"
required = true
[plugins.mount.options]
image_dirs = ["/images"]

[plugins.namespace]
path = "unshare"
required = true

[plugins.readiness]
path = "readiness"
required = true

[boot]
mounts = ["$uenv_image"]

[handoff]
agent = "command"
exec = "$agent_path"
args = ["--mode", "exec"]
mode = "exec"
EOF
}

# The node image: the package's files plus what a site's image has anyway.
make_node_image() {
    local site=$work/node-root
    rm -rf "$site" "$work/uenv-src"
    mkdir -p "$site" "$work/uenv-src"
    dpkg-deb -x "$DEB" "$site" || die "dpkg-deb -x $DEB failed"
    site_config >"$site/etc/nodeinit/nodeinit.toml"
    printf '%s\n' "$uenv_content" >"$work/uenv-src/hello.txt"
    mksquashfs "$work/uenv-src" "$work/$uenv_image" -quiet -noappend -all-root >/dev/null || die "mksquashfs (uenv) failed"
    printf '%s\n' "$hostname_fallback" >"$work/hostname"
    # mkinitramfs.sh gathers the libraries (ldd of the packaged nodeinit and
    # of the agent), the modules and their modules.load, and the mount
    # points; its archive is unpacked over the package's files.
    local -a args=(-o "$work/node-extras.img" --init "$site/usr/sbin/nodeinit" --strip
        --modules-dir "$MODULES_DIR"
        --binary "$target_dir/debug/nodeinit-vm-agent:$agent_path"
        --file "$work/$uenv_image:/images/$uenv_image" --file "$work/hostname:/etc/hostname"
        --symlink "/usr/sbin/nodeinit:/sbin/init")
    local m
    for m in "${root_modules[@]}"; do args+=(--module "$m"); done
    bash "$vm/mkinitramfs.sh" "${args[@]}" || die "mkinitramfs.sh (node image extras) failed"
    (cd "$site" && gzip -dc "$work/node-extras.img" | cpio -idmu --quiet --no-absolute-filenames) ||
        die "unpacking the node image extras failed"
    # /init is mkinitramfs.sh's copy of nodeinit: a node image boots /sbin/init.
    rm -f "$site/init"
    mksquashfs "$site" "$work/node.sqfs" -quiet -noappend -all-root >/dev/null || die "mksquashfs (node image) failed"
    NODE_ROOT=$site
    log "node image: $work/node.sqfs ($(stat -c %s "$work/node.sqfs") bytes) from $(basename "$DEB")"
    if cmp -s "$site/usr/sbin/nodeinit" <(dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./usr/sbin/nodeinit); then
        pass "node image: /usr/sbin/nodeinit is the packaged binary"
    else
        fail "node image: /usr/sbin/nodeinit differs from the one in $(basename "$DEB")"
    fi
}

boot() { # scenario initrd append
    BOOT_STATUS=0
    bash "$vm/boot-vm.sh" --kernel "$VMLINUZ" --initrd "$2" --console "$work/$1.console" \
        --disk "$work/node.sqfs" --timeout "$boot_timeout" --append "$3" 2>"$work/$1.boot.log" || BOOT_STATUS=$?
    cat "$work/$1.boot.log" >&2
    local ms
    ms=$(grep -oE 'after [0-9]+ ms' "$work/$1.boot.log" | awk '{ print $2 }') || true
    summary+=("$1: QEMU ran ${ms:-?} ms wall")
    log "--- $1: console markers ---"
    grep -E 'VMTEST|FIRSTSTAGE|phase=|nodeinit: |kernel modules|reboot: |Kernel panic|Attempted to kill init|dracut(-|:).*(Switching|switch_root|FATAL|Warning)|Run /init' \
        "$work/$1.console" | grep -vE 'VMTEST INFO phase:' | sed 's/^/  | /' >&2 || true
}

# What the exec scenario of run-vm-test.sh asserts, here on the node image.
node_checks() { # scenario console
    local s=$1 c=$2 slice uptime
    if ((BOOT_STATUS == 0)); then pass "$s: the VM ended on its own (QEMU status 0)"; else fail "$s: QEMU status $BOOT_STATUS (124: timeout, 125: kernel panic)"; fi
    refuse "$s" "$c" "no kernel panic" 'Kernel panic|Attempted to kill init'
    expect "$s" "$c" "the VM powered off" 'reboot: Power down'
    expect "$s" "$c" "after handoff the agent is PID 1" 'VMTEST PASS pid: exec mode: the agent is PID 1'
    expect "$s" "$c" "boot.json: PID 1, node id, every needed phase ok" "VMTEST PASS boot-json: pid1, node_id \"$node_id\""
    expect "$s" "$c" "the image's modules are loaded" 'VMTEST PASS modules: loaded by nodeinit: .*loop.*squashfs'
    expect "$s" "$c" "cgroup2 mounted at /sys/fs/cgroup" 'VMTEST PASS cgroup2:'
    for slice in pact.slice pact.slice/infra.slice pact.slice/network.slice pact.slice/gpu.slice pact.slice/audit.slice workload.slice; do
        expect "$s" "$c" "cpu memory io pids enabled in $slice" "VMTEST PASS controllers $slice:"
    done
    expect "$s" "$c" "cgroupfs scope reads back memory.max, cpu.weight, io.max" 'VMTEST PASS scope: memory.max=268435456 cpu.weight=250 io.max=\[[0-9]+:0 rbps=4194304 wbps=4194304'
    expect "$s" "$c" "readiness file holds the node id from the kernel command line" "VMTEST PASS readiness: /run/pact/ready holds \"$node_id\""
    expect "$s" "$c" "[boot].mounts image from the read-only root mounted under /run/pact/uenv" 'VMTEST PASS uenv-host: /run/pact/uenv/'
    refuse "$s" "$c" "no agent check failed" 'VMTEST FAIL'
    expect "$s" "$c" "agent finished with no failure" 'VMTEST DONE pass=[0-9]+ fail=0'
    log "--- $s: per-phase timings (boot.json) ---"
    grep -E 'VMTEST INFO phase:' "$c" | sed 's/^.*VMTEST INFO /  /' >&2 || true
    uptime=$(grep -m1 -oE 'VMTEST INFO handoff-uptime: [0-9.]+' "$c" | awk '{ print $4 }') || true
    summary+=("$s: handoff to the agent at kernel uptime ${uptime:-?} s")
}

run_firststage() {
    local c=$work/firststage.console
    local -a args=(-o "$work/firststage.img" --init "$here/first-stage.sh" --binary /bin/busybox
        --modules-dir "$MODULES_DIR")
    local m
    for m in "${firststage_modules[@]}"; do args+=(--module "$m"); done
    bash "$vm/mkinitramfs.sh" "${args[@]}" || die "mkinitramfs.sh (first stage) failed"
    boot firststage "$work/firststage.img" "nodeinit.node_id=$node_id"
    expect firststage "$c" "the first stage switched root to the image's /sbin/init" '^FIRSTSTAGE: switch_root to /sbin/init'
    refuse firststage "$c" "the first stage mounted the image" 'FIRSTSTAGE-FAIL'
    node_checks firststage "$c"
}

# dracut from a private copy of its module tree, with 90nodeinit taken out
# of the package, and the files from the node image (nodeinit_sourcedir):
# nothing is installed on this machine and the host's dracut.conf is ignored.
build_dracut_initramfs() {
    local base=$work/dracut-base img=$work/dracut.img
    rm -rf "$base" "$work/dracut-conf.d" "$img"
    cp -a /usr/lib/dracut "$base"
    cp -a "$NODE_ROOT/usr/lib/dracut/modules.d/90nodeinit" "$base/modules.d/"
    mkdir -p "$work/dracut-conf.d"
    : >"$work/dracut.conf"
    log "dracut --kver $KVER (module 90nodeinit from $(basename "$DEB"))"
    if dracutbasedir=$base nodeinit_sourcedir=$NODE_ROOT dracut --force --quiet --no-hostonly \
        --conf "$work/dracut.conf" --confdir "$work/dracut-conf.d" \
        --kver "$KVER" --kmoddir "$MODULES_DIR" --no-early-microcode --gzip \
        -m "base rootfs-block nodeinit" --add-drivers "virtio_blk virtio_pci squashfs loop" \
        "$img" >"$work/dracut.log" 2>&1; then
        pass "dracut: built $img ($(stat -c %s "$img") bytes) with -m \"base rootfs-block nodeinit\""
    else
        sed 's/^/  | /' "$work/dracut.log" >&2
        die "dracut failed (log above)"
    fi
    DRACUT_IMG=$img
    # Asked for but without a nodeinit to install: dracut refuses, and the
    # module says which file is missing.
    local err
    if err=$(dracutbasedir=$base nodeinit_sourcedir=$work/no-such-root dracut --force --no-hostonly \
        --conf "$work/dracut.conf" --confdir "$work/dracut-conf.d" \
        --kver "$KVER" --kmoddir "$MODULES_DIR" --no-early-microcode --gzip \
        -m "base rootfs-block nodeinit" "$work/refused.img" 2>&1); then
        fail "dracut: -m nodeinit without a nodeinit to install was accepted"
    elif grep -qF "nodeinit: $work/no-such-root/usr/sbin/nodeinit is missing" <<<"$err" &&
        grep -qF "dracut module 'nodeinit' cannot be found or installed" <<<"$err"; then
        pass "dracut: -m nodeinit without nodeinit is refused, naming the missing file"
    else
        fail "dracut: refused -m nodeinit with the wrong message: $err"
    fi
    rm -f "$work/refused.img"
}

# What 90nodeinit put in the initramfs, as lsinitrd lists it, and whether
# that copy works: chroot into the unpacked initramfs (its own libraries
# only) and run its nodeinit check on its config with its plugins.
check_dracut_initramfs() {
    local listing=$work/dracut.lsinitrd so lib
    lsinitrd "$DRACUT_IMG" >"$listing" 2>&1 || die "lsinitrd $DRACUT_IMG failed"
    in_image() { # description pattern
        if grep -qE -- "$2" "$listing"; then pass "dracut initramfs: $1"; else fail "dracut initramfs: $1 (lsinitrd has no /$2/)"; fi
    }
    in_image "nodeinit at /usr/sbin/nodeinit, 0755 root" '^-rwxr-xr-x +1 root +root .* usr/sbin/nodeinit$'
    for so in cgroupfs squashfs unshare readiness; do
        in_image "plugin libnodeinit_$so.so, 0644 root" "^-rw-r--r-- +1 root +root .* usr/lib/nodeinit/plugins/libnodeinit_$so\\.so\$"
    done
    in_image "the plugin directory is 0755 root" '^drwxr-xr-x +[0-9]+ root +root .* usr/lib/nodeinit/plugins$'
    in_image "the site's config at etc/nodeinit/nodeinit.toml" ' etc/nodeinit/nodeinit\.toml$'
    for lib in 'libc\.so\.6' 'libgcc_s\.so\.1' 'ld-linux-x86-64\.so\.2'; do
        in_image "library ${lib//\\/}" " (usr/)?lib(64|/x86_64-linux-gnu)?/$lib\$"
    done
    in_image "the loop and squashfs drivers (installkernel)" 'kernel/drivers/block/loop\.ko'

    local unpacked=$work/dracut-unpacked cgroup2 out loaded
    rm -rf "$unpacked"
    mkdir -p "$unpacked"
    (cd "$unpacked" && lsinitrd --unpack "$DRACUT_IMG" >/dev/null 2>&1) || die "lsinitrd --unpack failed"
    if cmp -s "$unpacked/etc/nodeinit/nodeinit.toml" "$NODE_ROOT/etc/nodeinit/nodeinit.toml"; then
        pass "dracut initramfs: etc/nodeinit/nodeinit.toml is the site's config"
    else
        fail "dracut initramfs: etc/nodeinit/nodeinit.toml is not the site's config"
    fi
    mkdir -p "$unpacked/proc" "$unpacked/sys"
    cgroup2=$(awk '$0 ~ / - cgroup2 / { print $5; exit }' /proc/self/mountinfo)
    # shellcheck disable=SC2016 # expanded by the inner shell
    out=$(unshare --mount --propagation private sh -c '
        mount -t proc proc "$1/proc" && mount --rbind /sys "$1/sys" && mount --bind "$2" "$1/sys/fs/cgroup" || exit 1
        exec chroot "$1" /usr/sbin/nodeinit check --config /etc/nodeinit/nodeinit.toml' \
        sh "$unpacked" "$cgroup2" 2>&1) || true
    # The site config execs the agent, which only the node image has: the
    # handoff preflight may fail here; the plugins must all load.
    loaded=$(grep -cE '^plugin +[a-z]+ +ok ' <<<"$out" || true)
    if ((loaded == 4)) && grep -q 'syntax and schema ok' <<<"$out"; then
        pass "dracut initramfs: its nodeinit (chroot, its own libraries) loads the config and all 4 plugins"
    else
        fail "dracut initramfs: nodeinit check in a chroot loaded $loaded of 4 plugins: $out"
    fi
}

run_dracut() {
    local c=$work/dracut.console
    build_dracut_initramfs
    check_dracut_initramfs
    boot dracut "$DRACUT_IMG" \
        "root=/dev/vda rootfstype=squashfs ro init=/usr/sbin/nodeinit rd.shell=0 rd.emergency=poweroff nodeinit.node_id=$node_id"
    expect dracut "$c" "dracut mounted the squashfs root read-only" 'dracut: Mounting /dev/vda with -o ro'
    expect dracut "$c" "dracut switched root (to init=/usr/sbin/nodeinit)" 'dracut: Switching root'
    expect dracut "$c" "nodeinit found the modules dracut had loaded already" 'kernel modules .*already=\[[^]]*(virtio_blk|squashfs)'
    node_checks dracut "$c"
}

# --- main ----------------------------------------------------------------------
scenarios=("$@")
((${#scenarios[@]})) || scenarios=(firststage dracut)
for s in "${scenarios[@]}"; do
    [[ $s =~ ^(firststage|dracut)$ ]] || die "unknown scenario '$s' (firststage dracut)"
done
started=$(date +%s)
mkdir -p "$work"
ensure_packages
eval "$(bash "$vm/fetch-kernel.sh")"
find_deb
build_agent
make_node_image
log "kernel $KVER, boot timeout ${boot_timeout}s"
for s in "${scenarios[@]}"; do
    "run_$s"
done
for line in "${summary[@]}"; do log "$line"; done
log "finished in $(($(date +%s) - started)) s"
for f in "${failures[@]}"; do log "failed: $f"; done
echo "deploy-vm: $passed passed, $failed failed"
((failed == 0))
