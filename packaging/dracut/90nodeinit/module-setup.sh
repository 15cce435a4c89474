#!/bin/bash
# shellcheck disable=SC2154 # initdir, moddir, ... are dracut's
# module-setup.sh — dracut module 90nodeinit.
#
# Owns: putting nodeinit into a dracut-built initramfs — /usr/sbin/nodeinit,
# the plugins of /usr/lib/nodeinit/plugins (root-owned, 0644: what the
# loader demands), the site's /etc/nodeinit/nodeinit.toml and every shared
# library they need (the dynamic loader, libc, libgcc_s), plus the loop and
# squashfs drivers the mount backend uses for uenv images.
# Never changes how dracut boots: the common path keeps dracut's own /init,
# which mounts the real root and switch_roots to `init=/usr/sbin/nodeinit`
# on the kernel command line (nodeinit from the real root, which the
# package installed there too). This copy is for nodes whose initramfs is
# the whole system, and for `rd.break` debugging with the site's config.
#
# Enable it with `dracut -m "... nodeinit"`/`--add nodeinit`, or
# `add_dracutmodules+=" nodeinit "` in /etc/dracut.conf.d/nodeinit.conf:
# installing the package alone changes no initramfs.
#
# `nodeinit_sourcedir=DIR` (dracut.conf.d or the environment) takes the
# files from an unpacked package tree instead of / — for image pipelines
# and CI that build an initramfs without installing the package.

nodeinit_root() {
    printf '%s' "${nodeinit_sourcedir:-}"
}

# called by dracut
check() {
    local root
    root=$(nodeinit_root)
    if [[ -n $root ]]; then
        [[ -x $root/usr/sbin/nodeinit ]] || {
            derror "nodeinit: $root/usr/sbin/nodeinit is missing (nodeinit_sourcedir=$root)"
            return 1
        }
    else
        require_binaries /usr/sbin/nodeinit || return 1
    fi
    # Only when asked for, never by default.
    return 255
}

# called by dracut
depends() {
    return 0
}

# called by dracut
installkernel() {
    hostonly='' instmods loop squashfs
}

# called by dracut
install() {
    local root so found=0
    root=$(nodeinit_root)
    inst_binary "$root/usr/sbin/nodeinit" /usr/sbin/nodeinit || {
        dfatal "nodeinit: cannot install $root/usr/sbin/nodeinit"
        return 1
    }
    # Plugins are dlopen()ed, so no ELF header names them: install each one
    # (dracut-install resolves its libraries) at the path the config uses.
    for so in "$root"/usr/lib/nodeinit/plugins/*.so; do
        [[ -f $so ]] || continue
        inst_library "$so" "/usr/lib/nodeinit/plugins/${so##*/}" || {
            dfatal "nodeinit: cannot install plugin $so"
            return 1
        }
        found=1
    done
    ((found)) || dwarn "nodeinit: no plugin in $root/usr/lib/nodeinit/plugins; nodeinit will refuse to boot a config that needs one"
    if [[ -f $root/etc/nodeinit/nodeinit.toml ]]; then
        inst_simple "$root/etc/nodeinit/nodeinit.toml" /etc/nodeinit/nodeinit.toml
    else
        dinfo "nodeinit: no $root/etc/nodeinit/nodeinit.toml; nodeinit will use its built-in config"
    fi
}
