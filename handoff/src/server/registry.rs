//! The server's view of live allocations: who owns each, which connection
//! asked for it, and one operation at a time per allocation.
//!
//! Owns three rules of `PROTOCOL.md`: an allocation belongs to the peer uid
//! that created it (others, root excepted, get `unauthorized`); live
//! allocations are capped in total and per peer uid (`busy` beyond); and
//! operations on one allocation id are serialised, so a `namespace_request`
//! and an `allocation_ended` racing for the same id never interleave (a
//! request never sees its allocation vanish between creation and FD
//! duplication). Operations on different ids never wait for each other.
//! It never calls the provider: workers do, between [`Registry::begin`]
//! and dropping the returned [`Ticket`].

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::allocation_id::AllocationId;
use crate::protocol::{CgroupScope, ErrorKind};

/// A connection, as the event loop numbers them (never reused).
pub(crate) type ConnId = u64;

/// What an operation wants to do with an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `namespace_request`: create it, or return the live one.
    Request,
    /// `allocation_ended` from a peer.
    End,
    /// The server itself ends it (its cgroup scope emptied).
    ServerEnd,
}

#[derive(Debug)]
struct Entry {
    owner: u32,
    busy: bool,
    live: bool,
    conn: Option<ConnId>,
    scope: Option<CgroupScope>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<AllocationId, Entry>,
    per_owner: HashMap<u32, usize>,
}

impl State {
    fn remove(&mut self, id: &AllocationId) -> Option<Entry> {
        let entry = self.entries.remove(id)?;
        if let Some(count) = self.per_owner.get_mut(&entry.owner) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_owner.remove(&entry.owner);
            }
        }
        Some(entry)
    }
}

/// Allocation ownership and per-allocation serialisation.
#[derive(Debug)]
pub(crate) struct Registry {
    state: Mutex<State>,
    changed: Condvar,
    max_total: usize,
    max_per_peer: usize,
}

/// The right to run one operation on one allocation. Dropping it without
/// [`Ticket::created`] or [`Ticket::ended`] counts as a failed operation.
#[derive(Debug)]
pub(crate) struct Ticket<'a> {
    registry: &'a Registry,
    id: AllocationId,
    done: bool,
}

/// What `begin` refused, as the `error` reply to send.
pub(crate) type Refusal = (ErrorKind, String);

impl Registry {
    pub(crate) fn new(max_total: usize, max_per_peer: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            max_total,
            max_per_peer,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claim `id` for `op` by peer `uid`, waiting while another operation on
    /// the same id runs.
    ///
    /// # Errors
    ///
    /// `unauthorized` when `id` belongs to another uid (and `uid` is not
    /// root), `busy` over a cap, `allocation_not_found` when ending what
    /// does not exist.
    pub(crate) fn begin(&self, id: &AllocationId, uid: u32, op: Op) -> Result<Ticket<'_>, Refusal> {
        let mut state = self.lock();
        loop {
            match state.entries.get_mut(id) {
                Some(entry) => {
                    if op != Op::ServerEnd && uid != 0 && entry.owner != uid {
                        return Err((
                            ErrorKind::Unauthorized,
                            format!(
                                "allocation {id} belongs to another user (uid {}); only its creator or root may request or end it",
                                entry.owner
                            ),
                        ));
                    }
                    if entry.busy {
                        state = self
                            .changed
                            .wait(state)
                            .unwrap_or_else(PoisonError::into_inner);
                        continue;
                    }
                    entry.busy = true;
                    return Ok(self.ticket(id));
                }
                None if op == Op::Request => {
                    if state.entries.len() >= self.max_total {
                        return Err((
                            ErrorKind::Busy,
                            format!(
                                "the node already holds {} live allocations (the server's max_allocations); end some, or retry later",
                                self.max_total
                            ),
                        ));
                    }
                    let owned = state.per_owner.get(&uid).copied().unwrap_or(0);
                    if owned >= self.max_per_peer {
                        return Err((
                            ErrorKind::Busy,
                            format!(
                                "uid {uid} already owns {owned} live allocations (the server's max_allocations_per_peer); end some first"
                            ),
                        ));
                    }
                    *state.per_owner.entry(uid).or_default() += 1;
                    state.entries.insert(
                        id.clone(),
                        Entry {
                            owner: uid,
                            busy: true,
                            live: false,
                            conn: None,
                            scope: None,
                        },
                    );
                    return Ok(self.ticket(id));
                }
                // Root may end an allocation the provider holds but this
                // server did not create (made before a restart, or by the
                // host). The id is claimed all the same, so a request
                // arriving meanwhile waits instead of racing the release.
                None if op == Op::End && uid == 0 => {
                    *state.per_owner.entry(uid).or_default() += 1;
                    state.entries.insert(
                        id.clone(),
                        Entry {
                            owner: uid,
                            busy: true,
                            live: false,
                            conn: None,
                            scope: None,
                        },
                    );
                    return Ok(self.ticket(id));
                }
                None => {
                    return Err((
                        ErrorKind::AllocationNotFound,
                        format!("allocation {id} is not live (never created, or already ended)"),
                    ))
                }
            }
        }
    }

    /// Whether `id` has an entry (live, being created, or adopted).
    pub(crate) fn knows(&self, id: &AllocationId) -> bool {
        self.lock().entries.contains_key(id)
    }

    /// Record that `id`, which this server did not create, is live in the
    /// provider and belongs to `owner` (the provider persisted it across a
    /// restart). No-op when `id` has an entry already. The entry is not
    /// `live` for this server until a request for it succeeds, so its
    /// creator's next request is served as a first one (scope watched).
    pub(crate) fn adopt(&self, id: &AllocationId, owner: u32) {
        let mut state = self.lock();
        if state.entries.contains_key(id) {
            return;
        }
        *state.per_owner.entry(owner).or_default() += 1;
        state.entries.insert(
            id.clone(),
            Entry {
                owner,
                busy: false,
                live: false,
                conn: None,
                scope: None,
            },
        );
    }

    fn ticket(&self, id: &AllocationId) -> Ticket<'_> {
        Ticket {
            registry: self,
            id: id.clone(),
            done: false,
        }
    }

    /// Whether `conn` created an allocation that is still live (such a
    /// connection is waiting for `allocation_ended` and is never idle-closed).
    pub(crate) fn conn_owns_live(&self, conn: ConnId) -> bool {
        self.lock()
            .entries
            .values()
            .any(|e| e.live && e.conn == Some(conn))
    }

    /// Every live allocation: id, owner uid, the connection told when its
    /// scope empties, the scope (what a successor server takes over).
    pub(crate) fn live_entries(
        &self,
    ) -> Vec<(AllocationId, u32, Option<ConnId>, Option<CgroupScope>)> {
        self.lock()
            .entries
            .iter()
            .filter(|(_, e)| e.live)
            .map(|(id, e)| (id.clone(), e.owner, e.conn, e.scope.clone()))
            .collect()
    }

    /// Live allocations.
    pub(crate) fn live_count(&self) -> usize {
        self.lock().entries.values().filter(|e| e.live).count()
    }
}

impl Ticket<'_> {
    /// The allocation is live (created now or before): `conn` asked for it
    /// (the first asker is the one told when its `scope` empties).
    pub(crate) fn created(mut self, conn: ConnId, scope: Option<CgroupScope>) {
        self.done = true;
        let mut state = self.registry.lock();
        if let Some(entry) = state.entries.get_mut(&self.id) {
            entry.busy = false;
            if !entry.live {
                entry.live = true;
                entry.conn = Some(conn);
                entry.scope = scope;
            }
        }
        drop(state);
        self.registry.changed.notify_all();
    }

    /// Whether the allocation was already live before this operation.
    pub(crate) fn was_live(&self) -> bool {
        self.registry
            .lock()
            .entries
            .get(&self.id)
            .is_some_and(|e| e.live)
    }

    /// The allocation is gone; returns the connection that created it.
    pub(crate) fn ended(mut self) -> Option<ConnId> {
        self.done = true;
        let conn = self.registry.lock().remove(&self.id).and_then(|e| e.conn);
        self.registry.changed.notify_all();
        conn
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // The operation failed: a creation that never went live is forgotten;
        // a live allocation stays as it was.
        let mut state = self.registry.lock();
        let live = match state.entries.get_mut(&self.id) {
            Some(entry) => {
                entry.busy = false;
                entry.live
            }
            None => true,
        };
        if !live {
            state.remove(&self.id);
        }
        drop(state);
        self.registry.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> AllocationId {
        AllocationId::parse(s).unwrap()
    }

    #[test]
    fn owner_caps_and_not_found() {
        let r = Registry::new(3, 2);
        r.begin(&id("a"), 1000, Op::Request)
            .unwrap()
            .created(1, None);
        let (kind, msg) = r.begin(&id("a"), 1001, Op::Request).unwrap_err();
        assert_eq!(kind, ErrorKind::Unauthorized);
        assert!(msg.contains("belongs to another user (uid 1000)"), "{msg}");
        assert_eq!(
            r.begin(&id("a"), 1001, Op::End).unwrap_err().0,
            ErrorKind::Unauthorized
        );
        // Root may; the server may.
        r.begin(&id("a"), 0, Op::Request).unwrap().created(2, None);
        r.begin(&id("b"), 1000, Op::Request)
            .unwrap()
            .created(1, None);
        let (kind, msg) = r.begin(&id("c"), 1000, Op::Request).unwrap_err();
        assert_eq!(kind, ErrorKind::Busy);
        assert!(msg.contains("uid 1000 already owns 2"), "{msg}");
        r.begin(&id("c"), 1001, Op::Request)
            .unwrap()
            .created(3, None);
        let (kind, msg) = r.begin(&id("d"), 1002, Op::Request).unwrap_err();
        assert_eq!(kind, ErrorKind::Busy);
        assert!(msg.contains("already holds 3 live allocations"), "{msg}");
        assert_eq!(
            r.begin(&id("a"), 5, Op::ServerEnd).unwrap().ended(),
            Some(1)
        );
        assert_eq!(
            r.begin(&id("a"), 1000, Op::End).unwrap_err().0,
            ErrorKind::AllocationNotFound
        );
        // A failed creation is forgotten and frees its cap slot.
        drop(r.begin(&id("e"), 1002, Op::Request).unwrap());
        assert_eq!(r.live_count(), 2);
        assert!(r.conn_owns_live(1));
        assert!(!r.conn_owns_live(2));
    }

    #[test]
    fn an_adopted_allocation_keeps_its_owner() {
        let r = Registry::new(8, 8);
        assert!(!r.knows(&id("old")));
        r.adopt(&id("old"), 1000);
        assert!(r.knows(&id("old")));
        // Adopting again (another worker thread racing) changes nothing.
        r.adopt(&id("old"), 1001);
        let (kind, msg) = r.begin(&id("old"), 1001, Op::Request).unwrap_err();
        assert_eq!(kind, ErrorKind::Unauthorized);
        assert!(msg.contains("belongs to another user (uid 1000)"), "{msg}");
        assert_eq!(
            r.begin(&id("old"), 1001, Op::End).unwrap_err().0,
            ErrorKind::Unauthorized
        );
        // Its owner may end it; the per-owner count goes back to zero.
        assert_eq!(r.begin(&id("old"), 1000, Op::End).unwrap().ended(), None);
        assert!(!r.knows(&id("old")));
        assert!(r.lock().per_owner.is_empty());
    }
}
