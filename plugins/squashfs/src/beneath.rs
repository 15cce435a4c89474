//! Directory descriptors and lookups beneath them that never follow a link.
//!
//! Owns the path discipline of this backend (issue 12, "Path discipline"):
//! a configured directory (an image dir, `mount_base`, `state_dir`) is opened
//! once per use as a descriptor, checked (a directory, owned by root or by
//! this process' user, writable by nobody else), and every name below it is
//! resolved from that descriptor with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`: a symbolic link anywhere
//! below, or a `..` leaving it, fails the lookup instead of redirecting it.
//! The configured path itself may contain links (`/var/run -> /run`): it
//! comes from root's config, not from a peer.
//!
//! **Old kernels.** `openat2` is Linux 5.6+. On `ENOSYS` the lookup walks the
//! path one component at a time with `openat(O_NOFOLLOW | O_DIRECTORY)` from
//! the directory descriptor, which refuses a link at each step just the same;
//! `..` never reaches it (callers refuse it lexically first), so the walk
//! cannot leave the directory. What the fallback lacks is the kernel's
//! protection against a directory being moved out from under a walk in
//! progress, which needs write access to the checked directories.
//!
//! These helpers would belong in a shared `sys` crate (DESIGN §1); none
//! exists yet, so they live here. This module must never mount or decide
//! policy beyond "who may write this directory".

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

use crate::escape::text as esc;

/// How often a lookup is retried when `openat2` reports a concurrent rename
/// (`EAGAIN`) before giving up with that error.
const MAX_RESOLVE_RETRIES: usize = 8;

/// A directory opened once, with the path it was configured as and the path
/// the kernel reports for it (what mountinfo and sysfs show).
#[derive(Debug)]
pub struct CheckedDir {
    fd: OwnedFd,
    /// The path as configured.
    pub configured: PathBuf,
    /// The path of the opened directory according to the kernel.
    pub canonical: PathBuf,
}

/// Why a configured directory is not usable.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// The directory could not be created or opened.
    #[error("{key} {p}: {what} failed: {source}", p = esc(.path))]
    Io {
        /// The option key (`image_dirs`, `mount_base`, `state_dir`).
        key: &'static str,
        /// The configured path.
        path: String,
        /// What was attempted.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Owned by a user other than root or this process' user.
    #[error("{key} {p} is owned by uid {uid}, not by root or uid {euid}; chown root {p}", p = esc(.path))]
    Owner {
        /// The option key.
        key: &'static str,
        /// The configured path.
        path: String,
        /// Its owner.
        uid: u32,
        /// This process' effective uid.
        euid: u32,
    },
    /// Group- or world-writable: another user could plant links or files in it.
    #[error("{key} {p} is writable by others (mode {mode:o}); anyone who may write it could redirect mounts or plant files: chmod go-w {p}", p = esc(.path))]
    Writable {
        /// The option key.
        key: &'static str,
        /// The configured path.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
}

impl CheckedDir {
    /// Open `path` (creating it and its parents with mode 0755 when `create`
    /// is set) and check it.
    ///
    /// # Errors
    ///
    /// [`DirError`] naming `key`, the path and what to change.
    pub fn open(key: &'static str, path: &Path, create: bool) -> Result<Self, DirError> {
        let shown = path.display().to_string();
        let io_err = |what, source| DirError::Io {
            key,
            path: shown.clone(),
            what,
            source,
        };
        if create {
            std::fs::create_dir_all(path).map_err(|e| io_err("creating the directory", e))?;
        }
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err("opening the directory", e.into()))?;
        check_owner_and_mode(key, &shown, &fd)?;
        let canonical = std::fs::read_link(format!("/proc/self/fd/{}", raw(&fd)))
            .unwrap_or_else(|_| path.to_path_buf());
        Ok(Self {
            fd,
            configured: path.to_path_buf(),
            canonical,
        })
    }

    /// The directory descriptor.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `rel` below this directory relative to one of its two spellings, if
    /// `absolute` starts with either; `None` when it is elsewhere.
    #[must_use]
    pub fn relative<'p>(&self, absolute: &'p Path) -> Option<&'p Path> {
        absolute
            .strip_prefix(&self.canonical)
            .or_else(|_| absolute.strip_prefix(&self.configured))
            .ok()
    }
}

fn raw(fd: &OwnedFd) -> i32 {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}

/// Refuse a directory another user could write into.
fn check_owner_and_mode(key: &'static str, shown: &str, fd: &OwnedFd) -> Result<(), DirError> {
    let st = rustix::fs::fstat(fd).map_err(|e| DirError::Io {
        key,
        path: shown.to_owned(),
        what: "fstat of the directory",
        source: e.into(),
    })?;
    let euid = nix::unistd::geteuid().as_raw();
    if st.st_uid != 0 && st.st_uid != euid {
        return Err(DirError::Owner {
            key,
            path: shown.to_owned(),
            uid: st.st_uid,
            euid,
        });
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(DirError::Writable {
            key,
            path: shown.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Whether `rel` is a plain relative path: only normal components, at least one.
#[must_use]
pub fn is_plain_relative(rel: &Path) -> bool {
    rel.components().next().is_some() && rel.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Open `rel` (plain, relative) below `dir` with `flags`, following no link
/// on the way or at the end. A link anywhere is `ELOOP`.
///
/// # Errors
///
/// The OS error of the lookup (`ELOOP` for a link, `ENOENT`, `ENOTDIR`...).
pub fn open_beneath(dir: BorrowedFd<'_>, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    if !is_plain_relative(rel) {
        return Err(io::Error::from_raw_os_error(nix::libc::EXDEV));
    }
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let flags = flags | OFlags::CLOEXEC;
    for _ in 0..MAX_RESOLVE_RETRIES {
        match rustix::fs::openat2(dir, rel, flags, Mode::empty(), resolve) {
            Err(rustix::io::Errno::AGAIN) => continue,
            Err(rustix::io::Errno::NOSYS) => return walk_beneath(dir, rel, flags),
            other => return other.map_err(io::Error::from),
        }
    }
    Err(io::Error::from_raw_os_error(nix::libc::EAGAIN))
}

/// The pre-5.6 fallback of [`open_beneath`]: one `openat(O_NOFOLLOW)` per component.
fn walk_beneath(dir: BorrowedFd<'_>, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    let names: Vec<&OsStr> = rel.iter().collect();
    let Some((last, parents)) = names.split_last() else {
        return Err(io::Error::from_raw_os_error(nix::libc::ENOENT));
    };
    let mut current: Option<OwnedFd> = None;
    for name in parents {
        let at = current.as_ref().map_or(dir, AsFd::as_fd);
        let next = rustix::fs::openat(
            at,
            *name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            // O_NOFOLLOW|O_DIRECTORY on a link says ENOTDIR: report it as the link it is.
            let is_link =
                rustix::fs::statat(at, *name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
                    rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink
                });
            if is_link {
                io::Error::from_raw_os_error(nix::libc::ELOOP)
            } else {
                io::Error::from(e)
            }
        })?;
        current = Some(next);
    }
    let at = current.as_ref().map_or(dir, AsFd::as_fd);
    // O_PATH with O_NOFOLLOW would open a link itself: refuse it explicitly.
    let fd = rustix::fs::openat(at, *last, flags | OFlags::NOFOLLOW, Mode::empty())?;
    let st = rustix::fs::fstat(&fd)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink {
        return Err(io::Error::from_raw_os_error(nix::libc::ELOOP));
    }
    Ok(fd)
}

/// A single file name (no `/`, not `.` or `..`) as a path, for `*at` calls.
#[must_use]
pub fn single_name(name: &str) -> Option<&Path> {
    let path = Path::new(name);
    (is_plain_relative(path) && path.components().count() == 1 && !name.as_bytes().contains(&b'/'))
        .then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn links_below_are_refused_at_any_depth() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("l")).unwrap();
        let checked = CheckedDir::open("image_dirs", dir.path(), false).unwrap();
        let fd = checked.fd();
        assert!(open_beneath(fd, Path::new("a/b/f"), OFlags::RDONLY).is_ok());
        for bad in ["l/b/f", "a/../a/b/f"] {
            let err = open_beneath(fd, Path::new(bad), OFlags::RDONLY).unwrap_err();
            assert!(
                matches!(
                    err.raw_os_error(),
                    Some(nix::libc::ELOOP | nix::libc::EXDEV)
                ),
                "{bad}: {err}"
            );
        }
        let err = walk_beneath(fd, Path::new("l/b/f"), OFlags::RDONLY).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::ELOOP), "{err}");
        assert!(walk_beneath(fd, Path::new("a/b/f"), OFlags::RDONLY).is_ok());
    }

    #[test]
    fn writable_directories_are_refused_by_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o775)).unwrap();
        let err = CheckedDir::open("state_dir", dir.path(), false).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "state_dir {} is writable by others (mode 775)",
                dir.path().display()
            )),
            "{err}"
        );
    }

    #[test]
    fn single_names_only() {
        assert!(single_name("base").is_some());
        for bad in ["", ".", "..", "a/b", "/a"] {
            assert!(single_name(bad).is_none(), "{bad}");
        }
    }
}
