//! WI5: noticing that an allocation's cgroup scope went from populated to
//! empty, by inotify on its `cgroup.events` (the kernel signals every change
//! of `populated` there) — no polling, no sleeps.
//!
//! Owns the inotify descriptor (the event loop polls it) and which
//! allocation each watch belongs to. It never releases anything itself: it
//! reports the allocations whose scope emptied, and the server releases
//! them through the provider.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::allocation_id::AllocationId;

/// One watched `cgroup.events` file (several allocations may name one scope).
#[derive(Debug)]
struct Watch {
    events: PathBuf,
    ids: Vec<AllocationId>,
    /// Whether `populated 1` has been seen: an allocation whose scope is
    /// still empty (processes not moved in yet) is not ended by it.
    seen_populated: bool,
    /// The state last read, to recognise a populated→empty round trip that
    /// happened between two reads (inotify coalesces the two events).
    last: Option<EventsState>,
}

/// What `cgroup.events` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EventsState {
    populated: bool,
    frozen: bool,
}

/// The inotify watches of live allocations' scopes.
#[derive(Debug)]
pub(super) struct ScopeWatcher {
    inotify: Inotify,
    watches: HashMap<WatchDescriptor, Watch>,
    by_id: HashMap<AllocationId, WatchDescriptor>,
}

/// A `cgroup.events` file; `None` when it cannot be read (the scope was
/// removed). Hand-written parser: `key value` lines.
fn read_state(events: &Path) -> Option<EventsState> {
    let text = std::fs::read_to_string(events).ok()?;
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim() == "1")
    };
    Some(EventsState {
        populated: value("populated ")?,
        frozen: value("frozen ").unwrap_or(false),
    })
}

impl ScopeWatcher {
    pub(super) fn new() -> io::Result<Self> {
        Ok(Self {
            inotify: Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
                .map_err(|e| io::Error::other(format!("inotify_init1: {e}")))?,
            watches: HashMap::new(),
            by_id: HashMap::new(),
        })
    }

    /// The descriptor to poll for readability.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }

    /// Start watching `events` for `id`.
    pub(super) fn watch(&mut self, id: AllocationId, events: PathBuf) {
        let wd = match self.inotify.add_watch(&events, AddWatchFlags::IN_MODIFY) {
            Ok(wd) => wd,
            Err(e) => {
                tracing::warn!(allocation = %id, path = %events.display(), error = %e,
                    "cannot watch the allocation's cgroup scope; it will not end when the scope empties");
                return;
            }
        };
        let now = read_state(&events);
        let watch = self.watches.entry(wd).or_insert_with(|| Watch {
            events: events.clone(),
            ids: Vec::new(),
            seen_populated: false,
            last: None,
        });
        watch.seen_populated |= now.is_some_and(|s| s.populated);
        watch.last = now;
        watch.ids.push(id.clone());
        self.by_id.insert(id.clone(), wd);
        tracing::debug!(allocation = %id, path = %events.display(), populated = ?now, "watching cgroup scope");
    }

    /// Whether `id`'s scope was seen populated (what a successor needs to
    /// know to end it when it empties: see [`Self::adopt`]).
    pub(super) fn seen_populated(&self, id: &AllocationId) -> bool {
        self.by_id
            .get(id)
            .and_then(|wd| self.watches.get(wd))
            .is_some_and(|w| w.seen_populated)
    }

    /// Watch `events` for `id`, handed over by a server that had seen the
    /// scope populated (`seen_populated`). Returns `true` when the scope has
    /// emptied since (the event fell between the two servers): the caller
    /// ends the allocation now, and nothing is watched.
    pub(super) fn adopt(
        &mut self,
        id: AllocationId,
        events: PathBuf,
        seen_populated: bool,
    ) -> bool {
        let now = read_state(&events);
        if seen_populated && !now.is_some_and(|s| s.populated) {
            return true;
        }
        self.watch(id.clone(), events);
        if let Some(watch) = self.by_id.get(&id).and_then(|wd| self.watches.get_mut(wd)) {
            watch.seen_populated |= seen_populated;
        }
        false
    }

    /// Stop watching for `id` (it ended another way).
    pub(super) fn unwatch(&mut self, id: &AllocationId) {
        let Some(wd) = self.by_id.remove(id) else {
            return;
        };
        if let Some(watch) = self.watches.get_mut(&wd) {
            watch.ids.retain(|i| i != id);
            if watch.ids.is_empty() {
                self.watches.remove(&wd);
                // EINVAL when the kernel already dropped it (scope removed).
                let _ = self.inotify.rm_watch(wd);
            }
        }
    }

    /// Read pending inotify events; return the allocations whose scope
    /// went from populated to empty (or was removed). Their watches are gone.
    pub(super) fn drain(&mut self) -> Vec<AllocationId> {
        let mut changed = Vec::new();
        loop {
            match self.inotify.read_events() {
                Ok(events) if events.is_empty() => break,
                Ok(events) => changed.extend(events.into_iter().map(|e| e.wd)),
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "reading cgroup scope events failed");
                    break;
                }
            }
        }
        changed.sort_unstable();
        changed.dedup();
        let mut emptied = Vec::new();
        for wd in changed {
            let Some(watch) = self.watches.get_mut(&wd) else {
                continue;
            };
            let now = read_state(&watch.events);
            // The kernel notifies only when `populated` or `frozen` changes:
            // an event that leaves both as they were read last means the
            // scope was populated and emptied again in between.
            let round_trip = now.is_some() && now == watch.last;
            let is_empty = match now {
                Some(s) if s.populated => {
                    watch.seen_populated = true;
                    false
                }
                Some(_) => watch.seen_populated || round_trip,
                None => true,
            };
            watch.last = now;
            if is_empty {
                if let Some(watch) = self.watches.remove(&wd) {
                    let _ = self.inotify.rm_watch(wd);
                    for id in watch.ids {
                        self.by_id.remove(&id);
                        emptied.push(id);
                    }
                }
            }
        }
        emptied
    }
}
