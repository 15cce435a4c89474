//! The plugin's side of the boundary: [`crate::export_plugin!`] (the one line
//! a plugin crate writes), the generic constructor it expands to (log bridge,
//! options, construction, all under `catch_unwind`), and the plugin's view
//! of [`crate::HostServices`].
//!
//! Never runs in the host except for in-process (rlib) backends; never lets a
//! panic unwind across `extern "C"`.

mod log_bridge;
mod mounts;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use abi_stable::std_types::{RResult, RStr};
use serde::de::DeserializeOwned;

use crate::abi::{ErrorKind, HostServices, PluginError};
use crate::bridge::kinds::{Kind, Provides};
use crate::bridge::to_abi::panicked;

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

/// Runs constructor `ctor` of plugin `plugin` for backend kind `K`:
/// installs the log bridge, parses the options, constructs, guards the
/// result, all under `catch_unwind`. What [`crate::export_plugin!`] expands to.
#[doc(hidden)]
pub fn construct<K, O, T, E>(
    plugin: &'static str,
    host: HostServices,
    options_json: RStr<'_>,
    ctor: impl FnOnce(&HostServices, O) -> Result<T, E>,
) -> RResult<K::Boxed, PluginError>
where
    K: Kind,
    O: DeserializeOwned,
    E: std::fmt::Display,
    T: Provides<K>,
{
    let kind = K::KIND.name();
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
        ctor(&host, options)
            .map(|backend| backend.into_boxed(plugin))
            .map_err(|e| {
                PluginError::new(
                    ErrorKind::CONSTRUCTION_FAILED,
                    format!("plugin {plugin}: {kind} backend failed to start: {e}"),
                )
                .with_field("plugin", plugin)
                .with_field("reason", e.to_string())
            })
    }));
    match outcome {
        Ok(result) => result.into(),
        Err(payload) => RResult::RErr(panicked(
            plugin,
            &format!("{kind} constructor"),
            payload.as_ref(),
        )),
    }
}

/// Exports a plugin: the one ABI-touching line a plugin crate writes.
///
/// Each backend key names a constructor
/// `fn(&HostServices, Options) -> Result<Backend, impl Display>`, where
/// `Options: serde::de::DeserializeOwned` (use `#[serde(deny_unknown_fields)]`
/// so a typo in the site's config is an error naming the key). Keys:
/// `cgroup` (`hpc_node::CgroupManager`), `mount` ([`crate::AllocationMounts`]),
/// `namespace` ([`crate::NamespaceFdProvider`]), `readiness`
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
                        cgroup: $crate::export_plugin!(@ctor Cgroup, NAME, $($cgroup)?),
                        mount: $crate::export_plugin!(@ctor Mount, NAME, $($mount)?),
                        namespace: $crate::export_plugin!(@ctor Namespace, NAME, $($namespace)?),
                        readiness: $crate::export_plugin!(@ctor Readiness, NAME, $($readiness)?),
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
    (@ctor $kind:ident, $plugin:expr, ) => { None };
    (@ctor $kind:ident, $plugin:expr, $ctor:expr) => {{
        extern "C" fn ctor(
            host: $crate::HostServices,
            options: $crate::__private::RStr<'_>,
        ) -> $crate::__private::RResult<
            <$crate::__private::kinds::$kind as $crate::__private::Kind>::Boxed,
            $crate::PluginError,
        > {
            $crate::__private::construct::<$crate::__private::kinds::$kind, _, _, _>(
                $plugin, host, options, $ctor,
            )
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
