//! The parts of Linux's new mount API (5.12+) that nix 0.29 does not wrap:
//! `open_tree`, `move_mount`, `mount_setattr`, `fsopen`/`fsconfig`/`fsmount`.
//!
//! Owns the unsafe syscall glue only, one small function per syscall. Policy
//! (what is mounted where) lives in [`crate::mount_namespace`].

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;

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

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} contains NUL", path.display()),
        )
    })
}

fn fd_result(rc: libc::c_long, what: &str) -> io::Result<OwnedFd> {
    if rc < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(err.kind(), format!("{what}: {err}")));
    }
    let fd =
        RawFd::try_from(rc).map_err(|_| io::Error::other(format!("{what}: fd out of range")))?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn unit_result(rc: libc::c_long, what: &str) -> io::Result<()> {
    if rc < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(err.kind(), format!("{what}: {err}")));
    }
    Ok(())
}

/// A detached copy of the mount at `path` (with its submounts if `recursive`).
pub(crate) fn clone_tree(path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let c = c_path(path)?;
    let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: c is a live NUL-terminated string; the other arguments are integers.
    let rc = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    fd_result(rc, &format!("open_tree({})", path.display()))
}

/// Attach the detached mount `tree` at `to` (relative to `to_dir`, or the
/// caller's cwd/root when `to_dir` is `None`).
pub(crate) fn attach(
    tree: BorrowedFd<'_>,
    to_dir: Option<BorrowedFd<'_>>,
    to: &Path,
) -> io::Result<()> {
    let c_to = c_path(to)?;
    let empty = c"";
    let dir = to_dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: valid fds, live NUL-terminated strings, integer flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            dir,
            c_to.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    unit_result(rc, &format!("move_mount(onto {})", to.display()))
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
    unit_result(rc, "mount_setattr")
}

/// A new, detached tmpfs mount with root `mode` (1 MiB: it only holds mount points).
pub(crate) fn new_tmpfs(mode: u32) -> io::Result<OwnedFd> {
    let mode = CString::new(format!("{mode:o}")).map_err(|_| io::Error::other("mode string"))?;
    let fstype = c"tmpfs";
    // SAFETY: live NUL-terminated string, integer flags.
    let fs = fd_result(
        unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) },
        "fsopen(tmpfs)",
    )?;
    for (key, value) in [(c"mode", mode.as_c_str()), (c"size", c"1m")] {
        // SAFETY: valid fs context fd, live NUL-terminated strings.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        };
        unit_result(rc, "fsconfig(tmpfs)")?;
    }
    // SAFETY: valid fs context fd; NULL key/value for CMD_CREATE.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    unit_result(rc, "fsconfig(tmpfs, create)")?;
    // SAFETY: valid fs context fd, integer flags.
    let rc = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
    fd_result(rc, "fsmount(tmpfs)")
}
