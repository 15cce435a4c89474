//! Handing a server's open connections to its successor (a plugin reload),
//! so that a reload loses nothing: the old server stops accepting and
//! reading, lets the provider calls in flight finish and sends their
//! replies, then gives up every open connection's socket with its state —
//! the peer's credentials as admitted, and the live allocations with the
//! connection told when their cgroup scope empties (WI5). The successor
//! adopts them. A request a client wrote meanwhile was never read: it waits
//! in the socket's kernel buffer and the successor answers it.
//!
//! Owns the [`Handover`] (sockets plus state), its split into records and
//! descriptors for a trip over `SCM_RIGHTS` (the host's keeper carries it
//! from the old worker to the new), and the two server calls. The loop's
//! own steps are in `event_loop` (`hand_over`, `adopt`). It never decides
//! when to reload.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use nodeinit_handoff::server::handover::Handover;
//! use nodeinit_handoff::{HandoffListener, HandoffServer, NamespaceFdProvider, ReadyGate, ServerConfig};
//!
//! fn reload(
//!     old: HandoffServer,
//!     backend: Arc<dyn NamespaceFdProvider>,
//!     listener: HandoffListener,
//! ) -> std::io::Result<HandoffServer> {
//!     let handover = old.hand_over();
//!     // Across processes: `into_parts`, send the record and the FDs, `from_parts`.
//!     let (record, fds) = handover.into_parts();
//!     let handover = Handover::from_parts(record, fds).map_err(std::io::Error::other)?;
//!     let new = HandoffServer::serve(backend, listener, ServerConfig::default(), ReadyGate::opened())?;
//!     new.adopt(handover);
//!     Ok(new)
//! }
//! ```

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;

use serde::{Deserialize, Serialize};

use super::access::Peer;
use super::registry::ConnId;
use super::HandoffServer;
use crate::allocation_id::AllocationId;
use crate::protocol::CgroupScope;

/// Open connections and live allocations, leaving one server for the next.
/// Dropping it closes the connections.
#[derive(Debug, Default)]
pub struct Handover {
    pub(super) connections: Vec<(OwnedFd, Peer)>,
    pub(super) allocations: Vec<HandedAllocation>,
}

/// A live allocation as the successor's registry takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HandedAllocation {
    pub(super) id: AllocationId,
    pub(super) owner: u32,
    /// Index into [`Handover::connections`] of the connection told when its
    /// scope empties, if it is still open.
    pub(super) connection: Option<usize>,
    pub(super) scope: Option<CgroupScope>,
    /// Whether the old server saw the scope populated (it ends when it empties).
    pub(super) scope_seen_populated: bool,
}

/// The state of a [`Handover`] without its sockets, to serialise; the
/// sockets travel alongside, in the order of `connections`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverRecord {
    /// One per socket, in order: the peer as the old server admitted it.
    pub connections: Vec<PeerRecord>,
    /// The live allocations.
    pub allocations: Vec<AllocationRecord>,
}

/// A connected peer's credentials (`SO_PEERCRED` at connect time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// Process id at connect time.
    pub pid: i32,
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// Supplementary groups, when the policy needed them.
    pub groups: Vec<u32>,
}

/// A live allocation in a [`HandoverRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationRecord {
    /// Its id.
    pub allocation_id: String,
    /// The uid that created it (only it and root may use it).
    pub owner_uid: u32,
    /// Index of the connection told `allocation_ended` when its scope empties.
    pub connection: Option<usize>,
    /// Its cgroup scope (WI5), relative to the server's cgroup root.
    pub cgroup_scope: Option<String>,
    /// Whether the scope was seen populated: it ends when it empties, even
    /// if that happened between the two servers.
    #[serde(default)]
    pub scope_seen_populated: bool,
}

/// A record and its sockets that do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoverError {
    /// Not one socket per connection record.
    #[error("handover names {records} connections but carries {fds} sockets; nothing adopted")]
    SocketCount {
        /// Connection records.
        records: usize,
        /// Sockets that came with them.
        fds: usize,
    },
    /// A field that does not validate.
    #[error("handover record: allocation {allocation_id:?}: {reason}")]
    Invalid {
        /// The allocation.
        allocation_id: String,
        /// What is wrong.
        reason: String,
    },
}

impl Handover {
    /// Gather the loop's connections and the registry's live allocations.
    pub(super) fn collect(
        connections: Vec<(ConnId, OwnedFd, Peer)>,
        live: Vec<(AllocationId, u32, Option<ConnId>, Option<CgroupScope>)>,
        seen_populated: impl Fn(&AllocationId) -> bool,
    ) -> Self {
        let order: Vec<ConnId> = connections.iter().map(|(id, _, _)| *id).collect();
        let allocations = live
            .into_iter()
            .map(|(id, owner, conn, scope)| HandedAllocation {
                scope_seen_populated: seen_populated(&id),
                id,
                owner,
                connection: conn.and_then(|c| order.iter().position(|o| *o == c)),
                scope,
            })
            .collect();
        Self {
            connections: connections
                .into_iter()
                .map(|(_, fd, peer)| (fd, peer))
                .collect(),
            allocations,
        }
    }

    /// Open connections carried.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Live allocations carried.
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// Split into handovers of at most `max_connections` sockets each (one
    /// `SCM_RIGHTS` message carries at most 253), each allocation with the
    /// connection it belongs to; allocations of no connection go with the first.
    pub fn split(self, max_connections: usize) -> Vec<Self> {
        let max = max_connections.max(1);
        let mut parts: Vec<Self> = Vec::new();
        let mut place = Vec::with_capacity(self.connections.len());
        for (i, connection) in self.connections.into_iter().enumerate() {
            if i % max == 0 {
                parts.push(Self::default());
            }
            let part = parts.len() - 1;
            place.push((part, parts[part].connections.len()));
            parts[part].connections.push(connection);
        }
        if parts.is_empty() {
            parts.push(Self::default());
        }
        for mut allocation in self.allocations {
            let at = allocation.connection.and_then(|c| place.get(c).copied());
            allocation.connection = at.map(|(_, index)| index);
            parts[at.map_or(0, |(part, _)| part)]
                .allocations
                .push(allocation);
        }
        parts
    }

    /// The state to serialise, and the sockets (in record order).
    pub fn into_parts(self) -> (HandoverRecord, Vec<OwnedFd>) {
        let mut fds = Vec::with_capacity(self.connections.len());
        let mut connections = Vec::with_capacity(self.connections.len());
        for (fd, peer) in self.connections {
            fds.push(fd);
            connections.push(PeerRecord {
                pid: peer.pid,
                uid: peer.uid,
                gid: peer.gid,
                groups: peer.groups,
            });
        }
        let allocations = self
            .allocations
            .into_iter()
            .map(|a| AllocationRecord {
                allocation_id: a.id.as_str().to_owned(),
                owner_uid: a.owner,
                connection: a.connection,
                cgroup_scope: a.scope.map(|s| s.as_str().to_owned()),
                scope_seen_populated: a.scope_seen_populated,
            })
            .collect();
        (
            HandoverRecord {
                connections,
                allocations,
            },
            fds,
        )
    }

    /// Put a record and its sockets back together.
    ///
    /// # Errors
    ///
    /// [`HandoverError`] when the socket count differs from the records or
    /// an allocation id, scope or connection index does not validate (the
    /// sockets are closed then).
    pub fn from_parts(record: HandoverRecord, fds: Vec<OwnedFd>) -> Result<Self, HandoverError> {
        if record.connections.len() != fds.len() {
            return Err(HandoverError::SocketCount {
                records: record.connections.len(),
                fds: fds.len(),
            });
        }
        let count = fds.len();
        let mut allocations = Vec::with_capacity(record.allocations.len());
        for a in record.allocations {
            let invalid = |reason: String| HandoverError::Invalid {
                allocation_id: a.allocation_id.clone(),
                reason,
            };
            let id = AllocationId::parse(&a.allocation_id).map_err(|e| invalid(e.to_string()))?;
            let scope = match &a.cgroup_scope {
                Some(s) => Some(CgroupScope::parse(s).map_err(|e| invalid(e.to_string()))?),
                None => None,
            };
            if a.connection.is_some_and(|c| c >= count) {
                return Err(invalid(format!(
                    "connection index {:?} beyond the {count} sockets",
                    a.connection
                )));
            }
            allocations.push(HandedAllocation {
                id,
                owner: a.owner_uid,
                connection: a.connection,
                scope,
                scope_seen_populated: a.scope_seen_populated,
            });
        }
        let connections = fds
            .into_iter()
            .zip(record.connections)
            .map(|(fd, p)| {
                (
                    fd,
                    Peer {
                        pid: p.pid,
                        uid: p.uid,
                        gid: p.gid,
                        groups: p.groups,
                    },
                )
            })
            .collect();
        Ok(Self {
            connections,
            allocations,
        })
    }
}

impl HandoffServer {
    /// Hand over to a successor on the same (inherited) listener: stop
    /// accepting (new clients wait in the listen backlog) and reading, let
    /// the provider calls in flight finish and send their replies, then
    /// return every open connection with its state instead of closing it.
    /// Requests queued for readiness are answered `not_ready` (a serving
    /// node's gate is open, so there are none after boot). Allocations stay
    /// live (they belong to the provider).
    pub fn hand_over(mut self) -> Handover {
        self.shared.handing_over.store(true, Ordering::Release);
        self.shared.draining.store(true, Ordering::Release);
        drop(self.stop_trigger.take());
        let handover = match self.event_loop.take().map(std::thread::JoinHandle::join) {
            Some(Ok(Some(handover))) => handover,
            Some(Ok(None)) | None => Handover::default(),
            Some(Err(_)) => {
                tracing::error!("handoff event loop panicked while handing over");
                Handover::default()
            }
        };
        tracing::info!(
            connections = handover.connection_count(),
            allocations = handover.allocation_count(),
            "handoff server handed over"
        );
        handover
    }

    /// Take over what a predecessor handed over: its connections are served
    /// from now on (what their clients wrote meanwhile is read now), its live
    /// allocations keep their owners and their WI5 scope watches. A
    /// connection whose peer the access policy no longer allows gets its
    /// `unauthorized` error and is closed.
    pub fn adopt(&self, handover: Handover) {
        self.shared
            .adoptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(handover);
        let _ = self.wake.write(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32) -> Peer {
        Peer {
            pid: 7,
            uid,
            gid: uid,
            groups: vec![4],
        }
    }

    fn socket() -> OwnedFd {
        nix::unistd::pipe().unwrap().0
    }

    fn allocation(id: &str, connection: Option<usize>) -> HandedAllocation {
        HandedAllocation {
            id: AllocationId::parse(id).unwrap(),
            owner: 990,
            connection,
            scope: Some(CgroupScope::parse("workload.slice/a.scope").unwrap()),
            scope_seen_populated: true,
        }
    }

    #[test]
    fn a_record_and_its_sockets_round_trip() {
        let handover = Handover {
            connections: vec![(socket(), peer(990)), (socket(), peer(0))],
            allocations: vec![allocation("a-1", Some(1)), allocation("a-2", None)],
        };
        let (record, fds) = handover.into_parts();
        let json = serde_json::to_string(&record).unwrap();
        let record: HandoverRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(record.connections[0].uid, 990);
        assert_eq!(record.connections[0].groups, vec![4]);
        let back = Handover::from_parts(record, fds).unwrap();
        assert_eq!(back.connections[1].1, peer(0));
        assert_eq!(
            back.allocations,
            vec![allocation("a-1", Some(1)), allocation("a-2", None)]
        );
    }

    #[test]
    fn a_record_that_does_not_fit_its_sockets_is_refused_by_name() {
        let (record, _) = Handover {
            connections: vec![(socket(), peer(1))],
            allocations: vec![],
        }
        .into_parts();
        assert_eq!(
            Handover::from_parts(record.clone(), vec![])
                .unwrap_err()
                .to_string(),
            "handover names 1 connections but carries 0 sockets; nothing adopted"
        );
        let mut bad = record;
        bad.allocations.push(AllocationRecord {
            allocation_id: "x".into(),
            owner_uid: 1,
            connection: Some(5),
            cgroup_scope: None,
            scope_seen_populated: false,
        });
        let err = Handover::from_parts(bad, vec![socket()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "handover record: allocation \"x\": connection index Some(5) beyond the 1 sockets"
        );
    }

    #[test]
    fn split_keeps_each_allocation_with_its_connection() {
        let handover = Handover {
            connections: (0..5).map(|i| (socket(), peer(i))).collect(),
            allocations: vec![allocation("on-4", Some(4)), allocation("none", None)],
        };
        let parts = handover.split(2);
        assert_eq!(
            parts
                .iter()
                .map(Handover::connection_count)
                .collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
        assert_eq!(parts[0].allocations, vec![allocation("none", None)]);
        assert_eq!(parts[2].allocations, vec![allocation("on-4", Some(0))]);
        assert_eq!(parts[2].connections[0].1.uid, 4);
    }
}
