//! The backend's configuration: the `[plugins.mount.options]` table.
//!
//! Owns the option names, their defaults (taken from `hpc_node`, never
//! restated) and their validation into a [`ManagerConfig`]. It must never
//! touch the filesystem: directories may appear after the plugin is loaded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hpc_node::mount::paths::UENV_MOUNT_BASE;
use hpc_node::mount::DEFAULT_HOLD_TIME_SECS;
use nodeinit_contracts::{AbsolutePath, InvalidAbsolutePath};
use serde::Deserialize;

/// Default directory of the state file.
pub const DEFAULT_STATE_DIR: &str = "/run/nodeinit";
/// Longest accepted hold time (one year): longer is a typo, and would
/// overflow the monotonic clock arithmetic.
pub const MAX_HOLD_TIME_SECS: u64 = 365 * 24 * 3600;

/// Options as written in the config (re-encoded as JSON by the host).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SquashfsOptions {
    /// Absolute directories images may live in (subdirectories included).
    #[serde(default)]
    pub image_dirs: Vec<PathBuf>,
    /// Where images are mounted: `<mount_base>/<stem>` for an image directly
    /// in the first image dir, `<mount_base>/<stem>-<dir hash>` for others.
    #[serde(default = "default_mount_base")]
    pub mount_base: PathBuf,
    /// Seconds a mount nobody holds stays mounted.
    #[serde(default = "default_hold_time_secs")]
    pub hold_time_secs: u64,
    /// Directory of the state file (`squashfs-mounts.json`).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

fn default_mount_base() -> PathBuf {
    PathBuf::from(UENV_MOUNT_BASE)
}

fn default_hold_time_secs() -> u64 {
    DEFAULT_HOLD_TIME_SECS
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

impl Default for SquashfsOptions {
    fn default() -> Self {
        Self {
            image_dirs: Vec::new(),
            mount_base: default_mount_base(),
            hold_time_secs: default_hold_time_secs(),
            state_dir: default_state_dir(),
        }
    }
}

/// A rejected option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("squashfs option `{key}`: {problem}")]
pub struct OptionError {
    /// The option key.
    pub key: &'static str,
    /// What is wrong and what to write instead.
    pub problem: String,
}

/// Validated settings of a [`crate::SquashfsManager`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerConfig {
    /// See [`SquashfsOptions::image_dirs`].
    pub image_dirs: Vec<PathBuf>,
    /// See [`SquashfsOptions::mount_base`].
    pub mount_base: PathBuf,
    /// See [`SquashfsOptions::hold_time_secs`]; sub-second in tests.
    pub hold_time: Duration,
    /// See [`SquashfsOptions::state_dir`].
    pub state_dir: PathBuf,
}

impl TryFrom<SquashfsOptions> for ManagerConfig {
    type Error = OptionError;

    fn try_from(options: SquashfsOptions) -> Result<Self, OptionError> {
        for dir in &options.image_dirs {
            require_absolute("image_dirs", dir)?;
        }
        require_absolute("mount_base", &options.mount_base)?;
        require_absolute("state_dir", &options.state_dir)?;
        if options.hold_time_secs > MAX_HOLD_TIME_SECS {
            return Err(OptionError {
                key: "hold_time_secs",
                problem: format!(
                    "{} is more than a year ({MAX_HOLD_TIME_SECS}); use force_unmount to keep control instead",
                    options.hold_time_secs
                ),
            });
        }
        Ok(Self {
            image_dirs: options.image_dirs,
            mount_base: options.mount_base,
            hold_time: Duration::from_secs(options.hold_time_secs),
            state_dir: options.state_dir,
        })
    }
}

/// The one absolute-path rule ([`AbsolutePath`]: `/`-rooted, no NUL, no
/// `..`), with this backend's wording.
fn require_absolute(key: &'static str, path: &Path) -> Result<(), OptionError> {
    match path.to_str().map(AbsolutePath::parse) {
        Some(Ok(_)) => Ok(()),
        Some(Err(InvalidAbsolutePath::Relative(_))) => Err(OptionError {
            key,
            problem: format!("{} is relative; give an absolute path", path.display()),
        }),
        Some(Err(e)) => Err(OptionError {
            key,
            problem: e.to_string(),
        }),
        None => Err(OptionError {
            key,
            problem: format!("{} is not valid UTF-8", path.display()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_hpc_node() {
        let options: SquashfsOptions =
            serde_json::from_str(r#"{"image_dirs":["/images"]}"#).unwrap();
        let config = ManagerConfig::try_from(options).unwrap();
        assert_eq!(config.mount_base, Path::new(UENV_MOUNT_BASE));
        assert_eq!(
            config.hold_time,
            Duration::from_secs(DEFAULT_HOLD_TIME_SECS)
        );
        assert_eq!(config.state_dir, Path::new("/run/nodeinit"));
        assert_eq!(config.image_dirs, [PathBuf::from("/images")]);
    }

    #[test]
    fn unknown_key_is_named() {
        let err =
            serde_json::from_str::<SquashfsOptions>(r#"{"image_dir":["/images"]}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `image_dir`"),
            "{err}"
        );
    }

    #[test]
    fn relative_paths_are_refused_by_key() {
        let options = SquashfsOptions {
            image_dirs: vec![PathBuf::from("images")],
            ..SquashfsOptions::default()
        };
        let err = ManagerConfig::try_from(options).unwrap_err();
        assert_eq!(err.key, "image_dirs");
        assert!(err.to_string().contains("images is relative"), "{err}");
        let options = SquashfsOptions {
            state_dir: PathBuf::from("run"),
            ..SquashfsOptions::default()
        };
        assert_eq!(
            ManagerConfig::try_from(options).unwrap_err().key,
            "state_dir"
        );
    }

    #[test]
    fn absurd_hold_time_is_refused() {
        let options = SquashfsOptions {
            hold_time_secs: u64::MAX,
            ..SquashfsOptions::default()
        };
        let err = ManagerConfig::try_from(options).unwrap_err();
        assert_eq!(err.key, "hold_time_secs");
        assert!(err.to_string().contains("more than a year"), "{err}");
    }
}
