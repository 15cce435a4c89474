//! nodeinit mount backend: refcounted uenv squashfs mounts that survive a restart.
//!
//! [`SquashfsManager`] implements [`hpc_node::MountManager`] and
//! [`nodeinit_plugin_api::AllocationMounts`] (DESIGN §3 "squashfs"): the first
//! reference to an image attaches it to a read-only, autoclear loop device and
//! mounts it `ro,nosuid,nodev` at `<mount_base>/<stem>` (images directly in the
//! first image dir) or `<mount_base>/<stem>-<8 hex digits of the directory's
//! SHA-256>` (all others; see [`image::MountName::for_image`]); later references
//! only count; the last release starts a hold timer whose expiry detaches the
//! mount (the loop device goes with it). Which allocation holds which image is
//! kept in a state file so that [`hpc_node::MountManager::reconstruct_state`]
//! can recount after a restart (WI6).
//!
//! Built as `libnodeinit_squashfs.so` for nodeinit and as an rlib for tests
//! and benchmarks. Modules, one concern each:
//! [`options`] (configuration), [`beneath`] (directory descriptors and
//! lookups that follow no link), [`escape`] (peer text in logs and errors),
//! [`image`] (finding and
//! vetting images), [`superblock`], [`loop_device`] (ioctls), [`mounting`],
//! [`mountinfo`], [`state_file`], [`table`] (counting rules), [`manager`],
//! [`plugin`] (the constructor `export_plugin!` calls).

pub mod beneath;
pub use nodeinit_plugin_api::escape;
pub mod image;
pub mod loop_device;
pub mod manager;
pub mod mountinfo;
pub mod mounting;
pub mod options;
pub mod plugin;
pub mod state_file;
pub mod superblock;
pub mod table;

pub use loop_device::AttachMethod;
pub use manager::SquashfsManager;
pub use nodeinit_contracts::AllocationId;
pub use options::{ManagerConfig, OptionError, SquashfsOptions};
pub use plugin::PluginInitError;

nodeinit_plugin_api::export_plugin! {
    name: "squashfs",
    version: env!("CARGO_PKG_VERSION"),
    mount: SquashfsManager::from_plugin,
}
