//! The plugin interface version and the rule deciding which host and plugin
//! builds load together.
//!
//! Owns: [`InterfaceVersion`], the [`InterfaceMark`] symbol every plugin
//! exports, and [`InterfaceVersion::check_plugin`]. Must never consult
//! anything but the two version numbers.

use abi_stable::StableAbi;

/// Major version of the plugin interface this build speaks.
///
/// Changes only when a released root-module field, trait method or type
/// crossing the boundary changes meaning or layout. Kept equal to the
/// `nodeinit-plugin-api` package major version.
#[cfg(not(feature = "__test-next-major"))]
pub const INTERFACE_MAJOR: u32 = 1;
/// Major version of the plugin interface (test build of the next major).
#[cfg(feature = "__test-next-major")]
pub const INTERFACE_MAJOR: u32 = 2;

/// Minor version of the plugin interface this build speaks: incremented each
/// time a release appends fields to the root module or methods to a backend
/// trait (after the previous `last_prefix_field`).
///
/// 1.1 appended `create_namespaces_owned` and `allocation_owner` to the
/// namespace backend (allocation ownership across worker restarts).
#[cfg(not(any(feature = "__test-next-minor", feature = "__test-next-major")))]
pub const INTERFACE_MINOR: u32 = 1;
/// Minor version of the plugin interface (test build of the next minor).
#[cfg(all(feature = "__test-next-minor", not(feature = "__test-next-major")))]
pub const INTERFACE_MINOR: u32 = 2;
/// Minor version of the plugin interface (test build of the next major,
/// which starts its minors at 0).
#[cfg(feature = "__test-next-major")]
pub const INTERFACE_MINOR: u32 = 0;

/// A plugin interface version, `major.minor`.
///
/// # Example
///
/// ```
/// use nodeinit_plugin_api::InterfaceVersion;
/// let v = InterfaceVersion::CURRENT;
/// assert!(v.check_plugin(v).is_ok());
/// assert_eq!(InterfaceVersion { major: 1, minor: 4 }.to_string(), "1.4");
/// ```
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceVersion {
    /// Incompatible changes.
    pub major: u32,
    /// Appended, compatible additions.
    pub minor: u32,
}

impl std::fmt::Display for InterfaceVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Why a plugin's interface version cannot be loaded by this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompatibleInterface {
    /// The version this host speaks.
    pub host: InterfaceVersion,
    /// The version the plugin was built against.
    pub plugin: InterfaceVersion,
}

impl std::fmt::Display for IncompatibleInterface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.plugin.major > self.host.major {
            write!(
                f,
                "plugin interface {} is newer than this nodeinit's {}: upgrade nodeinit \
                 (or use a plugin built against nodeinit-plugin-api {}.x)",
                self.plugin, self.host, self.host.major
            )
        } else {
            write!(
                f,
                "plugin interface {} is older than this nodeinit's {}: rebuild the plugin \
                 against nodeinit-plugin-api {}.x",
                self.plugin, self.host, self.host.major
            )
        }
    }
}

impl std::error::Error for IncompatibleInterface {}

impl InterfaceVersion {
    /// The version of this build.
    pub const CURRENT: Self = Self {
        major: INTERFACE_MAJOR,
        minor: INTERFACE_MINOR,
    };

    /// The compatibility rule, from the host's side (`self` is the host):
    ///
    /// * **Same major**: loads, whatever the minors. A plugin older than the
    ///   host lacks the fields appended since; the host sees them as absent
    ///   (every field after the first release's `last_prefix_field` is read
    ///   through an `Option`). A plugin newer than the host has fields the host
    ///   does not know and never reads.
    /// * **Different major**: refused, naming the side to upgrade.
    ///
    /// # Errors
    ///
    /// [`IncompatibleInterface`] when the majors differ.
    pub fn check_plugin(self, plugin: Self) -> Result<(), IncompatibleInterface> {
        if self.major == plugin.major {
            Ok(())
        } else {
            Err(IncompatibleInterface { host: self, plugin })
        }
    }
}

/// Magic bytes at the start of [`InterfaceMark`].
pub const INTERFACE_MARK_MAGIC: [u8; 8] = *b"NODEINIT";

/// Name of the symbol holding a plugin's [`InterfaceMark`] (NUL-terminated).
pub const INTERFACE_MARK_SYMBOL: &[u8] = b"NODEINIT_PLUGIN_INTERFACE\0";

/// Plain `#[repr(C)]` data every plugin exports under
/// [`INTERFACE_MARK_SYMBOL`]. The loader reads it *before* abi_stable's layout
/// check, so a plugin from another interface major is refused with one clear
/// sentence instead of a layout report; and a library without it is "not a
/// nodeinit plugin". Its layout must never change.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct InterfaceMark {
    /// Always [`INTERFACE_MARK_MAGIC`].
    pub magic: [u8; 8],
    /// The plugin's interface version.
    pub version: InterfaceVersion,
}

impl InterfaceMark {
    /// The mark of this build.
    pub const CURRENT: Self = Self {
        magic: INTERFACE_MARK_MAGIC,
        version: InterfaceVersion::CURRENT,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: InterfaceVersion = InterfaceVersion { major: 1, minor: 3 };

    #[test]
    fn same_version_loads() {
        assert_eq!(HOST.check_plugin(HOST), Ok(()));
    }

    #[test]
    fn older_and_newer_minor_load() {
        assert_eq!(
            HOST.check_plugin(InterfaceVersion { major: 1, minor: 0 }),
            Ok(())
        );
        assert_eq!(
            HOST.check_plugin(InterfaceVersion { major: 1, minor: 9 }),
            Ok(())
        );
    }

    #[test]
    fn newer_major_asks_to_upgrade_nodeinit() {
        let err = HOST
            .check_plugin(InterfaceVersion { major: 2, minor: 0 })
            .unwrap_err();
        assert!(err.to_string().starts_with(
            "plugin interface 2.0 is newer than this nodeinit's 1.3: upgrade nodeinit"
        ));
    }

    #[test]
    fn older_major_asks_to_rebuild_plugin() {
        let host = InterfaceVersion { major: 2, minor: 0 };
        let err = host.check_plugin(HOST).unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugin interface 1.3 is older than this nodeinit's 2.0: rebuild the plugin \
             against nodeinit-plugin-api 2.x"
        );
    }
}
