//! Preparing an allocation's new mount namespace: cut its propagation to the
//! host, then bind the uenv image read-only at its mount path.
//!
//! Owns everything mounted *inside* an allocation's mount namespace (the
//! holder cuts propagation itself when it is cloned by
//! [`crate::holder::clone_persistent_holder`] or a tied holder; [`prepare`] does it for a
//! namespace made otherwise). It must
//! never mount anything in the caller's (the host's) namespace: all work runs
//! on a setup thread ([`crate::setup_thread`]), which has a filesystem
//! context of its own (`unshare(CLONE_FS)`) and joins the allocation's
//! namespace (`setns`) for the job only.
//!
//! Where the mount point comes from: if the uenv path (default
//! `/user-environment`) exists in the node image, the image is bound over it.
//! If it does not, nothing is created on the host's filesystem; instead, inside
//! the allocation's namespace only, the nearest existing ancestor (usually `/`)
//! is covered by a small read-only tmpfs that carries a bind of every entry of
//! the original directory plus the missing path. The host's `/` is never
//! written to.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

use crate::mount_api::{self, ATTR_NODEV, ATTR_NOSUID, ATTR_RDONLY};

/// How the new mount namespace relates to the host's after creation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Propagation {
    /// `rslave`: host mounts made later (new uenv images, data stages) still
    /// appear inside; nothing mounted inside ever reaches the host.
    #[default]
    Slave,
    /// `rprivate`: no propagation either way.
    Private,
}

/// A uenv bind: the image's host mount point and the path it appears at inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UenvBind {
    /// Where the image is mounted in the host namespace (the mount backend's `mount_point`).
    pub source: PathBuf,
    /// Absolute path inside the allocation's namespace (default `/user-environment`).
    pub target: PathBuf,
}

/// Why a uenv mount path is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("uenv mount path {path:?} must be absolute, normalised (no '.', '..', '//') and not '/'")]
pub struct InvalidMountPath {
    /// The rejected path.
    pub path: String,
}

/// A validated uenv mount path: absolute, normal components only, not `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UenvMountPath(pub(crate) PathBuf);

/// Where a uenv image is bound inside an allocation's mount namespace unless
/// told otherwise (the uenv convention).
pub const DEFAULT_UENV_MOUNT_PATH: &str = "/user-environment";

impl Default for UenvMountPath {
    /// [`DEFAULT_UENV_MOUNT_PATH`].
    fn default() -> Self {
        Self(PathBuf::from(DEFAULT_UENV_MOUNT_PATH))
    }
}

impl UenvMountPath {
    /// Validate `path`.
    ///
    /// # Errors
    ///
    /// [`InvalidMountPath`] for relative paths, `/`, `.`/`..` components, empty components.
    pub fn parse(path: &str) -> Result<Self, InvalidMountPath> {
        let bad = || InvalidMountPath {
            path: path.to_owned(),
        };
        // The one absolute-path rule (rooted, no NUL, no `..`), then what a
        // mount point inside the namespace needs on top: no `.`, no empty
        // component, not `/`.
        // (`Path::components` folds an inner `.` away, so the text is
        // checked: `/a/./b` was accepted before.)
        if nodeinit_contracts::AbsolutePath::parse(path).is_err()
            || path.contains("//")
            || path.ends_with('/')
            || path.split('/').any(|c| c == ".")
        {
            return Err(bad());
        }
        let p = Path::new(path);
        let mut normal = 0;
        for c in p.components() {
            match c {
                Component::RootDir => {}
                Component::Normal(_) => normal += 1,
                _ => return Err(bad()),
            }
        }
        if normal == 0 {
            return Err(bad());
        }
        Ok(Self(p.to_path_buf()))
    }

    /// The path.
    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

/// Cut propagation of the mount namespace `mnt_ns`, then (if `bind`) mount
/// the uenv read-only (`nosuid,nodev`) at `bind.target` inside it.
///
/// # Errors
///
/// The step that failed, with its path and the kernel's reason.
pub fn prepare(
    mnt_ns: BorrowedFd<'_>,
    propagation: Propagation,
    bind: Option<&UenvBind>,
) -> io::Result<()> {
    let bind = bind.cloned();
    in_namespace(mnt_ns, move || {
        cut_propagation(propagation)?;
        bind.as_ref().map_or(Ok(()), bind_uenv)
    })
}

/// Mount the uenv read-only (`nosuid,nodev`) at `bind.target` inside the
/// mount namespace `mnt_ns`, whose propagation is cut already (the holder
/// does it itself: [`crate::holder::clone_persistent_holder`]).
///
/// # Errors
///
/// The step that failed, with its path and the kernel's reason.
pub fn attach_uenv(mnt_ns: BorrowedFd<'_>, bind: &UenvBind) -> io::Result<()> {
    let bind = bind.clone();
    in_namespace(mnt_ns, move || bind_uenv(&bind))
}

/// Make `target` a directory inside the mount namespace `mnt_ns` ahead of a
/// uenv bind, exactly as [`attach_uenv`] would before it attaches the
/// image: nothing if it exists, else the read-only shadow of its nearest
/// existing ancestor with the missing directories in it. A later
/// [`attach_uenv`] to `target` then only attaches the image (spare holders
/// are made so; the shadow mirrors the ancestor as it is now, so whoever
/// keeps such a namespace must watch that directory:
/// [`shadowed_directory`]).
///
/// # Errors
///
/// As [`attach_uenv`]'s shadow steps.
pub fn prepare_mount_point(mnt_ns: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
    let target = target.to_path_buf();
    in_namespace(mnt_ns, move || at_mount_point(&target, |_, _| Ok(())))
}

/// The directory a uenv bind at `target` would shadow (its nearest existing
/// ancestor), seen from this process's mount namespace; `None` when
/// `target` is a directory (no shadow).
///
/// # Errors
///
/// `target` or an ancestor is not a directory, or cannot be looked up.
pub fn shadowed_directory(target: &Path) -> io::Result<Option<PathBuf>> {
    Ok(match mount_point(target)? {
        MountPoint::Directory => None,
        MountPoint::Missing => Some(nearest_existing_dir(target)?.0),
    })
}

/// Run `work` inside `mnt_ns`, on a setup thread ([`crate::setup_thread`]).
fn in_namespace(
    mnt_ns: BorrowedFd<'_>,
    work: impl FnOnce() -> io::Result<()> + Send + 'static,
) -> io::Result<()> {
    crate::setup_thread::run_in(mnt_ns, work)
}

fn cut_propagation(propagation: Propagation) -> io::Result<()> {
    let flags = MsFlags::MS_REC
        | match propagation {
            Propagation::Slave => MsFlags::MS_SLAVE,
            Propagation::Private => MsFlags::MS_PRIVATE,
        };
    mount(None::<&str>, "/", None::<&str>, flags, None::<&str>).map_err(|e| {
        io::Error::other(format!(
            "making / {propagation:?} in the new mount namespace: {e}"
        ))
    })
}

/// What a uenv mount path is in the namespace the caller is in.
enum MountPoint {
    Directory,
    Missing,
}

fn mount_point(target: &Path) -> io::Result<MountPoint> {
    match std::fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => Ok(MountPoint::Directory),
        Ok(_) => Err(io::Error::other(format!(
            "uenv mount path {} exists but is not a directory; remove it or configure another path",
            target.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(MountPoint::Missing),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("stat {}: {e}", target.display()),
        )),
    }
}

/// Bind the image read-only at `bind.target`, under a shadow if it is missing.
fn bind_uenv(bind: &UenvBind) -> io::Result<()> {
    let image = mount_api::clone_tree(&bind.source, false)?;
    mount_api::set_attributes(image.as_fd(), ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV)?;
    at_mount_point(&bind.target, |dir, path| {
        mount_api::attach(image.as_fd(), dir, path)
    })
}

/// Run `attach` on `target` as a directory: `(None, target)` if it is one;
/// if it is missing, `(shadow, path below it)` on the shadow of its nearest
/// existing ancestor, which is sealed read-only after `attach`.
fn at_mount_point(
    target: &Path,
    attach: impl FnOnce(Option<BorrowedFd<'_>>, &Path) -> io::Result<()>,
) -> io::Result<()> {
    match mount_point(target)? {
        MountPoint::Directory => attach(None, target),
        MountPoint::Missing => {
            let (shadow, missing) = build_shadow(target)?;
            attach(Some(shadow.as_fd()), &missing)?;
            seal_shadow(shadow.as_fd())
        }
    }
}

/// What an entry of the shadowed directory becomes in the tmpfs.
enum ShadowEntry {
    Tree {
        name: CString,
        tree: OwnedFd,
        is_dir: bool,
    },
    Symlink {
        name: CString,
        target: PathBuf,
    },
}

/// Cover the nearest existing ancestor of `target` with a tmpfs that mirrors
/// it (bind of every entry) plus the missing directories; the tmpfs and the
/// path of `target` below it. Still writable: [`seal_shadow`] when done.
fn build_shadow(target: &Path) -> io::Result<(OwnedFd, PathBuf)> {
    let (ancestor, missing) = nearest_existing_dir(target)?;
    let mode = std::fs::metadata(&ancestor)?.permissions().mode() & 0o7777;
    // Clone every entry before covering the directory: afterwards its path leads to the tmpfs.
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(&ancestor)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", ancestor.display())))?
    {
        let entry = entry?;
        let path = entry.path();
        let name = CString::new(entry.file_name().into_encoded_bytes())
            .map_err(|_| io::Error::other(format!("{} contains NUL", path.display())))?;
        let kind = entry.file_type()?;
        entries.push(if kind.is_symlink() {
            ShadowEntry::Symlink {
                name,
                target: std::fs::read_link(&path)?,
            }
        } else {
            ShadowEntry::Tree {
                name,
                tree: mount_api::clone_tree(&path, true)?,
                is_dir: kind.is_dir(),
            }
        });
    }
    let shadow = mount_api::new_tmpfs(mode)?;
    mount_api::attach(shadow.as_fd(), None, &ancestor)?;
    for entry in entries {
        match entry {
            ShadowEntry::Symlink { name, target } => {
                nix::unistd::symlinkat(
                    target.as_path(),
                    Some(std::os::fd::AsRawFd::as_raw_fd(&shadow)),
                    name.as_c_str(),
                )
                .map_err(|e| {
                    io::Error::other(format!(
                        "symlink {name:?} in the shadow of {}: {e}",
                        ancestor.display()
                    ))
                })?;
            }
            ShadowEntry::Tree { name, tree, is_dir } => {
                create_mount_point(shadow.as_fd(), &name, is_dir)?;
                let rel = Path::new(std::ffi::OsStr::from_bytes(name.as_bytes()));
                mount_api::attach(tree.as_fd(), Some(shadow.as_fd()), rel)?;
            }
        }
    }
    let mut partial = PathBuf::new();
    for component in missing.components() {
        partial.push(component);
        let c = CString::new(partial.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::other("mount path contains NUL"))?;
        create_mount_point(shadow.as_fd(), &c, true)?;
    }
    Ok((shadow, missing))
}

/// Make the shadow tmpfs read-only (`nosuid,nodev`): nothing is ever written
/// to it after it is built.
fn seal_shadow(shadow: BorrowedFd<'_>) -> io::Result<()> {
    mount_api::set_attributes(shadow, ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV)
}

fn create_mount_point(dir: BorrowedFd<'_>, name: &CString, is_dir: bool) -> io::Result<()> {
    let raw = std::os::fd::AsRawFd::as_raw_fd(&dir);
    let result = if is_dir {
        nix::sys::stat::mkdirat(Some(raw), name.as_c_str(), Mode::from_bits_truncate(0o755))
    } else {
        // mknodat, not open(O_CREAT): an open writable FD, even for a moment,
        // is copied into any holder another request forks meanwhile, and
        // while a copy lives `mount_setattr(RDONLY)` on the tmpfs fails
        // with EBUSY (issue 12 item 3).
        nix::sys::stat::mknodat(
            Some(raw),
            name.as_c_str(),
            nix::sys::stat::SFlag::S_IFREG,
            Mode::from_bits_truncate(0o644),
            0,
        )
    };
    result.map_err(|e| {
        io::Error::other(format!(
            "creating mount point {name:?} in the shadow tmpfs: {e}"
        ))
    })
}

/// The deepest existing directory above `target` and the rest of the path below it.
fn nearest_existing_dir(target: &Path) -> io::Result<(PathBuf, PathBuf)> {
    for ancestor in target.ancestors().skip(1) {
        match std::fs::symlink_metadata(ancestor) {
            Ok(meta) if meta.is_dir() => {
                let missing = target
                    .strip_prefix(ancestor)
                    .map_err(|_| io::Error::other("mount path is not below its ancestor"))?;
                return Ok((ancestor.to_path_buf(), missing.to_path_buf()));
            }
            Ok(_) => {
                return Err(io::Error::other(format!(
                "{} (a parent of the uenv mount path) is not a directory; configure another path",
                ancestor.display()
            )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("stat {}: {e}", ancestor.display()),
                ))
            }
        }
    }
    Err(io::Error::other(format!(
        "no parent of {} exists",
        target.display()
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_uenv_mount_path_is_absolute_normal_and_not_the_root() {
        for ok in ["/user-environment", "/opt/uenv", "/a/b.c"] {
            assert_eq!(UenvMountPath::parse(ok).unwrap().as_path(), Path::new(ok));
        }
        for bad in [
            "relative", "/", "/a/../b", "/a/./b", "//a", "/a//b", "/a/", "/a\0b", "",
        ] {
            assert_eq!(
                UenvMountPath::parse(bad).unwrap_err().path,
                bad,
                "{bad:?} accepted"
            );
        }
        assert_eq!(
            UenvMountPath::default().as_path(),
            Path::new(DEFAULT_UENV_MOUNT_PATH)
        );
    }
}
