//! Spare holders (`spare_holders` option): a few holders made ahead of
//! time, so that a request takes a ready one instead of waiting for the
//! kernel's namespace work (`clone` of a new network namespace is most of a
//! request's cost), and one refill thread makes the next while the client
//! works.
//!
//! Owns the spares, the refill thread and the rule that keeps a spare
//! *exactly* what a holder made at request time would be:
//! - spares are made for one namespace set, the last one requested; a
//!   request for another set flushes them (and is served fresh);
//! - a new mount namespace is a copy of this process's mount table when it
//!   is made, so every spare made before a change of that table (a mount,
//!   an unmount, a propagated event — the uenv image mounted for a
//!   request included) is discarded, never handed out. The kernel reports
//!   such a change as `POLLPRI` on `/proc/self/mounts`, polled here before
//!   every take and around every refill;
//! - no uenv image is ever bound in a spare: the image is bound after the
//!   take, as for a fresh holder. When the uenv mount path is missing from
//!   the image, a spare for uenv requests carries the read-only shadow of
//!   its nearest existing directory already (the part of a uenv request
//!   that costs most: every entry of `/` cloned and attached), so it is
//!   made for a [`SpareKind`] with that mount point; and as the shadow
//!   mirrors the directory as it was, every spare made before a change of
//!   that directory's entries (seen by inotify) is discarded too.
//!
//! When the pool is empty but the refill thread is already making a holder
//! for the same namespaces, one request waits for that one (it is done
//! sooner than a new one would be, and two makers would only slow each
//! other down), at most [`CLAIM_WAIT`]; any other request, or one whose
//! claimed spare is discarded, fails or is late, gets a new holder.
//!
//! A spare is no allocation's yet: under nodeinit's keeper it stays
//! uncommitted (it exits by itself if this worker dies) until the request
//! that takes it records it. This module must never hand out a spare made
//! for other namespaces or before a mount-table change, and never keep a
//! request waiting longer than [`CLAIM_WAIT`].

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hpc_node::NamespaceType;

use crate::persist::Holder;

/// What a spare is made for: a namespace set and, for uenv requests whose
/// mount path is missing, that path (its shadow is built in the spare).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpareKind {
    pub(crate) namespaces: Vec<NamespaceType>,
    /// Made a directory in the spare ahead of the bind
    /// ([`nodeinit_namespaces::mount_namespace::prepare_mount_point`]).
    pub(crate) mount_point: Option<PathBuf>,
}

impl SpareKind {
    /// Plain: `namespaces`, nothing prepared.
    #[cfg(test)]
    pub(crate) fn plain(namespaces: &[NamespaceType]) -> Self {
        Self {
            namespaces: namespaces.to_vec(),
            mount_point: None,
        }
    }
}

/// How a holder of a kind is made (the backend's kind: tied or
/// persistent), with no uenv image bound.
pub(crate) type SpawnHolder = Box<dyn Fn(&SpareKind) -> io::Result<Holder> + Send + Sync>;

/// After a failed refill, wait this long before the next attempt.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The longest a request waits for the spare being made for it.
pub(crate) const CLAIM_WAIT: Duration = Duration::from_secs(1);

/// The most spares a backend may keep (`spare_holders`).
pub const MAX_SPARE_HOLDERS: u32 = 16;

/// The pool. Dropping it stops the refill thread and kills the spares.
pub(crate) struct SpareHolders {
    shared: Arc<Shared>,
    refill: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    target: usize,
    spawn: SpawnHolder,
    state: Mutex<State>,
    /// Wakes the refill thread.
    wake: Condvar,
    /// Wakes a request waiting for the spare in the making.
    landed: Condvar,
}

struct State {
    /// The kind last requested (none yet: no spare is made).
    requested: Option<SpareKind>,
    spares: VecDeque<Holder>,
    /// Discarded spares, killed by the refill thread (off the request path).
    stale: Vec<Holder>,
    mounts: MountTableWatch,
    /// The directory the requested kind's shadow mirrors, watched; none
    /// when it has no mount point, the mount point exists, or the directory
    /// cannot be watched (see [`State::kind`]).
    shadowed: Option<DirectoryWatch>,
    /// Bumped at every mount-table change and every change of the shadowed
    /// directory; a refill made under an older one is stale.
    generation: u64,
    /// Refills failed until this instant: wait before the next.
    retry_at: Option<Instant>,
    /// The spare being made: its kind and generation.
    in_flight: Option<(SpareKind, u64)>,
    /// A request waits for the spare in the making.
    claimed: bool,
    /// That spare, made and current, for the waiting request.
    handed: Option<Holder>,
    stopping: bool,
}

/// Changes of this process's mount table, as `POLLPRI` on `/proc/self/mounts`.
struct MountTableWatch {
    file: File,
}

impl MountTableWatch {
    fn open() -> io::Result<Self> {
        File::open("/proc/self/mounts")
            .map(|file| Self { file })
            .map_err(|e| io::Error::new(e.kind(), format!("/proc/self/mounts: {e}")))
    }

    /// Whether the table changed since the last call (or the open). A
    /// failed poll counts as a change: a spare is only ever handed out when
    /// the kernel said nothing changed.
    fn changed(&self) -> bool {
        let mut fds = [nix::poll::PollFd::new(
            self.file.as_fd(),
            nix::poll::PollFlags::POLLPRI,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
            Ok(0) => false,
            Ok(_) | Err(_) => true,
        }
    }
}

/// Changes of the entries of one directory (and of the directory itself),
/// by inotify. Any event, a queue overflow or a failed read counts as a
/// change, like [`MountTableWatch::changed`]'s failed poll.
struct DirectoryWatch {
    inotify: nix::sys::inotify::Inotify,
}

impl DirectoryWatch {
    /// Watch the directory a shadow for `mount_point` mirrors, as it is now.
    /// `None` if there is none (the mount point exists), or it cannot be
    /// watched (then no spare is made with a shadow: see [`State::observe`]).
    fn of(mount_point: &Path) -> io::Result<Option<Self>> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let Some(dir) = nodeinit_namespaces::mount_namespace::shadowed_directory(mount_point)?
        else {
            return Ok(None);
        };
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| io::Error::other(format!("inotify_init: {e}")))?;
        let events = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR
            | AddWatchFlags::IN_DONT_FOLLOW;
        inotify
            .add_watch(&dir, events)
            .map_err(|e| io::Error::other(format!("inotify watch on {}: {e}", dir.display())))?;
        Ok(Some(Self { inotify }))
    }

    fn changed(&self) -> bool {
        match self.inotify.read_events() {
            Ok(events) => !events.is_empty(),
            Err(nix::errno::Errno::EAGAIN) => false,
            Err(_) => true,
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    /// Discard every spare if the mount table or the shadowed directory
    /// changed; then watch that directory afresh (a change may have made
    /// another one the nearest existing ancestor, or none).
    fn observe(&mut self) {
        let mounts = self.mounts.changed();
        let shadowed = self.shadowed.as_ref().is_some_and(DirectoryWatch::changed);
        if mounts || shadowed {
            self.generation += 1;
            self.discard_all();
        }
        if shadowed {
            self.watch_shadowed();
        }
    }

    /// Watch what the requested kind's shadow mirrors, if it needs one.
    fn watch_shadowed(&mut self) {
        self.shadowed = None;
        let Some(mount_point) = self.requested.as_ref().and_then(|k| k.mount_point.as_ref()) else {
            return;
        };
        match DirectoryWatch::of(mount_point) {
            Ok(watch) => self.shadowed = watch,
            Err(e) => {
                tracing::warn!(error = %e, mount_point = %mount_point.display(),
                    "spare holders: the shadowed directory cannot be watched; the uenv shadow is built at request time");
            }
        }
    }

    /// What spares are made for: the requested kind, with its mount point
    /// only while its shadowed directory is watched. Otherwise they are
    /// plain and the uenv bind builds the shadow at request time, as
    /// without spares.
    fn kind(&self) -> Option<SpareKind> {
        let requested = self.requested.as_ref()?;
        Some(SpareKind {
            namespaces: requested.namespaces.clone(),
            mount_point: requested
                .mount_point
                .clone()
                .filter(|_| self.shadowed.is_some()),
        })
    }

    fn discard_all(&mut self) {
        let spares: Vec<Holder> = self.spares.drain(..).collect();
        self.stale.extend(spares);
    }

    /// Whether the spare in the making is of `kind`, current, and not yet
    /// claimed by another request.
    fn claimable(&self, kind: &SpareKind) -> bool {
        !self.claimed
            && self
                .in_flight
                .as_ref()
                .is_some_and(|(k, generation)| k == kind && *generation == self.generation)
    }
}

impl SpareHolders {
    /// A pool keeping `target` spares made by `spawn`; nothing is made (no
    /// thread started) before the first [`SpareHolders::take`].
    ///
    /// # Errors
    ///
    /// `/proc/self/mounts` cannot be opened (no spare could be checked).
    pub(crate) fn new(target: usize, spawn: SpawnHolder) -> io::Result<Self> {
        let mounts = MountTableWatch::open()?;
        Ok(Self {
            shared: Arc::new(Shared {
                target,
                spawn,
                state: Mutex::new(State {
                    requested: None,
                    spares: VecDeque::new(),
                    stale: Vec::new(),
                    mounts,
                    shadowed: None,
                    generation: 0,
                    retry_at: None,
                    in_flight: None,
                    claimed: false,
                    handed: None,
                    stopping: false,
                }),
                wake: Condvar::new(),
                landed: Condvar::new(),
            }),
            refill: Mutex::new(None),
        })
    }

    /// A ready spare of `kind`, if one is kept or is being made (waiting at
    /// most [`CLAIM_WAIT`] for it); either way the pool then refills for
    /// `kind`. A spare of a kind with a mount point has it prepared, unless
    /// its directory cannot be watched: then it is plain, and the uenv bind
    /// builds the shadow as for a fresh holder.
    pub(crate) fn take(&self, kind: &SpareKind) -> Option<Holder> {
        self.start_refill();
        let mut state = lock(&self.shared.state);
        state.observe();
        if state.requested.as_ref() != Some(kind) {
            state.requested = Some(kind.clone());
            state.generation += 1;
            state.discard_all();
            state.watch_shadowed();
            // New work (and the first: the thread may be waiting already).
            self.shared.wake.notify_one();
        }
        // Otherwise the refill is woken by [`SpareHolders::refill`], once
        // the request is done with the kernel: a mount namespace is made
        // under the namespace lock that a uenv bind needs too.
        if let Some(spare) = state.spares.pop_front() {
            return Some(spare);
        }
        let current = state.kind()?;
        if !state.claimable(&current) {
            return None;
        }
        state.claimed = true;
        // A waiting request wakes it itself (it may be idle after a discard).
        self.shared.wake.notify_one();
        // Until it is handed over, lands elsewhere (discarded, failed) or
        // is late: then a new holder.
        let (mut state, _) = nodeinit_sys::deadline::wait_until(
            &self.shared.landed,
            state,
            Some(nodeinit_sys::Deadline::after(CLAIM_WAIT)),
            |s| s.handed.is_some() || s.in_flight.is_none() || s.stopping,
        );
        state.claimed = false;
        state.handed.take()
    }

    /// Refill the pool after a [`SpareHolders::take`]: called when the
    /// request that took is done with its holder's namespaces.
    pub(crate) fn refill(&self) {
        self.shared.wake.notify_one();
    }

    /// The pids of the spares kept now (diagnostics and tests).
    pub(crate) fn pids(&self) -> Vec<i32> {
        lock(&self.shared.state)
            .spares
            .iter()
            .map(|h| h.pid().as_raw())
            .collect()
    }

    fn start_refill(&self) {
        let mut refill = self.refill.lock().unwrap_or_else(PoisonError::into_inner);
        if refill.is_some() {
            return;
        }
        let shared = Arc::clone(&self.shared);
        match std::thread::Builder::new()
            .name("nodeinit-spares".into())
            .spawn(move || shared.run())
        {
            Ok(thread) => *refill = Some(thread),
            Err(e) => {
                tracing::error!(error = %e, "spare holders: the refill thread did not start; requests get fresh holders");
            }
        }
    }
}

/// What the refill thread does next.
enum Step {
    Stop,
    Kill(Vec<Holder>),
    Make { kind: SpareKind, generation: u64 },
}

impl Shared {
    fn run(&self) {
        loop {
            match self.next_step() {
                Step::Stop => return,
                Step::Kill(stale) => {
                    for holder in stale {
                        let pid = holder.pid();
                        if let Err(e) = holder.terminate() {
                            tracing::error!(holder = %pid, error = %e, "discarded spare holder not cleaned up");
                        }
                    }
                }
                Step::Make { kind, generation } => self.make(&kind, generation),
            }
        }
    }

    fn next_step(&self) -> Step {
        let mut state = lock(&self.state);
        loop {
            if state.stopping {
                return Step::Stop;
            }
            state.observe();
            if !state.stale.is_empty() {
                return Step::Kill(std::mem::take(&mut state.stale));
            }
            let now = Instant::now();
            let waiting = state.retry_at.filter(|at| *at > now);
            if let (Some(kind), None) = (state.kind(), waiting) {
                if state.spares.len() < self.target {
                    let generation = state.generation;
                    state.in_flight = Some((kind.clone(), generation));
                    return Step::Make { kind, generation };
                }
            }
            // Woken by a take, a stop, or the retry time; a mount change
            // alone does not wake it (the next take sees it).
            state = match waiting {
                Some(at) => {
                    self.wake
                        .wait_timeout(state, at.saturating_duration_since(now))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    fn make(&self, kind: &SpareKind, generation: u64) {
        let made = (self.spawn)(kind);
        let mut state = lock(&self.state);
        state.in_flight = None;
        // A waiting request wakes whatever happened to its spare.
        self.landed.notify_all();
        match made {
            Ok(holder) => {
                state.retry_at = None;
                state.observe();
                let current = !state.stopping
                    && state.generation == generation
                    && state.kind().as_ref() == Some(kind);
                if current && state.claimed && state.handed.is_none() {
                    state.handed = Some(holder);
                } else if current && state.spares.len() < self.target {
                    state.spares.push_back(holder);
                } else {
                    state.stale.push(holder);
                }
            }
            Err(e) => {
                // Once per failure streak: the next success clears it.
                if state.retry_at.is_none() {
                    tracing::warn!(error = %e, "spare holder not made; requests get fresh holders, retrying every second");
                }
                state.retry_at = Some(Instant::now() + RETRY_AFTER);
            }
        }
    }
}

impl Drop for SpareHolders {
    fn drop(&mut self) {
        lock(&self.shared.state).stopping = true;
        self.shared.wake.notify_all();
        self.shared.landed.notify_all();
        let refill = self
            .refill
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = refill {
            if thread.join().is_err() {
                tracing::error!("the spare holders' refill thread panicked");
            }
        }
        // The spares and the stale ones are killed as they drop.
        let mut state = lock(&self.shared.state);
        state.discard_all();
        let stale = std::mem::take(&mut state.stale);
        let handed = state.handed.take();
        drop(state);
        drop((stale, handed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeinit_namespaces::mount_namespace::Propagation;

    /// A pool of one whose holders take `delay` to make (tied, network
    /// namespace only).
    fn slow_pool(delay: Duration) -> SpareHolders {
        SpareHolders::new(
            1,
            Box::new(move |kind: &SpareKind| {
                std::thread::sleep(delay);
                Holder::spawn(false, &kind.namespaces, Propagation::Slave)
            }),
        )
        .unwrap()
    }

    fn own_net() -> std::path::PathBuf {
        std::fs::read_link("/proc/self/ns/net").unwrap()
    }

    /// Until the refill thread is making a spare.
    fn until_in_flight(pool: &SpareHolders) {
        nodeinit_tests::wait_until("a spare is being made", || {
            lock(&pool.shared.state).in_flight.is_some()
        });
    }

    #[test]
    fn a_request_takes_the_spare_in_the_making() {
        let pool = slow_pool(Duration::from_millis(200));
        assert!(
            pool.take(&SpareKind::plain(&[NamespaceType::Net]))
                .is_none(),
            "nothing made yet"
        );
        until_in_flight(&pool);
        let spare = pool
            .take(&SpareKind::plain(&[NamespaceType::Net]))
            .expect("the spare in the making");
        let net = std::fs::read_link(format!("/proc/{}/ns/net", spare.pid())).unwrap();
        assert_ne!(net, own_net());
        spare.terminate().unwrap();
    }

    #[test]
    fn a_late_spare_is_not_waited_for_and_goes_to_the_pool() {
        let pool = slow_pool(CLAIM_WAIT * 3);
        assert!(pool
            .take(&SpareKind::plain(&[NamespaceType::Net]))
            .is_none());
        until_in_flight(&pool);
        // The claim gives up before the spare is made: a new holder then.
        assert!(pool
            .take(&SpareKind::plain(&[NamespaceType::Net]))
            .is_none());
        // The spare lands later, in the pool, for the next request.
        nodeinit_tests::wait_until("the late spare lands in the pool", || {
            !pool.pids().is_empty()
        });
        let spare = pool
            .take(&SpareKind::plain(&[NamespaceType::Net]))
            .expect("the late spare");
        assert_ne!(
            std::fs::read_link(format!("/proc/{}/ns/net", spare.pid())).unwrap(),
            own_net()
        );
        spare.terminate().unwrap();
    }

    #[test]
    fn a_spare_in_the_making_for_other_namespaces_is_not_waited_for() {
        let pool = slow_pool(CLAIM_WAIT * 3);
        assert!(pool
            .take(&SpareKind::plain(&[NamespaceType::Net]))
            .is_none());
        until_in_flight(&pool);
        assert!(
            pool.take(&SpareKind::plain(&[NamespaceType::Mount]))
                .is_none(),
            "a Net-only spare is never handed to a Mount request"
        );
        assert!(!lock(&pool.shared.state).claimed);
    }
}
