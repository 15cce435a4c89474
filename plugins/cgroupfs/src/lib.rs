//! # nodeinit-cgroupfs
//!
//! The cgroup v2 filesystem backend of nodeinit: [`CgroupfsManager`]
//! implements [`hpc_node::CgroupManager`] directly on cgroupfs, and is
//! exported as `libnodeinit_cgroupfs.so` for the host (the `rlib` serves tests
//! and benchmarks).
//!
//! Modules, one concern each:
//! - [`options`] — the plugin's options and their defaults;
//! - [`root`] — the cgroup2 root check (and the hybrid-host diagnosis);
//! - [`names`], [`cgroup_path`] — validated names and paths, RI1 owners;
//! - [`controller`], [`hierarchy`] — controllers and the slice layout;
//! - [`limits`], [`io_device`] — `memory.max`, `cpu.weight`, `io.max`;
//! - [`scope`], [`kill`], [`events`], [`exit_watch`] — scope lifecycle, killing, waiting;
//! - [`metrics`] — `read_metrics`;
//! - [`control_file`] — single-write I/O on interface files.
//!
//! This crate must never mount cgroupfs or move processes between cgroups.

pub mod cgroup_path;
pub mod control_file;
pub mod controller;
pub mod events;
pub mod exit_watch;
pub mod hierarchy;
pub mod io_device;
pub mod kill;
pub mod limits;
pub mod manager;
pub mod metrics;
pub mod names;
pub mod options;
pub mod root;
pub mod scope;

pub use hierarchy::HierarchyReport;
pub use manager::CgroupfsManager;
pub use options::{CgroupfsOptions, OwnerPolicy, SetupError};

nodeinit_plugin_api::export_plugin! {
    name: "cgroupfs",
    version: env!("CARGO_PKG_VERSION"),
    cgroup: CgroupfsManager::from_plugin,
}
