//! # nodeinit-sys
//!
//! The one copy of each small system helper nodeinit's crates share, so that
//! each has one rule: [`atomic_write`] (the temp-file-and-rename write every
//! state and report file goes through), [`pidfd`] (process descriptors),
//! [`deadline`] (a deadline as a poll timeout, and a condvar wait bounded by
//! one) and [`mountinfo`] (the mount table, through `procfs`).
//!
//! Wraps `rustix` and `procfs`; hand-writes no syscall. Depends on no other
//! nodeinit crate and holds no state.

pub mod atomic_write;
pub mod deadline;
pub mod mountinfo;
pub mod pidfd;

pub use atomic_write::{
    unique_temp_name, write_atomically, write_atomically_at, write_atomically_with_temp,
};
pub use deadline::Deadline;
