//! The handoff server the host runs: accepts connections on the handoff
//! socket and serves each on its own thread against a [`NamespaceFdProvider`].
//!
//! Owns the listening socket, the connection threads and shutdown. Request
//! rules live in `connection`, peer checks in [`access`], readiness in [`gate`].
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use nodeinit_handoff::{HandoffServer, NamespaceFdProvider, ReadyGate, ServerConfig};
//!
//! fn serve(backend: Arc<dyn NamespaceFdProvider>) -> std::io::Result<()> {
//!     let gate = ReadyGate::new();
//!     let mut config = ServerConfig::default(); // /run/pact/handoff.sock, 0600, root only
//!     config.access.uids.push(990); // e.g. the lattice-agent user
//!     let server = HandoffServer::start(backend, config, gate.clone())?;
//!     // ... boot continues; requests arriving now are queued ...
//!     gate.open(); // the node is ready: queued requests are served
//!     // ... at shutdown:
//!     server.shutdown();
//!     Ok(())
//! }
//! ```

pub mod access;
mod connection;
pub mod gate;
mod listener;

pub use listener::HandoffListener;

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{accept4, SockFlag};

pub use access::AccessPolicy;
pub use gate::ReadyGate;

use crate::protocol::{encode, ErrorKind, Message};
use crate::transport::send_message;
use crate::NamespaceFdProvider;

/// How the server listens and whom it serves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Socket path (default `hpc_node::namespace::HANDOFF_SOCKET_PATH`).
    pub socket_path: PathBuf,
    /// Socket file mode (default `0o600`).
    pub socket_mode: u32,
    /// Group of the socket file (default: unchanged, root's). Combine with
    /// mode `0o660` to let a group connect.
    pub socket_group: Option<u32>,
    /// Who may use the server besides root.
    pub access: AccessPolicy,
    /// Concurrent connections; further ones get `busy` and are closed (default 256).
    pub max_connections: usize,
    /// Requests that may wait for readiness at once; further ones get `busy` (default 64).
    pub max_queued_requests: usize,
    /// How long a request waits for readiness before `not_ready` (default 120 s).
    pub ready_wait: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            socket_path: PathBuf::from(hpc_node::namespace::HANDOFF_SOCKET_PATH),
            socket_mode: 0o600,
            socket_group: None,
            access: AccessPolicy::root_only(),
            max_connections: 256,
            max_queued_requests: 64,
            ready_wait: Duration::from_secs(120),
        }
    }
}

/// What every connection thread shares.
struct Shared {
    provider: Arc<dyn NamespaceFdProvider>,
    config: ServerConfig,
    gate: ReadyGate,
    queued: AtomicUsize,
    stopping: AtomicBool,
    /// Read end of a pipe whose write end the server holds: closing it wakes every poll.
    stop_signal: OwnedFd,
    /// Like `stop_signal`, for the accept loop only ([`HandoffServer::drain`]).
    accept_stop: OwnedFd,
    /// Connection counts, and a condvar signalled when a connection ends.
    active: (Mutex<ConnectionCounts>, Condvar),
}

/// Connections being served, and connections finished since start.
#[derive(Debug, Default, Clone, Copy)]
struct ConnectionCounts {
    active: usize,
    ended: u64,
}

/// A running handoff server. Dropping it shuts it down.
pub struct HandoffServer {
    shared: Arc<Shared>,
    stop_trigger: Option<OwnedFd>,
    accept_stop_trigger: Option<OwnedFd>,
    acceptor: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl std::fmt::Debug for HandoffServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandoffServer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl HandoffServer {
    /// Create the socket (atomically, with its mode and group) and start serving.
    ///
    /// # Errors
    ///
    /// The socket cannot be created (path in use by a live server, not a
    /// socket, directory not creatable, ...), or a thread cannot start.
    pub fn start(
        provider: Arc<dyn NamespaceFdProvider>,
        config: ServerConfig,
        gate: ReadyGate,
    ) -> io::Result<Self> {
        let listener = HandoffListener::bind(&config)?;
        Self::serve(provider, listener, config, gate)
    }

    /// Serve an already listening socket (bound here or inherited from the
    /// keeper). `config.socket_path`, mode and group are not used: the
    /// listener's own path is reported. On shutdown the socket file is removed
    /// only when this process bound it; an inherited listener stays open in
    /// the process that bound it, so connections arriving meanwhile wait.
    ///
    /// # Errors
    ///
    /// A pipe or the accept thread cannot be created.
    pub fn serve(
        provider: Arc<dyn NamespaceFdProvider>,
        listener: HandoffListener,
        config: ServerConfig,
        gate: ReadyGate,
    ) -> io::Result<Self> {
        let (stop_signal, stop_trigger) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io::Error::other(format!("pipe2: {e}")))?;
        let (accept_stop, accept_stop_trigger) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| io::Error::other(format!("pipe2: {e}")))?;
        let path = listener.path.clone();
        let shared = Arc::new(Shared {
            provider,
            config,
            gate,
            queued: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            stop_signal,
            accept_stop,
            active: (Mutex::new(ConnectionCounts::default()), Condvar::new()),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("nodeinit-handoff-accept".into())
                .spawn(move || accept_loop(&listener, &shared))?
        };
        tracing::info!(path = %path.display(), "handoff server listening");
        Ok(Self {
            shared,
            stop_trigger: Some(stop_trigger),
            accept_stop_trigger: Some(accept_stop_trigger),
            acceptor: Some(acceptor),
            path,
        })
    }

    /// The socket path served.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Requests waiting for readiness right now.
    pub fn queued_requests(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    /// Connections being served right now.
    pub fn active_connections(&self) -> usize {
        self.counts().active
    }

    /// Connections that have ended since the server started.
    pub fn ended_connections(&self) -> u64 {
        self.counts().ended
    }

    fn counts(&self) -> ConnectionCounts {
        *self
            .shared
            .active
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Wait until at least `count` connections have ended since start, at
    /// most `timeout`. Returns whether that happened.
    pub fn wait_ended_connections(&self, count: u64, timeout: Duration) -> bool {
        let (lock, changed) = &self.shared.active;
        let guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = changed
            .wait_timeout_while(guard, timeout, |c| c.ended < count)
            .unwrap_or_else(PoisonError::into_inner);
        guard.ended >= count
    }

    /// Wait until no connection is being served, at most `timeout`.
    /// Returns whether the server is idle.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.wait_connections_at_most(0, timeout)
    }

    /// Wait until at most `max` connections are being served, at most `timeout`.
    /// Returns whether that happened.
    pub fn wait_connections_at_most(&self, max: usize, timeout: Duration) -> bool {
        let (lock, changed) = &self.shared.active;
        let guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = changed
            .wait_timeout_while(guard, timeout, |c| c.active > max)
            .unwrap_or_else(PoisonError::into_inner);
        guard.active <= max
    }

    /// Stop accepting, end every connection (queued requests get `not_ready`),
    /// wait for all threads, and remove the socket file.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Hand over to another server on the same (inherited) listener: stop
    /// accepting — new clients wait in the listen backlog — let the
    /// connections being served finish (clients hang up after their reply)
    /// for at most `timeout`, then shut down. Returns whether every
    /// connection ended on its own.
    pub fn drain(mut self, timeout: Duration) -> bool {
        drop(self.accept_stop_trigger.take());
        let idle = self.wait_idle(timeout);
        self.stop();
        idle
    }

    fn stop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        self.shared.gate.interrupt();
        // Closing the write end makes the read end readable (EOF) for every poller.
        drop(self.stop_trigger.take());
        if let Some(acceptor) = self.acceptor.take() {
            if acceptor.join().is_err() {
                tracing::error!("handoff accept thread panicked");
            }
        }
    }
}

impl Drop for HandoffServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Decrements the active-connection count when a connection thread ends.
struct ActiveGuard(Arc<Shared>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let (lock, changed) = &self.0.active;
        let mut counts = lock.lock().unwrap_or_else(PoisonError::into_inner);
        counts.active = counts.active.saturating_sub(1);
        counts.ended += 1;
        changed.notify_all();
    }
}

fn accept_loop(listener: &listener::Listener, shared: &Arc<Shared>) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let mut fds = [
            PollFd::new(listener.fd.as_fd(), PollFlags::POLLIN),
            PollFd::new(shared.stop_signal.as_fd(), PollFlags::POLLIN),
            PollFd::new(shared.accept_stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) if fds[1].any().unwrap_or(true) || fds[2].any().unwrap_or(true) => break,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "poll on the handoff socket failed; server stops");
                break;
            }
        }
        let conn = match accept4(listener.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            // SAFETY: accept4 returned a new descriptor that nothing else owns.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
            Err(
                nix::errno::Errno::EAGAIN
                | nix::errno::Errno::EINTR
                | nix::errno::Errno::ECONNABORTED,
            ) => continue,
            Err(e) => {
                // EMFILE/ENFILE/ENOMEM: keep serving existing connections.
                tracing::error!(error = %e, "accept on the handoff socket failed");
                continue;
            }
        };
        workers.retain(|w| !w.is_finished());
        {
            let mut active = shared
                .active
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if active.active >= shared.config.max_connections {
                drop(active);
                refuse_busy(&conn, shared.config.max_connections);
                continue;
            }
            active.active += 1;
        }
        let guard = ActiveGuard(shared.clone());
        let worker_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("nodeinit-handoff-conn".into())
            .spawn(move || {
                let _guard = guard;
                connection::serve(conn, &worker_shared);
            });
        match spawned {
            Ok(worker) => workers.push(worker),
            Err(e) => tracing::error!(error = %e, "cannot start a handoff connection thread"),
        }
    }
    for worker in workers {
        if worker.join().is_err() {
            tracing::error!("handoff connection thread panicked");
        }
    }
    listener.unpublish();
}

/// Tell a connection over the limit why it is closed. Sent before the peer
/// asked anything: clients read it when their send fails (see PROTOCOL.md).
fn refuse_busy(conn: &OwnedFd, limit: usize) {
    let message = Message::error(
        ErrorKind::Busy,
        format!("the handoff server already serves {limit} connections; retry later"),
        None,
    );
    let no_fds: [OwnedFd; 0] = [];
    if let Err(e) = send_message(conn, &encode(&message), &no_fds) {
        tracing::debug!(error = %e, "could not send busy to a refused connection");
    }
}
