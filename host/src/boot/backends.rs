//! Loading and constructing the configured backends, every error of the
//! config gathered before anything acts on them.
//!
//! Owns the order (mount before namespace: the namespace backend gets the
//! mount backend through `HostServices`) and the per-plugin record that
//! goes into `boot.json`. Never runs a backend operation.

use std::sync::Arc;

use hpc_node::CgroupManager;
use nodeinit_handoff::NamespaceFdProvider;
use nodeinit_plugin_api::{AllocationMounts, HostServices, PluginLibrary, ReadinessProvider};
use serde::{Deserialize, Serialize};

use crate::config::{BackendKind, NodeConfig, PluginSpec};
use crate::loader::load_plugin;

/// One configured plugin, as `boot.json` and `nodeinit check` report it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginRecord {
    /// Backend kind (`cgroup`, ...).
    pub kind: String,
    /// The resolved `.so` path.
    pub path: String,
    /// Whether boot depends on it.
    pub required: bool,
    /// Plugin name, when it loaded.
    pub name: Option<String>,
    /// Plugin version, when it loaded.
    pub version: Option<String>,
    /// Interface version, when it loaded.
    pub interface: Option<String>,
    /// The verified pin, if any.
    pub sha256: Option<String>,
    /// `null` when loaded and constructed; else the one-line error.
    pub error: Option<String>,
}

/// The constructed backends (each `None` when not configured or failed).
#[derive(Default, Clone)]
pub struct Backends {
    /// cgroup.
    pub cgroup: Option<Arc<dyn CgroupManager>>,
    /// mount.
    pub mount: Option<Arc<dyn AllocationMounts>>,
    /// namespace.
    pub namespace: Option<Arc<dyn NamespaceFdProvider>>,
    /// readiness.
    pub readiness: Option<Arc<dyn ReadinessProvider>>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("cgroup", &self.cgroup.is_some())
            .field("mount", &self.mount.is_some())
            .field("namespace", &self.namespace.is_some())
            .field("readiness", &self.readiness.is_some())
            .finish()
    }
}

/// The outcome of loading a config's plugins.
#[derive(Debug, Default)]
pub struct LoadedBackends {
    /// What could be constructed.
    pub backends: Backends,
    /// One record per configured plugin, in kind order.
    pub records: Vec<PluginRecord>,
}

impl LoadedBackends {
    /// `path: reason` for every plugin that failed.
    pub fn errors(&self) -> Vec<String> {
        self.records
            .iter()
            .filter_map(|r| {
                r.error
                    .as_ref()
                    .map(|e| format!("plugin {} ({}): {}", r.kind, r.path, e))
            })
            .collect()
    }

    /// Whether a required plugin failed.
    pub fn required_failed(&self) -> bool {
        self.records.iter().any(|r| r.required && r.error.is_some())
    }
}

/// A backend not to load, and why (it killed an earlier worker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excluded {
    /// The kind.
    pub kind: BackendKind,
    /// The reason recorded as its error.
    pub reason: String,
}

/// A plugin call about to happen while loading: kind, plugin name (the
/// file's before it loaded), method (`load` or `constructor`).
pub type LoadObserver<'a> = &'a mut dyn FnMut(BackendKind, &str, &str);

/// Loads and constructs every configured plugin, in kind order.
pub fn load_backends(config: &NodeConfig) -> LoadedBackends {
    load_backends_observed(config, &[], &mut |_, _, _| {})
}

/// [`load_backends`], skipping `excluded` kinds and telling `observe` before
/// each call into plugin code (so a worker can report it to the keeper).
pub fn load_backends_observed(
    config: &NodeConfig,
    excluded: &[Excluded],
    observe: LoadObserver<'_>,
) -> LoadedBackends {
    let mut out = LoadedBackends::default();
    for (kind, spec) in config.plugins.iter() {
        let path = spec.resolved_path(&config.host.plugin_dir);
        let mut record = PluginRecord {
            kind: kind.name().to_owned(),
            path: path.display().to_string(),
            required: spec.required,
            name: None,
            version: None,
            interface: None,
            sha256: None,
            error: None,
        };
        if let Some(excluded) = excluded.iter().find(|e| e.kind == kind) {
            record.error = Some(excluded.reason.clone());
            tracing::warn!(kind = kind.name(), path = %record.path, "not loaded: {}", excluded.reason);
            out.records.push(record);
            continue;
        }
        observe(kind, &file_label(&path), "load");
        match open(spec, &path) {
            Ok((library, sha256)) => {
                record.name = Some(library.name().to_owned());
                record.version = Some(library.version().to_owned());
                record.interface = Some(library.interface().to_string());
                record.sha256 = sha256;
                observe(kind, library.name(), "constructor");
                if let Err(e) = construct(config, kind, spec, &library, &mut out.backends) {
                    record.error = Some(e);
                }
            }
            Err(e) => record.error = Some(e),
        }
        if let Some(e) = &record.error {
            if record.required {
                tracing::error!(kind = kind.name(), path = %record.path, "{e}");
            } else {
                tracing::warn!(kind = kind.name(), path = %record.path, "optional plugin unavailable: {e}");
            }
        }
        out.records.push(record);
    }
    out
}

/// What to call a plugin before it loaded: `faulty` for `.../libnodeinit_faulty.so`.
pub fn file_label(path: &std::path::Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    stem.strip_prefix("libnodeinit_")
        .map(str::to_owned)
        .unwrap_or(stem)
}

fn open(
    spec: &PluginSpec,
    path: &std::path::Path,
) -> Result<(PluginLibrary, Option<String>), String> {
    let loaded = load_plugin(path, spec.sha256.as_ref()).map_err(|e| e.failure.to_string())?;
    Ok((loaded.library, loaded.sha256))
}

fn construct(
    config: &NodeConfig,
    kind: BackendKind,
    spec: &PluginSpec,
    library: &PluginLibrary,
    backends: &mut Backends,
) -> Result<(), String> {
    let options = spec.options_json()?;
    let host = HostServices::new(library.name(), backends.mount.clone());
    // An option error names the key inside the options: put it back at the
    // config file's line, as every other config error is.
    let err = |e: nodeinit_plugin_api::PluginError| match e.field("key") {
        Some(key) if e.kind == nodeinit_plugin_api::ErrorKind::INVALID_OPTIONS => {
            config.option_error(kind, key, e.message.as_str())
        }
        _ => e.message.to_string(),
    };
    match kind {
        BackendKind::Cgroup => {
            backends.cgroup = Some(Arc::new(library.cgroup(host, &options).map_err(err)?))
        }
        BackendKind::Mount => {
            backends.mount = Some(Arc::new(library.mount(host, &options).map_err(err)?))
        }
        BackendKind::Namespace => {
            backends.namespace = Some(Arc::new(library.namespace(host, &options).map_err(err)?));
        }
        BackendKind::Readiness => {
            backends.readiness = Some(Arc::new(library.readiness(host, &options).map_err(err)?));
        }
    }
    Ok(())
}
