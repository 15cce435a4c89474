//! Opening a plugin file safely: a descriptor walk from `/` that checks every
//! directory on the way before going through it, then `fstat` of what was
//! actually opened.
//!
//! Owns the ownership/mode policy (issue 12, item 9), modelled on OpenPAM's
//! module checks and sudo's plugin checks:
//!
//! - every ancestor directory must be owned by root (or by this process'
//!   user) and not writable by group or others, unless it is world-writable
//!   *with* the sticky bit (`/tmp`), where others cannot replace our entries;
//! - the directory holding the plugin must not be group- or world-writable
//!   at all, sticky or not;
//! - a symbolic link on the way is followed only when it lies in a directory
//!   nobody else may write (merged-`/usr` links like `/lib -> usr/lib`); a link
//!   in a writable directory is refused, whoever made it;
//! - the plugin file itself is opened with `O_NOFOLLOW`, is regular, owned by
//!   root (or us) and not group- or world-writable.
//!
//! Each component is opened with `openat(O_NOFOLLOW)` from the descriptor of
//! the directory checked just before, so nothing is looked up by name twice:
//! what was checked is what is gone through. Must never `dlopen` or read
//! contents.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::geteuid;

use super::LoadFailure;

/// Symbolic links followed in one walk before giving up (the kernel's limit).
const MAX_LINKS: usize = 40;

/// Opens `path` for reading by a checked descriptor walk (see the module
/// docs) and checks the file and the directory holding it.
pub fn open_checked(path: &Path) -> Result<File, LoadFailure> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| LoadFailure::Open(format!("current directory: {e}")))?
            .join(path)
    };
    let Some(file_name) = absolute.file_name().map(OsStr::to_os_string) else {
        return Err(LoadFailure::NotRegular("a directory".to_owned()));
    };
    let parent = absolute.parent().unwrap_or(Path::new("/"));
    let dir = walk_to_dir(parent)?;
    check_owner_and_mode("directory", dir.uid, dir.mode)?;
    let fd =
        open_at(&dir.fd, &file_name, OFlag::O_RDONLY | OFlag::O_NOFOLLOW).map_err(|errno| {
            match errno {
                Errno::ELOOP => LoadFailure::Symlink,
                Errno::ENOENT => LoadFailure::Missing,
                other => LoadFailure::Open(other.desc().to_owned()),
            }
        })?;
    let file = File::from(fd);
    // fstat of the descriptor we hold, not a second lookup of the path.
    let st = file
        .metadata()
        .map_err(|e| LoadFailure::Open(format!("fstat: {e}")))?;
    if st.is_dir() {
        return Err(LoadFailure::NotRegular("a directory".to_owned()));
    }
    if !st.is_file() {
        return Err(LoadFailure::NotRegular(format!(
            "file type {:?}",
            st.file_type()
        )));
    }
    check_owner_and_mode("file", st.uid(), st.mode())?;
    Ok(file)
}

/// A directory reached by the walk, with what its `fstat` said.
struct CheckedDir {
    fd: OwnedFd,
    path: PathBuf,
    uid: u32,
    mode: u32,
}

impl CheckedDir {
    fn open(fd: OwnedFd, path: PathBuf) -> Result<Self, LoadFailure> {
        let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| {
            LoadFailure::Open(format!(
                "fstat of directory {}: {}",
                path.display(),
                e.desc()
            ))
        })?;
        Ok(Self {
            fd,
            path,
            uid: st.st_uid,
            mode: st.st_mode,
        })
    }

    /// Whether someone other than root (or us) could change its entries.
    fn writable_by_others(&self) -> bool {
        self.mode & 0o022 != 0
    }
}

/// `openat(dir, name, flags | O_CLOEXEC)` as an owned descriptor.
fn open_at(dir: &OwnedFd, name: &OsStr, flags: OFlag) -> Result<OwnedFd, Errno> {
    let raw = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        name,
        flags | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: `openat` just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn open_root() -> Result<CheckedDir, LoadFailure> {
    let fd = std::fs::File::open("/").map_err(|e| LoadFailure::Open(format!("opening /: {e}")))?;
    CheckedDir::open(OwnedFd::from(fd), PathBuf::from("/"))
}

/// Walk from `/` to `dir`, checking each directory before going through it
/// and following only links that lie in directories nobody else may write.
fn walk_to_dir(dir: &Path) -> Result<CheckedDir, LoadFailure> {
    let mut stack = vec![open_root()?];
    let mut pending: Vec<OsString> = components(dir);
    pending.reverse();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let Some(current) = stack.last() else {
            return Err(LoadFailure::Open("directory walk lost its root".to_owned()));
        };
        check_ancestor(current)?;
        let next_path = current.path.join(&name);
        match open_at(
            &current.fd,
            &name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        ) {
            Ok(fd) => {
                let next = CheckedDir::open(fd, next_path)?;
                stack.push(next);
            }
            Err(Errno::ELOOP | Errno::ENOTDIR) if is_symlink(current, &name) => {
                if current.writable_by_others() {
                    return Err(LoadFailure::Unsafe(format!(
                        "path component {} is a symbolic link in {}, which others may write (mode {:o}); point the config at the real path",
                        next_path.display(),
                        current.path.display(),
                        current.mode & 0o7777
                    )));
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(LoadFailure::Open(format!(
                        "more than {MAX_LINKS} symbolic links on the way to {}",
                        dir.display()
                    )));
                }
                let target = nix::fcntl::readlinkat(Some(current.fd.as_raw_fd()), name.as_os_str())
                    .map_err(|e| {
                        LoadFailure::Open(format!("readlink {}: {}", next_path.display(), e.desc()))
                    })?;
                let target = PathBuf::from(target);
                if target.is_absolute() {
                    stack.truncate(1);
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
            }
            Err(Errno::ENOENT) => return Err(LoadFailure::Missing),
            Err(Errno::ENOTDIR) => {
                return Err(LoadFailure::Open(format!(
                    "{} is not a directory",
                    next_path.display()
                )))
            }
            Err(e) => {
                return Err(LoadFailure::Open(format!(
                    "opening directory {}: {}",
                    next_path.display(),
                    e.desc()
                )))
            }
        }
    }
    stack
        .pop()
        .ok_or_else(|| LoadFailure::Open("directory walk lost its root".to_owned()))
}

/// The normal and `..` components of `path` (root and `.` dropped).
fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn is_symlink(dir: &CheckedDir, name: &OsStr) -> bool {
    nix::sys::stat::fstatat(
        Some(dir.fd.as_raw_fd()),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .is_ok_and(|st| st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFLNK)
}

/// An ancestor (a directory gone *through*): owned by root or us, and not
/// writable by others unless world-writable with the sticky bit.
fn check_ancestor(dir: &CheckedDir) -> Result<(), LoadFailure> {
    let euid = geteuid().as_raw();
    let shown = dir.path.display();
    if dir.uid != 0 && dir.uid != euid {
        return Err(LoadFailure::Unsafe(format!(
            "ancestor directory {shown} is owned by uid {}, not root or uid {euid}: chown it to root",
            dir.uid
        )));
    }
    let mode = dir.mode & 0o7777;
    let sticky = mode & 0o1000 != 0;
    if mode & 0o002 != 0 && !sticky {
        return Err(LoadFailure::Unsafe(format!(
            "ancestor directory {shown} is world-writable without the sticky bit (mode {mode:o}): chmod o-w it"
        )));
    }
    if mode & 0o020 != 0 && !sticky {
        return Err(LoadFailure::Unsafe(format!(
            "ancestor directory {shown} is group-writable (mode {mode:o}): chmod g-w it"
        )));
    }
    Ok(())
}

fn check_owner_and_mode(what: &'static str, uid: u32, mode: u32) -> Result<(), LoadFailure> {
    let euid = geteuid().as_raw();
    if uid != 0 && uid != euid {
        return Err(LoadFailure::Unsafe(format!(
            "{what} is owned by uid {uid}, not root or uid {euid}: chown it to root"
        )));
    }
    if mode & 0o002 != 0 {
        return Err(LoadFailure::Unsafe(format!(
            "{what} is world-writable (mode {:o}): chmod o-w it",
            mode & 0o7777
        )));
    }
    if mode & 0o020 != 0 {
        return Err(LoadFailure::Unsafe(format!(
            "{what} is group-writable (mode {:o}): chmod g-w it",
            mode & 0o7777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_keep_dot_dot_and_drop_root_and_dot() {
        let got = components(Path::new("/a/./b/../c"));
        assert_eq!(got, ["a", "b", "..", "c"].map(OsString::from));
    }
}
