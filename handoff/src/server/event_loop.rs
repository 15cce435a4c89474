//! The server's one event-loop thread: accept, authorise, receive, decode,
//! queue for readiness, time out, and send the replies workers do not — for
//! all connections at once, with `epoll`.
//!
//! Owns the connections (their sockets, states and deadlines), the accept
//! back-off under `EMFILE`, and the WI5 scope watcher's descriptor. Provider
//! calls, which block, go to the fixed [`Workers`] pool; their results come
//! back over a channel plus an `eventfd`. A worker sends its reply itself
//! (non-blocking, on the connection's shared descriptor) when nothing must
//! happen before it — one wake-up less between the provider and the client;
//! the loop sends it otherwise (a scope to watch first, or the send would
//! block) and always re-arms the connection. The server's thread count is
//! therefore 1 + the pool, whatever the number of connections. It must never
//! block: every socket operation here is non-blocking, and a peer that does
//! not read its replies is disconnected instead of stalling the loop.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{accept4, SockFlag};

use super::access::{self, Peer};
use super::gate::GateOutcome;
use super::handover::Handover;
use super::limits::{AcceptBackoff, RateLimit};
use super::listener::Listener;
use super::registry::{ConnId, Op};
use super::requests::{self, error, Action, Outcome};
use super::scope_watch::ScopeWatcher;
use super::workers::Workers;
use super::Shared;
use crate::allocation_id::AllocationId;
use crate::escape::Escaped;
use crate::protocol::{encode, ErrorKind, Message, WireRequest};
use crate::transport::{try_receive_message, try_send_message, Received};

const LISTENER: u64 = 0;
const STOP: u64 = 1;
const WAKE: u64 = 2;
const SCOPES: u64 = 3;
const FIRST_CONN: u64 = 16;

/// Connections accepted per wake-up before other events get their turn.
const ACCEPT_BATCH: usize = 64;
/// Lines a client can cause at will (invalid messages, refusals, replies
/// it does not read): at most this many per interval, then one saying how
/// many were not logged.
pub(super) const CLIENT_LOG_BURST: u32 = 20;
pub(super) const CLIENT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What workers report back.
enum Event {
    /// A request finished: reply on `conn` (unless the worker `sent` it).
    Done {
        conn: ConnId,
        outcome: Outcome,
        sent: bool,
    },
    /// An allocation whose scope emptied was released; tell `conn`.
    ScopeEnded {
        conn: Option<ConnId>,
        id: AllocationId,
    },
}

enum State {
    /// Waiting for the peer's next message (polled).
    Idle,
    /// A worker runs its request (not polled).
    Working,
    /// Its request waits for readiness (not polled).
    Waiting {
        request: WireRequest,
        deadline: Instant,
    },
}

struct Conn {
    /// Shared with the worker serving its request, which may send the reply.
    fd: Arc<OwnedFd>,
    peer: Arc<Peer>,
    state: State,
    last_activity: Instant,
}

/// The loop and everything it owns.
pub(super) struct EventLoop {
    shared: Arc<Shared>,
    listener: Listener,
    /// Kept open (and polled) until the server's write end closes.
    _stop: OwnedFd,
    epoll: Epoll,
    wake: Arc<EventFd>,
    events_tx: Sender<Event>,
    events_rx: Receiver<Event>,
    workers: Option<Workers>,
    scopes: Option<ScopeWatcher>,
    conns: HashMap<ConnId, Conn>,
    next_conn: ConnId,
    backoff: AcceptBackoff,
    accept_log: RateLimit,
    refused_log: RateLimit,
    /// Invalid messages and clients that do not read their replies: any
    /// allowed client can cause them as fast as it likes, and each line
    /// costs the console.
    client_log: RateLimit,
}

/// Send a refused connection its one `error`, then close it so that the
/// peer reads that reason: shut down our receiving side first (the peer's
/// further sends fail with `EPIPE`), and discard what it already sent —
/// closing with unread data would make the peer's next `recv` fail with
/// `ECONNRESET` before it sees the reason.
fn refuse(fd: OwnedFd, message: &Message) {
    let no_fds: [OwnedFd; 0] = [];
    if let Err(e) = try_send_message(&fd, &encode(message), &no_fds) {
        tracing::debug!(error = %e, "could not send the reason to a refused connection");
    }
    let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Read);
    for _ in 0..16 {
        match try_receive_message(&fd) {
            Ok(Received::Message { .. } | Received::TooLarge { .. }) => continue,
            _ => break,
        }
    }
}

fn other(what: &str, e: Errno) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

impl EventLoop {
    /// Set up epoll, the wake-up eventfd, the scope watcher and the workers.
    pub(super) fn new(shared: Arc<Shared>, listener: Listener, stop: OwnedFd) -> io::Result<Self> {
        let epoll =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| other("epoll_create1", e))?;
        let wake = Arc::new(
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| other("eventfd", e))?,
        );
        epoll
            .add(
                listener.fd.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, LISTENER),
            )
            .map_err(|e| other("epoll_ctl(listener)", e))?;
        epoll
            .add(stop.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, STOP))
            .map_err(|e| other("epoll_ctl(stop)", e))?;
        epoll
            .add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE))
            .map_err(|e| other("epoll_ctl(eventfd)", e))?;
        let scopes = match &shared.config.cgroup_root {
            Some(_) => {
                let watcher = ScopeWatcher::new()?;
                epoll
                    .add(watcher.fd(), EpollEvent::new(EpollFlags::EPOLLIN, SCOPES))
                    .map_err(|e| other("epoll_ctl(inotify)", e))?;
                Some(watcher)
            }
            None => None,
        };
        // The gate wakes the loop when it opens or fails (queued requests).
        let weak = Arc::downgrade(&wake);
        shared.gate.add_waker(Arc::new(move || {
            if let Some(wake) = weak.upgrade() {
                let _ = wake.write(1);
            }
        }));
        let workers = Workers::start(
            shared
                .config
                .worker_threads
                .clamp(1, super::config::MAX_WORKER_THREADS),
        )?;
        let (events_tx, events_rx) = channel();
        Ok(Self {
            shared,
            listener,
            _stop: stop,
            epoll,
            wake,
            events_tx,
            events_rx,
            workers: Some(workers),
            scopes,
            conns: HashMap::new(),
            next_conn: 0,
            backoff: AcceptBackoff::new(),
            accept_log: RateLimit::new(Duration::from_secs(60)),
            refused_log: RateLimit::new(Duration::from_secs(10)),
            client_log: RateLimit::with_burst(CLIENT_LOG_INTERVAL, CLIENT_LOG_BURST),
        })
    }

    /// Serve until the stop pipe closes; then shut down, or hand the open
    /// connections over when [`HandoffServer::hand_over`](super::HandoffServer::hand_over) asked.
    pub(super) fn run(mut self) -> Option<Handover> {
        let mut events = vec![EpollEvent::empty(); 64];
        loop {
            let timeout = self.next_timeout(Instant::now());
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "epoll_wait on the handoff server failed; server stops");
                    break;
                }
            };
            let mut stopping = false;
            for event in &events[..n] {
                match event.data() {
                    STOP => stopping = true,
                    WAKE => self.on_wake(),
                    SCOPES => self.on_scopes(),
                    LISTENER => self.on_accept(),
                    token => self.on_readable(token - FIRST_CONN),
                }
            }
            if stopping {
                break;
            }
            self.on_timers(Instant::now());
        }
        if self.shared.handing_over.load(Ordering::Acquire) {
            return Some(self.hand_over());
        }
        self.shutdown();
        None
    }

    fn next_timeout(&self, now: Instant) -> EpollTimeout {
        let idle = self.shared.config.idle_timeout;
        let deadline = self
            .conns
            .values()
            .filter_map(|c| match &c.state {
                State::Idle => Some(c.last_activity + idle),
                State::Waiting { deadline, .. } => Some(*deadline),
                State::Working => None,
            })
            .chain(self.backoff.until())
            .min();
        match deadline {
            None => EpollTimeout::NONE,
            Some(deadline) => {
                // Round up so the loop never wakes just before a deadline and spins.
                let wait = deadline.saturating_duration_since(now) + Duration::from_millis(1);
                EpollTimeout::try_from(wait).unwrap_or(EpollTimeout::MAX)
            }
        }
    }

    // ---- accepting ----

    fn on_accept(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
            match accept4(self.listener.fd.as_raw_fd(), flags) {
                Ok(fd) => {
                    self.backoff.reset();
                    // SAFETY: accept4 returned a new descriptor that nothing else owns.
                    self.admit(unsafe { OwnedFd::from_raw_fd(fd) });
                }
                Err(Errno::EAGAIN | Errno::ECONNABORTED | Errno::EINTR) => return,
                Err(e) => {
                    self.pause_accepting(e);
                    return;
                }
            }
        }
    }

    /// Out of FDs (or memory): stop polling the listener for a while instead
    /// of spinning on it, and say so once per minute.
    fn pause_accepting(&mut self, e: Errno) {
        let now = Instant::now();
        self.backoff.pause(now);
        let _ = self.epoll.delete(self.listener.fd.as_fd());
        if let Some(suppressed) = self.accept_log.allow(now) {
            let limits = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map(|(soft, hard)| format!("{soft}/{hard}"))
                .unwrap_or_else(|_| "unknown".into());
            tracing::error!(
                error = %e,
                rlimit_nofile = %limits,
                open_connections = self.conns.len(),
                suppressed,
                "accept on the handoff socket failed; new clients wait in the backlog while accepting backs off (up to 1 s); raise RLIMIT_NOFILE or lower max_connections/max_allocations"
            );
        }
    }

    /// Authorise a new connection; unauthorised peers and connections over
    /// the limit get their one `error` and are closed before taking a slot.
    fn admit(&mut self, fd: OwnedFd) {
        let peer = match access::peer_of(fd.as_fd(), &self.shared.config.access) {
            Ok(peer) => peer,
            Err(e) => {
                tracing::warn!(error = %e, "SO_PEERCRED failed; dropping connection");
                return;
            }
        };
        if !self.shared.config.access.allows(&peer) {
            self.shared.count_refused();
            if let Some(suppressed) = self.refused_log.allow(Instant::now()) {
                tracing::warn!(
                    peer.pid = peer.pid,
                    peer.uid = peer.uid,
                    peer.gid = peer.gid,
                    suppressed,
                    "unauthorised peer refused"
                );
            }
            let message = format!(
                "peer uid {} gid {} is not allowed on this socket (root and the configured uids/gids are); closing the connection",
                peer.uid, peer.gid
            );
            refuse(fd, &error(ErrorKind::Unauthorized, &message, None));
            return;
        }
        let limit = self.shared.config.max_connections;
        if self.conns.len() >= limit {
            self.shared.count_refused();
            let message =
                format!("the handoff server already serves {limit} connections; retry later");
            refuse(fd, &error(ErrorKind::Busy, &message, None));
            return;
        }
        // Accepted by the kernel and admitted: polled from now on.
        let _ = self.register(fd, peer, "connection");
    }

    /// Polls `fd` (level-triggered: a request already waiting in the socket
    /// wakes the loop at once) as a new idle connection of `peer`; `None`
    /// when epoll refuses it (it is then closed). `what` names it in the log.
    fn register(&mut self, fd: OwnedFd, peer: Peer, what: &str) -> Option<ConnId> {
        let id = self.next_conn;
        self.next_conn += 1;
        if let Err(e) = self.epoll.add(
            fd.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, FIRST_CONN + id),
        ) {
            tracing::error!(error = %e, "epoll_ctl(add {what}) failed; closing it");
            return None;
        }
        self.conns.insert(
            id,
            Conn {
                fd: Arc::new(fd),
                peer: Arc::new(peer),
                state: State::Idle,
                last_activity: Instant::now(),
            },
        );
        self.shared.connection_opened();
        Some(id)
    }

    // ---- connections ----

    fn on_readable(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if !matches!(conn.state, State::Idle) {
            return;
        }
        let action = match try_receive_message(&conn.fd) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::debug!(peer.pid = conn.peer.pid, error = %e, "receive failed; closing connection");
                return self.close(id);
            }
            Ok(Received::Closed) => return self.close(id),
            Ok(Received::TooLarge { len }) => Action::Reply(requests::too_large(len)),
            // FDs a client sends are never used: `_fds` closes them here.
            Ok(Received::Message { bytes, fds: _fds }) => requests::classify(&bytes),
        };
        conn.last_activity = Instant::now();
        let peer = conn.peer.clone();
        match action {
            Action::Reply(message) => {
                self.send(id, &message, &[]);
            }
            Action::Invalid { reply, reason } => {
                if self.client_log.admit("misbehaving clients") {
                    tracing::info!(peer.pid = peer.pid, peer.uid = peer.uid, error = %Escaped(&reason), "invalid handoff message");
                }
                self.send(id, &reply, &[]);
            }
            Action::Request(request) => self.request(id, request),
            Action::End(allocation) => {
                self.dispatch(id, move |shared| {
                    requests::serve_end(shared, &peer, &allocation)
                });
            }
        }
    }

    fn request(&mut self, id: ConnId, request: WireRequest) {
        match self.shared.gate.peek() {
            Some(GateOutcome::Open) => self.run_request(id, request),
            Some(GateOutcome::Failed(reason)) => {
                let message = error(
                    ErrorKind::NotReady,
                    &format!("the node failed to boot: {reason}"),
                    Some(&request.request.allocation_id),
                );
                self.send(id, &message, &[]);
            }
            Some(GateOutcome::TimedOut | GateOutcome::Interrupted) | None => {
                let limit = self.shared.config.max_queued_requests;
                let queued = self.shared.queued.load(Ordering::Acquire);
                if queued >= limit {
                    let message = error(
                        ErrorKind::Busy,
                        &format!("{limit} requests are already queued waiting for node readiness; retry later"),
                        Some(&request.request.allocation_id),
                    );
                    self.send(id, &message, &[]);
                    return;
                }
                tracing::info!(allocation = %request.request.allocation_id, queued = queued + 1, "namespace request queued until the node is ready");
                self.shared.queued.fetch_add(1, Ordering::AcqRel);
                let deadline = Instant::now() + self.shared.config.ready_wait;
                if let Some(conn) = self.conns.get_mut(&id) {
                    let _ = self.epoll.delete(conn.fd.as_fd());
                    conn.state = State::Waiting { request, deadline };
                }
            }
        }
    }

    fn run_request(&mut self, id: ConnId, request: WireRequest) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let peer = conn.peer.clone();
        self.dispatch(id, move |shared| {
            requests::serve_request(shared, id, &peer, &request)
        });
    }

    /// Hand `job` to a worker; the connection is not polled until its reply.
    fn dispatch(&mut self, id: ConnId, job: impl FnOnce(&Shared) -> Outcome + Send + 'static) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if matches!(conn.state, State::Idle) {
            let _ = self.epoll.delete(conn.fd.as_fd());
        }
        conn.state = State::Working;
        let (shared, events, wake, fd) = (
            self.shared.clone(),
            self.events_tx.clone(),
            self.wake.clone(),
            conn.fd.clone(),
        );
        let submitted = self.workers.as_ref().is_some_and(|w| {
            w.submit(Box::new(move || {
                let outcome = job(&shared);
                // A scope is watched before the client learns of its
                // allocation; a failed send is the loop's to retry and report.
                let sent = outcome.watch.is_none()
                    && try_send_message(&fd, &encode(&outcome.reply), &outcome.fds).is_ok();
                drop(fd);
                if events
                    .send(Event::Done {
                        conn: id,
                        outcome,
                        sent,
                    })
                    .is_ok()
                {
                    let _ = wake.write(1);
                }
            }))
        });
        if !submitted {
            self.close(id);
        }
    }

    /// Send `message` on connection `id`; close it if that fails (gone, or
    /// not reading its replies). Returns whether it was sent.
    fn send(&mut self, id: ConnId, message: &Message, fds: &[OwnedFd]) -> bool {
        let Some(conn) = self.conns.get(&id) else {
            return false;
        };
        match try_send_message(&conn.fd, &encode(message), fds) {
            Ok(()) => true,
            Err(e) => {
                if self.client_log.admit("misbehaving clients") {
                    tracing::info!(peer.pid = conn.peer.pid, reply = message.type_name(), error = %e, "client went away (or does not read its replies); closing the connection");
                }
                self.close(id);
                false
            }
        }
    }

    /// Back to polling after a reply.
    fn make_idle(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if matches!(conn.state, State::Idle) {
            return;
        }
        if let State::Waiting { .. } = conn.state {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
        }
        conn.state = State::Idle;
        conn.last_activity = Instant::now();
        let token = FIRST_CONN + id;
        if let Err(e) = self
            .epoll
            .add(conn.fd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))
        {
            tracing::error!(error = %e, "epoll_ctl(re-add connection) failed; closing it");
            self.close(id);
        }
    }

    fn close(&mut self, id: ConnId) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        match conn.state {
            State::Idle => {
                let _ = self.epoll.delete(conn.fd.as_fd());
            }
            State::Waiting { .. } => {
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            }
            State::Working => {}
        }
        drop(conn);
        self.shared.connection_closed();
    }

    // ---- wake-ups ----

    /// The eventfd that wakes this loop.
    pub(super) fn waker(&self) -> Arc<EventFd> {
        self.wake.clone()
    }

    fn on_wake(&mut self) {
        let _ = self.wake.read();
        let adoptions = std::mem::take(
            &mut *self
                .shared
                .adoptions
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for handover in adoptions {
            self.adopt(handover);
        }
        if self
            .shared
            .draining
            .load(std::sync::atomic::Ordering::Acquire)
        {
            // Draining for a successor: leave new clients in the backlog.
            let _ = self.epoll.delete(self.listener.fd.as_fd());
        }
        self.deliver_events();
        self.serve_waiting();
    }

    /// Replies of finished provider calls, and WI5 notifications.
    fn deliver_events(&mut self) {
        while let Ok(event) = self.events_rx.try_recv() {
            match event {
                Event::Done {
                    conn,
                    outcome,
                    sent,
                } => {
                    if let (Some(scopes), Some((id, events))) =
                        (self.scopes.as_mut(), outcome.watch)
                    {
                        scopes.watch(id, events);
                    }
                    if let (Some(scopes), Some(id)) = (self.scopes.as_mut(), &outcome.unwatch) {
                        scopes.unwatch(id);
                    }
                    if sent || self.send(conn, &outcome.reply, &outcome.fds) {
                        self.make_idle(conn);
                    }
                }
                Event::ScopeEnded { conn, id } => {
                    if let Some(conn) = conn {
                        let message = Message::AllocationEnded {
                            allocation_id: id.to_string(),
                        };
                        self.send(conn, &message, &[]);
                    }
                }
            }
        }
    }

    /// Requests queued for readiness: run them once the gate opened, answer
    /// `not_ready` once it failed.
    fn serve_waiting(&mut self) {
        let outcome = self.shared.gate.peek();
        let Some(outcome) = outcome else {
            return;
        };
        let waiting: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.state, State::Waiting { .. }))
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            let Some(request) = self.take_waiting(id) else {
                continue;
            };
            match &outcome {
                GateOutcome::Open => self.run_request(id, request),
                GateOutcome::Failed(reason) => {
                    let message = error(
                        ErrorKind::NotReady,
                        &format!("the node failed to boot: {reason}"),
                        Some(&request.request.allocation_id),
                    );
                    if self.send(id, &message, &[]) {
                        self.make_idle(id);
                    }
                }
                GateOutcome::TimedOut | GateOutcome::Interrupted => {}
            }
        }
    }

    /// Take the queued request of `id`, leaving it `Working` (not polled).
    fn take_waiting(&mut self, id: ConnId) -> Option<WireRequest> {
        let conn = self.conns.get_mut(&id)?;
        match std::mem::replace(&mut conn.state, State::Working) {
            State::Waiting { request, .. } => {
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                Some(request)
            }
            other => {
                conn.state = other;
                None
            }
        }
    }

    fn on_scopes(&mut self) {
        let Some(scopes) = self.scopes.as_mut() else {
            return;
        };
        for id in scopes.drain() {
            self.end_emptied(id);
        }
    }

    /// Release `id`, whose scope emptied, in a worker; its connection is told.
    fn end_emptied(&self, id: AllocationId) {
        let (shared, events, wake) = (
            self.shared.clone(),
            self.events_tx.clone(),
            self.wake.clone(),
        );
        let job = Box::new(move || {
            let conn = requests::serve_scope_emptied(&shared, &id);
            if events.send(Event::ScopeEnded { conn, id }).is_ok() {
                let _ = wake.write(1);
            }
        });
        if let Some(workers) = &self.workers {
            workers.submit(job);
        }
    }

    // ---- deadlines ----

    fn on_timers(&mut self, now: Instant) {
        let draining = self
            .shared
            .draining
            .load(std::sync::atomic::Ordering::Acquire);
        if self.backoff.expired(now) && !draining {
            if let Err(e) = self.epoll.add(
                self.listener.fd.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, LISTENER),
            ) {
                tracing::error!(error = %e, "cannot resume accepting on the handoff socket");
            }
        }
        let idle = self.shared.config.idle_timeout;
        let mut timed_out = Vec::new();
        let mut idle_expired = Vec::new();
        for (id, conn) in &self.conns {
            match &conn.state {
                State::Waiting { deadline, .. } if *deadline <= now => timed_out.push(*id),
                State::Idle if now.duration_since(conn.last_activity) >= idle => {
                    idle_expired.push(*id)
                }
                _ => {}
            }
        }
        for id in timed_out {
            let Some(request) = self.take_waiting(id) else {
                continue;
            };
            let message = error(
                ErrorKind::NotReady,
                &format!(
                    "the node did not become ready within {} s; retry later",
                    self.shared.config.ready_wait.as_secs()
                ),
                Some(&request.request.allocation_id),
            );
            if self.send(id, &message, &[]) {
                self.make_idle(id);
            }
        }
        for id in idle_expired {
            if self.shared.registry.conn_owns_live(id) {
                // It waits for allocation_ended (WI5) of what it created.
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.last_activity = now;
                }
                continue;
            }
            if let Some(conn) = self.conns.get(&id) {
                tracing::info!(
                    peer.pid = conn.peer.pid,
                    peer.uid = conn.peer.uid,
                    idle_timeout_s = idle.as_secs(),
                    "idle handoff connection closed"
                );
            }
            self.close(id);
        }
    }

    // ---- handing over (reload) ----

    /// The loop's end on a reload: nothing more is accepted or read (a
    /// request not read yet stays in its socket for the successor); calls in
    /// flight finish and are answered; queued ones get `not_ready`; then the
    /// connections leave open, with the live allocations.
    fn hand_over(mut self) -> Handover {
        let _ = self.epoll.delete(self.listener.fd.as_fd());
        // Joins the pool once its jobs are done: every call in flight ends.
        drop(self.workers.take());
        self.deliver_events();
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(request) = self.take_waiting(id) {
                let message = error(
                    ErrorKind::NotReady,
                    "the handoff server is handing over to a new one before the node became ready; retry",
                    Some(&request.request.allocation_id),
                );
                if self.send(id, &message, &[]) {
                    self.make_idle(id);
                }
            }
        }
        let live = self.shared.registry.live_entries();
        let connections = std::mem::take(&mut self.conns)
            .into_iter()
            .map(|(id, conn)| {
                let _ = self.epoll.delete(conn.fd.as_fd());
                let peer = Arc::try_unwrap(conn.peer).unwrap_or_else(|p| (*p).clone());
                // The pool is joined: no worker holds a connection any more.
                let fd = Arc::try_unwrap(conn.fd).map_err(|fd| fd.try_clone());
                (id, fd, peer)
            })
            .filter_map(|(id, fd, peer)| match fd {
                Ok(fd) | Err(Ok(fd)) => Some((id, fd, peer)),
                Err(Err(e)) => {
                    tracing::error!(error = %e, "a connection could not be handed over (dup failed); it closes");
                    None
                }
            })
            .collect();
        let scopes = self.scopes.as_ref();
        Handover::collect(connections, live, |id| {
            scopes.is_some_and(|s| s.seen_populated(id))
        })
    }

    /// Serve what a predecessor handed over (see `handover`).
    fn adopt(&mut self, handover: Handover) {
        let Handover {
            connections,
            allocations,
        } = handover;
        let mut ids = Vec::with_capacity(connections.len());
        for (fd, peer) in connections {
            ids.push(self.adopt_connection(fd, peer));
        }
        let adopted = ids.iter().flatten().count();
        for allocation in allocations {
            let conn = match allocation
                .connection
                .and_then(|i| ids.get(i).copied().flatten())
            {
                Some(conn) => conn,
                // Its connection is gone: a number no connection will have.
                None => {
                    self.next_conn += 1;
                    self.next_conn - 1
                }
            };
            match self
                .shared
                .registry
                .begin(&allocation.id, allocation.owner, Op::Request)
            {
                Ok(ticket) => ticket.created(conn, allocation.scope.clone()),
                Err((kind, message)) => {
                    tracing::warn!(allocation = %allocation.id, kind = kind.as_str(), %message, "handed-over allocation not registered");
                    continue;
                }
            }
            let emptied = match (
                self.scopes.as_mut(),
                &allocation.scope,
                &self.shared.config.cgroup_root,
            ) {
                (Some(scopes), Some(scope), Some(root)) => scopes.adopt(
                    allocation.id.clone(),
                    scope.under(root).join("cgroup.events"),
                    allocation.scope_seen_populated,
                ),
                _ => false,
            };
            if emptied {
                // It emptied between the two servers: end it as the watch would have.
                self.end_emptied(allocation.id);
            }
        }
        tracing::info!(
            connections = adopted,
            allocations = self.shared.registry.live_count(),
            "handed-over connections adopted"
        );
    }

    /// One handed-over connection, polled from now on; `None` when refused.
    fn adopt_connection(&mut self, fd: OwnedFd, peer: Peer) -> Option<ConnId> {
        if !self.shared.config.access.allows(&peer) {
            let message = format!(
                "peer uid {} gid {} is no longer allowed on this socket after the reload; closing the connection",
                peer.uid, peer.gid
            );
            refuse(fd, &error(ErrorKind::Unauthorized, &message, None));
            return None;
        }
        if let Err(e) = nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        ) {
            tracing::error!(error = %e, "handed-over connection: cannot make it non-blocking; closing it");
            return None;
        }
        self.register(fd, peer, "handed-over connection")
    }

    fn shutdown(mut self) {
        let waiting: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in waiting {
            if let Some(request) = self.take_waiting(id) {
                let message = error(
                    ErrorKind::NotReady,
                    "the handoff server is shutting down",
                    Some(&request.request.allocation_id),
                );
                self.send(id, &message, &[]);
            }
        }
        // Let running provider calls finish (their replies are dropped).
        drop(self.workers.take());
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
        self.listener.unpublish();
        let counts = self
            .shared
            .counts
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        tracing::debug!(ended = counts.ended, "handoff server stopped");
    }
}
