//! The plugin entry point: building a [`SquashfsManager`] from the host's options.
//!
//! Owns the constructor the export macro calls. It must never do more than
//! validate options and start the manager (no mounting: `nodeinit check`
//! loads plugins without touching the system).

use nodeinit_plugin_api::HostServices;

use crate::manager::SquashfsManager;
use crate::options::{ManagerConfig, OptionError, SquashfsOptions};

/// Why the backend could not be constructed.
#[derive(Debug, thiserror::Error)]
pub enum PluginInitError {
    /// An option is invalid.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// The manager could not start.
    #[error("starting the squashfs mount manager failed: {0}")]
    Start(#[from] hpc_node::MountError),
}

impl SquashfsManager {
    /// Constructor used by `export_plugin!`.
    ///
    /// # Errors
    ///
    /// [`PluginInitError`] naming the bad option, or why the manager could not start.
    pub fn from_plugin(
        _host: &HostServices,
        options: SquashfsOptions,
    ) -> Result<Self, PluginInitError> {
        let config = ManagerConfig::try_from(options)?;
        Ok(Self::new(config)?)
    }
}
