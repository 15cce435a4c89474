//! The readiness socket: a stream socket whose clients each receive one line,
//! `READY\n` or `FAILED <reason>\n`, and are then disconnected. It is bound
//! only once a verdict exists, so a successful connect always gets an answer.
//! This module owns the socket file it bound and removes it when stopped; it
//! replaces a stale socket file but never any other kind of file.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
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
    stop_write: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

/// The line a client receives for `verdict`.
pub(crate) fn reply_line(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Pending => "PENDING\n".to_owned(),
        Verdict::Ready => "READY\n".to_owned(),
        // One line: a reason with newlines would look like several replies.
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
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)
                .map_err(|e| ReadinessSetupError::io("remove stale socket", path, e, hint))?,
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
        let listener = UnixListener::bind(path)
            .map_err(|e| ReadinessSetupError::io("bind readiness socket", path, e, hint))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| ReadinessSetupError::io("chmod readiness socket", path, e, hint))?;
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
        let _ = std::fs::remove_file(&self.path);
    }
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
