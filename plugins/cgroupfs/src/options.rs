//! The plugin's options (`[plugins.cgroup.options]` in nodeinit.toml).
//!
//! Owns the option names, their defaults and their validation messages.
//! Unknown keys are refused (`deny_unknown_fields`) so a typo is an error
//! naming the key. Must never touch the system: checks that need the kernel
//! happen when the manager is built.

use std::path::PathBuf;

use hpc_node::SliceOwner;
use serde::Deserialize;

use crate::controller::Controller;
use crate::io_device::IoDevice;

/// Default cgroup root.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";
/// Default time `destroy_scope` waits for killed processes to go.
pub const DEFAULT_KILL_TIMEOUT_MS: u64 = 10_000;

/// Which slices this manager may create and destroy scopes in (RI1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OwnerPolicy {
    /// Only below `pact.slice` (the manager serves pact).
    Pact,
    /// Only below `workload.slice` (the manager serves lattice).
    Workload,
    /// Both: nodeinit itself, which builds the whole hierarchy at boot.
    #[default]
    Any,
}

impl OwnerPolicy {
    /// May a manager with this policy write in a slice owned by `owner`?
    #[must_use]
    pub fn permits(self, owner: SliceOwner) -> bool {
        matches!(
            (self, owner),
            (Self::Any, _)
                | (Self::Pact, SliceOwner::Pact)
                | (Self::Workload, SliceOwner::Workload)
        )
    }
}

/// Options of the cgroupfs backend. Every field has a default, so an empty
/// table (or none) gives a manager of the whole `/sys/fs/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupfsOptions {
    /// The cgroup2 mount (or a delegated subtree of it) to manage.
    #[serde(default = "default_root")]
    pub root: PathBuf,
    /// Controllers to enable for the slices.
    #[serde(default = "Controller::defaults")]
    pub controllers: Vec<Controller>,
    /// Slices this manager may write in.
    #[serde(default)]
    pub owner: OwnerPolicy,
    /// Block devices (`MAJ:MIN`) that `io_max` applies to; `None`: every whole
    /// disk in `/sys/block` except loop, ram and zram.
    #[serde(default)]
    pub io_devices: Option<Vec<IoDevice>>,
    /// How long `destroy_scope` waits for killed processes to leave, in ms.
    #[serde(default = "default_kill_timeout_ms")]
    pub kill_timeout_ms: u64,
    /// Make a wanted controller the kernel lacks an error instead of a warning.
    #[serde(default)]
    pub require_controllers: bool,
}

impl Default for CgroupfsOptions {
    fn default() -> Self {
        Self {
            root: default_root(),
            controllers: Controller::defaults(),
            owner: OwnerPolicy::default(),
            io_devices: None,
            kill_timeout_ms: DEFAULT_KILL_TIMEOUT_MS,
            require_controllers: false,
        }
    }
}

fn default_root() -> PathBuf {
    PathBuf::from(DEFAULT_ROOT)
}

fn default_kill_timeout_ms() -> u64 {
    DEFAULT_KILL_TIMEOUT_MS
}

/// Why the manager could not be built from its options.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `root` is not a usable cgroup2 directory.
    #[error("option `root`: {0}")]
    Root(String),
    /// An option value is out of range.
    #[error("option `{key}`: {reason}")]
    Invalid {
        /// The option.
        key: &'static str,
        /// What is wrong and what to do.
        reason: String,
    },
    /// `io_devices` was not given and detection failed.
    #[error("option `io_devices` not set and block devices could not be detected: {0}")]
    IoDevices(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_options_give_the_defaults() {
        let options: CgroupfsOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(options, CgroupfsOptions::default());
        assert_eq!(options.root, PathBuf::from("/sys/fs/cgroup"));
        let names: Vec<&str> = options.controllers.iter().map(Controller::name).collect();
        assert_eq!(names, ["cpu", "memory", "io", "pids"]);
        assert_eq!(options.owner, OwnerPolicy::Any);
        assert_eq!(options.kill_timeout_ms, 10_000);
        assert!(!options.require_controllers);
        assert_eq!(options.io_devices, None);
    }

    #[test]
    fn every_option_parses() {
        let options: CgroupfsOptions = serde_json::from_str(
            r#"{"root": "/sys/fs/cgroup/unified", "controllers": ["pids"], "owner": "workload",
                "io_devices": ["259:0", "8:16"], "kill_timeout_ms": 500, "require_controllers": true}"#,
        )
        .unwrap();
        assert_eq!(options.root, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(options.controllers, vec![Controller::new("pids").unwrap()]);
        assert_eq!(options.owner, OwnerPolicy::Workload);
        assert_eq!(
            options.io_devices,
            Some(vec![IoDevice::new(259, 0), IoDevice::new(8, 16)])
        );
        assert_eq!(options.kill_timeout_ms, 500);
        assert!(options.require_controllers);
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        let err =
            serde_json::from_str::<CgroupfsOptions>(r#"{"controlers": ["cpu"]}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `controlers`"),
            "{err}"
        );
        let err = serde_json::from_str::<CgroupfsOptions>(r#"{"owner": "lattice"}"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown variant `lattice`, expected one of `pact`, `workload`, `any`"),
            "{err}"
        );
        let err =
            serde_json::from_str::<CgroupfsOptions>(r#"{"io_devices": ["sda"]}"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("\"sda\" is not a block device number"),
            "{err}"
        );
    }

    #[test]
    fn owner_policy_follows_ri1() {
        assert!(OwnerPolicy::Pact.permits(SliceOwner::Pact));
        assert!(!OwnerPolicy::Pact.permits(SliceOwner::Workload));
        assert!(OwnerPolicy::Workload.permits(SliceOwner::Workload));
        assert!(!OwnerPolicy::Workload.permits(SliceOwner::Pact));
        assert!(
            OwnerPolicy::Any.permits(SliceOwner::Pact)
                && OwnerPolicy::Any.permits(SliceOwner::Workload)
        );
    }
}
