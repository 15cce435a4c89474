//! Who may talk to the handoff server: the peer's credentials as the kernel
//! reports them for the connection, against a policy.
//!
//! Owns reading the credentials and the decision. It must never look at
//! message content: an unauthorised peer is refused whatever it sends,
//! right after `accept`, before it takes a connection slot.
//!
//! Groups: the uid and primary gid come from `SO_PEERCRED`, the
//! supplementary groups from `SO_PEERGROUPS` (Linux 4.13+). Both are the
//! credentials the peer had when it called `connect`, captured by the
//! kernel, so there is no time-of-check/time-of-use gap: a peer cannot pass
//! the check with groups it no longer has or borrow another process's.
//! Kernels without `SO_PEERGROUPS` fall back to the `Groups:` line of
//! `/proc/<pid>/status` — the peer's *current* groups — read while a pidfd
//! opened first pins the process, and accepted only if that process is
//! still alive after the read (otherwise its pid could have been reused by
//! another process, whose groups would be read). A peer that changes its
//! groups between `connect` and the read is judged by the new ones there.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials, UnixCredentials};
use serde::{Deserialize, Serialize};

/// Peers allowed besides root (uid 0, always allowed).
///
/// A peer is allowed when its uid is in `uids`, or its primary gid or one
/// of its supplementary groups is in `gids` (see the module docs for how
/// the groups are read).
///
/// ```
/// use nodeinit_handoff::server::access::{AccessPolicy, Peer};
/// let policy = AccessPolicy { uids: vec![990], gids: vec![300] };
/// let peer = Peer { pid: 7, uid: 1000, gid: 1000, groups: vec![300] };
/// assert!(policy.allows(&peer));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessPolicy {
    /// Allowed uids.
    #[serde(default)]
    pub uids: Vec<u32>,
    /// Allowed gids (primary or supplementary).
    #[serde(default)]
    pub gids: Vec<u32>,
}

/// A peer's identity at connect time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Process id at connect time.
    pub pid: i32,
    /// Effective uid.
    pub uid: u32,
    /// Effective (primary) gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl From<UnixCredentials> for Peer {
    fn from(c: UnixCredentials) -> Self {
        Self {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
            groups: Vec::new(),
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
        peer.uid == 0
            || self.uids.contains(&peer.uid)
            || self.gids.contains(&peer.gid)
            || peer.groups.iter().any(|g| self.gids.contains(g))
    }

    /// Whether the policy needs the peer's supplementary groups to decide.
    fn needs_groups(&self) -> bool {
        !self.gids.is_empty()
    }
}

/// The credentials of the peer of `conn`; supplementary groups only when
/// `policy` has gids to match them against.
///
/// # Errors
///
/// `SO_PEERCRED` failing; a failed group lookup only leaves `groups` empty.
pub(crate) fn peer_of(conn: BorrowedFd<'_>, policy: &AccessPolicy) -> io::Result<Peer> {
    let mut peer = Peer::from(getsockopt(&conn, PeerCredentials)?);
    if policy.needs_groups() && peer.uid != 0 && !policy.uids.contains(&peer.uid) {
        peer.groups = match peer_groups(conn) {
            Ok(groups) => groups,
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
                proc_groups(peer.pid).unwrap_or_else(|e| {
                    tracing::warn!(peer.pid = peer.pid, error = %e, "cannot read the peer's supplementary groups from /proc; only its primary gid is checked");
                    Vec::new()
                })
            }
            Err(e) => {
                tracing::warn!(peer.pid = peer.pid, error = %e, "SO_PEERGROUPS failed; only the peer's primary gid is checked");
                Vec::new()
            }
        };
    }
    Ok(peer)
}

/// `SO_PEERGROUPS` from `asm-generic/socket.h` (x86_64, aarch64, riscv,
/// ppc64; not mips/sparc), which the `libc` crate does not export for glibc.
const SO_PEERGROUPS: libc::c_int = 59;

/// `getsockopt(SO_PEERGROUPS)`: the peer's supplementary groups at connect time.
fn peer_groups(conn: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * std::mem::size_of::<libc::gid_t>())
            .map_err(|_| io::Error::other("group buffer too large"))?;
        // SAFETY: `groups` is a live buffer of `len` bytes; the kernel writes
        // at most `len` bytes and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                conn.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = usize::try_from(len).unwrap_or(0) / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count.min(groups.len()));
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) && count > groups.len() && count <= 65536 {
            groups.resize(count, 0);
            continue;
        }
        return Err(err);
    }
}

/// The `Groups:` of `/proc/<pid>/status`, read while a pidfd pins `pid`
/// (hand-written parser: one line of decimal numbers).
fn proc_groups(pid: i32) -> io::Result<Vec<u32>> {
    let pidfd = nodeinit_sys::pidfd::open(pid)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    // A pidfd becomes readable when its process exits: then the status may
    // have been another process's (pid reuse) and is not trusted.
    if nodeinit_sys::pidfd::has_exited(&pidfd)? {
        return Err(io::Error::other(format!(
            "peer process {pid} exited while its groups were read"
        )));
    }
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .ok_or_else(|| io::Error::other(format!("/proc/{pid}/status has no Groups: line")))?;
    line.split_whitespace()
        .map(|g| {
            g.parse::<u32>()
                .map_err(|e| io::Error::other(format!("/proc/{pid}/status Groups: {g:?}: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_always_others_by_uid_primary_or_supplementary_gid() {
        let peer = |uid, gid, groups: &[u32]| Peer {
            pid: 1,
            uid,
            gid,
            groups: groups.to_vec(),
        };
        let policy = AccessPolicy {
            uids: vec![1000],
            gids: vec![300],
        };
        assert!(AccessPolicy::root_only().allows(&peer(0, 0, &[])));
        assert!(!AccessPolicy::root_only().allows(&peer(1000, 1000, &[])));
        assert!(policy.allows(&peer(1000, 5, &[])));
        assert!(policy.allows(&peer(7, 300, &[])));
        assert!(policy.allows(&peer(7, 5, &[4, 300])));
        assert!(!policy.allows(&peer(7, 5, &[4, 301])));
    }

    #[test]
    fn own_groups_from_proc_match_getgroups() {
        let mut own: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        own.sort_unstable();
        let mut read = proc_groups(std::process::id() as i32).unwrap();
        read.sort_unstable();
        assert_eq!(read, own);
    }
}
