//! [`HostServices`]: the object the host hands each plugin constructor — a
//! log sink and, for namespace backends, the host's mount backend — as it
//! crosses the boundary.
//!
//! Owns the ABI shape and the raw accessors both sides share. The host builds
//! it ([`crate::host`]); a plugin reads it through the accessors here,
//! [`HostServices::mounts`] ([`crate::plugin`]) and the log bridge. Never
//! blocks, never panics across the boundary.

use abi_stable::StableAbi;

use super::HostApi_TO;

/// Log levels as they cross (`tracing` levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum LogLevel {
    /// `ERROR`.
    Error = 1,
    /// `WARN`.
    Warn = 2,
    /// `INFO`.
    Info = 3,
    /// `DEBUG`.
    Debug = 4,
    /// `TRACE`.
    Trace = 5,
}

impl LogLevel {
    /// From the wire code; unknown codes are treated as `INFO`.
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Self::Error,
            2 => Self::Warn,
            4 => Self::Debug,
            5 => Self::Trace,
            _ => Self::Info,
        }
    }

    /// From a `tracing` level.
    pub fn from_tracing(level: tracing::Level) -> Self {
        match level {
            tracing::Level::ERROR => Self::Error,
            tracing::Level::WARN => Self::Warn,
            tracing::Level::INFO => Self::Info,
            tracing::Level::DEBUG => Self::Debug,
            tracing::Level::TRACE => Self::Trace,
        }
    }
}

/// Services the host offers a plugin constructor.
///
/// A plugin author only meets it as the first argument of a constructor:
///
/// ```
/// use std::sync::Arc;
/// use nodeinit_plugin_api::{AllocationMounts, HostServices};
///
/// struct MyNamespaces { mounts: Option<Arc<dyn AllocationMounts>> }
/// impl MyNamespaces {
///     fn from_plugin(host: &HostServices, _opts: serde_json::Value) -> Result<Self, String> {
///         Ok(Self { mounts: host.mounts() })
///     }
/// }
/// let host = HostServices::new("demo", None);
/// assert!(MyNamespaces::from_plugin(&host, serde_json::Value::Null).unwrap().mounts.is_none());
/// ```
#[repr(C)]
#[derive(StableAbi)]
pub struct HostServices {
    api: HostApi_TO<'static, abi_stable::std_types::RBox<()>>,
}

impl HostServices {
    /// Wraps the host's implementation of [`super::HostApi`].
    pub(crate) fn from_api(api: HostApi_TO<'static, abi_stable::std_types::RBox<()>>) -> Self {
        Self { api }
    }

    /// The host's side of it.
    pub(crate) fn api(&self) -> &HostApi_TO<'static, abi_stable::std_types::RBox<()>> {
        &self.api
    }

    /// Sends one record to the host's log.
    pub fn log(&self, level: LogLevel, target: &str, message: &str, fields: &str) {
        self.api
            .log(level as u8, target.into(), message.into(), fields.into());
    }

    /// The most verbose level the host records.
    pub fn max_log_level(&self) -> LogLevel {
        LogLevel::from_code(self.api.max_log_level())
    }

    /// Whether the caller runs in the host's own copy of this crate.
    pub(crate) fn is_in_process(&self) -> bool {
        self.api.module_token() == module_token()
    }
}

/// An address unique to each loaded copy of this crate.
pub(crate) fn module_token() -> usize {
    static TOKEN: u8 = 0;
    std::ptr::addr_of!(TOKEN) as usize
}
