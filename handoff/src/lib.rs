//! nodeinit namespace handoff, protocol v1.
//!
//! This crate owns the wire protocol spoken on `hpc_node::namespace::HANDOFF_SOCKET_PATH`
//! (see `PROTOCOL.md`), the server pieces the host uses ([`server::HandoffServer`]),
//! a consumer client implementing [`hpc_node::NamespaceConsumer`]
//! ([`client::HandoffClient`]). Namespace creation (holders, mount-namespace
//! setup) lives in `nodeinit_namespaces`, re-exported here as [`holder`] and
//! [`mount_namespace`] for the paths that used them.
//! It must never depend on `abi_stable`: node agents such as lattice embed it.

pub mod allocation_id;
pub mod client;
pub mod escape;
pub use nodeinit_namespaces::{holder, mount_namespace};
pub mod protocol;
pub mod provider;
pub mod server;
pub mod transport;

pub use allocation_id::{AllocationId, InvalidAllocationId};
pub use client::{GrantSource, GrantedNamespaces, HandoffClient};
pub use provider::NamespaceFdProvider;
pub use server::limits::raise_nofile_limit;
pub use server::{AccessPolicy, HandoffListener, HandoffServer, ReadyGate, ServerConfig};
