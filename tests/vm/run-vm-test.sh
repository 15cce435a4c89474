#!/usr/bin/env bash
# run-vm-test.sh — nodeinit end to end on a real kernel, under QEMU (no KVM).
#
# Owns the VM test: installs what it needs from Debian's packages, fetches
# the kernel (cached, fetch-kernel.sh), builds nodeinit, the four reference
# plugins and the test agent (tests/vm/agent, a workspace member), packs one
# initramfs per scenario (mkinitramfs.sh), boots each (boot-vm.sh) and
# asserts on the serial console. Prints every scenario's console markers,
# the per-phase timings from boot.json and the kernel uptime at handoff,
# then a closing `vm-test: N passed, M failed` line.
#
# Scenarios:
#   builder     mkinitramfs.sh refusals, reproducibility, GNU cpio reads it
#   standin     a busybox /init doing exactly the exec scenario's work (the
#               same modules, controllers, slices, uenv image on a loop device,
#               readiness file: see standin-init.sh), the baseline of the
#               boot ratio; then it proves io.max on the virtio disk
#   exec        nodeinit (PID 1) loads the modules, mounts cgroup2, builds the
#               slices, mounts the [boot] uenv image, signals readiness and
#               execs the agent, which must be PID 1 and checks all of it
#   supervise   nodeinit stays PID 1 and serves the handoff socket; the agent
#               gets pid/net/mnt namespaces with the uenv image, setns()es and
#               reads it, crashes, is restarted, and asks for a power-off
#   missing     a required plugin is missing: on_failure=poweroff, the error
#               on the console, no panic
#   fault-segv  the required readiness plugin (fixture `faulty`) segfaults in
#               signal_ready: the worker dies, PID 1 lives; on_failure=shell
#               runs the image's /bin/sh, a script that prints boot.json (the
#               reason is in it) and powers off
#   fault-abort, fault-exit, fault-hang  the same plugin aborts, exit(3)s or
#               never returns (timeout_secs = 3): on_failure=poweroff with the
#               reason on the console, never "Attempted to kill init"
#   optional    an optional plugin segfaults in its constructor: the boot
#               goes on without it and execs the agent, which finds the
#               reason in boot.json
#   reload      supervise mode with a live allocation: the plugin file is
#               replaced by a rebuild with another version string and
#               `nodeinit reload` hands over to it (`nodeinit status` shows
#               it, the allocation keeps its namespaces); a truncated file
#               is refused and nothing changes
# With both exec and standin run, one line compares them on the same kernel
# in the same run: `vm-test: boot ratio nodeinit/standin = 0.xx` (nodeinit's
# `Run /init` -> the agent's first uptime reading after the handoff, against
# the standin's `Run /init` -> its "done" marker, which comes after the same
# work). nodeinit, the plugins and the agent are release builds (what sites
# ship), stripped by mkinitramfs.sh --strip.
# The supervise scenario also checks PID 1 maps no plugin and that a worker
# killed with SIGSEGV is restarted with the live allocation intact.
# The node id is given as nodeinit.node_id= on the kernel command line; the
# image's /etc/hostname names another node, so taking the wrong source fails.
# Usage: run-vm-test.sh [SCENARIO...]   (default: all, in that order)
#
# Environment: VM_CARGO_TARGET_DIR (default <repo>/target), VM_BOOT_TIMEOUT
# (seconds per boot, default 90), VM_CACHE (kernel cache, fetch-kernel.sh),
# VM_NO_BUILD=1 (pack the artifacts already built instead of running cargo).
# The release profile is the workspace's [profile.release]: the same build
# `cargo deb` and .ci/deploy-test reuse.
# Must never touch the host beyond apt-get install and files under target/.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=$repo/target/vm-test
target_dir=${VM_CARGO_TARGET_DIR:-$repo/target}
boot_timeout=${VM_BOOT_TIMEOUT:-90}
# Release builds: what sites ship (and what .ci/deploy-test packs).
profile=release
node_id=vm-node-01
# /etc/hostname in the image names a different node: nodeinit must take the
# id from the kernel command line first (DESIGN §5), and the readiness check
# tells the two apart.
hostname_fallback=vm-hostname-not-the-node-id
plugin_dir=/usr/lib/nodeinit/plugins
agent_path=/usr/bin/nodeinit-vm-agent
# The same words as the agent's namespaces.rs constants.
uenv_image=vmtest.sqfs
uenv_content="hello from the vmtest uenv"
modules=(loop squashfs virtio_pci virtio_blk)

passed=0 failed=0
declare -a failures=() summary=()

log() { echo "vm-test: $*" >&2; }
die() {
    echo "vm-test: error: $*" >&2
    echo "vm-test: 0 passed, 1 failed"
    exit 1
}
pass() { passed=$((passed + 1)); log "PASS $*"; }
fail() { failed=$((failed + 1)); failures+=("$*"); log "FAIL $*"; }

# --- setup -----------------------------------------------------------------
ensure_packages() {
    local -a missing=()
    command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
    command -v mksquashfs >/dev/null || missing+=(squashfs-tools)
    command -v depmod >/dev/null || missing+=(kmod)
    command -v cpio >/dev/null || missing+=(cpio)
    command -v strip >/dev/null || missing+=(binutils)
    [[ -x /bin/busybox ]] && /bin/busybox --list 2>/dev/null | grep -qx insmod || missing+=(busybox-static)
    ((${#missing[@]} == 0)) && return 0
    log "installing ${missing[*]}"
    apt-get update -qq >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
        die "apt-get install ${missing[*]} failed"
}

make_fixtures() {
    mkdir -p "$work"
    rm -rf "$work/uenv-src"
    mkdir -p "$work/uenv-src"
    printf '%s\n' "$uenv_content" >"$work/uenv-src/hello.txt"
    mksquashfs "$work/uenv-src" "$work/$uenv_image" -quiet -noappend -all-root >/dev/null ||
        die "mksquashfs failed"
    printf '%s\n' "$hostname_fallback" >"$work/hostname"
    # A small disk so io.max has a real block device (virtio, /dev/vda).
    rm -f "$work/disk.raw"
    truncate -s 16M "$work/disk.raw"
}

build_nodeinit() {
    local out=$target_dir/$profile v2=$target_dir/fixtures-faulty-v2/$profile
    if [[ ${VM_NO_BUILD:-0} == 1 ]]; then
        log "VM_NO_BUILD=1: using the artifacts already in $out"
    else
        log "building nodeinit, the reference plugins and the test agent ($profile, CARGO_TARGET_DIR=$target_dir)"
        (cd "$repo" && CARGO_TARGET_DIR=$target_dir cargo build -q --profile "$profile" -p nodeinit \
            -p nodeinit-cgroupfs -p nodeinit-squashfs -p nodeinit-unshare -p nodeinit-readiness \
            -p nodeinit-faulty -p nodeinit-vm-agent) >&2 ||
            die "cargo build of nodeinit, its plugins and tests/vm/agent failed"
        # The reload scenario's "new version" of the faulty plugin.
        (cd "$repo" && FAULTY_VERSION=2.0.0-reload cargo build -q --profile "$profile" -p nodeinit-faulty \
            --target-dir "$target_dir/fixtures-faulty-v2") >&2 ||
            die "cargo build of the rebuilt faulty plugin failed"
    fi
    [[ -f $v2/libnodeinit_faulty.so ]] || die "$v2/libnodeinit_faulty.so was not built"
    local artifact
    for artifact in nodeinit nodeinit-vm-agent libnodeinit_cgroupfs.so libnodeinit_squashfs.so \
        libnodeinit_unshare.so libnodeinit_readiness.so libnodeinit_faulty.so; do
        [[ -f $out/$artifact ]] || die "$out/$artifact was not built"
    done
}

# --- configs ---------------------------------------------------------------
write_config() { # scenario
    local scenario=$1 file=$work/$1.toml
    case $scenario in
        exec | supervise)
            cat >"$file" <<EOF
[host]
plugin_dir = "$plugin_dir"
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

$(scenario_tables "$scenario")
EOF
            ;;
        fault-* | optional)
            local fault=${scenario#fault-} required=true at=signal_ready on_failure=poweroff mode=exec
            [[ $scenario == optional ]] && fault=segv required=false at=constructor mode=optional
            [[ $scenario == fault-segv ]] && on_failure=shell
            cat >"$file" <<EOF
[host]
plugin_dir = "$plugin_dir"
on_failure = "$on_failure"

[plugins.cgroup]
path = "cgroupfs"
required = true

[plugins.readiness]
path = "faulty"
required = $required
timeout_secs = 3
[plugins.readiness.options]
fault = "$fault"
at = "$at"

[handoff]
agent = "command"
exec = "$agent_path"
args = ["--mode", "$mode"]
mode = "exec"
EOF
            ;;
        reload)
            cat >"$file" <<EOF
[host]
plugin_dir = "$plugin_dir"
on_failure = "poweroff"

[plugins.mount]
path = "squashfs"
[plugins.mount.options]
image_dirs = ["/images"]

[plugins.namespace]
path = "unshare"

[plugins.readiness]
path = "faulty"
[plugins.readiness.options]
fault = "segv"
at = "destroy_scope"

[handoff]
agent = "command"
exec = "$agent_path"
args = ["--mode", "reload", "--shutdown-signal", "PWR"]
mode = "supervise"
grace_secs = 5
EOF
            ;;
        missing)
            cat >"$file" <<EOF
[host]
plugin_dir = "$plugin_dir"
on_failure = "poweroff"

[plugins.cgroup]
path = "$plugin_dir/libnodeinit_vmtest_missing.so"
required = true

[handoff]
agent = "command"
exec = "$agent_path"
args = ["--mode", "exec"]
mode = "exec"
EOF
            ;;
    esac
}

# [boot] and [handoff] of the exec and supervise scenarios: exec acquires the
# uenv image during boot (the boot_mounts phase); supervise leaves that to the
# namespace request and has the restarted agent ask for a power-off (SIGPWR;
# SIGTERM would mean reboot).
scenario_tables() { # scenario
    case $1 in
        exec) printf '[boot]\nmounts = ["%s"]\n\n[handoff]\nagent = "command"\nexec = "%s"\nargs = ["--mode", "exec"]\nmode = "exec"\n' \
            "$uenv_image" "$agent_path" ;;
        supervise) printf '[handoff]\nagent = "command"\nexec = "%s"\nargs = ["--mode", "supervise", "--shutdown-signal", "PWR"]\nmode = "supervise"\ngrace_secs = 5\n' \
            "$agent_path" ;;
    esac
}

pack() { # scenario -> $work/SCENARIO.img
    local scenario=$1 image=$work/$1.img config
    local -a args=(-o "$image" --strip --modules-dir "$MODULES_DIR")
    local m
    for m in "${modules[@]}"; do args+=(--module "$m"); done
    if [[ $scenario == standin ]]; then
        args+=(--init "$here/standin-init.sh" --binary /bin/busybox --binary /bin/bash
            --file "$work/$uenv_image:/images/$uenv_image")
    else
        write_config "$scenario"
        config=$work/$scenario.toml
        args+=(--init "$target_dir/$profile/nodeinit" --config "$config"
            --binary "$target_dir/$profile/nodeinit-vm-agent:$agent_path"
            --file "$work/$uenv_image:/images/$uenv_image" --file "$work/hostname:/etc/hostname")
        local plugin
        for plugin in cgroupfs squashfs unshare readiness faulty; do
            args+=(--plugin "$target_dir/$profile/libnodeinit_$plugin.so")
        done
        if [[ $scenario == reload ]]; then
            head -c 5000 "$target_dir/$profile/libnodeinit_faulty.so" >"$work/faulty-broken.so"
            args+=(--file "$target_dir/fixtures-faulty-v2/$profile/libnodeinit_faulty.so:/images/faulty-v2.so"
                --file "$work/faulty-broken.so:/images/faulty-broken.so")
        fi
        if [[ $scenario == fault-segv ]]; then
            # The rescue "shell": prints boot.json and powers off.
            printf '#!/bin/busybox sh\necho VMTEST BOOTJSON-BEGIN\n/bin/busybox cat /run/nodeinit/boot.json\necho\necho VMTEST BOOTJSON-END\n/bin/busybox poweroff -f\n' >"$work/rescue-sh"
            chmod 755 "$work/rescue-sh"
            args+=(--binary /bin/busybox --file "$work/rescue-sh:/bin/sh")
        fi
    fi
    bash "$here/mkinitramfs.sh" "${args[@]}" || die "mkinitramfs for $scenario failed"
}

# --- assertions --------------------------------------------------------------
expect() { # scenario console description grep-pattern
    if grep -qE -- "$4" "$2"; then pass "$1: $3"; else fail "$1: $3 (no line matching /$4/ on the console)"; fi
}
refuse() { # scenario console description grep-pattern
    local hit
    if hit=$(grep -m1 -E -- "$4" "$2"); then fail "$1: $3 (console: $hit)"; else pass "$1: $3"; fi
}

show_markers() { # scenario console
    log "--- $1: console markers ---"
    grep -E 'VMTEST|STANDIN|phase=|supervise event=|shutting down|nodeinit: |reboot: |Run /init|Kernel panic|Attempted to kill init' "$2" |
        grep -vE 'VMTEST INFO (phase|handoff-uptime|restart-uptime):' | sed 's/^/  | /' >&2 || true
}

# Under TCG the guest kernel can livelock while it patches its own text:
# the worker's first memory-cgroup mkdir enables the memcg kmem and socket
# static keys (int3-based patching of every slab allocation site, with
# IPIs) while the modules thread's finit_module allocates on the other
# vCPU; both vCPUs then spin at the patched site (the consoles of the CI
# runs that hit it show both at `__kmem_cache_alloc_node+0x5e` or
# `kmem_cache_alloc_lru+0x62`, `<0f> 1f 44 00 00`, for 90 s), the guest
# reports a soft lockup and the boot runs into the timeout. That is the
# emulator, not nodeinit, and no user-space code can cause it on hardware.
# `cgroup.memory=nokmem,nosocket` leaves those two keys off (every
# scenario, the standin too, so the boot ratio stays fair; memory.max,
# memory.stat and the controller itself are unchanged), and a boot that
# still reports a soft lockup (another patch site) is booted again, at
# most twice, with the retry reported. So is a boot whose kernel never
# started /init ("Run /init" is not on its console: it hung in its own
# start-up, e.g. at "Switched to clocksource hpet"), before any nodeinit
# code ran.
kernel_args="nodeinit.node_id=$node_id cgroup.memory=nokmem,nosocket"
max_boots=3

boot() { # scenario: packs and boots it; console in $work/SCENARIO.console, QEMU status in BOOT_STATUS
    pack "$1"
    local attempt
    for ((attempt = 1; attempt <= max_boots; attempt++)); do
        BOOT_STATUS=0
        bash "$here/boot-vm.sh" --kernel "$VMLINUZ" --initrd "$work/$1.img" --console "$work/$1.console" \
            --disk "$work/disk.raw" --timeout "$boot_timeout" \
            --append "$kernel_args" 2>"$work/$1.boot.log" || BOOT_STATUS=$?
        cat "$work/$1.boot.log" >&2
        if ((BOOT_STATUS == 124)) && ((attempt < max_boots)); then
            local why=""
            if grep -qE 'watchdog: BUG: soft lockup|rcu_preempt kthread starved' "$work/$1.console"; then
                why="the guest reported a soft lockup (a TCG livelock)"
            elif ! grep -q 'Run /init' "$work/$1.console"; then
                why="the guest kernel never ran /init (it hung before nodeinit started)"
            fi
            if [[ -n "$why" ]]; then
                cp "$work/$1.console" "$work/$1.stalled-$attempt.console"
                log "RETRY $1: $why; console kept as $1.stalled-$attempt.console; booting it once more"
                summary+=("$1: boot $attempt stalled ($why); booted again")
                continue
            fi
        fi
        break
    done
}

common_end() { # scenario console
    summary+=("$1: QEMU ran $(boot_seconds "$1")")
    if ((BOOT_STATUS == 0)); then pass "$1: the VM ended on its own (QEMU status 0)"; else fail "$1: QEMU status $BOOT_STATUS (124: timeout, 125: kernel panic)"; fi
    refuse "$1" "$2" "no kernel panic" 'Kernel panic|Attempted to kill init'
    expect "$1" "$2" "the VM powered off" 'reboot: Power down'
}

# The builder's refusals and its reproducibility; no VM needed.
run_builder() {
    local out=$work/builder.img err
    refused() { # description expected-message args...
        local what=$1 message=$2
        shift 2
        if err=$(bash "$here/mkinitramfs.sh" -o "$out" "$@" 2>&1); then
            fail "builder: $what was accepted"
        elif grep -qF -- "$message" <<<"$err"; then
            pass "builder: $what is refused ($message)"
        else
            fail "builder: $what refused with the wrong message: $err"
        fi
    }
    printf '#!/bin/sh\n' >"$work/not-executable"
    chmod 644 "$work/not-executable"
    refused "a non-executable --init" "is not executable" --init "$work/not-executable"
    refused "a missing input" "input '$work/nope' does not exist" --init /bin/busybox --file "$work/nope:/x"
    refused "a relative destination" "must be an absolute path" --init /bin/busybox --file "$work/disk.raw:x"
    refused "two sources for one path" "/x is given twice" --init /bin/busybox \
        --file "$work/disk.raw:/x" --file "$work/$uenv_image:/x"
    refused "an unknown module" "module 'no_such_module' is not in" --init /bin/busybox \
        --modules-dir "$MODULES_DIR" --module no_such_module
    refused "a module without --modules-dir" "needs --modules-dir" --init /bin/busybox --module loop
    if [[ -e $out ]]; then fail "builder: $out exists after refusals"; else pass "builder: no archive is left behind after a refusal"; fi
    local -a same=(--init /bin/busybox --file "$work/$uenv_image:/images/a.sqfs" --modules-dir "$MODULES_DIR" --module squashfs)
    bash "$here/mkinitramfs.sh" -o "$work/repro1.img" "${same[@]}" 2>/dev/null || die "mkinitramfs failed on valid input"
    bash "$here/mkinitramfs.sh" -o "$work/repro2.img" "${same[@]}" 2>/dev/null || die "mkinitramfs failed on valid input"
    if cmp -s "$work/repro1.img" "$work/repro2.img"; then pass "builder: the same inputs give the same bytes"; else fail "builder: two builds of the same inputs differ"; fi
    local listing
    listing=$(gzip -dc "$work/repro1.img" | cpio -it --quiet 2>&1)
    if grep -qx 'dev/console' <<<"$listing" && grep -qx 'init' <<<"$listing" &&
        grep -qx "lib/modules/$KVER/kernel/fs/squashfs/squashfs.ko" <<<"$listing"; then
        pass "builder: GNU cpio reads the archive (init, dev/console, squashfs.ko)"
    else
        fail "builder: GNU cpio listing lacks init, dev/console or squashfs.ko: $listing"
    fi
    rm -f "$work/repro1.img" "$work/repro2.img" "$work/not-executable"
}

run_standin() {
    local console=$work/standin.console
    boot standin
    show_markers standin "$console"
    common_end standin "$console"
    expect standin "$console" "stand-in init ran as PID 1" 'STANDIN: pid=1 '
    expect standin "$console" "pact.slice has cpu io memory pids" 'STANDIN: pact.slice controllers: .*cpu.*io.*memory.*pids'
    expect standin "$console" "io.max accepted for the virtio disk" 'STANDIN: io.max: [0-9]+:0 rbps=1048576 wbps=2097152'
    expect standin "$console" "squashfs uenv mounted from a loop device" "STANDIN: uenv file: $uenv_content"
    expect standin "$console" "readiness file holds the node id" "STANDIN: ready file: ${node_id}[[:space:]]*$"
    expect standin "$console" "dynamically linked binary runs from the initramfs" 'STANDIN: dynamic bash ok'
    expect standin "$console" "all stand-in steps passed" '^STANDIN-PASS'
}

agent_checks() { # scenario console
    local s=$1 c=$2 slice
    expect "$s" "$c" "boot.json: PID 1, node id, every needed phase ok" "VMTEST PASS boot-json: pid1, node_id \"$node_id\""
    expect "$s" "$c" "nodeinit loaded the packed kernel modules" 'VMTEST PASS modules: loaded by nodeinit: .*squashfs.*virtio_blk'
    expect "$s" "$c" "cgroup2 mounted at /sys/fs/cgroup" 'VMTEST PASS cgroup2:'
    for slice in pact.slice pact.slice/infra.slice pact.slice/network.slice pact.slice/gpu.slice pact.slice/audit.slice workload.slice; do
        expect "$s" "$c" "cpu memory io pids enabled in $slice" "VMTEST PASS controllers $slice:"
    done
    expect "$s" "$c" "cgroupfs scope reads back memory.max, cpu.weight, io.max" 'VMTEST PASS scope: memory.max=268435456 cpu.weight=250 io.max=\[[0-9]+:0 rbps=4194304 wbps=4194304'
    expect "$s" "$c" "readiness file holds the node id from the kernel command line" "VMTEST PASS readiness: /run/pact/ready holds \"$node_id\""
    refuse "$s" "$c" "no agent check failed" 'VMTEST FAIL'
    log "--- $s: per-phase timings (boot.json) and kernel uptime ---"
    grep -E 'VMTEST INFO (phase|handoff-uptime|restart-uptime):' "$c" | sed 's/^.*VMTEST INFO /  /' >&2 || true
    local uptime
    uptime=$(grep -m1 -oE 'VMTEST INFO handoff-uptime: [0-9.]+' "$c" | awk '{ print $4 }') || true
    summary+=("$s: handoff to the agent at kernel uptime ${uptime:-?} s")
}

# The kernel's timestamp of "Run /init" on a console, in seconds.
run_init_at() { # console
    grep -m1 -oE '^\[ *[0-9]+\.[0-9]+\] Run /init' "$1" 2>/dev/null | grep -oE '[0-9]+\.[0-9]+' || true
}

# nodeinit's /init -> handoff against the standin's /init -> done, same
# kernel, same run: one line, always printed. nodeinit's end is the kernel
# uptime in boot.json, which it writes just before it execs the agent; the
# standin's "done" comes at the same point of the same work. The agent's own
# first uptime reading (its exec and start on top) is shown next to it.
boot_ratio() {
    local n_start n_end n_agent s_start s_end
    if [[ ! " ${scenarios[*]} " == *" exec "* || ! " ${scenarios[*]} " == *" standin "* ]]; then
        echo "vm-test: boot ratio nodeinit/standin = n/a (needs the exec and standin scenarios in the same run)"
        return 0
    fi
    n_start=$(run_init_at "$work/exec.console")
    n_end=$(grep -m1 -oE 'kernel uptime when boot.json was written: [0-9.]+' "$work/exec.console" | awk '{ print $7 }') || true
    n_agent=$(grep -m1 -oE 'VMTEST INFO handoff-uptime: [0-9.]+' "$work/exec.console" | awk '{ print $4 }') || true
    s_start=$(run_init_at "$work/standin.console")
    s_end=$(grep -m1 -oE 'STANDIN: done uptime=[0-9.]+' "$work/standin.console" | cut -d= -f2) || true
    if [[ -z $n_start || -z $n_end || -z $s_start || -z $s_end ]]; then
        fail "boot ratio: a time is missing (exec: Run /init ${n_start:-?} handoff ${n_end:-?}; standin: Run /init ${s_start:-?} done ${s_end:-?})"
        echo "vm-test: boot ratio nodeinit/standin = ?"
        return 0
    fi
    awk -v ns="$n_start" -v ne="$n_end" -v na="${n_agent:-0}" -v ss="$s_start" -v se="$s_end" 'BEGIN {
        n = ne - ns; s = se - ss
        if (s <= 0) { print "vm-test: boot ratio nodeinit/standin = ? (standin took no time)"; exit }
        printf "vm-test: boot ratio nodeinit/standin = %.2f (nodeinit /init -> handoff %.2f s, agent running at %.2f s; standin /init -> done %.2f s)\n", n / s, n, na - ns, s
    }'
}

# QEMU's wall time for one boot, from boot-vm.sh's closing line.
boot_seconds() { # scenario
    local ms
    ms=$(grep -oE 'QEMU exited with status [0-9]+ after [0-9]+ ms' "$work/$1.boot.log" 2>/dev/null | awk '{ print $7 }') || true
    if [[ -n $ms ]]; then echo "$((ms / 1000)).$(((ms % 1000) / 100)) s wall"; else echo "? s wall"; fi
}

run_exec() {
    local console=$work/exec.console
    boot exec
    show_markers exec "$console"
    common_end exec "$console"
    expect exec "$console" "after handoff the agent is PID 1" 'VMTEST PASS pid: exec mode: the agent is PID 1'
    expect exec "$console" "[boot].mounts image mounted under /run/pact/uenv" 'VMTEST PASS uenv-host: /run/pact/uenv/'
    agent_checks exec "$console"
    expect exec "$console" "agent finished with no failure" 'VMTEST DONE pass=[0-9]+ fail=0'
}

run_supervise() {
    local console=$work/supervise.console
    boot supervise
    show_markers supervise "$console"
    common_end supervise "$console"
    expect supervise "$console" "nodeinit stays PID 1, agent is its child" 'VMTEST PASS pid: supervise mode: agent is pid [0-9]+, nodeinit stays PID 1 \(/init\)'
    agent_checks supervise "$console"
    expect supervise "$console" "namespaces received over the handoff socket" 'VMTEST PASS handoff:'
    expect supervise "$console" "uenv mounted under /run/pact/uenv" 'VMTEST PASS uenv-host: /run/pact/uenv/'
    expect supervise "$console" "received FDs are new pid/net/mnt namespaces" 'VMTEST PASS namespace-fds:'
    expect supervise "$console" "uenv file read after setns into the mount namespace" 'VMTEST PASS uenv-in-namespace:'
    expect supervise "$console" "PID 1 maps no plugin; the worker does" 'VMTEST PASS pid1-maps: /proc/1/maps has no libnodeinit_'
    expect supervise "$console" "a worker killed by SIGSEGV is restarted; the live allocation survives" 'VMTEST PASS worker-restart: worker [0-9]+ killed by SIGSEGV'
    expect supervise "$console" "nodeinit saw the worker die and restarted it" 'worker restarted and serving'
    expect supervise "$console" "the new worker adopted the allocation's holder" 'holder adopted'
    expect supervise "$console" "allocation_ended acknowledged by the provider" 'VMTEST PASS allocation-ended:'
    expect supervise "$console" "nodeinit saw the agent crash" 'supervise event=Exited \{ pid: [0-9]+, status: "killed by SIGABRT" \}'
    expect supervise "$console" "crashed agent was restarted" 'VMTEST PASS restarted:'
    expect supervise "$console" "nodeinit took SIGPWR as a power-off request" 'supervise event=ShutdownRequested \{ signal: SIGPWR \}'
    expect supervise "$console" "nodeinit stopped the agent with SIGTERM on shutdown" 'VMTEST INFO shutdown: got SIGTERM from nodeinit'
    expect supervise "$console" "the agent exited 0 before the power-off" 'supervise event=Exited \{ pid: [0-9]+, status: "exited 0" \}'
    expect supervise "$console" "nodeinit powered off (not reboot)" 'shutting down action="poweroff"'
}

run_missing() {
    local console=$work/missing.console
    boot missing
    show_markers missing "$console"
    common_end missing "$console"
    expect missing "$console" "the plugins phase failed, naming the missing plugin" 'phase="plugins" status="failed"'
    expect missing "$console" "the error on the console names the missing .so" 'nodeinit: boot failed: phase plugins failed: plugin cgroup \(/usr/lib/nodeinit/plugins/libnodeinit_vmtest_missing\.so\): no such file'
    expect missing "$console" "later phases did not run on a broken base" 'not run: phase plugins failed phase="cgroup_hierarchy" status="skipped"'
    expect missing "$console" "on_failure = poweroff was applied" 'shutting down action="poweroff"'
    refuse missing "$console" "the agent never ran on a broken base" 'VMTEST '
}

fault_reason() { # scenario -> the reason nodeinit must give
    case $1 in
        fault-segv) echo 'plugin faulty: worker killed by SIGSEGV in signal_ready' ;;
        fault-abort) echo 'plugin faulty: worker killed by SIGABRT in signal_ready' ;;
        fault-exit) echo 'plugin faulty: worker exited with status 3 in signal_ready' ;;
        fault-hang) echo 'plugin faulty did not return from signal_ready within 3 s' ;;
    esac
}

run_fault() { # scenario
    local s=$1 console=$work/$1.console reason
    reason=$(fault_reason "$s")
    boot "$s"
    show_markers "$s" "$console"
    summary+=("$s: QEMU ran $(boot_seconds "$s")")
    if ((BOOT_STATUS == 0)); then pass "$s: the VM ended on its own (QEMU status 0)"; else fail "$s: QEMU status $BOOT_STATUS (124: timeout, 125: kernel panic)"; fi
    refuse "$s" "$console" "no kernel panic, PID 1 survived the plugin" 'Kernel panic|Attempted to kill init'
    expect "$s" "$console" "the VM powered off" 'reboot: Power down'
    expect "$s" "$console" "the reason on the console" "nodeinit: boot failed: phase readiness failed: $reason"
    refuse "$s" "$console" "no handoff on a broken base" 'phase="handoff"'
    refuse "$s" "$console" "the agent never ran" 'VMTEST (PASS|FAIL|DONE)'
    if [[ $s == fault-segv ]]; then
        expect "$s" "$console" "on_failure = shell ran the image's /bin/sh" 'VMTEST BOOTJSON-BEGIN'
        expect "$s" "$console" "boot.json holds the reason" "\"phase readiness: $reason\""
    else
        expect "$s" "$console" "on_failure = poweroff was applied" 'shutting down action="poweroff"'
    fi
}
run_fault-segv() { run_fault fault-segv; }
run_fault-abort() { run_fault fault-abort; }
run_fault-exit() { run_fault fault-exit; }
run_fault-hang() { run_fault fault-hang; }

run_reload() {
    local console=$work/reload.console
    boot reload
    show_markers reload "$console"
    common_end reload "$console"
    expect reload "$console" "nodeinit reload to a rebuilt plugin; status shows it; the allocation lives; a broken one is refused" 'VMTEST PASS reload: status showed "readiness faulty 0.1.0", then "readiness faulty 2.0.0-reload"'
    expect reload "$console" "a new worker took over after the probe" 'worker restarted and serving .*reload=true'
    expect reload "$console" "the broken plugin was refused by the probe" 'truncated or corrupt'
    refuse reload "$console" "no agent check failed" 'VMTEST FAIL'
}

run_optional() {
    local console=$work/optional.console
    boot optional
    show_markers optional "$console"
    common_end optional "$console"
    expect optional "$console" "the optional plugin's crash degraded the plugins phase" 'plugin faulty: worker killed by SIGSEGV in constructor; going on without the optional readiness backend'
    expect optional "$console" "the agent ran as PID 1" 'VMTEST PASS pid: exec mode: the agent is PID 1'
    expect optional "$console" "boot.json records why the plugin is missing" 'VMTEST PASS optional: plugins degraded: phase plugins: plugin faulty: worker killed by SIGSEGV in constructor'
    refuse optional "$console" "no agent check failed" 'VMTEST FAIL'
}

# --- main --------------------------------------------------------------------
scenarios=("$@")
all_scenarios=(builder standin exec supervise missing fault-segv fault-abort fault-exit fault-hang optional reload)
((${#scenarios[@]})) || scenarios=("${all_scenarios[@]}")
for s in "${scenarios[@]}"; do
    [[ " ${all_scenarios[*]} " == *" $s "* ]] || die "unknown scenario '$s' (${all_scenarios[*]})"
done
started=$(date +%s)
ensure_packages
eval "$(bash "$here/fetch-kernel.sh")"
make_fixtures
for s in "${scenarios[@]}"; do
    if [[ $s != standin && $s != builder ]]; then
        build_nodeinit
        break
    fi
done
log "kernel $KVER, host $(uname -r), boot timeout ${boot_timeout}s"
for s in "${scenarios[@]}"; do
    "run_$s"
done
for line in "${summary[@]}"; do log "$line"; done
boot_ratio
log "finished in $(($(date +%s) - started)) s"
for f in "${failures[@]}"; do log "failed: $f"; done
echo "vm-test: $passed passed, $failed failed"
((failed == 0))
