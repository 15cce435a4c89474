//! Who may talk to the handoff server: the peer's credentials as the kernel
//! reports them (`SO_PEERCRED`, taken at `connect` time), against a policy.
//!
//! Owns the decision only. It must never look at message content: an
//! unauthorised peer is refused whatever it sends.

use nix::sys::socket::UnixCredentials;
use serde::{Deserialize, Serialize};

/// Peers allowed besides root (uid 0, always allowed).
///
/// The gid check uses the peer's primary (effective) gid as `SO_PEERCRED`
/// reports it; supplementary groups are not consulted (reading them from
/// `/proc/<pid>/status` would race with the peer exiting).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessPolicy {
    /// Allowed uids.
    #[serde(default)]
    pub uids: Vec<u32>,
    /// Allowed gids.
    #[serde(default)]
    pub gids: Vec<u32>,
}

/// A peer's identity, from `SO_PEERCRED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Process id at connect time.
    pub pid: i32,
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
}

impl From<UnixCredentials> for Peer {
    fn from(c: UnixCredentials) -> Self {
        Self {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
        }
    }
}

impl AccessPolicy {
    /// Root only.
    pub fn root_only() -> Self {
        Self::default()
    }

    /// Whether `peer` may use the server.
    pub fn allows(&self, peer: &Peer) -> bool {
        peer.uid == 0 || self.uids.contains(&peer.uid) || self.gids.contains(&peer.gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_always_others_by_uid_or_primary_gid() {
        let peer = |uid, gid| Peer { pid: 1, uid, gid };
        let policy = AccessPolicy {
            uids: vec![1000],
            gids: vec![300],
        };
        assert!(AccessPolicy::root_only().allows(&peer(0, 0)));
        assert!(!AccessPolicy::root_only().allows(&peer(1000, 1000)));
        assert!(policy.allows(&peer(1000, 5)));
        assert!(policy.allows(&peer(7, 300)));
        assert!(!policy.allows(&peer(7, 5)));
    }
}
