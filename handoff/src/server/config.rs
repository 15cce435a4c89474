//! [`ServerConfig`]: how the handoff server listens, whom it serves, and
//! the bounds that keep one peer from exhausting it.
//!
//! Owns the settings and their defaults only. Every field has a default,
//! so `ServerConfig { socket_path, ..ServerConfig::default() }` keeps working
//! as fields are added.

use std::path::PathBuf;
use std::time::Duration;

use super::AccessPolicy;

/// Most worker threads the server runs for provider calls: with the event
/// loop, the two holder spawners and one short-lived mount-setup thread per
/// running request, the server stays within 16 threads.
pub const MAX_WORKER_THREADS: usize = 6;

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
    /// Authorised connections served at once; further ones get `busy` and
    /// are closed (default 256). Unauthorised peers never take a slot.
    pub max_connections: usize,
    /// Requests that may wait for readiness at once; further ones get `busy` (default 64).
    pub max_queued_requests: usize,
    /// How long a request waits for readiness before `not_ready` (default 120 s).
    pub ready_wait: Duration,
    /// Live allocations in total; a request for a new one beyond gets `busy` (default 4096).
    pub max_allocations: usize,
    /// Live allocations one peer uid may own; beyond, `busy` (default 1024).
    pub max_allocations_per_peer: usize,
    /// A connection that sends nothing for this long and owns no live
    /// allocation it created is closed (default 60 s).
    pub idle_timeout: Duration,
    /// Threads that run provider calls (namespace creation and release),
    /// 1..=[`MAX_WORKER_THREADS`] (default 4). The server's own threads are
    /// these plus one event loop, whatever the number of connections.
    pub worker_threads: usize,
    /// The cgroup2 root a request's `cgroup_scope` is relative to (WI5);
    /// `None` disables scope watching (default `/sys/fs/cgroup`).
    pub cgroup_root: Option<PathBuf>,
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
            max_allocations: 4096,
            max_allocations_per_peer: 1024,
            idle_timeout: Duration::from_secs(60),
            worker_threads: 4,
            cgroup_root: Some(PathBuf::from("/sys/fs/cgroup")),
        }
    }
}
