#!/usr/bin/env bash
# fetch-kernel.sh — download and unpack the Debian kernel the VM test boots.
#
# Owns: the kernel cache under $VM_CACHE (default <repo>/target/vm-cache):
# the .deb of the package `linux-image-amd64` currently depends on, its
# unpacked tree and a modules.dep made by depmod. Prints a shell fragment
# (KVER=..., VMLINUZ=..., MODULES_DIR=...) on stdout for `eval`.
# A cache that is already complete is used as is, without apt: set
# VM_KERNEL_REFRESH=1 to ask apt again which kernel is current.
# Never installs the kernel on the host (dpkg-deb -x into the cache only).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${VM_CACHE:-$repo/target/vm-cache}
stamp=$cache/kernel.env

die() {
    echo "fetch-kernel: error: $*" >&2
    exit 1
}

if [[ -f $stamp && ${VM_KERNEL_REFRESH:-0} != 1 ]]; then
    # shellcheck disable=SC1090 # KVER, VMLINUZ, MODULES_DIR come from the stamp
    source "$stamp"
    if [[ -f ${VMLINUZ:-} && -f ${MODULES_DIR:-}/modules.dep ]]; then
        # shellcheck disable=SC2153 # set by the stamp sourced above
        echo "fetch-kernel: using cached kernel $KVER ($cache)" >&2
        cat "$stamp"
        exit 0
    fi
fi

command -v apt-get >/dev/null || die "apt-get not found: the VM test needs a Debian host"
command -v depmod >/dev/null || die "depmod not found: install Debian's 'kmod' package"
mkdir -p "$cache"
apt-get update -qq >&2 || die "apt-get update failed (see above)"
package=$(apt-cache depends linux-image-amd64 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
[[ -n $package ]] || die "could not tell which kernel linux-image-amd64 depends on (apt-cache depends linux-image-amd64)"
kver=${package#linux-image-}
unpacked=$cache/$package
if [[ ! -f $unpacked/boot/vmlinuz-$kver ]]; then
    echo "fetch-kernel: downloading $package" >&2
    # apt-get download writes into the current directory; the _apt sandbox
    # user cannot write under target/, so download as root (a warning only).
    (cd "$cache" && rm -f "${package}"_*.deb && apt-get download -q "$package" >&2) ||
        die "apt-get download $package failed"
    deb=$(ls "$cache/${package}"_*.deb)
    rm -rf "$unpacked.tmp"
    mkdir -p "$unpacked.tmp"
    dpkg-deb -x "$deb" "$unpacked.tmp" || die "dpkg-deb -x $deb failed"
    depmod -b "$unpacked.tmp" "$kver" || die "depmod on $unpacked.tmp failed"
    rm -rf "$unpacked"
    mv "$unpacked.tmp" "$unpacked"
    rm -f "$deb"
fi
cat >"$stamp" <<EOF
KVER=$kver
VMLINUZ=$unpacked/boot/vmlinuz-$kver
MODULES_DIR=$unpacked/lib/modules/$kver
KERNEL_CONFIG=$unpacked/boot/config-$kver
EOF
echo "fetch-kernel: kernel $kver ready in $unpacked" >&2
cat "$stamp"
