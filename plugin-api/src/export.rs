//! The plugin side of the boundary: [`Guarded`] wraps a backend written
//! against the plain `hpc_node` traits and implements the ABI traits on it,
//! running every call under `catch_unwind`; the `construct_*` functions are
//! what [`crate::export_plugin!`] expands to.
//!
//! Must never let a panic unwind across `extern "C"`: abi_stable turns that
//! into `abort()`, which for PID 1 is a kernel panic.

use std::any::Any;
use std::os::fd::IntoRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{ROption, RResult, RSlice, RStr, RString, RVec};
use hpc_node::{CgroupHandle, CgroupManager, MountHandle};
use nodeinit_handoff::NamespaceFdProvider;
use serde::de::DeserializeOwned;

use crate::abi::{
    CgroupBackend, CgroupBox, MountBackend, MountBox, NamespaceBackend, NamespaceBox,
    ReadinessBackend, ReadinessBox,
};
use crate::error::{ErrorKind, PluginError};
use crate::ext::{AllocationMounts, ReadinessProvider};
use crate::log_bridge;
use crate::types::{
    RCgroupMetrics, RMountHandle, RNamespaceRequest, RNamespaceResponse, RResourceLimits,
};
use crate::HostServices;

/// A backend, guarded: each ABI method runs the backend's `hpc_node` method
/// under `catch_unwind` and converts its result.
pub struct Guarded<T> {
    inner: T,
    plugin: &'static str,
}

impl<T> Guarded<T> {
    /// Wraps `inner`, naming `plugin` in panic reports.
    pub fn new(inner: T, plugin: &'static str) -> Self {
        Self { inner, plugin }
    }

    fn call<R, E>(
        &self,
        method: &str,
        f: impl FnOnce(&T) -> Result<R, E>,
    ) -> RResult<R, PluginError>
    where
        PluginError: From<E>,
    {
        match catch_unwind(AssertUnwindSafe(|| f(&self.inner))) {
            Ok(Ok(v)) => RResult::ROk(v),
            Ok(Err(e)) => RResult::RErr(PluginError::from(e)),
            Err(payload) => RResult::RErr(panicked(self.plugin, method, payload.as_ref())),
        }
    }
}

/// The `Panicked` error for a caught panic payload.
pub(crate) fn panicked(plugin: &str, method: &str, payload: &(dyn Any + Send)) -> PluginError {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    PluginError::new(
        ErrorKind::PANICKED,
        format!("{method} in plugin {plugin}: {text}"),
    )
    .with_field("method", method)
    .with_field("panic", text)
}

fn handle(path: RStr<'_>) -> CgroupHandle {
    CgroupHandle {
        path: path.to_string(),
    }
}

impl<T: CgroupManager> CgroupBackend for Guarded<T> {
    fn create_hierarchy(&self) -> RResult<(), PluginError> {
        self.call("create_hierarchy", |b| b.create_hierarchy())
    }
    fn create_scope(
        &self,
        parent_slice: RStr<'_>,
        name: RStr<'_>,
        limits: RResourceLimits,
    ) -> RResult<RString, PluginError> {
        self.call("create_scope", |b| {
            b.create_scope(parent_slice.as_str(), name.as_str(), &limits.into())
                .map(|h| RString::from(h.path))
        })
    }
    fn destroy_scope(&self, handle_path: RStr<'_>) -> RResult<(), PluginError> {
        self.call("destroy_scope", |b| b.destroy_scope(&handle(handle_path)))
    }
    fn read_metrics(&self, path: RStr<'_>) -> RResult<RCgroupMetrics, PluginError> {
        self.call("read_metrics", |b| {
            b.read_metrics(path.as_str())
                .map(|m| RCgroupMetrics::from(&m))
        })
    }
    fn is_scope_empty(&self, handle_path: RStr<'_>) -> RResult<bool, PluginError> {
        self.call("is_scope_empty", |b| b.is_scope_empty(&handle(handle_path)))
    }
}

impl<T: AllocationMounts> MountBackend for Guarded<T> {
    fn acquire_mount(&self, image_path: RStr<'_>) -> RResult<RMountHandle, PluginError> {
        self.call("acquire_mount", |b| {
            b.acquire_mount(image_path.as_str())
                .map(|h| RMountHandle::from(&h))
        })
    }
    fn release_mount(&self, h: &RMountHandle) -> RResult<(), PluginError> {
        self.call("release_mount", |b| {
            b.release_mount(&MountHandle::from(h.clone()))
        })
    }
    fn force_unmount(&self, image_path: RStr<'_>) -> RResult<(), PluginError> {
        self.call("force_unmount", |b| b.force_unmount(image_path.as_str()))
    }
    fn reconstruct_state(&self, active: RSlice<'_, RString>) -> RResult<(), PluginError> {
        self.call("reconstruct_state", |b| {
            let active: Vec<String> = active.iter().map(|s| s.to_string()).collect();
            b.reconstruct_state(&active)
        })
    }
    fn acquire_for(
        &self,
        allocation_id: RStr<'_>,
        image_path: RStr<'_>,
    ) -> RResult<RMountHandle, PluginError> {
        self.call("acquire_for", |b| {
            b.acquire_for(allocation_id.as_str(), image_path.as_str())
                .map(|h| RMountHandle::from(&h))
        })
    }
    fn release_for(&self, allocation_id: RStr<'_>, h: &RMountHandle) -> RResult<(), PluginError> {
        self.call("release_for", |b| {
            b.release_for(allocation_id.as_str(), &MountHandle::from(h.clone()))
        })
    }
}

impl<T: NamespaceFdProvider> NamespaceBackend for Guarded<T> {
    fn create_namespaces(
        &self,
        request: &RNamespaceRequest,
    ) -> RResult<RNamespaceResponse, PluginError> {
        self.call("create_namespaces", |b| {
            let req = request.to_hpc()?;
            b.create_namespaces(&req)
                .map(|r| RNamespaceResponse::from(&r))
                .map_err(PluginError::from)
        })
    }
    fn release_namespaces(&self, allocation_id: RStr<'_>) -> RResult<(), PluginError> {
        self.call("release_namespaces", |b| {
            b.release_namespaces(allocation_id.as_str())
        })
    }
    fn namespace_fds(&self, allocation_id: RStr<'_>) -> RResult<RVec<i32>, PluginError> {
        self.call("namespace_fds", |b| {
            b.namespace_fds(allocation_id.as_str())
                .map(|fds| fds.into_iter().map(IntoRawFd::into_raw_fd).collect())
        })
    }
}

impl<T: ReadinessProvider> ReadinessBackend for Guarded<T> {
    fn is_ready(&self) -> bool {
        // A panicking is_ready reads as "not ready".
        matches!(
            self.call("is_ready", |b| Ok::<_, PluginError>(b.is_ready())),
            RResult::ROk(true)
        )
    }
    fn wait_ready(&self, timeout_ms: ROption<u64>) -> RResult<(), PluginError> {
        self.call("wait_ready", |b| {
            b.wait_ready_timeout(timeout_ms.into_option().map(Duration::from_millis))
        })
    }
    fn signal_ready(&self, node_id: RStr<'_>) -> RResult<(), PluginError> {
        self.call("signal_ready", |b| b.signal_ready(node_id.as_str()))
    }
    fn signal_failed(&self, reason: RStr<'_>) -> RResult<(), PluginError> {
        self.call("signal_failed", |b| b.signal_failed(reason.as_str()))
    }
}

/// Deserializes a backend's options; on error, the key path inside the
/// options table (`image_dirs[0]`, `inner.b`; empty for the table itself)
/// and serde's reason without serde_json's position, which points into the
/// generated JSON and means nothing to the admin (the host maps the key path
/// back to the config file's line).
fn parse_options<O: DeserializeOwned>(json: &str) -> Result<O, (String, String)> {
    let mut de = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        let inner = e.into_inner();
        let text = inner.to_string();
        let position = format!(" at line {} column {}", inner.line(), inner.column());
        let reason = text.strip_suffix(&position).unwrap_or(&text).to_owned();
        (key, reason)
    })
}

/// Runs a constructor for plugin `plugin`: installs the log bridge, parses
/// the options, calls `ctor`, all under `catch_unwind`.
fn construct<O, T, E>(
    plugin: &'static str,
    kind: &str,
    host: HostServices,
    options_json: RStr<'_>,
    ctor: impl FnOnce(&HostServices, O) -> Result<T, E>,
) -> Result<T, PluginError>
where
    O: DeserializeOwned,
    E: std::fmt::Display,
{
    let host = Arc::new(host);
    log_bridge::install(&host);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let options: O = parse_options(options_json.as_str()).map_err(|(key, reason)| {
            PluginError::new(
                ErrorKind::INVALID_OPTIONS,
                format!("plugin {plugin}: invalid options for the {kind} backend: {reason}"),
            )
            .with_field("plugin", plugin)
            .with_field("reason", reason)
            .with_field("key", key)
        })?;
        ctor(&host, options).map_err(|e| {
            PluginError::new(
                ErrorKind::CONSTRUCTION_FAILED,
                format!("plugin {plugin}: {kind} backend failed to start: {e}"),
            )
            .with_field("plugin", plugin)
            .with_field("reason", e.to_string())
        })
    }));
    match outcome {
        Ok(result) => result,
        Err(payload) => Err(panicked(
            plugin,
            &format!("{kind} constructor"),
            payload.as_ref(),
        )),
    }
}

#[doc(hidden)]
pub fn construct_cgroup<O, T, E>(
    plugin: &'static str,
    host: HostServices,
    options_json: RStr<'_>,
    ctor: impl FnOnce(&HostServices, O) -> Result<T, E>,
) -> RResult<CgroupBox, PluginError>
where
    O: DeserializeOwned,
    E: std::fmt::Display,
    T: CgroupManager + 'static,
{
    construct(plugin, "cgroup", host, options_json, ctor)
        .map(|b| CgroupBox::from_value(Guarded::new(b, plugin), TD_Opaque))
        .into()
}

#[doc(hidden)]
pub fn construct_mount<O, T, E>(
    plugin: &'static str,
    host: HostServices,
    options_json: RStr<'_>,
    ctor: impl FnOnce(&HostServices, O) -> Result<T, E>,
) -> RResult<MountBox, PluginError>
where
    O: DeserializeOwned,
    E: std::fmt::Display,
    T: AllocationMounts + 'static,
{
    construct(plugin, "mount", host, options_json, ctor)
        .map(|b| MountBox::from_value(Guarded::new(b, plugin), TD_Opaque))
        .into()
}

#[doc(hidden)]
pub fn construct_namespace<O, T, E>(
    plugin: &'static str,
    host: HostServices,
    options_json: RStr<'_>,
    ctor: impl FnOnce(&HostServices, O) -> Result<T, E>,
) -> RResult<NamespaceBox, PluginError>
where
    O: DeserializeOwned,
    E: std::fmt::Display,
    T: NamespaceFdProvider + 'static,
{
    construct(plugin, "namespace", host, options_json, ctor)
        .map(|b| NamespaceBox::from_value(Guarded::new(b, plugin), TD_Opaque))
        .into()
}

#[doc(hidden)]
pub fn construct_readiness<O, T, E>(
    plugin: &'static str,
    host: HostServices,
    options_json: RStr<'_>,
    ctor: impl FnOnce(&HostServices, O) -> Result<T, E>,
) -> RResult<ReadinessBox, PluginError>
where
    O: DeserializeOwned,
    E: std::fmt::Display,
    T: ReadinessProvider + 'static,
{
    construct(plugin, "readiness", host, options_json, ctor)
        .map(|b| ReadinessBox::from_value(Guarded::new(b, plugin), TD_Opaque))
        .into()
}

/// Exports a plugin: the one ABI-touching line a plugin crate writes.
///
/// Each backend key names a constructor
/// `fn(&HostServices, Options) -> Result<Backend, impl Display>`, where
/// `Options: serde::de::DeserializeOwned` (use `#[serde(deny_unknown_fields)]`
/// so a typo in the site's config is an error naming the key). Keys:
/// `cgroup` (`hpc_node::CgroupManager`), `mount` ([`crate::AllocationMounts`]),
/// `namespace` (`nodeinit_handoff::NamespaceFdProvider`), `readiness`
/// ([`crate::ReadinessProvider`]); any subset, in this order.
///
/// A complete plugin providing a readiness backend:
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::time::Duration;
/// use hpc_node::{ReadinessError, ReadinessGate};
/// use nodeinit_plugin_api::{HostServices, ReadinessProvider};
///
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)] // a typo in the site's config names the key
/// pub struct Options {
///     #[serde(default)]
///     pub verbose: bool,
/// }
///
/// pub struct Flag(AtomicBool);
///
/// impl Flag {
///     pub fn from_plugin(_host: &HostServices, _options: Options) -> Result<Self, String> {
///         Ok(Self(AtomicBool::new(false)))
///     }
/// }
///
/// impl ReadinessGate for Flag {
///     fn is_ready(&self) -> bool { self.0.load(Ordering::Acquire) }
///     fn wait_ready(&self) -> Result<(), ReadinessError> { self.wait_ready_timeout(None) }
/// }
///
/// impl ReadinessProvider for Flag {
///     fn signal_ready(&self, _node_id: &str) -> Result<(), ReadinessError> {
///         self.0.store(true, Ordering::Release);
///         Ok(())
///     }
///     fn signal_failed(&self, _reason: &str) -> Result<(), ReadinessError> { Ok(()) }
///     fn wait_ready_timeout(&self, _t: Option<Duration>) -> Result<(), ReadinessError> {
///         if self.is_ready() { Ok(()) } else { Err(ReadinessError::Timeout) }
///     }
/// }
///
/// nodeinit_plugin_api::export_plugin! {
///     name: "flag",
///     version: "1.2.3",
///     readiness: Flag::from_plugin,
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_plugin {
    (
        name: $name:expr,
        version: $version:expr
        $(, cgroup: $cgroup:expr)?
        $(, mount: $mount:expr)?
        $(, namespace: $namespace:expr)?
        $(, readiness: $readiness:expr)?
        $(,)?
    ) => {
        #[doc(hidden)]
        #[no_mangle]
        pub static NODEINIT_PLUGIN_INTERFACE: $crate::InterfaceMark = $crate::InterfaceMark::CURRENT;

        // The symbol abi_stable's loader looks for (its mangled
        // `ROOT_MODULE_LOADER_NAME`; a test in nodeinit-plugin-api pins it).
        #[doc(hidden)]
        #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
        pub static NODEINIT_PLUGIN_LIB_HEADER: $crate::__private::LibHeader = {
            extern "C" fn erased_root_module() -> $crate::__private::RootModuleResult {
                $crate::__private::__call_root_module_loader(root_module)
            }
            fn root_module() -> $crate::PluginRootRef {
                const NAME: &str = $name;
                $crate::__private::build_root(
                    NAME,
                    $version,
                    $crate::__private::Constructors {
                        cgroup: $crate::export_plugin!(@ctor construct_cgroup, CgroupBox, NAME, $($cgroup)?),
                        mount: $crate::export_plugin!(@ctor construct_mount, MountBox, NAME, $($mount)?),
                        namespace: $crate::export_plugin!(@ctor construct_namespace, NamespaceBox, NAME, $($namespace)?),
                        readiness: $crate::export_plugin!(@ctor construct_readiness, ReadinessBox, NAME, $($readiness)?),
                    },
                )
            }
            // SAFETY: `root_module` returns the `PluginRootRef` this header is
            // declared for, as `from_constructor` requires.
            unsafe {
                $crate::__private::LibHeader::from_constructor::<$crate::PluginRootRef>(
                    erased_root_module,
                    $crate::__private::CheckTypeLayout::Yes,
                )
            }
        };
    };
    (@ctor $construct:ident, $boxed:ident, $plugin:expr, ) => { None };
    (@ctor $construct:ident, $boxed:ident, $plugin:expr, $ctor:expr) => {{
        extern "C" fn ctor(
            host: $crate::HostServices,
            options: $crate::__private::RStr<'_>,
        ) -> $crate::__private::RResult<$crate::__private::$boxed, $crate::PluginError> {
            $crate::__private::$construct($plugin, host, options, $ctor)
        }
        Some(ctor)
    }};
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::parse_options;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        a: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Options {
        image_dirs: Vec<String>,
        hold_time_secs: Option<u64>,
        inner: Option<Inner>,
    }

    fn err(json: &str) -> (String, String) {
        parse_options::<Options>(json).unwrap_err()
    }

    #[test]
    fn option_errors_carry_the_key_path_and_no_json_position() {
        assert_eq!(
            err(r#"{"image_dir":["x"]}"#),
            (
                "image_dir".to_owned(),
                "unknown field `image_dir`, expected one of `image_dirs`, `hold_time_secs`, `inner`"
                    .to_owned()
            )
        );
        assert_eq!(
            err(r#"{"image_dirs":[1]}"#),
            (
                "image_dirs[0]".to_owned(),
                "invalid type: integer `1`, expected a string".to_owned()
            )
        );
        assert_eq!(
            err(r#"{"image_dirs":[],"hold_time_secs":-1}"#),
            (
                "hold_time_secs".to_owned(),
                "invalid value: integer `-1`, expected u64".to_owned()
            )
        );
        assert_eq!(
            err(r#"{"image_dirs":[],"inner":{"b":1}}"#),
            (
                "inner.b".to_owned(),
                "unknown field `b`, expected `a`".to_owned()
            )
        );
        assert_eq!(
            err(r#"{}"#),
            (String::new(), "missing field `image_dirs`".to_owned())
        );
    }
}
