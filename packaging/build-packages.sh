#!/usr/bin/env bash
# build-packages.sh — build nodeinit's .deb and .rpm in one command.
#
# Owns: the release build of nodeinit and the four reference plugins
# (stripped by cargo: CARGO_PROFILE_RELEASE_STRIP=symbols keeps the plugins'
# dynamic symbols, which is all the loader needs), the stage of optional
# extras (man pages, shell completions), and running cargo-deb and
# cargo-generate-rpm with the metadata in host/Cargo.toml. Writes
# target/packages/nodeinit_<ver>-1_amd64.deb and
# target/packages/nodeinit-<ver>-1.x86_64.rpm and nothing outside target/
# (besides installing the two cargo tools when they are missing).
#
# Extras: man pages `*.[1-8]` found in $NODEINIT_MAN_DIR (default
# <target>/release/man) and completions `nodeinit.bash`, `_nodeinit`,
# `nodeinit.fish` in $NODEINIT_COMPLETIONS_DIR (default
# <target>/release/completions) are staged under target/packages/stage/extras
# (man pages gzipped) and packaged below /usr/share (the `extras` variants of
# host/Cargo.toml). Without them the packages are built without them.
#
# Usage: packaging/build-packages.sh [--no-build]
#   --no-build   package the release artifacts already built
# Environment: CARGO_TARGET_DIR (honoured by cargo and both tools).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
target_dir=${CARGO_TARGET_DIR:-$repo/target}
out=$repo/target/packages
stage=$out/stage/extras
plugins=(cgroupfs squashfs unshare readiness)

log() { echo "build-packages: $*" >&2; }
die() {
    echo "build-packages: error: $*" >&2
    exit 1
}

build=1
while (($#)); do
    case $1 in
        --no-build) build=0 ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done

# --- tools -------------------------------------------------------------------
ensure_cargo_tool() { # subcommand crate
    cargo "$1" --version >/dev/null 2>&1 && return 0
    log "installing $2 from crates.io (cargo install --locked $2)"
    cargo install --locked --quiet "$2" >&2 || die "cargo install --locked $2 failed"
}
ensure_cargo_tool deb cargo-deb
ensure_cargo_tool generate-rpm cargo-generate-rpm
command -v python3 >/dev/null || die "python3 is needed to merge the rpm extras (Debian package python3)"
command -v dpkg-shlibdeps >/dev/null ||
    log "warning: dpkg-shlibdeps missing (Debian package dpkg-dev): the .deb's Depends will be guessed"

# --- build -------------------------------------------------------------------
if ((build)); then
    log "cargo build --release (stripped) of nodeinit and the plugins ${plugins[*]}"
    packages=(-p nodeinit)
    for p in "${plugins[@]}"; do packages+=(-p "nodeinit-$p"); done
    CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --locked --quiet "${packages[@]}" ||
        die "cargo build --release failed"
fi
for artifact in nodeinit "${plugins[@]/#/libnodeinit_}"; do
    [[ $artifact == nodeinit ]] || artifact=$artifact.so
    [[ -f $target_dir/release/$artifact ]] ||
        die "$target_dir/release/$artifact was not built (run without --no-build)"
done

# --- extras (man pages, completions) ----------------------------------------
rm -rf "$out/stage"
mkdir -p "$stage"
man_dir=${NODEINIT_MAN_DIR:-$target_dir/release/man}
completions_dir=${NODEINIT_COMPLETIONS_DIR:-$target_dir/release/completions}
# The pages and completions come from the built binary's own clap definition
# and config reference (`nodeinit __man`, `nodeinit __completions`), so they
# describe exactly the nodeinit being packaged.
if [[ -z ${NODEINIT_MAN_DIR:-} ]]; then
    "$target_dir/release/nodeinit" __man "$man_dir" >/dev/null ||
        die "nodeinit __man $man_dir failed"
fi
if [[ -z ${NODEINIT_COMPLETIONS_DIR:-} ]]; then
    "$target_dir/release/nodeinit" __completions "$completions_dir" >/dev/null ||
        die "nodeinit __completions $completions_dir failed"
fi
shopt -s nullglob
for page in "$man_dir"/*.[1-8]; do
    section=${page##*.}
    mkdir -p "$stage/man/man$section"
    gzip -9nc -- "$page" >"$stage/man/man$section/${page##*/}.gz"
done
declare -A completion_dest=(
    [nodeinit.bash]=bash-completion/completions/nodeinit
    [_nodeinit]=zsh/site-functions/_nodeinit
    [nodeinit.fish]=fish/vendor_completions.d/nodeinit.fish
)
for name in "${!completion_dest[@]}"; do
    [[ -f $completions_dir/$name ]] || continue
    mkdir -p "$stage/$(dirname "${completion_dest[$name]}")"
    cp -- "$completions_dir/$name" "$stage/${completion_dest[$name]}"
done
shopt -u nullglob
extras=$(cd "$stage" && find . -type f | sed 's|^\./|/usr/share/|' | LC_ALL=C sort)
deb_variant=() rpm_overwrite=()
if [[ -n $extras ]]; then
    log "extras: $(tr '\n' ' ' <<<"$extras")"
    deb_variant=(--variant extras)
    # cargo-generate-rpm's variants replace the asset list: append the
    # variant's assets to the base list here, from host/Cargo.toml itself.
    python3 - "$repo/host/Cargo.toml" >"$out/stage/rpm-extras.toml" <<'EOF' || die "merging the rpm extras assets failed"
import json, sys, tomllib
meta = tomllib.load(open(sys.argv[1], "rb"))["package"]["metadata"]["generate-rpm"]
assets = meta["assets"] + meta["variants"]["extras"]["assets"]
def value(v):
    return ("true" if v else "false") if isinstance(v, bool) else json.dumps(v)
print("assets = [")
for a in assets:
    print("  { " + ", ".join(f"{k} = {value(v)}" for k, v in a.items()) + " },")
print("]")
EOF
    rpm_overwrite=(--metadata-overwrite "$out/stage/rpm-extras.toml")
else
    log "extras: none (no man pages in $man_dir, no completions in $completions_dir)"
fi

# --- packages ------------------------------------------------------------------
mkdir -p "$out"
rm -f "$out"/nodeinit_*.deb "$out"/nodeinit-*.rpm
log "cargo deb"
cargo deb --quiet -p nodeinit --no-build --no-strip "${deb_variant[@]}" -o "$out/" >&2 ||
    die "cargo deb failed"
log "cargo generate-rpm"
cargo generate-rpm -p host "${rpm_overwrite[@]}" -o "$out/" >&2 ||
    die "cargo generate-rpm failed"
for f in "$out"/nodeinit_*.deb "$out"/nodeinit-*.rpm; do
    [[ -f $f ]] || die "no package was written to $out"
    log "wrote $f ($(stat -c %s -- "$f") bytes)"
done
