//! The host's side of [`HostServices`]: building it for one plugin, and the
//! [`HostApi`] implementation behind it (the plugin's log records enter the
//! host's `tracing` here; the mount backend is offered through
//! [`crate::bridge::shared_mounts`]).
//!
//! Never lets a panic unwind back into the plugin.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{ROption, RStr};

use crate::abi::{module_token, HostApi, HostApi_TO, HostServices, LogLevel, MountBox};
use crate::bridge::shared_mounts;
use crate::ext::AllocationMounts;

impl HostServices {
    /// Host side: services for plugin `plugin`, offering `mounts` (the loaded
    /// mount backend) to namespace backends.
    ///
    /// ```
    /// use nodeinit_plugin_api::{HostServices, LogLevel};
    ///
    /// let host = HostServices::new("cgroupfs", None);
    /// assert!(host.mounts().is_none());
    /// host.log(LogLevel::Info, "doc", "hello", "");
    /// ```
    pub fn new(plugin: &str, mounts: Option<Arc<dyn AllocationMounts>>) -> Self {
        Self::from_api(HostApi_TO::from_value(
            HostSide {
                plugin: plugin.to_owned(),
                mounts,
            },
            TD_Opaque,
        ))
    }
}

/// The host's implementation of [`HostApi`].
struct HostSide {
    plugin: String,
    mounts: Option<Arc<dyn AllocationMounts>>,
}

impl HostApi for HostSide {
    fn log(&self, level: u8, target: RStr<'_>, message: RStr<'_>, fields: RStr<'_>) {
        // A panic must not unwind into the plugin (that would abort PID 1).
        let _ = catch_unwind(AssertUnwindSafe(|| {
            emit_plugin_record(
                &self.plugin,
                LogLevel::from_code(level),
                target.as_str(),
                message.as_str(),
                fields.as_str(),
            );
        }));
    }

    fn max_log_level(&self) -> u8 {
        match tracing::level_filters::LevelFilter::current().into_level() {
            Some(level) => LogLevel::from_tracing(level) as u8,
            None => 0,
        }
    }

    fn module_token(&self) -> usize {
        module_token()
    }

    fn mount_backend(&self) -> ROption<MountBox> {
        match &self.mounts {
            Some(m) => ROption::RSome(shared_mounts::offer(m)),
            None => ROption::RNone,
        }
    }
}

fn emit_plugin_record(plugin: &str, level: LogLevel, target: &str, message: &str, fields: &str) {
    macro_rules! emit {
        ($lvl:expr) => {
            tracing::event!(target: "nodeinit::plugin", $lvl, plugin, plugin_target = target, fields, "{message}")
        };
    }
    match level {
        LogLevel::Error => emit!(tracing::Level::ERROR),
        LogLevel::Warn => emit!(tracing::Level::WARN),
        LogLevel::Info => emit!(tracing::Level::INFO),
        LogLevel::Debug => emit!(tracing::Level::DEBUG),
        LogLevel::Trace => emit!(tracing::Level::TRACE),
    }
}
