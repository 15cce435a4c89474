//! [`HostServices`]: what the host hands each plugin constructor — a log sink
//! and, for namespace backends, the host's mount backend.
//!
//! Owns both sides of that object: the host builds it with
//! [`HostServices::new`]; a plugin reads it through [`HostServices::mounts`]
//! and (via the export macro) the log bridge. Never blocks, never panics
//! across the boundary.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{ROption, RStr};
use abi_stable::StableAbi;

use crate::abi::{HostApi, HostApi_TO, MountBox};
use crate::adapters::MountAdapter;
use crate::export::Guarded;
use crate::ext::AllocationMounts;

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
    /// Host side: services for plugin `plugin`, offering `mounts` (the loaded
    /// mount backend) to namespace backends.
    pub fn new(plugin: &str, mounts: Option<Arc<dyn AllocationMounts>>) -> Self {
        let imp = HostSide {
            plugin: plugin.to_owned(),
            mounts,
        };
        Self {
            api: HostApi_TO::from_value(imp, TD_Opaque),
        }
    }

    /// The host's mount backend, when the host has one loaded.
    pub fn mounts(&self) -> Option<Arc<dyn AllocationMounts>> {
        match self.api.mount_backend() {
            ROption::RSome(backend) => {
                Some(Arc::new(MountAdapter::new(backend, "host mount backend")))
            }
            ROption::RNone => None,
        }
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
            Some(m) => ROption::RSome(MountBox::from_value(
                Guarded::new(SharedMounts(Arc::clone(m)), "host"),
                TD_Opaque,
            )),
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

/// The host's mount backend, shared, offered to namespace plugins.
struct SharedMounts(Arc<dyn AllocationMounts>);

impl hpc_node::MountManager for SharedMounts {
    fn acquire_mount(
        &self,
        image_path: &str,
    ) -> Result<hpc_node::MountHandle, hpc_node::MountError> {
        self.0.acquire_mount(image_path)
    }
    fn release_mount(&self, handle: &hpc_node::MountHandle) -> Result<(), hpc_node::MountError> {
        self.0.release_mount(handle)
    }
    fn force_unmount(&self, image_path: &str) -> Result<(), hpc_node::MountError> {
        self.0.force_unmount(image_path)
    }
    fn reconstruct_state(&self, active: &[String]) -> Result<(), hpc_node::MountError> {
        self.0.reconstruct_state(active)
    }
}

impl AllocationMounts for SharedMounts {
    fn acquire_for(
        &self,
        allocation_id: &str,
        image_path: &str,
    ) -> Result<hpc_node::MountHandle, hpc_node::MountError> {
        self.0.acquire_for(allocation_id, image_path)
    }
    fn release_for(
        &self,
        allocation_id: &str,
        handle: &hpc_node::MountHandle,
    ) -> Result<(), hpc_node::MountError> {
        self.0.release_for(allocation_id, handle)
    }
}
