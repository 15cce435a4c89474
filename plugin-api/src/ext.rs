//! Provider-side operations a boot needs that `hpc_node` leaves out, from
//! [`nodeinit_contracts`] (re-exported so plugins keep
//! `use nodeinit_plugin_api::{AllocationMounts, ReadinessProvider}`).

pub use nodeinit_contracts::{AllocationMounts, NamespaceFdProvider, ReadinessProvider};
