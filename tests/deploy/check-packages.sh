#!/usr/bin/env bash
# check-packages.sh — inspect the .deb and .rpm that build-packages.sh wrote.
#
# Owns: the assertions on what a site installs. Every path the packages
# ship, with its type, mode and owner (`dpkg-deb -c`, `rpm -qlvp`), and
# nothing else; the config file flags (`dpkg-deb -I … conffiles`,
# `rpm -qcp` and the noreplace/doc file flags); the control metadata; that
# the binaries are stripped yet the plugins keep the symbol the loader
# looks up; that both packages carry the same bytes; and that the packaged
# nodeinit validates the packaged config with the packaged plugins.
# Never installs a package: it reads them, and unpacks into a temp dir.
#
# Usage: check-packages.sh [DIR]   (default <repo>/target/packages)
# Prints one PASS/FAIL line per check and a closing `N passed, M failed`.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir=${1:-$repo/target/packages}
passed=0 failed=0
declare -a failures=()

log() { echo "check-packages: $*" >&2; }
pass() { passed=$((passed + 1)); log "PASS $*"; }
fail() { failed=$((failed + 1)); failures+=("$*"); log "FAIL $*"; }
finish() {
    for f in "${failures[@]}"; do log "failed: $f"; done
    echo "check-packages: $passed passed, $failed failed"
    ((failed == 0))
    exit
}
die() { fail "$*"; finish; }

for tool in dpkg-deb rpm rpm2cpio cpio readelf; do
    command -v "$tool" >/dev/null || die "$tool not found (Debian packages dpkg, rpm, rpm2cpio, cpio, binutils)"
done
shopt -s nullglob
debs=("$dir"/nodeinit_*_amd64.deb)
rpms=("$dir"/nodeinit-*.x86_64.rpm)
shopt -u nullglob
((${#debs[@]} == 1)) || die "expected one nodeinit_*_amd64.deb in $dir, found ${#debs[@]} (run packaging/build-packages.sh)"
((${#rpms[@]} == 1)) || die "expected one nodeinit-*.x86_64.rpm in $dir, found ${#rpms[@]} (run packaging/build-packages.sh)"
deb=${debs[0]} rpm=${rpms[0]}
log "deb: $deb"
log "rpm: $rpm"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- what both packages must ship: "mode path" ------------------------------
plugin_dir=/usr/lib/nodeinit/plugins
declare -a files=(
    "-rwxr-xr-x /usr/sbin/nodeinit"
    "-rw-r--r-- $plugin_dir/libnodeinit_cgroupfs.so"
    "-rw-r--r-- $plugin_dir/libnodeinit_squashfs.so"
    "-rw-r--r-- $plugin_dir/libnodeinit_unshare.so"
    "-rw-r--r-- $plugin_dir/libnodeinit_readiness.so"
    "-rw-r--r-- /etc/nodeinit/nodeinit.toml"
    "-rwxr-xr-x /usr/lib/dracut/modules.d/90nodeinit/module-setup.sh"
    "-rw-r--r-- /usr/share/doc/nodeinit/README.md"
    "-rw-r--r-- /usr/share/doc/nodeinit/LICENSE"
)
for example in "$repo"/config/*.toml; do
    files+=("-rw-r--r-- /usr/share/doc/nodeinit/config/${example##*/}")
done
# Man pages and completions: build-packages.sh makes them from the built
# binary (`nodeinit __man`, `nodeinit __completions`), so they must be there.
files+=(
    "-rw-r--r-- /usr/share/man/man8/nodeinit.8.gz"
    "-rw-r--r-- /usr/share/man/man5/nodeinit.toml.5.gz"
    "-rw-r--r-- /usr/share/bash-completion/completions/nodeinit"
    "-rw-r--r-- /usr/share/zsh/site-functions/_nodeinit"
    "-rw-r--r-- /usr/share/fish/vendor_completions.d/nodeinit.fish"
)
# Every directory above a shipped file, /usr and /etc included.
parent_dirs() {
    printf '%s\n' "${files[@]}" | awk '{ print $2 }' | while IFS= read -r path; do
        path=${path%/*}
        while [[ -n $path ]]; do echo "$path"; path=${path%/*}; done
    done | LC_ALL=C sort -u
}

# compare LABEL EXPECTED-FILE ACTUAL-FILE: one check per expected line, one
# for "nothing else".
compare() {
    local label=$1 expected=$2 actual=$3 line
    while IFS= read -r line; do
        if grep -qxF -- "$line" "$actual"; then
            pass "$label: $line"
        else
            local path=${line##* }
            fail "$label: $line (listed as: $(grep -F -- " $path" "$actual" | head -n1 || echo missing))"
        fi
    done <"$expected"
    local extra
    extra=$(LC_ALL=C comm -13 <(LC_ALL=C sort "$expected") <(LC_ALL=C sort "$actual"))
    if [[ -z $extra ]]; then pass "$label: nothing else is shipped"; else fail "$label: unexpected entries: $(tr '\n' ';' <<<"$extra")"; fi
}

# --- deb -------------------------------------------------------------------------
# Every file, and every directory above it, owned by root; dpkg-deb -c
# prints "perms root/root size date time ./path" (directories end in /).
{
    printf '%s\n' "${files[@]}" | sed 's|^\(\S*\) |\1 0/0 |'
    parent_dirs | sed 's|^|drwxr-xr-x 0/0 |'
    # cargo-deb writes the Debian copyright file from LICENSE.
    echo "-rw-r--r-- 0/0 /usr/share/doc/nodeinit/copyright"
} | LC_ALL=C sort -u >"$work/deb.expected"
dpkg-deb -c "$deb" | awk '{ p = $6; sub(/^\./, "", p); if (p != "/") sub(/\/$/, "", p); print $1, $2, p }' |
    LC_ALL=C sort -u >"$work/deb.actual"
compare "deb" "$work/deb.expected" "$work/deb.actual"

conffiles=$(dpkg-deb -I "$deb" conffiles 2>&1 || true)
if [[ $conffiles == /etc/nodeinit/nodeinit.toml ]]; then
    pass "deb: conffiles is exactly /etc/nodeinit/nodeinit.toml"
else
    fail "deb: conffiles should be /etc/nodeinit/nodeinit.toml, is: $conffiles"
fi
field() { dpkg-deb -f "$deb" "$1"; }
[[ $(field Package) == nodeinit ]] && pass "deb: Package: nodeinit" || fail "deb: Package is '$(field Package)'"
[[ $(field Architecture) == amd64 ]] && pass "deb: Architecture: amd64" || fail "deb: Architecture is '$(field Architecture)'"
[[ $(field Section) == admin ]] && pass "deb: Section: admin" || fail "deb: Section is '$(field Section)'"
if field Depends | grep -qE '(^|, )libc6 \(>= [0-9.]+\)' && field Depends | grep -qE '(^|, )libgcc-s1($|,)'; then
    pass "deb: Depends names libc6 (versioned) and libgcc-s1: $(field Depends)"
else
    fail "deb: Depends should name libc6 (>= …) and libgcc-s1, is: $(field Depends)"
fi

# --- rpm -------------------------------------------------------------------------
# rpm -qlvp: "perms links user group size month day time path". The RPM
# owns no directory (see host/Cargo.toml); the installs below check the
# directories rpm creates.
printf '%s\n' "${files[@]}" | sed 's|^\(\S*\) |\1 root/root |' | LC_ALL=C sort -u >"$work/rpm.expected"
rpm -qlvp "$rpm" 2>/dev/null | awk '{ print $1, $3 "/" $4, $NF }' | LC_ALL=C sort -u >"$work/rpm.actual"
compare "rpm" "$work/rpm.expected" "$work/rpm.actual"

config=$(rpm -qcp "$rpm" 2>/dev/null)
if [[ $config == /etc/nodeinit/nodeinit.toml ]]; then
    pass "rpm: the only %config file is /etc/nodeinit/nodeinit.toml"
else
    fail "rpm: rpm -qcp should list /etc/nodeinit/nodeinit.toml only, lists: $config"
fi
flags() { rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpm" 2>/dev/null | awk -v f="$1" '$1 == f { print $2 }'; }
f=$(flags /etc/nodeinit/nodeinit.toml)
[[ $f == *c* && $f == *n* ]] && pass "rpm: nodeinit.toml is %config(noreplace) (flags $f)" ||
    fail "rpm: nodeinit.toml flags are '$f', want c (config) and n (noreplace)"
for doc in README.md LICENSE config/pact.toml; do
    f=$(flags "/usr/share/doc/nodeinit/$doc")
    [[ $f == *d* ]] && pass "rpm: /usr/share/doc/nodeinit/$doc is %doc" || fail "rpm: /usr/share/doc/nodeinit/$doc flags are '$f', want d (doc)"
done
name=$(rpm -qp --qf '%{NAME} %{ARCH}' "$rpm" 2>/dev/null)
[[ $name == "nodeinit x86_64" ]] && pass "rpm: name and arch: $name" || fail "rpm: name and arch are '$name'"
requires=$(rpm -qRp "$rpm" 2>/dev/null | tr '\n' ' ')
if grep -q 'libc.so.6' <<<"$requires" && grep -q 'libgcc_s.so.1' <<<"$requires"; then
    pass "rpm: Requires libc.so.6 and libgcc_s.so.1"
else
    fail "rpm: Requires should name libc.so.6 and libgcc_s.so.1: $requires"
fi

# --- the payloads ------------------------------------------------------------------
mkdir -p "$work/deb" "$work/rpm"
dpkg-deb -x "$deb" "$work/deb" || die "dpkg-deb -x $deb failed"
# Debian's rpm2cpio 4.18 exits 1 after writing a complete archive of a
# zstd payload; cpio's status and the comparisons below are what count.
(cd "$work/rpm" && { rpm2cpio "$rpm" || true; } | cpio -idm --quiet) || die "rpm2cpio $rpm | cpio failed"
same=1
for entry in "${files[@]}"; do
    path=${entry##* }
    cmp -s "$work/deb$path" "$work/rpm$path" || { same=0; fail "the .deb and .rpm differ in $path"; }
done
((same)) && pass "the .deb and the .rpm ship the same bytes for all ${#files[@]} files"
for elf in /usr/sbin/nodeinit "$plugin_dir"/libnodeinit_{cgroupfs,squashfs,unshare,readiness}.so; do
    if readelf -S --wide "$work/deb$elf" | grep -qE '\] \.symtab|\] \.debug_'; then
        fail "$elf is not stripped (has .symtab or .debug_*)"
    else
        pass "$elf is stripped"
    fi
done
for so in "$work/deb$plugin_dir"/*.so; do
    if readelf --dyn-syms --wide "$so" | grep -q '_1as_0lib_1header_0root_bmodule_bloader'; then
        pass "${so##*/} still exports the abi_stable library header (dynamic symbol)"
    else
        fail "${so##*/} lost the abi_stable library header symbol"
    fi
done
if cmp -s "$work/deb/etc/nodeinit/nodeinit.toml" "$repo/packaging/nodeinit.toml"; then
    pass "/etc/nodeinit/nodeinit.toml is packaging/nodeinit.toml"
else
    fail "/etc/nodeinit/nodeinit.toml differs from packaging/nodeinit.toml"
fi

# The packaged nodeinit checks the packaged config with the packaged plugins
# (the unpacked tree is root-owned and 0644/0755, as the loader demands).
# cgroupfs wants cgroup2 at /sys/fs/cgroup: on a hybrid host the check runs
# in a private mount namespace with the v2 mount bound there.
sed "s|^plugin_dir = .*|plugin_dir = \"$work/deb$plugin_dir\"|" "$work/deb/etc/nodeinit/nodeinit.toml" >"$work/check.toml"
cgroup2=$(awk '$0 ~ / - cgroup2 / { print $5; exit }' /proc/self/mountinfo)
check_script='[ "$1" = /sys/fs/cgroup ] || [ -z "$1" ] || mount --bind "$1" /sys/fs/cgroup || exit 1; shift; exec "$@"'
if out=$(unshare --mount --propagation private sh -c "$check_script" sh "$cgroup2" \
    "$work/deb/usr/sbin/nodeinit" check --config "$work/check.toml" 2>&1); then
    loaded=$(grep -c '^plugin .* ok ' <<<"$out" || true)
    if ((loaded == 4)); then
        pass "packaged nodeinit check: the packaged config and all 4 packaged plugins load"
    else
        fail "packaged nodeinit check loaded $loaded of 4 plugins: $out"
    fi
else
    fail "packaged nodeinit check --config (plugin_dir rewritten to the unpacked tree) failed: $out"
fi

# --- installed into an empty root, as a site's package manager would ---------------
# The directories the package manager creates (0755 root: the loader refuses
# a plugin directory anyone else can write), the files with their modes, a
# site's edit of the config surviving a reinstall, and a clean removal.
installed_layout() { # label root
    local label=$1 root=$2 path entry bad=""
    while IFS= read -r path; do
        [[ $(stat -c '%A %U:%G' -- "$root$path" 2>&1) == "drwxr-xr-x root:root" ]] ||
            bad+=" $path($(stat -c '%A %U:%G' -- "$root$path" 2>&1))"
    done < <(parent_dirs)
    [[ -z $bad ]] && pass "$label install: every directory is drwxr-xr-x root:root" || fail "$label install: directories:$bad"
    bad=""
    for entry in "${files[@]}"; do
        path=${entry##* }
        [[ $(stat -c '%A %U:%G' -- "$root$path" 2>&1) == "${entry%% *} root:root" ]] ||
            bad+=" $path($(stat -c '%A %U:%G' -- "$root$path" 2>&1))"
    done
    [[ -z $bad ]] && pass "$label install: all ${#files[@]} files with their modes, root:root" || fail "$label install: files:$bad"
}
site_edit="# site edit $$"
conf=/etc/nodeinit/nodeinit.toml

rroot=$work/rpm-root
mkdir -p "$rroot"
if rpm --root "$rroot" --initdb 2>/dev/null && rpm --root "$rroot" -i --nodeps "$rpm" 2>"$work/rpm.log"; then
    installed_layout rpm "$rroot"
    echo "$site_edit" >>"$rroot$conf"
    rpm --root "$rroot" -U --replacepkgs --nodeps "$rpm" 2>>"$work/rpm.log"
    grep -qxF "$site_edit" "$rroot$conf" && pass "rpm: a site's edit of $conf survives a reinstall (noreplace)" ||
        fail "rpm: reinstalling replaced the edited $conf"
    rpm --root "$rroot" -e nodeinit 2>>"$work/rpm.log"
    if [[ ! -e $rroot/usr/sbin/nodeinit && ! -e $rroot/usr/lib/nodeinit/plugins/libnodeinit_cgroupfs.so ]] &&
        grep -qxF "$site_edit" "$rroot$conf.rpmsave"; then
        pass "rpm: erase removes the files and keeps the edited config as $conf.rpmsave"
    else
        fail "rpm: after rpm -e: $(cd "$rroot" && find . -type f ! -path './var/*' | tr '\n' ' ')"
    fi
else
    fail "rpm -i --root $rroot failed: $(grep -v 'Alien\|know what you are doing' "$work/rpm.log")"
fi

droot=$work/deb-root
mkdir -p "$droot/var/lib/dpkg/info" "$droot/var/lib/dpkg/updates" "$droot/var/lib/dpkg/triggers"
touch "$droot/var/lib/dpkg/status" "$droot/var/lib/dpkg/available"
if dpkg --root="$droot" --force-depends -i "$deb" >"$work/dpkg.log" 2>&1; then
    installed_layout deb "$droot"
    echo "$site_edit" >>"$droot$conf"
    dpkg --root="$droot" --force-depends --force-confold -i "$deb" >>"$work/dpkg.log" 2>&1
    grep -qxF "$site_edit" "$droot$conf" && pass "deb: a site's edit of $conf survives a reinstall (conffile)" ||
        fail "deb: reinstalling replaced the edited $conf"
    dpkg --root="$droot" --remove nodeinit >>"$work/dpkg.log" 2>&1
    if [[ ! -e $droot/usr/sbin/nodeinit ]] && grep -qxF "$site_edit" "$droot$conf"; then
        pass "deb: remove takes the files and keeps the conffile until purge"
    else
        fail "deb: after dpkg --remove: $(cd "$droot" && find . -type f ! -path './var/*' | tr '\n' ' ')"
    fi
    dpkg --root="$droot" --purge nodeinit >>"$work/dpkg.log" 2>&1
    [[ ! -e $droot$conf ]] && pass "deb: purge removes $conf" || fail "deb: $conf is still there after purge"
else
    fail "dpkg -i --root $droot failed: $(cat "$work/dpkg.log")"
fi

finish
