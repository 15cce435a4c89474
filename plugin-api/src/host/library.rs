//! Opening one plugin library and reading its root module.
//!
//! Owns everything `abi_stable` does at load time, so the host never names
//! `abi_stable`. Does NOT check the file (ownership, mode, ELF headers, pins):
//! that is the host loader's job and must happen before [`PluginLibrary::open`].
//!
//! Never uses `RootModule::load_from_file`/`load_from_directory`: they cache
//! one module per root-module type for the whole process, so a second plugin
//! would silently be the first one again.

use std::fmt;
use std::path::Path;

use abi_stable::library::{lib_header_from_raw_library, LibraryError, RawLibrary};
use abi_stable::std_types::RStr;

use crate::abi::{
    ErrorKind, HostServices, IncompatibleInterface, InterfaceMark, InterfaceVersion, PluginError,
    PluginRootRef, INTERFACE_MARK_MAGIC, INTERFACE_MARK_SYMBOL,
};
use crate::bridge::from_abi::{CgroupAdapter, MountAdapter, NamespaceAdapter, ReadinessAdapter};
use crate::bridge::kinds::{self, BackendKind, Kind};

/// Why a library could not be opened as a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// `dlopen` failed (missing dependency, bad relocation, ...).
    Dlopen(String),
    /// The library exports no `NODEINIT_PLUGIN_INTERFACE` / root module.
    NotAPlugin(String),
    /// Built for another interface major.
    Incompatible(IncompatibleInterface),
    /// abi_stable's layout check failed: `summary` holds its `Error:` lines,
    /// `report` the whole (often thousand-line) text.
    AbiMismatch {
        /// One line.
        summary: String,
        /// Everything abi_stable said.
        report: String,
    },
    /// The root module's initialiser failed or panicked.
    RootModule(String),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dlopen(r) => write!(f, "dlopen failed: {r}"),
            Self::NotAPlugin(r) => write!(f, "not a nodeinit plugin: {r}"),
            Self::Incompatible(i) => write!(f, "{i}"),
            Self::AbiMismatch { summary, .. } => write!(
                f,
                "ABI layout mismatch ({summary}); rebuild the plugin against this \
                 nodeinit's nodeinit-plugin-api"
            ),
            Self::RootModule(r) => write!(f, "plugin root module failed to initialise: {r}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// A plugin library, opened and checked against this interface.
pub struct PluginLibrary {
    root: PluginRootRef,
}

impl fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PluginLibrary({} {})", self.name(), self.version())
    }
}

impl PluginLibrary {
    /// `dlopen`s `path` (never unloaded) and reads its root module.
    ///
    /// # Safety
    ///
    /// `dlopen` runs the library's initialisers with this process's
    /// privileges, and a file shorter than its `PT_LOAD` segments kills the
    /// process with `SIGBUS`. The caller must have verified the file (owner,
    /// mode, ELF headers) and should pass a path that cannot be swapped
    /// underneath, such as `/proc/self/fd/N` of the checked descriptor, kept
    /// open for the life of the process.
    pub unsafe fn open(path: &Path) -> Result<Self, OpenError> {
        let raw = RawLibrary::load_at(path).map_err(|e| OpenError::Dlopen(one_line(&e)))?;
        let mark = read_mark(&raw)?;
        InterfaceVersion::CURRENT
            .check_plugin(mark.version)
            .map_err(OpenError::Incompatible)?;
        // SAFETY: the library was built by `export_plugin!` (it carries our
        // interface mark), whose header symbol is a `LibHeader`.
        let header = unsafe { lib_header_from_raw_library(&raw) }
            .map_err(|e| OpenError::NotAPlugin(one_line(&e)))?;
        // abi_stable never unloads libraries; neither do we.
        std::mem::forget(raw);
        let root = header
            .init_root_module::<PluginRootRef>()
            .map_err(classify)?;
        Ok(Self { root })
    }

    /// The plugin's name.
    pub fn name(&self) -> &'static str {
        self.root.name().as_str()
    }

    /// The plugin's own version.
    pub fn version(&self) -> &'static str {
        self.root.version().as_str()
    }

    /// The interface version it was built against.
    pub fn interface(&self) -> InterfaceVersion {
        self.root.interface()
    }

    /// The backend kinds it provides.
    pub fn backends(&self) -> Vec<BackendKind> {
        BackendKind::ALL
            .into_iter()
            .filter(|k| kinds::provides(&self.root, *k))
            .collect()
    }

    fn not_provided(&self, kind: BackendKind) -> PluginError {
        PluginError::new(
            ErrorKind::NOT_PROVIDED,
            format!(
                "plugin {} provides no {kind} backend (it provides: {})",
                self.name(),
                self.backends()
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    }

    /// Constructs its backend of kind `K` with `options_json`, as the host's
    /// adapter.
    ///
    /// # Errors
    ///
    /// `NOT_PROVIDED`, `INVALID_OPTIONS`, `CONSTRUCTION_FAILED` or `PANICKED`.
    pub fn construct<K: Kind>(
        &self,
        host: HostServices,
        options_json: &str,
    ) -> Result<K::Adapter, PluginError> {
        let ctor = K::constructor(&self.root).ok_or_else(|| self.not_provided(K::KIND))?;
        ctor(host, RStr::from_str(options_json))
            .into_result()
            .map(|b| K::adapt(b, self.name()))
    }

    /// Constructs its cgroup backend ([`Self::construct`] of [`kinds::Cgroup`]).
    ///
    /// # Errors
    ///
    /// As [`Self::construct`].
    pub fn cgroup(
        &self,
        host: HostServices,
        options_json: &str,
    ) -> Result<CgroupAdapter, PluginError> {
        self.construct::<kinds::Cgroup>(host, options_json)
    }

    /// Constructs its mount backend.
    ///
    /// # Errors
    ///
    /// As [`Self::construct`].
    pub fn mount(
        &self,
        host: HostServices,
        options_json: &str,
    ) -> Result<MountAdapter, PluginError> {
        self.construct::<kinds::Mount>(host, options_json)
    }

    /// Constructs its namespace backend.
    ///
    /// # Errors
    ///
    /// As [`Self::construct`].
    pub fn namespace(
        &self,
        host: HostServices,
        options_json: &str,
    ) -> Result<NamespaceAdapter, PluginError> {
        self.construct::<kinds::Namespace>(host, options_json)
    }

    /// Constructs its readiness backend.
    ///
    /// # Errors
    ///
    /// As [`Self::construct`].
    pub fn readiness(
        &self,
        host: HostServices,
        options_json: &str,
    ) -> Result<ReadinessAdapter, PluginError> {
        self.construct::<kinds::Readiness>(host, options_json)
    }
}

fn read_mark(raw: &RawLibrary) -> Result<InterfaceMark, OpenError> {
    // SAFETY: a symbol's address is read as a pointer-sized value; we only
    // interpret the pointee after checking the magic bytes it must start with.
    let ptr: *const InterfaceMark =
        match unsafe { raw.get::<*const InterfaceMark>(INTERFACE_MARK_SYMBOL) } {
            Ok(sym) => *sym,
            Err(_) => {
                return Err(OpenError::NotAPlugin(
                    "symbol NODEINIT_PLUGIN_INTERFACE not found (was the plugin built with \
                 nodeinit_plugin_api::export_plugin!?)"
                        .to_owned(),
                ))
            }
        };
    if ptr.is_null() {
        return Err(OpenError::NotAPlugin(
            "NODEINIT_PLUGIN_INTERFACE is null".to_owned(),
        ));
    }
    // SAFETY: non-null, and exported by the library as a `#[repr(C)]`
    // `InterfaceMark`-sized static whose first 8 bytes we check next; the
    // library stays mapped for the life of the process.
    let mark = unsafe { ptr.read_unaligned() };
    if mark.magic != INTERFACE_MARK_MAGIC {
        return Err(OpenError::NotAPlugin(
            "NODEINIT_PLUGIN_INTERFACE has the wrong magic bytes".to_owned(),
        ));
    }
    Ok(mark)
}

fn classify(e: LibraryError) -> OpenError {
    match e {
        LibraryError::AbiInstability(_) => {
            let report = e.to_string();
            OpenError::AbiMismatch {
                summary: summarize_abi_report(&report),
                report,
            }
        }
        LibraryError::RootModule { .. } => OpenError::RootModule(one_line(&e)),
        other => OpenError::NotAPlugin(one_line(&other)),
    }
}

fn one_line(e: &dyn fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `Error:` lines of an abi_stable layout report, on one line.
pub fn summarize_abi_report(report: &str) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for line in report.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Error:") {
            let rest = rest.trim();
            if !rest.is_empty() && !seen.contains(&rest) {
                seen.push(rest);
            }
        }
    }
    let mut out = if seen.is_empty() {
        report
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("layout check failed")
            .to_owned()
    } else {
        seen.join("; ")
    };
    if out.len() > 300 {
        let mut cut = 300;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_keeps_error_lines_once() {
        let report = "Layout of expected type:\n  lots\nError:field count mismatch\n   more\n  Error: field count mismatch\nError:  different name: a vs b\n";
        assert_eq!(
            summarize_abi_report(report),
            "field count mismatch; different name: a vs b"
        );
    }

    #[test]
    fn summary_without_error_lines_uses_first_line() {
        assert_eq!(
            summarize_abi_report("\n  something odd\nsecond"),
            "something odd"
        );
    }
}
