//! The validated allocation id, from [`nodeinit_contracts`] (re-exported so
//! `nodeinit_handoff::AllocationId` keeps working).

pub use nodeinit_contracts::allocation_id::*;
