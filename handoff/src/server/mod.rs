//! The handoff server the host runs: one event-loop thread for every
//! connection plus a fixed pool of worker threads for provider calls, against
//! a [`NamespaceFdProvider`].
//!
//! Owns starting and stopping the server and its observable counters.
//! Settings live in [`config`], the loop in `event_loop`, request rules in
//! `requests`, ownership and caps in `registry`, peer checks in [`access`],
//! readiness in [`gate`], WI5 scope watching in `scope_watch`.
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
pub mod config;
mod event_loop;
pub mod gate;
pub mod handover;
pub(crate) mod limits;
mod listener;
mod registry;
mod requests;
mod scope_watch;
mod workers;

pub use listener::HandoffListener;

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

pub use access::AccessPolicy;
pub use config::ServerConfig;
pub use gate::ReadyGate;

use crate::NamespaceFdProvider;

/// What the event loop and the workers share.
pub(crate) struct Shared {
    provider: Arc<dyn NamespaceFdProvider>,
    config: ServerConfig,
    gate: ReadyGate,
    registry: registry::Registry,
    queued: AtomicUsize,
    /// Set by [`HandoffServer::drain`]: the loop stops accepting for good.
    draining: AtomicBool,
    /// Set by [`HandoffServer::hand_over`]: the loop ends by handing its
    /// connections over instead of closing them.
    handing_over: AtomicBool,
    /// Connections handed over by a predecessor, for the loop to adopt.
    adoptions: Mutex<Vec<handover::Handover>>,
    /// Connection counts, and a condvar signalled when they change.
    counts: (Mutex<ConnectionCounts>, Condvar),
    /// Refused requests and ends (not the owner, busy): the workers' lines
    /// a client can cause at will.
    refusal_log: Mutex<limits::RateLimit>,
}

/// Connections being served, and connections finished or refused since start.
#[derive(Debug, Default, Clone, Copy)]
struct ConnectionCounts {
    active: usize,
    ended: u64,
    refused: u64,
}

impl Shared {
    fn update(&self, change: impl FnOnce(&mut ConnectionCounts)) {
        let (lock, changed) = &self.counts;
        change(&mut lock.lock().unwrap_or_else(PoisonError::into_inner));
        changed.notify_all();
    }

    fn connection_opened(&self) {
        self.update(|c| c.active += 1);
    }

    fn connection_closed(&self) {
        self.update(|c| {
            c.active = c.active.saturating_sub(1);
            c.ended += 1;
        });
    }

    fn count_refused(&self) {
        self.update(|c| c.refused += 1);
    }

    /// Whether a refusal may be logged now ([`limits::RateLimit::admit`]).
    fn log_refusal(&self) -> bool {
        self.refusal_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit("refused requests")
    }
}

/// A running handoff server. Dropping it shuts it down.
pub struct HandoffServer {
    shared: Arc<Shared>,
    stop_trigger: Option<OwnedFd>,
    /// Returns the open connections when the loop ended by handing over.
    event_loop: Option<JoinHandle<Option<handover::Handover>>>,
    /// Wakes the loop (to notice `draining`).
    wake: Arc<nix::sys::eventfd::EventFd>,
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
    /// Raises this process's `RLIMIT_NOFILE` soft limit to its hard limit
    /// ([`raise_nofile_limit`](crate::raise_nofile_limit)).
    ///
    /// # Errors
    ///
    /// epoll, eventfd, inotify, a pipe or a thread cannot be created.
    pub fn serve(
        provider: Arc<dyn NamespaceFdProvider>,
        listener: HandoffListener,
        config: ServerConfig,
        gate: ReadyGate,
    ) -> io::Result<Self> {
        match limits::raise_nofile_limit() {
            Ok((soft, _)) => {
                let needed = config.max_allocations * 4 + config.max_connections + 64;
                if (soft as usize) < needed {
                    tracing::warn!(rlimit_nofile = soft, needed, "RLIMIT_NOFILE is below what max_allocations and max_connections may need; the server backs off on EMFILE");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot raise RLIMIT_NOFILE"),
        }
        let (stop_signal, stop_trigger) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io::Error::other(format!("pipe2: {e}")))?;
        let path = listener.path.clone();
        let shared = Arc::new(Shared {
            provider,
            registry: registry::Registry::new(
                config.max_allocations,
                config.max_allocations_per_peer,
            ),
            config,
            gate,
            queued: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            handing_over: AtomicBool::new(false),
            adoptions: Mutex::new(Vec::new()),
            counts: (Mutex::new(ConnectionCounts::default()), Condvar::new()),
            refusal_log: Mutex::new(limits::RateLimit::with_burst(
                event_loop::CLIENT_LOG_INTERVAL,
                event_loop::CLIENT_LOG_BURST,
            )),
        });
        let event_loop = event_loop::EventLoop::new(shared.clone(), listener, stop_signal)?;
        let wake = event_loop.waker();
        let event_loop = std::thread::Builder::new()
            .name("nodeinit-handoff".into())
            .spawn(move || event_loop.run())?;
        tracing::info!(path = %path.display(), "handoff server listening");
        Ok(Self {
            shared,
            stop_trigger: Some(stop_trigger),
            event_loop: Some(event_loop),
            wake,
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

    /// Live allocations created through this server.
    pub fn live_allocations(&self) -> usize {
        self.shared.registry.live_count()
    }

    /// Connections being served right now.
    pub fn active_connections(&self) -> usize {
        self.counts().active
    }

    /// Connections that have ended since the server started.
    pub fn ended_connections(&self) -> u64 {
        self.counts().ended
    }

    /// Connections refused at accept (unauthorised, or over `max_connections`).
    pub fn refused_connections(&self) -> u64 {
        self.counts().refused
    }

    fn counts(&self) -> ConnectionCounts {
        *self
            .shared
            .counts
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn wait_counts(&self, timeout: Duration, done: impl Fn(&ConnectionCounts) -> bool) -> bool {
        let (lock, changed) = &self.shared.counts;
        let guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let (_guard, done) = nodeinit_sys::deadline::wait_until(
            changed,
            guard,
            Some(nodeinit_sys::Deadline::after(timeout)),
            |c| done(c),
        );
        done
    }

    /// Wait until at least `count` connections have ended since start, at
    /// most `timeout`. Returns whether that happened.
    pub fn wait_ended_connections(&self, count: u64, timeout: Duration) -> bool {
        self.wait_counts(timeout, |c| c.ended >= count)
    }

    /// Wait until at least `count` connections have been refused since
    /// start, at most `timeout`. Returns whether that happened.
    pub fn wait_refused_connections(&self, count: u64, timeout: Duration) -> bool {
        self.wait_counts(timeout, |c| c.refused >= count)
    }

    /// Wait until no connection is being served, at most `timeout`.
    /// Returns whether the server is idle.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.wait_connections_at_most(0, timeout)
    }

    /// Wait until at most `max` connections are being served, at most `timeout`.
    /// Returns whether that happened.
    pub fn wait_connections_at_most(&self, max: usize, timeout: Duration) -> bool {
        self.wait_counts(timeout, |c| c.active <= max)
    }

    /// Stop accepting, end every connection (queued requests get `not_ready`),
    /// wait for all threads, and remove the socket file.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Hand over to another server on the same (inherited) listener: stop
    /// accepting — new clients wait in the listen backlog for the next
    /// server — let the connections being served finish for at most
    /// `timeout`, then shut down. Returns whether every connection ended on
    /// its own. Allocations stay live (they belong to the provider); a client
    /// still connected when the time is up is disconnected and reconnects,
    /// and a request it wrote but the server had not read yet is lost: to
    /// lose nothing, hand the connections over with
    /// [`hand_over`](Self::hand_over) instead (what nodeinit's reload does).
    pub fn drain(mut self, timeout: Duration) -> bool {
        self.shared.draining.store(true, Ordering::Release);
        let _ = self.wake.write(1);
        let idle = self.wait_idle(timeout);
        self.stop();
        idle
    }

    fn stop(&mut self) {
        self.shared.gate.interrupt();
        // Closing the write end makes the read end readable (EOF) for the loop.
        drop(self.stop_trigger.take());
        if let Some(event_loop) = self.event_loop.take() {
            if event_loop.join().is_err() {
                tracing::error!("handoff event loop panicked");
            }
        }
    }
}

impl Drop for HandoffServer {
    fn drop(&mut self) {
        self.stop();
    }
}
