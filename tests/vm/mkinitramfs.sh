#!/usr/bin/env bash
# mkinitramfs.sh — pack a bootable nodeinit initramfs (newc cpio, gzip).
#
# Owns: turning a list of inputs (the init binary, plugin .so files, a config,
# agent binaries, plain files, kernel modules) into one reproducible archive.
# Every dynamically linked input brings the shared libraries `ldd` names,
# the dynamic loader included. Never touches the build host: it does not need
# root, does not create device nodes on disk and runs no program it packs
# (except through `ldd`, which a site must only point at binaries it trusts).
#
# The archive is written by this script itself (newc is 110 ASCII bytes of
# header per entry), not by GNU cpio: that way every entry is owned by 0:0,
# /dev/console exists without mknod, timestamps are fixed (SOURCE_DATE_EPOCH,
# default 0) and entries are sorted, so the same inputs give the same bytes.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: mkinitramfs.sh -o OUT.img --init BINARY [options]

  -o, --output FILE        archive to write (gzip-compressed newc cpio)
  --init BINARY            the program the kernel runs as /init (nodeinit)
  --plugin SO              plugin shared object, installed in the plugin dir
                           (repeatable; default dir /usr/lib/nodeinit/plugins)
  --plugin-dir DIR         where --plugin files go inside the image
  --config FILE            installed as /etc/nodeinit/nodeinit.toml
  --binary SRC[:DEST]      executable plus the libraries ldd names (repeatable;
                           DEST defaults to SRC), e.g. the node agent
  --file SRC:DEST          plain file copied as is (repeatable): uenv images,
                           agent configs, ... (mode is kept)
  --symlink TARGET:DEST    symbolic link DEST -> TARGET (repeatable)
  --modules-dir DIR        a kernel's module tree, i.e. /lib/modules/KVER
                           (needs modules.dep; run `depmod -b` on extracted
                           packages first)
  --module NAME            module (e.g. loop, squashfs, virtio_blk) copied from
                           --modules-dir with its dependencies (repeatable);
                           /lib/modules/KVER/modules.dep and modules.load (the
                           load order, dependencies first) describe them
  --strip                  pack stripped copies (strip --strip-unneeded: no debug
                           info, no symbol table beyond what the dynamic linker
                           needs) of --init,
                           --plugin and --binary files: debug builds shrink
                           from tens of MiB to a few
  --list                   print the archive's table of contents to stderr
  -h, --help               this text
EOF
}

die() {
    echo "mkinitramfs: error: $*" >&2
    exit 1
}

# --- the image's table of contents ------------------------------------------
# ENTRY_KIND[dest] = dir | file | symlink | chardev
# ENTRY_SRC[dest]  = source path (file), link target (symlink), "MAJ:MIN" (chardev)
# ENTRY_MODE[dest] = permission bits, octal
declare -A ENTRY_KIND=() ENTRY_SRC=() ENTRY_MODE=()

add_dir() {
    local dest=$1
    while [[ $dest != / && -n $dest ]]; do
        if [[ -n ${ENTRY_KIND[$dest]:-} ]]; then
            [[ ${ENTRY_KIND[$dest]} == dir ]] ||
                die "$dest is both a directory and a ${ENTRY_KIND[$dest]} in the image"
            return 0
        fi
        ENTRY_KIND[$dest]=dir
        ENTRY_MODE[$dest]=755
        dest=$(dirname "$dest")
    done
}

add_entry() { # kind dest src mode
    local kind=$1 dest=$2 src=$3 mode=$4
    [[ $dest == /* ]] || die "destination '$dest' must be an absolute path inside the image"
    [[ $dest != */ && $dest != *//* && $dest != */./* && $dest != */../* && $dest != */.. ]] ||
        die "destination '$dest' must be a normalised path (no //, . or ..)"
    if [[ -n ${ENTRY_KIND[$dest]:-} ]]; then
        # The same library wanted by several binaries is fine; two different
        # sources for one destination is a mistake the user must see.
        [[ ${ENTRY_KIND[$dest]} == "$kind" && ${ENTRY_SRC[$dest]} == "$src" ]] && return 0
        die "$dest is given twice: from '${ENTRY_SRC[$dest]}' and from '$src'"
    fi
    add_dir "$(dirname "$dest")"
    ENTRY_KIND[$dest]=$kind
    ENTRY_SRC[$dest]=$src
    ENTRY_MODE[$dest]=$mode
}

add_file() { # src dest
    local src=$1 dest=$2 real mode
    [[ -e $src ]] || die "input '$src' does not exist"
    real=$(readlink -f -- "$src")
    [[ -f $real ]] || die "input '$src' is not a regular file"
    [[ -r $real ]] || die "input '$src' is not readable by $(id -un)"
    mode=$(stat -c %a -- "$real")
    add_entry file "$dest" "$real" "$mode"
}

# Adds every library the dynamic binary or shared object $1 needs, at the path
# ldd resolved it to on this host (the loader searches the same paths at boot).
add_libraries_of() {
    local bin=$1 line lib loader
    local ldd_out
    if ! ldd_out=$(LC_ALL=C ldd -- "$bin" 2>&1); then
        # Static executables are complete; anything else ldd refuses is an error.
        if grep -qE 'not a dynamic executable|statically linked' <<<"$ldd_out"; then
            return 0
        fi
        die "ldd failed on '$bin': $ldd_out"
    fi
    grep -q 'statically linked' <<<"$ldd_out" && return 0
    while IFS= read -r line; do
        line=${line#"${line%%[![:space:]]*}"}
        case $line in
            *"=> not found"*)
                die "'$bin' needs ${line%% *}, which ldd cannot find on this host; install it or set LD_LIBRARY_PATH" ;;
            *" => "/*)
                lib=${line#* => }
                lib=${lib%% (*}
                add_file "$lib" "$lib" ;;
            /*)
                # The dynamic loader: ldd prints the interpreter path itself.
                loader=${line%% (*}
                add_file "$loader" "$loader" ;;
            *) ;; # linux-vdso.so.1 and friends live in the kernel
        esac
    done <<<"$ldd_out"
}

add_binary() { # src dest
    local src=$1
    if ((STRIP)) && [[ $(head -c4 -- "$src" | od -An -c | tr -d ' ') == 177ELF ]]; then
        command -v strip >/dev/null || die "--strip needs 'strip' (Debian package binutils)"
        local copy
        copy="$WORK/stripped/$(printf '%s' "$2" | tr / _)"
        mkdir -p "$WORK/stripped"
        strip --strip-unneeded -o "$copy" -- "$src" || die "strip failed on '$src'"
        src=$copy
    fi
    add_file "$src" "$2"
    add_libraries_of "$1"
}

# Resolves module NAME (dashes and underscores are the same to the kernel)
# against modules.dep and adds it after its dependencies.
declare -a MODULE_ORDER=()
declare -A MODULE_SEEN=()
add_module_path() { # relpath as in modules.dep
    local rel=$1 dep deps
    [[ -n ${MODULE_SEEN[$rel]:-} ]] && return 0
    MODULE_SEEN[$rel]=1
    deps=$(awk -F': *' -v m="$rel" '$1 == m { print $2; exit }' "$MODULES_DIR/modules.dep")
    # modules.dep lists the full dependency closure, deepest last; load
    # order is therefore the reverse of that list.
    local -a dep_list=()
    read -r -a dep_list <<<"$deps"
    local i
    for ((i = ${#dep_list[@]} - 1; i >= 0; i--)); do
        dep=${dep_list[$i]}
        add_module_path "$dep"
    done
    add_file "$MODULES_DIR/$rel" "/lib/modules/$KVER/$rel"
    MODULE_ORDER+=("$rel")
}

add_module() {
    local name=$1 pattern rel
    [[ -n $MODULES_DIR ]] || die "--module $name needs --modules-dir"
    if grep -qE "/${name//[-_]/[-_]}\.ko(\.[a-z]+)?$" "$MODULES_DIR/modules.builtin" 2>/dev/null; then
        echo "mkinitramfs: note: $name is built into kernel $KVER, nothing to copy" >&2
        return 0
    fi
    pattern="(^|/)${name//[-_]/[-_]}\.ko(\.[a-z]+)?:"
    rel=$(grep -E "$pattern" "$MODULES_DIR/modules.dep" | head -n1 | cut -d: -f1 || true)
    [[ -n $rel ]] || die "module '$name' is not in $MODULES_DIR/modules.dep (neither a module nor built in)"
    add_module_path "$rel"
}

# --- newc writer -------------------------------------------------------------
INODE=0
MTIME=${SOURCE_DATE_EPOCH:-0}

pad4() { # bytes already written in this record
    local n=$(((4 - $1 % 4) % 4))
    ((n == 0)) || head -c "$n" /dev/zero
}

newc_header() { # name mode size rdevmajor rdevminor
    local name=$1 mode=$2 size=$3 rmaj=$4 rmin=$5 nlink=1
    INODE=$((INODE + 1))
    [[ $name == TRAILER!!! ]] && INODE=0
    (((mode & 0170000) == 0040000)) && nlink=2
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
        "$INODE" "$mode" 0 0 "$nlink" "$MTIME" "$size" 0 0 "$rmaj" "$rmin" \
        $((${#name} + 1)) 0
    printf '%s\0' "$name"
    pad4 $((110 + ${#name} + 1))
}

write_archive() {
    local dest name kind mode size
    newc_header . $((0040000 | 0755)) 0 0 0
    while IFS= read -r dest; do
        name=${dest#/}
        kind=${ENTRY_KIND[$dest]}
        mode=$((8#${ENTRY_MODE[$dest]}))
        case $kind in
            dir) newc_header "$name" $((0040000 | mode)) 0 0 0 ;;
            file)
                size=$(stat -c %s -- "${ENTRY_SRC[$dest]}")
                newc_header "$name" $((0100000 | mode)) "$size" 0 0
                cat -- "${ENTRY_SRC[$dest]}"
                pad4 "$size" ;;
            symlink)
                size=${#ENTRY_SRC[$dest]}
                newc_header "$name" $((0120000 | mode)) "$size" 0 0
                printf '%s' "${ENTRY_SRC[$dest]}"
                pad4 "$size" ;;
            chardev)
                newc_header "$name" $((0020000 | mode)) 0 "${ENTRY_SRC[$dest]%%:*}" "${ENTRY_SRC[$dest]##*:}" ;;
        esac
    done < <(printf '%s\n' "${!ENTRY_KIND[@]}" | LC_ALL=C sort)
    newc_header 'TRAILER!!!' 0 0 0 0
}

# --- command line --------------------------------------------------------------
OUTPUT="" INIT="" CONFIG="" PLUGIN_DIR=/usr/lib/nodeinit/plugins
MODULES_DIR="" KVER="" LIST=0 STRIP=0
declare -a PLUGINS=() BINARIES=() FILES=() SYMLINKS=() MODULES=()
while (($#)); do
    case $1 in
        -o | --output) OUTPUT=${2:?}; shift ;;
        --init) INIT=${2:?}; shift ;;
        --plugin) PLUGINS+=("${2:?}"); shift ;;
        --plugin-dir) PLUGIN_DIR=${2:?}; shift ;;
        --config) CONFIG=${2:?}; shift ;;
        --binary) BINARIES+=("${2:?}"); shift ;;
        --file) FILES+=("${2:?}"); shift ;;
        --symlink) SYMLINKS+=("${2:?}"); shift ;;
        --modules-dir) MODULES_DIR=${2:?}; shift ;;
        --module) MODULES+=("${2:?}"); shift ;;
        --list) LIST=1 ;;
        --strip) STRIP=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
    shift
done
[[ -n $OUTPUT ]] || { usage >&2; die "-o OUT.img is required"; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK" "$OUTPUT.tmp.$$"' EXIT
[[ -n $INIT ]] || { usage >&2; die "--init BINARY is required"; }
if [[ -n $MODULES_DIR ]]; then
    [[ -f $MODULES_DIR/modules.dep ]] ||
        die "$MODULES_DIR/modules.dep is missing: run 'depmod -b ROOT KVER' on the extracted kernel package"
    KVER=$(basename "$(readlink -f -- "$MODULES_DIR")")
fi

[[ -x $INIT ]] || die "--init '$INIT' is not executable: the kernel would fail with 'Failed to execute /init (error -13)'"
add_binary "$INIT" /init
add_entry chardev /dev/console 5:1 600
add_dir /proc
add_dir /sys
add_dir /run
add_dir /tmp
for so in "${PLUGINS[@]}"; do
    add_binary "$so" "$PLUGIN_DIR/$(basename "$so")"
done
# Plugins are only readable when owned by root and not group/world writable
# (DESIGN §2); the archive makes every entry root's, the mode is fixed here.
for dest in "${!ENTRY_KIND[@]}"; do
    [[ $dest == "$PLUGIN_DIR"/* && ${ENTRY_KIND[$dest]} == file ]] && ENTRY_MODE[$dest]=755
done
[[ -z $CONFIG ]] || add_file "$CONFIG" /etc/nodeinit/nodeinit.toml
for spec in "${BINARIES[@]}"; do
    src=${spec%%:*}
    dest=$src
    [[ $spec == *:* ]] && dest=${spec#*:}
    add_binary "$src" "$dest"
done
for spec in "${FILES[@]}"; do
    [[ $spec == *:* ]] || die "--file '$spec' needs the form SRC:DEST"
    add_file "${spec%%:*}" "${spec#*:}"
done
for spec in "${SYMLINKS[@]}"; do
    [[ $spec == *:* ]] || die "--symlink '$spec' needs the form TARGET:DEST"
    add_entry symlink "${spec#*:}" "${spec%%:*}" 777
done
for name in "${MODULES[@]}"; do
    add_module "$name"
done
if ((${#MODULE_ORDER[@]})); then
    MODULE_META=$WORK/modules
    mkdir -p "$MODULE_META"
    for rel in "${MODULE_ORDER[@]}"; do
        grep -E "^${rel//./\\.}:" "$MODULES_DIR/modules.dep"
    done >"$MODULE_META/modules.dep"
    printf '%s\n' "${MODULE_ORDER[@]}" >"$MODULE_META/modules.load"
    add_file "$MODULE_META/modules.dep" "/lib/modules/$KVER/modules.dep"
    add_file "$MODULE_META/modules.load" "/lib/modules/$KVER/modules.load"
    ENTRY_MODE[/lib/modules/$KVER/modules.dep]=644
    ENTRY_MODE[/lib/modules/$KVER/modules.load]=644
fi

if ((LIST)); then
    for dest in $(printf '%s\n' "${!ENTRY_KIND[@]}" | LC_ALL=C sort); do
        printf '%-8s %4s %s <- %s\n' "${ENTRY_KIND[$dest]}" "${ENTRY_MODE[$dest]}" "$dest" "${ENTRY_SRC[$dest]:-}" >&2
    done
fi

tmp_out="$OUTPUT.tmp.$$"
write_archive | gzip -6 -n >"$tmp_out"
mv -f -- "$tmp_out" "$OUTPUT"
echo "mkinitramfs: wrote $OUTPUT ($(stat -c %s -- "$OUTPUT") bytes, ${#ENTRY_KIND[@]} entries)" >&2
