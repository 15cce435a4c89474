//! # nodeinit-plugin-api
//!
//! The stable ABI between nodeinit and its backend plugins (`.so` files).
//! A plugin implements the plain `hpc_node` traits and calls
//! [`export_plugin!`] once; the host loads it with [`PluginLibrary`] and talks
//! to it through adapters that implement the same `hpc_node` traits. This is
//! the only crate that names `abi_stable`.
//!
//! ## Writing a plugin
//!
//! Implement the plain `hpc_node` trait of the backend kind, give it a
//! constructor `fn(&HostServices, Options) -> Result<Self, impl Display>`,
//! and call [`export_plugin!`] once (its documentation has a complete
//! example). Build the crate as `crate-type = ["cdylib"]` and install it as
//! `<plugin_dir>/libnodeinit_<name>.so`, root-owned, not group- or
//! world-writable.
//!
//! ## What crosses the boundary
//!
//! * One root module per `.so` ([`PluginRoot`], an abi_stable prefix type):
//!   name, version, [`InterfaceVersion`], one optional constructor per
//!   backend kind `(HostServices, options_json) -> RResult<Backend, PluginError>`.
//! * Backends as `#[sabi_trait]` objects ([`abi`]) mirroring the `hpc_node`
//!   traits plus [`ReadinessProvider`], [`AllocationMounts`] and
//!   [`NamespaceFdProvider`] (all three from `nodeinit_contracts`).
//! * Errors as [`PluginError`]: an open kind code, the message and the
//!   variant's fields; every `hpc_node` error converts there and back.
//! * Panics never cross: every call runs under `catch_unwind` in the plugin
//!   and comes back as `ErrorKind::PANICKED` with the panic message.
//! * Logs: `tracing` events inside the plugin are forwarded to the host's
//!   log with their level, target and fields.
//!
//! ## Compatibility rule
//!
//! Every plugin exports an [`InterfaceMark`] with the interface version it
//! was built against; the host reads it before anything else.
//!
//! * **Same major version: loads**, whatever the minor versions. Minor
//!   releases only *append* root-module fields (after `readiness`, the first
//!   release's `last_prefix_field`) and trait methods (after each trait's
//!   `last_prefix_field`). A newer host sees an older plugin's missing fields
//!   as absent; an older host never reads a newer plugin's extra fields.
//! * **Different major version: refused** before `abi_stable` looks at the
//!   layout, with a message that says which side to upgrade.
//! * `abi_stable` then checks the layout of everything reachable from the
//!   root module; a mismatch is refused with a one-line summary.
//!
//! The package major version equals the interface major (abi_stable refuses
//! types from semver-incompatible packages).

// Layout (imports flow down this list, never up):
// - `abi`: what crosses the boundary (abi_stable declarations, repr(C) types,
//   the error, the interface version, the host-services object);
// - `ext`, `escape`: plain Rust traits and helpers, no ABI;
// - `bridge`: Rust <-> ABI, both halves side by side, and the kinds as data;
// - `plugin`: the export macro, the generic constructor, the log bridge;
// - `host`: library loading and the host's side of the services.
pub mod abi;
pub mod bridge;
pub mod escape;
pub mod ext;
pub mod host;
pub mod plugin;

/// The host-side adapters (the from-ABI half of [`bridge`]).
pub use bridge::from_abi as adapters;

pub use abi::{
    ErrorField, ErrorKind, HostServices, IncompatibleInterface, InterfaceMark, InterfaceVersion,
    LogLevel, PluginError, PluginFault, PluginRoot, PluginRootRef, RCgroupMetrics, RMountHandle,
    RNamespaceRequest, RNamespaceResponse, RNamespaceType, RResourceLimits, INTERFACE_MAJOR,
    INTERFACE_MINOR,
};
pub use bridge::from_abi::{CgroupAdapter, MountAdapter, NamespaceAdapter, ReadinessAdapter};
pub use bridge::kinds::{BackendKind, Kind};
pub use bridge::to_abi::Guarded;
pub use ext::{AllocationMounts, NamespaceFdProvider, ReadinessProvider};
pub use host::{summarize_abi_report, OpenError, PluginLibrary};

/// What [`export_plugin!`] expands to. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bridge::kinds::{self, Kind};
    pub use crate::plugin::construct;
    pub use abi_stable::library::{
        __call_root_module_loader, CheckTypeLayout, LibHeader, RootModuleResult,
    };
    pub use abi_stable::std_types::{RResult, RStr};

    use crate::abi::{
        CgroupCtor, MountCtor, NamespaceCtor, PluginRoot, PluginRootRef, ReadinessCtor,
    };
    use abi_stable::prefix_type::PrefixTypeTrait;

    /// The constructors a plugin provides.
    pub struct Constructors {
        /// cgroup.
        pub cgroup: Option<CgroupCtor>,
        /// mount.
        pub mount: Option<MountCtor>,
        /// namespace.
        pub namespace: Option<NamespaceCtor>,
        /// readiness.
        pub readiness: Option<ReadinessCtor>,
    }

    /// Builds (and leaks, once per process) the root module.
    pub fn build_root(name: &'static str, version: &'static str, c: Constructors) -> PluginRootRef {
        PluginRoot {
            name: RStr::from_str(name),
            version: RStr::from_str(version),
            interface: crate::InterfaceVersion::CURRENT,
            cgroup: c.cgroup,
            mount: c.mount,
            namespace: c.namespace,
            readiness: c.readiness,
            #[cfg(feature = "__test-next-minor")]
            next_minor_probe: Some(next_minor_probe),
        }
        .leak_into_prefix()
    }

    #[cfg(feature = "__test-next-minor")]
    extern "C" fn next_minor_probe() -> u32 {
        crate::INTERFACE_MINOR
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn export_macro_uses_abi_stables_header_symbol() {
        assert_eq!(
            abi_stable::library::ROOT_MODULE_LOADER_NAME,
            "_1as_0lib_1header_0root_bmodule_bloader",
            "abi_stable changed its root-module symbol: update export_plugin!"
        );
    }
}
