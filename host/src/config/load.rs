//! Finding and reading the config: `--config` first, then
//! `nodeinit.config=` from the kernel command line, then the default path;
//! only when the default path does not exist is the built-in config used (a
//! path someone named explicitly must exist).

use std::path::{Path, PathBuf};

use crate::config::defaults::{BUILTIN_CONFIG, DEFAULT_CONFIG_PATH};
use crate::config::{ConfigError, KernelCmdline, NodeConfig, SourceLocation};

/// Where the config in force came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// `--config PATH`.
    Argument(PathBuf),
    /// `nodeinit.config=PATH` on the kernel command line.
    KernelCmdline(PathBuf),
    /// The default path, which existed.
    DefaultPath(PathBuf),
    /// No file at the default path: the built-in config.
    BuiltIn,
}

impl ConfigOrigin {
    /// The file, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Argument(p) | Self::KernelCmdline(p) | Self::DefaultPath(p) => Some(p),
            Self::BuiltIn => None,
        }
    }
}

/// A parsed config and its origin.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedConfig {
    /// The config.
    pub config: NodeConfig,
    /// Where it came from.
    pub origin: ConfigOrigin,
}

/// Find and parse the config. `default_path` is normally [`DEFAULT_CONFIG_PATH`].
///
/// # Errors
///
/// [`ConfigError`] naming the file (and line and key when it has content).
pub fn load(
    argument: Option<&Path>,
    cmdline: &KernelCmdline,
    default_path: Option<&Path>,
) -> Result<LoadedConfig, ConfigError> {
    let default_path = default_path.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
    let origin = match (argument, &cmdline.config) {
        (Some(path), _) => ConfigOrigin::Argument(path.to_path_buf()),
        (None, Some(path)) => ConfigOrigin::KernelCmdline(path.clone()),
        (None, None) => match default_path.symlink_metadata() {
            Ok(_) => ConfigOrigin::DefaultPath(default_path.to_path_buf()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigOrigin::BuiltIn,
            Err(source) => {
                return Err(ConfigError::Unreadable {
                    path: default_path.to_path_buf(),
                    source,
                })
            }
        },
    };
    let config = match origin.path() {
        None => load_from_str(BUILTIN_CONFIG, Path::new("<built-in config>"))?,
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|source| ConfigError::Unreadable {
                path: path.to_path_buf(),
                source,
            })?;
            load_from_bytes(&bytes, path)?
        }
    };
    Ok(LoadedConfig { config, origin })
}

/// Parse config bytes read from `path` (used in messages only).
///
/// # Errors
///
/// [`ConfigError::NotUtf8`] or [`ConfigError::Invalid`].
pub fn load_from_bytes(bytes: &[u8], path: &Path) -> Result<NodeConfig, ConfigError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => load_from_str(text, path),
        Err(e) => {
            let valid = e.valid_up_to();
            // Everything before the bad byte is UTF-8: locate it there.
            let prefix = String::from_utf8_lossy(&bytes[..valid]);
            let line_end = bytes[valid..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |i| valid + i);
            let line_text = String::from_utf8_lossy(&bytes[..line_end]);
            let mut location = SourceLocation::at(&line_text, prefix.len());
            location.column = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            Err(ConfigError::NotUtf8 {
                path: path.to_path_buf(),
                location,
                byte: bytes[valid],
            })
        }
    }
}

/// Parse config text read from `path` (used in messages only).
///
/// # Errors
///
/// [`ConfigError::Invalid`] naming line, column and key.
pub fn load_from_str(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
    let mut config = parse(text, path)?;
    config.source = Some(super::schema::ConfigSource {
        path: path.to_path_buf(),
        text: text.to_owned(),
    });
    Ok(config)
}

fn parse(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
    toml::from_str::<NodeConfig>(text).map_err(|e| {
        let offset = e.span().map_or(0, |span| span.start);
        let mut location = SourceLocation::at(text, offset);
        let message = e.message().trim().to_owned();
        // "missing field `exec`" points at the table: name the missing key itself.
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            location.key = if location.key.is_empty() {
                field.to_owned()
            } else {
                format!("{}.{field}", location.key)
            };
        }
        let message =
            nodeinit_handoff::escape::escape(&explain(&location.key, message)).into_owned();
        ConfigError::Invalid {
            path: path.to_path_buf(),
            location,
            message,
        }
    })
}

/// Add what to do to serde's terse messages where it helps.
fn explain(key: &str, message: String) -> String {
    if message.starts_with("unknown field")
        && key.starts_with("plugins.")
        && key.matches('.').count() == 1
    {
        return format!(
            "unknown backend kind: {message}; each [plugins.<kind>] table is one of cgroup, mount, namespace, readiness"
        );
    }
    if message.starts_with("unknown field") {
        return format!("{message}; remove the key or fix its spelling");
    }
    message
}
