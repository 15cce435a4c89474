//! Creating the listening socket so that no peer ever sees it with the wrong
//! owner or mode: bind it inside a private directory (mode 0700, created
//! for the purpose next to the final path), `chmod`/`chown` it there,
//! `listen`, then `rename` it over the well-known path and remove the
//! directory. Every step after `mkdir` goes through directory descriptors
//! (the socket is bound through `/proc/self/fd/<dir>/`), so nobody who can
//! write to the parent directory can swap the file being chmod'ed or
//! chown'ed, or redirect the bind.
//!
//! Owns the socket file. It must never remove a path that is not a stale
//! socket (a live server's socket or a regular file is an error, not removed).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::socket::{
    bind, connect, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
};
use nix::sys::stat::{fchmodat, fstatat, mkdirat, FchmodatFlags, Mode};
use nix::unistd::{fchownat, unlinkat, Gid, UnlinkatFlags};

/// Open a directory (relative to `at`, or absolute), not following a final symlink.
fn open_dir(at: Option<&OwnedFd>, path: &Path) -> io::Result<OwnedFd> {
    let fd = openat(
        at.map(|d| d.as_raw_fd()),
        path,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| io::Error::other(format!("opening directory {}: {e}", path.display())))?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// A listening handoff socket: the descriptor and the file it is bound to.
///
/// The keeper (PID 1) binds it once with [`HandoffListener::bind`] and keeps
/// it for the node's lifetime; each worker receives a duplicate and serves it
/// with [`HandoffServer::serve`](super::HandoffServer::serve). While a worker
/// restarts, clients wait in the kernel's backlog instead of getting
/// `ECONNREFUSED`.
///
/// # Example
///
/// ```no_run
/// use std::os::fd::OwnedFd;
/// use nodeinit_handoff::{HandoffListener, ServerConfig};
///
/// // In the keeper: bind once, keep it, give each worker a duplicate.
/// fn keeper_side() -> std::io::Result<(HandoffListener, OwnedFd)> {
///     let listener = HandoffListener::bind(&ServerConfig::default())?;
///     let for_worker = listener.try_clone_fd()?;
///     Ok((listener, for_worker))
/// }
///
/// // In the worker: wrap the inherited descriptor; it never removes the file.
/// fn worker_side(fd: OwnedFd) -> HandoffListener {
///     HandoffListener::inherited(fd, hpc_node::namespace::HANDOFF_SOCKET_PATH.into())
/// }
/// ```
#[derive(Debug)]
pub struct HandoffListener {
    pub(super) fd: OwnedFd,
    pub(super) path: PathBuf,
    /// `Some` when this process published the file (and removes it).
    dev_ino: Option<(u64, u64)>,
}

/// The crate-internal name used by the server.
pub(super) type Listener = HandoffListener;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn new_socket(flags: SockFlag) -> io::Result<OwnedFd> {
    Ok(socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        flags | SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

fn addr(path: &Path) -> io::Result<UnixAddr> {
    UnixAddr::new(path).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: not usable as a socket address ({e}; at most 107 bytes)",
                path.display()
            ),
        )
    })
}

/// Remove `path` if it is a socket nobody listens on.
fn clear_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("stat {}: {e}", path.display()),
            ))
        }
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; remove it or configure another socket path",
                path.display()
            ),
        ));
    }
    let probe = new_socket(SockFlag::empty())?;
    if connect(probe.as_raw_fd(), &addr(path)?).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "another server is listening on {}; stop it first",
                path.display()
            ),
        ));
    }
    std::fs::remove_file(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("removing stale socket {}: {e}", path.display()),
        )
    })
}

impl HandoffListener {
    /// Bind the socket `config` names with its mode and group, listen, and
    /// publish it atomically at `config.socket_path`.
    ///
    /// # Errors
    ///
    /// The path is in use by a live server or is not a socket, its directory
    /// cannot be created, or a syscall fails; the message names the path.
    pub fn bind(config: &super::ServerConfig) -> io::Result<Self> {
        Self::create(
            &config.socket_path,
            config.socket_mode,
            config.socket_group,
            128,
        )
    }

    /// A listening socket inherited from the process that bound it (the
    /// keeper). This side never removes the socket file.
    pub fn inherited(fd: OwnedFd, path: PathBuf) -> Self {
        Self {
            fd,
            path,
            dev_ino: None,
        }
    }

    /// A duplicate of the listening descriptor (close-on-exec), to pass on.
    ///
    /// # Errors
    ///
    /// `dup` fails (EMFILE).
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bind, set mode and group, listen, publish at `path`.
    pub(super) fn create(
        path: &Path,
        mode: u32,
        group: Option<u32>,
        backlog: i32,
    ) -> io::Result<Self> {
        let parent = path.parent().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} has no parent directory", path.display()),
            )
        })?;
        if !parent.exists() {
            std::fs::create_dir_all(parent).map_err(|e| {
                io::Error::new(e.kind(), format!("creating {}: {e}", parent.display()))
            })?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))?;
        }
        clear_stale(path)?;
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} has no file name", path.display()),
            )
        })?;
        let parent_fd = open_dir(None, parent)?;
        let private = format!(
            ".handoff.{}.{}.{}.d",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        mkdirat(Some(parent_fd.as_raw_fd()), private.as_str(), Mode::S_IRWXU).map_err(|e| {
            io::Error::other(format!(
                "creating private directory {}: {e}",
                parent.join(&private).display()
            ))
        })?;
        let result = (|| -> io::Result<(OwnedFd, (u64, u64))> {
            let private_fd = open_dir(Some(&parent_fd), Path::new(&private))?;
            let fd = new_socket(SockFlag::SOCK_NONBLOCK)?;
            let bind_path = PathBuf::from(format!("/proc/self/fd/{}/sock", private_fd.as_raw_fd()));
            bind(fd.as_raw_fd(), &addr(&bind_path)?).map_err(|e| {
                io::Error::other(format!("bind in {}: {e}", parent.join(&private).display()))
            })?;
            fchmodat(
                Some(private_fd.as_raw_fd()),
                "sock",
                Mode::from_bits_truncate(mode & 0o777),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| io::Error::other(format!("chmod of the new handoff socket: {e}")))?;
            if let Some(gid) = group {
                fchownat(
                    Some(private_fd.as_raw_fd()),
                    "sock",
                    None,
                    Some(Gid::from_raw(gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| {
                    io::Error::other(format!("chown of the new handoff socket to gid {gid}: {e}"))
                })?;
            }
            let backlog = Backlog::new(backlog)
                .map_err(|e| io::Error::other(format!("listen backlog: {e}")))?;
            listen(&fd, backlog)
                .map_err(|e| io::Error::other(format!("listen on {}: {e}", path.display())))?;
            let stat = fstatat(
                Some(private_fd.as_raw_fd()),
                "sock",
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io::Error::other(format!("stat of the new handoff socket: {e}")))?;
            renameat(
                Some(private_fd.as_raw_fd()),
                "sock",
                Some(parent_fd.as_raw_fd()),
                name,
            )
            .map_err(|e| io::Error::other(format!("rename into {}: {e}", path.display())))?;
            #[allow(clippy::useless_conversion)]
            Ok((fd, (u64::from(stat.st_dev), u64::from(stat.st_ino))))
        })();
        if result.is_err() {
            let _ = unlinkat(
                Some(parent_fd.as_raw_fd()),
                format!("{private}/sock").as_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
        let _ = unlinkat(
            Some(parent_fd.as_raw_fd()),
            private.as_str(),
            UnlinkatFlags::RemoveDir,
        );
        let (fd, dev_ino) = result?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
            dev_ino: Some(dev_ino),
        })
    }

    /// Remove the socket file, if it is still the one this listener created.
    pub fn unpublish(&self) {
        let Some(dev_ino) = self.dev_ino else {
            return;
        };
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == dev_ino {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot remove handoff socket");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_appears_with_its_mode_and_group_and_nothing_else_is_left() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("handoff.sock");
        let gid = nix::unistd::getgid().as_raw();
        let listener = HandoffListener::create(&path, 0o660, Some(gid), 8).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o777, 0o660);
        assert_eq!(meta.gid(), gid);
        let entries: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            entries,
            vec!["handoff.sock".to_owned()],
            "no private directory left"
        );
        // A second server on the same path is refused; the live socket stays.
        let err = HandoffListener::create(&path, 0o600, None, 8).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(
            err.to_string().contains("another server is listening"),
            "{err}"
        );
        listener.unpublish();
        assert!(!path.exists());
    }
}
