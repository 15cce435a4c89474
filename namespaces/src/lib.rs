//! # nodeinit-namespaces
//!
//! Creating the namespaces an allocation lives in: the holder process that
//! keeps a PID/net/mount namespace set alive ([`holder`]), the setup of a
//! holder's mount namespace — propagation, the uenv image bound in — and the
//! new-mount-API syscalls it needs ([`mount_namespace`], run on the setup
//! threads that enter allocations' mount namespaces), and one
//! [`allocation::Allocation`] owning a holder and its uenv reference with
//! their release order.
//!
//! Used by the unshare backend and by the handoff client's local fallback
//! alike, so both create namespaces the same way. Knows nothing of the wire
//! protocol, sockets or plugins; never serves anyone.

pub mod allocation;
pub mod holder;
mod mount_api;
pub mod mount_namespace;
mod setup_thread;
