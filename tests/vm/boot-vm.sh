#!/usr/bin/env bash
# boot-vm.sh — boot one kernel + initramfs under QEMU and capture its console.
#
# Owns: one QEMU run. Software emulation only (-accel tcg: no KVM on the
# machines this runs on), serial console written to --console, a hard
# per-boot timeout, no reboot (a reboot or a kernel panic ends QEMU, so a
# broken init fails fast instead of looping). Never asserts anything about
# the guest: callers grep the console log it leaves behind.
#
# Exit status: QEMU's (0 after the guest powered off or rebooted),
# 124 when the timeout killed it, 125 when the console shows a kernel panic.
# On 124/125 the console log is printed to stderr.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: boot-vm.sh --kernel VMLINUZ --initrd IMG --console LOG [options]
  --append "WORDS"   extra kernel command line (e.g. nodeinit.node_id=n01)
  --disk RAW         attach RAW as a read-only virtio disk (/dev/vda)
  --timeout SECS     kill QEMU after SECS (default 120)
  --memory MIB       guest memory (default 1024)
  --smp N            guest CPUs (default 2)
EOF
}

die() {
    echo "boot-vm: error: $*" >&2
    exit 2
}

KERNEL="" INITRD="" CONSOLE="" APPEND="" DISK="" TIMEOUT=120 MEMORY=1024 SMP=2
while (($#)); do
    case $1 in
        --kernel) KERNEL=${2:?}; shift ;;
        --initrd) INITRD=${2:?}; shift ;;
        --console) CONSOLE=${2:?}; shift ;;
        --append) APPEND=${2?}; shift ;;
        --disk) DISK=${2:?}; shift ;;
        --timeout) TIMEOUT=${2:?}; shift ;;
        --memory) MEMORY=${2:?}; shift ;;
        --smp) SMP=${2:?}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
    shift
done
[[ -f $KERNEL ]] || die "--kernel '$KERNEL' is not a file"
[[ -f $INITRD ]] || die "--initrd '$INITRD' is not a file"
[[ -n $CONSOLE ]] || die "--console LOG is required"
command -v qemu-system-x86_64 >/dev/null ||
    die "qemu-system-x86_64 not found: apt-get install qemu-system-x86"

declare -a qemu=(
    qemu-system-x86_64
    -accel tcg -cpu max -smp "$SMP" -m "$MEMORY"
    -nodefaults -display none -monitor none -no-reboot
    -serial "file:$CONSOLE"
    -kernel "$KERNEL" -initrd "$INITRD"
    # panic=-1: reboot at once on a panic, and -no-reboot turns that into exit.
    -append "console=ttyS0 panic=-1 $APPEND"
)
if [[ -n $DISK ]]; then
    [[ -f $DISK ]] || die "--disk '$DISK' is not a file"
    qemu+=(-drive "file=$DISK,format=raw,if=virtio,readonly=on")
fi

: >"$CONSOLE"
start=$(date +%s%N)
status=0
timeout -k 5 "$TIMEOUT" "${qemu[@]}" </dev/null || status=$?
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
echo "boot-vm: QEMU exited with status $status after ${elapsed_ms} ms (console: $CONSOLE)" >&2

if ((status == 124)); then
    echo "boot-vm: TIMEOUT: the guest did not power off within ${TIMEOUT}s; console log follows" >&2
    sed 's/^/  | /' "$CONSOLE" >&2
    exit 124
fi
if grep -q 'Kernel panic' "$CONSOLE"; then
    echo "boot-vm: KERNEL PANIC in the guest; console log follows" >&2
    sed 's/^/  | /' "$CONSOLE" >&2
    exit 125
fi
exit "$status"
