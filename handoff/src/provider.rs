//! What a namespace backend must offer beyond `hpc_node::NamespaceProvider`
//! (the namespace FDs, allocation owners): the trait lives in
//! [`nodeinit_contracts`], re-exported here so `nodeinit_handoff::NamespaceFdProvider`
//! keeps working.

pub use nodeinit_contracts::NamespaceFdProvider;
