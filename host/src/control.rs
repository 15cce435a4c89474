//! The keeper's control socket, `/run/nodeinit/control.sock` (`AF_UNIX`
//! `SOCK_SEQPACKET`, mode 0600: root only), and the commands that use it:
//! `nodeinit status` (the running worker, its plugins with name, version
//! and file sha256, and since when) and `nodeinit reload` (probe the
//! config's plugin files in a child; if they load, the worker drains and a
//! new one with the new plugins takes over the same state).
//!
//! Owns the socket and its messages (one JSON object per packet, framed by
//! [`crate::link::Channel`]). The keeper's worker thread serves it; this
//! module never decides anything about workers.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    accept4, bind, connect, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
};
use serde::{Deserialize, Serialize};

use crate::keeper::WorkerStatus;
use crate::link::{Channel, Receive};

/// The socket's file name inside the run directory.
pub const CONTROL_SOCKET_FILE: &str = "control.sock";

/// The default control socket.
pub fn default_socket() -> PathBuf {
    Path::new("/run/nodeinit").join(CONTROL_SOCKET_FILE)
}

/// A command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlRequest {
    /// What runs.
    Status,
    /// Swap in the config's plugin files.
    Reload,
}

/// An answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlReply {
    /// The worker's status.
    Status(WorkerStatus),
    /// The reload happened; the new worker's status.
    Reloaded(WorkerStatus),
    /// Refused or failed, with the reason (nothing changed when refused).
    Error(String),
}

/// The keeper's listening control socket.
#[derive(Debug)]
pub struct ControlListener {
    fd: OwnedFd,
    path: PathBuf,
}

impl ControlListener {
    /// Bind `path` (a stale socket there is replaced), mode 0600.
    ///
    /// # Errors
    ///
    /// The directory or a syscall failing, naming the path.
    pub fn bind(path: &Path) -> io::Result<Self> {
        let named = |what: &str, e: &dyn std::fmt::Display| {
            io::Error::other(format!("control socket {}: {what}: {e}", path.display()))
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| named("create directory", &e))?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
                std::fs::remove_file(path).map_err(|e| named("remove stale socket", &e))?;
            }
            Ok(_) => return Err(named("exists and is not a socket", &"remove it")),
            Err(_) => {}
        }
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(|e| named("socket", &e))?;
        let addr = UnixAddr::new(path).map_err(|e| named("address", &e))?;
        bind(fd.as_raw_fd(), &addr).map_err(|e| named("bind", &e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| named("chmod 0600", &e))?;
        listen(&fd, Backlog::new(8).map_err(|e| named("backlog", &e))?)
            .map_err(|e| named("listen", &e))?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The descriptor, to poll.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }

    /// A waiting client, if any (non-blocking).
    pub fn accept(&self) -> Option<Channel> {
        let fd = accept4(self.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC).ok()?;
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        Some(Channel::from_fd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Remove the socket file.
    pub fn unpublish(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Send `request` to the keeper at `socket` and return its reply. (The
/// socket setup resembles the handoff client's connect; the control socket
/// is its own protocol, so the two share no code.)
///
/// # Errors
///
/// Not reachable (no keeper, not root), or no reply.
pub fn ask(socket_path: &Path, request: &ControlRequest) -> io::Result<ControlReply> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(socket_path)?;
    connect(fd.as_raw_fd(), &addr).map_err(|e| {
        io::Error::other(format!(
            "cannot reach nodeinit at {}: {e} (is nodeinit PID 1 here, serving a node, and are you root?)",
            socket_path.display()
        ))
    })?;
    let channel = Channel::from_fd(fd);
    channel.send(request)?;
    match channel.receive::<ControlReply>()? {
        Receive::Message(reply) => Ok(reply),
        Receive::Closed => Err(io::Error::other(
            "nodeinit closed the control connection without a reply",
        )),
    }
}

/// `nodeinit status` as text.
pub fn render_status(status: &WorkerStatus) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let since = status
        .serving_since
        .map_or_else(|| "-".to_owned(), |s| format!("{s} (unix time)"));
    let _ = writeln!(
        out,
        "worker pid {}  serving since {since}  restarts {}",
        status
            .pid
            .map_or_else(|| "- (restarting)".to_owned(), |p| p.to_string()),
        status.restarts
    );
    if let Some(death) = &status.last_death {
        let _ = writeln!(out, "last worker end: {death}");
    }
    let _ = writeln!(
        out,
        "\n{:<10} {:<12} {:<9} {:<64}  path",
        "kind", "plugin", "version", "sha256"
    );
    for p in &status.plugins {
        let _ = writeln!(
            out,
            "{:<10} {:<12} {:<9} {:<64}  {}{}",
            p.kind,
            p.name.as_deref().unwrap_or("-"),
            p.version.as_deref().unwrap_or("-"),
            p.sha256.as_deref().unwrap_or("-"),
            p.path,
            p.error
                .as_deref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default()
        );
    }
    out
}
