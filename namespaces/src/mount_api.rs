//! The parts of Linux's new mount API (5.12+) a holder's mount namespace
//! needs: `open_tree`, `move_mount`, `fsopen`/`fsconfig`/`fsmount` through
//! `rustix`, and `mount_setattr`, which rustix 1.x does not wrap (its
//! `not_implemented!` list names it) and nix 0.29 neither: that one syscall
//! stays hand-written here, in one small `unsafe` function.
//!
//! Owns the syscall glue only, one small function per call. Policy (what is
//! mounted where) lives in [`crate::mount_namespace`].

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::CWD;
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags};

/// `MOUNT_ATTR_RDONLY`.
pub(crate) const ATTR_RDONLY: u64 = 0x1;
/// `MOUNT_ATTR_NOSUID`.
pub(crate) const ATTR_NOSUID: u64 = 0x2;
/// `MOUNT_ATTR_NODEV`.
pub(crate) const ATTR_NODEV: u64 = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn named(what: &str) -> impl FnOnce(rustix::io::Errno) -> io::Error + '_ {
    move |e| {
        let err = io::Error::from(e);
        io::Error::new(err.kind(), format!("{what}: {err}"))
    }
}

/// A detached copy of the mount at `path` (with its submounts if `recursive`).
///
/// An automount trigger at `path` is copied as it is, never fired (an
/// autofs direct mount of an NFS share would be mounted for every copy,
/// and hang it while the server is down), and a symlink at `path` is not
/// followed: what is copied is what the caller listed.
pub(crate) fn clone_tree(path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_NO_AUTOMOUNT
        | OpenTreeFlags::AT_SYMLINK_NOFOLLOW;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    rustix::mount::open_tree(CWD, path, flags)
        .map_err(named(&format!("open_tree({})", path.display())))
}

/// Attach the detached mount `tree` at `to` (relative to `to_dir`, or the
/// caller's cwd/root when `to_dir` is `None`).
pub(crate) fn attach(
    tree: BorrowedFd<'_>,
    to_dir: Option<BorrowedFd<'_>>,
    to: &Path,
) -> io::Result<()> {
    rustix::mount::move_mount(
        tree,
        "",
        to_dir.unwrap_or(CWD),
        to,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(named(&format!("move_mount(onto {})", to.display())))
}

/// Set mount attributes (`ATTR_*`) on the mount `fd` refers to (not its submounts).
pub(crate) fn set_attributes(fd: BorrowedFd<'_>, attr_set: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let empty = c"";
    // SAFETY: attr is a live mount_attr of the size passed; empty path with AT_EMPTY_PATH.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(err.kind(), format!("mount_setattr: {err}")));
    }
    Ok(())
}

/// A new, detached tmpfs mount with root `mode` (1 MiB: it only holds mount points).
pub(crate) fn new_tmpfs(mode: u32) -> io::Result<OwnedFd> {
    let fs = rustix::mount::fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(named("fsopen(tmpfs)"))?;
    rustix::mount::fsconfig_set_string(&fs, "mode", format!("{mode:o}").as_str())
        .map_err(named("fsconfig(tmpfs)"))?;
    rustix::mount::fsconfig_set_string(&fs, "size", "1m").map_err(named("fsconfig(tmpfs)"))?;
    rustix::mount::fsconfig_create(&fs).map_err(named("fsconfig(tmpfs, create)"))?;
    rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(named("fsmount(tmpfs)"))
}
