//! The node configuration: `/etc/nodeinit/nodeinit.toml` (DESIGN.md §5).
//!
//! This module owns the schema, its defaults (including the built-in config
//! used when no file exists), reading the kernel command line words
//! `nodeinit.config=` and `nodeinit.node_id=`, the node id fallback to
//! `/etc/hostname`, and error messages that name file, line and key.
//!
//! It must never change anything on the machine and never load a plugin:
//! `nodeinit check` relies on loading a config being side-effect free.

mod cmdline;
mod defaults;
mod error;
mod handoff_values;
mod load;
mod location;
mod node_id;
mod option_location;
pub mod reference;
mod schema;
mod values;

pub use cmdline::KernelCmdline;
pub use defaults::{
    BUILTIN_CONFIG, DEFAULT_CONFIG_PATH, DEFAULT_GRACE_SECS, DEFAULT_PHASE_TIMEOUT_SECS,
    DEFAULT_PLUGIN_DIR,
};
pub use error::ConfigError;
pub use handoff_values::{EnvName, StopSignal, Template, NODE_ID_PLACEHOLDER};
pub use load::{load, load_from_bytes, load_from_str, ConfigOrigin, LoadedConfig};
pub use location::SourceLocation;
pub use node_id::{resolve_node_id, NodeId, NodeIdSource, ResolvedNodeId};
pub use nodeinit_plugin_api::BackendKind;
pub use option_location::{locate_option, option_error};
pub use schema::{
    AgentKind, BootSection, ConfigSource, HandoffMode, HandoffSection, HandoffSocketSection,
    HostSection, NodeConfig, OnFailure, PluginSpec, PluginsSection, WorkerThreads,
};
pub use values::{AbsolutePath, ImageRef, PluginPath, Sha256Pin};

#[cfg(test)]
mod tests;
