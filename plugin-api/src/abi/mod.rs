//! Everything that crosses the boundary, as `abi_stable` declares it: the
//! root module every plugin exports, the four backend traits, the
//! host-services object, the `#[repr(C)]` data types ([`types`]), the error
//! ([`PluginError`]) and the interface version ([`InterfaceVersion`]).
//!
//! Depends on nothing else in this crate; [`crate::bridge`] converts to and
//! from these types, [`crate::plugin`] and [`crate::host`] build on that.
//!
//! Compatibility rule for this file (see also [`crate::version`]): released
//! fields and methods are never changed, reordered or removed. A later
//! interface minor only *appends* — root-module fields after `readiness`,
//! trait methods after the one marked `last_prefix_field` — and bumps
//! `INTERFACE_MINOR`. Anything else is a new major.

// abi_stable 0.11's derives generate impls inside `const _: () = {...}`,
// which this newer rustc lints as non-local.
#![allow(non_local_definitions)]

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec};
use abi_stable::{declare_root_module_statics, sabi_trait, StableAbi};

mod error;
mod host_services;
pub mod types;
mod version;

pub use error::{ErrorField, ErrorKind, PluginError, PluginFault};
pub(crate) use host_services::module_token;
pub use host_services::{HostServices, LogLevel};
pub use types::{
    RCgroupMetrics, RMountHandle, RNamespaceRequest, RNamespaceResponse, RNamespaceType,
    RResourceLimits,
};
pub use version::{
    IncompatibleInterface, InterfaceMark, InterfaceVersion, INTERFACE_MAJOR, INTERFACE_MINOR,
};
pub(crate) use version::{INTERFACE_MARK_MAGIC, INTERFACE_MARK_SYMBOL};

/// `hpc_node::CgroupManager` across the boundary. Handles cross as their path.
#[sabi_trait]
pub trait CgroupBackend: Send + Sync {
    /// `CgroupManager::create_hierarchy`.
    fn create_hierarchy(&self) -> RResult<(), PluginError>;
    /// `CgroupManager::create_scope`; returns the handle's path.
    fn create_scope(
        &self,
        parent_slice: RStr<'_>,
        name: RStr<'_>,
        limits: RResourceLimits,
    ) -> RResult<RString, PluginError>;
    /// `CgroupManager::destroy_scope`.
    fn destroy_scope(&self, handle_path: RStr<'_>) -> RResult<(), PluginError>;
    /// `CgroupManager::read_metrics`.
    fn read_metrics(&self, path: RStr<'_>) -> RResult<RCgroupMetrics, PluginError>;
    /// `CgroupManager::is_scope_empty`.
    #[sabi(last_prefix_field)]
    fn is_scope_empty(&self, handle_path: RStr<'_>) -> RResult<bool, PluginError>;
}

/// `hpc_node::MountManager` plus allocation attribution
/// ([`crate::AllocationMounts`]) across the boundary.
#[sabi_trait]
pub trait MountBackend: Send + Sync {
    /// `MountManager::acquire_mount`.
    fn acquire_mount(&self, image_path: RStr<'_>) -> RResult<RMountHandle, PluginError>;
    /// `MountManager::release_mount`.
    fn release_mount(&self, handle: &RMountHandle) -> RResult<(), PluginError>;
    /// `MountManager::force_unmount`.
    fn force_unmount(&self, image_path: RStr<'_>) -> RResult<(), PluginError>;
    /// `MountManager::reconstruct_state`.
    fn reconstruct_state(&self, active: RSlice<'_, RString>) -> RResult<(), PluginError>;
    /// `AllocationMounts::acquire_for`.
    fn acquire_for(
        &self,
        allocation_id: RStr<'_>,
        image_path: RStr<'_>,
    ) -> RResult<RMountHandle, PluginError>;
    /// `AllocationMounts::release_for`.
    #[sabi(last_prefix_field)]
    fn release_for(
        &self,
        allocation_id: RStr<'_>,
        handle: &RMountHandle,
    ) -> RResult<(), PluginError>;
}

/// `hpc_node::NamespaceProvider` plus the namespace FDs across the boundary.
#[sabi_trait]
pub trait NamespaceBackend: Send + Sync {
    /// `NamespaceProvider::create_namespaces`.
    fn create_namespaces(
        &self,
        request: &RNamespaceRequest,
    ) -> RResult<RNamespaceResponse, PluginError>;
    /// `NamespaceProvider::release_namespaces`.
    fn release_namespaces(&self, allocation_id: RStr<'_>) -> RResult<(), PluginError>;
    /// `NamespaceFdProvider::namespace_fds`: raw FDs whose ownership passes
    /// to the caller.
    #[sabi(last_prefix_field)]
    fn namespace_fds(&self, allocation_id: RStr<'_>) -> RResult<RVec<i32>, PluginError>;

    // Interface 1.1 appends the two methods below. A plugin built against
    // 1.0 has no vtable entry for them: abi_stable then runs these default
    // bodies, which are the trait's own defaults (the owner is not recorded).

    /// `NamespaceFdProvider::create_namespaces_owned` (interface 1.1).
    fn create_namespaces_owned(
        &self,
        request: &RNamespaceRequest,
        owner_uid: u32,
    ) -> RResult<RNamespaceResponse, PluginError> {
        let _ = owner_uid;
        self.create_namespaces(request)
    }

    /// `NamespaceFdProvider::allocation_owner` (interface 1.1).
    fn allocation_owner(&self, allocation_id: RStr<'_>) -> ROption<u32> {
        let _ = allocation_id;
        ROption::RNone
    }
}

/// `hpc_node::ReadinessGate` plus the provider operations across the boundary.
#[sabi_trait]
pub trait ReadinessBackend: Send + Sync {
    /// `ReadinessGate::is_ready`.
    fn is_ready(&self) -> bool;
    /// `ReadinessProvider::wait_ready_timeout`, in milliseconds (`None`: forever).
    fn wait_ready(&self, timeout_ms: ROption<u64>) -> RResult<(), PluginError>;
    /// `ReadinessProvider::signal_ready`.
    fn signal_ready(&self, node_id: RStr<'_>) -> RResult<(), PluginError>;
    /// `ReadinessProvider::signal_failed`.
    #[sabi(last_prefix_field)]
    fn signal_failed(&self, reason: RStr<'_>) -> RResult<(), PluginError>;
}

/// What the host offers every plugin constructor.
#[sabi_trait]
pub trait HostApi: Send + Sync {
    /// Writes one log record into the host's log (level: [`crate::LogLevel`] code).
    fn log(&self, level: u8, target: RStr<'_>, message: RStr<'_>, fields: RStr<'_>);
    /// The most verbose level the host records (a [`crate::LogLevel`] code).
    fn max_log_level(&self) -> u8;
    /// An address identifying the host's copy of this crate: equal to the
    /// plugin's own only when the backend runs in-process (rlib), in which
    /// case no log bridge is needed.
    fn module_token(&self) -> usize;
    /// The host's mount backend, for namespace backends.
    #[sabi(last_prefix_field)]
    fn mount_backend(&self) -> ROption<MountBackend_TO<'static, RBox<()>>>;
}

/// Boxed backend objects as they cross.
pub type CgroupBox = CgroupBackend_TO<'static, RBox<()>>;
/// Boxed mount backend.
pub type MountBox = MountBackend_TO<'static, RBox<()>>;
/// Boxed namespace backend.
pub type NamespaceBox = NamespaceBackend_TO<'static, RBox<()>>;
/// Boxed readiness backend.
pub type ReadinessBox = ReadinessBackend_TO<'static, RBox<()>>;

/// Constructor of a cgroup backend: `(host, options_json)`.
pub type CgroupCtor = extern "C" fn(HostServices, RStr<'_>) -> RResult<CgroupBox, PluginError>;
/// Constructor of a mount backend.
pub type MountCtor = extern "C" fn(HostServices, RStr<'_>) -> RResult<MountBox, PluginError>;
/// Constructor of a namespace backend.
pub type NamespaceCtor =
    extern "C" fn(HostServices, RStr<'_>) -> RResult<NamespaceBox, PluginError>;
/// Constructor of a readiness backend.
pub type ReadinessCtor =
    extern "C" fn(HostServices, RStr<'_>) -> RResult<ReadinessBox, PluginError>;

/// The root module of a plugin `.so` (one per file), built by
/// [`crate::export_plugin!`].
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginRootRef, prefix_fields = PluginRoot_Prefix)))]
#[sabi(missing_field(option))]
pub struct PluginRoot {
    /// The plugin's name (`"cgroupfs"`).
    pub name: RStr<'static>,
    /// The plugin's own version (its crate version).
    pub version: RStr<'static>,
    /// The interface version it was built against.
    pub interface: InterfaceVersion,
    /// cgroup backend constructor, if provided.
    // Spelled out: the StableAbi derive must see the fn-pointer type.
    pub cgroup: Option<extern "C" fn(HostServices, RStr<'_>) -> RResult<CgroupBox, PluginError>>,
    /// mount backend constructor, if provided.
    // Spelled out: the StableAbi derive must see the fn-pointer type.
    pub mount: Option<extern "C" fn(HostServices, RStr<'_>) -> RResult<MountBox, PluginError>>,
    /// namespace backend constructor, if provided.
    // Spelled out: the StableAbi derive must see the fn-pointer type.
    pub namespace:
        Option<extern "C" fn(HostServices, RStr<'_>) -> RResult<NamespaceBox, PluginError>>,
    /// readiness backend constructor, if provided.
    #[sabi(last_prefix_field)]
    // Spelled out: the StableAbi derive must see the fn-pointer type.
    pub readiness:
        Option<extern "C" fn(HostServices, RStr<'_>) -> RResult<ReadinessBox, PluginError>>,
    /// Test-only field: what the next interface minor would append.
    #[cfg(feature = "__test-next-minor")]
    pub next_minor_probe: Option<extern "C" fn() -> u32>,
}

impl RootModule for PluginRootRef {
    declare_root_module_statics! {PluginRootRef}
    const BASE_NAME: &'static str = "nodeinit_plugin";
    const NAME: &'static str = "nodeinit_plugin";
    // Fixed per interface major: nodeinit does its own version check on the
    // InterfaceMark (with clearer messages) before abi_stable looks at this.
    const VERSION_STRINGS: VersionStrings = VersionStrings {
        version: RStr::from_str("1.0.0"),
    };
}
