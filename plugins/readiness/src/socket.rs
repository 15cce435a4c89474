//! The readiness socket: a stream socket whose clients each receive one line,
//! `READY\n` or `FAILED <reason>\n`, and are then disconnected. It is bound
//! only once a verdict exists, so a successful connect always gets an answer.
//! This module owns the socket file it bound and removes it when stopped; it
//! replaces a stale socket file but never any other kind of file.
//!
//! The socket is bound inside a private (0700) directory next to its final
//! path, given its mode there, and renamed into place (issue 12, item 10):
//! a chmod by the final path could be redirected by a link swapped in after
//! the bind; inside the private directory nobody else can swap anything,
//! and the rename replaces whatever name is at the target without following
//! it. On drop the file is removed only if it is still the socket bound here.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::verdict::{Verdict, VerdictCell};
use crate::ReadinessSetupError;

/// A running readiness socket server; dropping it stops the thread and
/// removes the socket file.
pub(crate) struct SocketServer {
    path: PathBuf,
    /// (device, inode) of the socket file bound here.
    identity: (u64, u64),
    stop_write: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

/// The line a client receives for `verdict`.
pub(crate) fn reply_line(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Pending => "PENDING\n".to_owned(),
        Verdict::Ready => "READY\n".to_owned(),
        // One line: a reason with newlines would look like several replies.
        // (Control characters were escaped when the verdict was set.)
        Verdict::Failed(reason) => format!("FAILED {}\n", reason.replace(['\n', '\r'], " ")),
    }
}

impl SocketServer {
    /// Bind `path` (mode 0666: readiness is public) and serve in a thread.
    pub(crate) fn start(
        path: &Path,
        verdict: Arc<VerdictCell>,
    ) -> Result<Self, ReadinessSetupError> {
        let hint = "check that the directory is writable and no other process serves it";
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| ReadinessSetupError::io("create directory", dir, e, hint))?;
        }
        match path.symlink_metadata() {
            // A stale socket: the rename into place replaces it atomically.
            Ok(meta) if meta.file_type().is_socket() => {}
            Ok(_) => {
                return Err(ReadinessSetupError::io(
                    "bind readiness socket",
                    path,
                    std::io::Error::from(std::io::ErrorKind::AlreadyExists),
                    "a non-socket file is in the way; remove it or set `socket_path`",
                ))
            }
            Err(_) => {}
        }
        let (listener, identity) = bind_privately(path)?;
        listener
            .set_nonblocking(true)
            .map_err(|e| ReadinessSetupError::io("configure readiness socket", path, e, hint))?;
        let (stop_read, stop_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| {
            ReadinessSetupError::io("create stop pipe", path, e, "check the open-file limit")
        })?;
        let thread = std::thread::Builder::new()
            .name("readiness-socket".to_owned())
            .spawn(move || serve(&listener, &stop_read, &verdict))
            .map_err(|e| ReadinessSetupError::io("spawn socket thread", path, e, "check memory"))?;
        Ok(Self {
            path: path.to_path_buf(),
            identity,
            stop_write,
            thread: Some(thread),
        })
    }
}

fn serve(listener: &UnixListener, stop: &OwnedFd, verdict: &VerdictCell) {
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        if nix::poll::poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        if fds[1].any().unwrap_or(true) {
            return;
        }
        while let Ok((mut stream, _)) = listener.accept() {
            // A client that went away already is no concern of ours.
            let _ = stream.write_all(reply_line(&verdict.get()).as_bytes());
        }
    }
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        let _ = nix::unistd::write(&self.stop_write, b"s");
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Only our socket: whatever else is there now is not ours to remove.
        let ours = self
            .path
            .symlink_metadata()
            .is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Bind a listener at `path` through a private directory: bind and chmod
/// (0666: readiness is public) inside `<dir>/.<name>.<pid>.d` (0700), then
/// rename onto `path`. Returns the listener and the socket file's identity.
fn bind_privately(path: &Path) -> Result<(UnixListener, (u64, u64)), ReadinessSetupError> {
    let hint = "check that the directory is writable and no other process serves it";
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let private = dir.join(format!(".{name}.{}.d", std::process::id()));
    let make_private = || std::fs::DirBuilder::new().mode(0o700).create(&private);
    if let Err(e) = make_private() {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(ReadinessSetupError::io(
                "create private socket directory",
                &private,
                e,
                hint,
            ));
        }
        // Left by an earlier run with our pid: clear it and start over.
        let _ = std::fs::remove_file(private.join(PRIVATE_SOCKET_NAME));
        std::fs::remove_dir(&private)
            .and_then(|()| make_private())
            .map_err(|e| {
                ReadinessSetupError::io("recreate private socket directory", &private, e, hint)
            })?;
    }
    let result = bind_in(&private, path, hint);
    let _ = std::fs::remove_file(private.join(PRIVATE_SOCKET_NAME));
    let _ = std::fs::remove_dir(&private);
    result
}

/// Name of the socket inside the private directory.
const PRIVATE_SOCKET_NAME: &str = "s";
/// Longest path a unix socket address holds (`sun_path` less the NUL).
const MAX_SOCKET_PATH: usize = 107;

fn bind_in(
    private: &Path,
    path: &Path,
    hint: &'static str,
) -> Result<(UnixListener, (u64, u64)), ReadinessSetupError> {
    let inner = private.join(PRIVATE_SOCKET_NAME);
    // Bind by a short name through the directory's descriptor when the full
    // private path would not fit in a socket address.
    let dir_fd = std::fs::File::open(private)
        .map_err(|e| ReadinessSetupError::io("open private socket directory", private, e, hint))?;
    let bind_path = if inner.as_os_str().len() <= MAX_SOCKET_PATH {
        inner.clone()
    } else {
        PathBuf::from(format!(
            "/proc/self/fd/{}/{PRIVATE_SOCKET_NAME}",
            dir_fd.as_raw_fd()
        ))
    };
    let listener = UnixListener::bind(&bind_path)
        .map_err(|e| ReadinessSetupError::io("bind readiness socket", path, e, hint))?;
    // By path, but inside a 0700 directory of ours: nobody can swap the name.
    std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| ReadinessSetupError::io("chmod readiness socket", path, e, hint))?;
    let meta = inner
        .symlink_metadata()
        .map_err(|e| ReadinessSetupError::io("stat readiness socket", path, e, hint))?;
    std::fs::rename(&inner, path).map_err(|e| {
        ReadinessSetupError::io("rename readiness socket into place", path, e, hint)
    })?;
    Ok((listener, (meta.dev(), meta.ino())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_is_one_line() {
        assert_eq!(reply_line(&Verdict::Ready), "READY\n");
        assert_eq!(
            reply_line(&Verdict::Failed("cgroup\nphase".into())),
            "FAILED cgroup phase\n"
        );
    }
}
