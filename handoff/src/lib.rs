//! nodeinit namespace handoff, protocol v1.
//!
//! This crate owns the wire protocol spoken on `hpc_node::namespace::HANDOFF_SOCKET_PATH`
//! (see `PROTOCOL.md`), the server pieces the host uses, and a consumer client
//! implementing [`hpc_node::NamespaceConsumer`]. It must never depend on
//! `abi_stable`: node agents such as lattice embed it.

pub mod provider;

pub use provider::NamespaceFdProvider;
