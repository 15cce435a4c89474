//! [`CgroupfsManager`]: the `hpc_node::CgroupManager` of this plugin.
//!
//! Owns option handling at construction, RI1 ownership checks and the
//! translation of each trait call into validated types for the modules that
//! do the work. Must never touch cgroupfs itself beyond what those modules do.

use std::io::{self, ErrorKind};
use std::path::Path;
use std::time::Duration;

use hpc_node::{
    CgroupError, CgroupHandle, CgroupManager, CgroupMetrics, ResourceLimits, SliceOwner,
};
use nodeinit_plugin_api::HostServices;

use crate::cgroup_path::{PathRefused, RelativeCgroupPath, ScopePath, SlicePath};
use crate::controller::Controller;
use crate::events::{self, EventsError};
use crate::hierarchy::{self, HierarchyReport};
use crate::io_device::{self, IoDevice};
use crate::limits::ScopeLimits;
use crate::names::ScopeName;
use crate::options::{CgroupfsOptions, OwnerPolicy, SetupError};
use crate::root::CgroupRoot;
use crate::{metrics, scope};

/// cgroup v2 filesystem backend.
#[derive(Debug, Clone)]
pub struct CgroupfsManager {
    root: CgroupRoot,
    controllers: Vec<Controller>,
    owner: OwnerPolicy,
    io_devices: Vec<IoDevice>,
    kill_timeout: Duration,
    require_controllers: bool,
}

impl CgroupfsManager {
    /// Build a manager: verify `root` is cgroup2, detect block devices when
    /// `io_devices` is not given.
    ///
    /// # Errors
    ///
    /// [`SetupError`] naming the option at fault.
    pub fn new(options: CgroupfsOptions) -> Result<Self, SetupError> {
        if options.kill_timeout_ms == 0 {
            return Err(SetupError::Invalid {
                key: "kill_timeout_ms",
                reason:
                    "0 would give killed processes no time to exit; use at least 1 (default 10000)"
                        .to_owned(),
            });
        }
        let root = CgroupRoot::open(&options.root).map_err(|err| SetupError::Root(err.0))?;
        let io_devices = match options.io_devices {
            Some(devices) => devices,
            None => {
                io_device::detect(Path::new(io_device::SYS_BLOCK)).map_err(SetupError::IoDevices)?
            }
        };
        Ok(Self {
            root,
            controllers: options.controllers,
            owner: options.owner,
            io_devices,
            kill_timeout: Duration::from_millis(options.kill_timeout_ms),
            require_controllers: options.require_controllers,
        })
    }

    /// The plugin constructor used by `export_plugin!`. The host services are
    /// not needed: this backend depends on no other backend.
    ///
    /// # Errors
    ///
    /// As [`CgroupfsManager::new`].
    pub fn from_plugin(_host: &HostServices, options: CgroupfsOptions) -> Result<Self, SetupError> {
        Self::new(options)
    }

    /// The verified cgroup root.
    #[must_use]
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The block devices `io_max` applies to.
    #[must_use]
    pub fn io_devices(&self) -> &[IoDevice] {
        &self.io_devices
    }

    /// [`CgroupManager::create_hierarchy`], returning what it enabled, what the
    /// kernel lacks and which slices it created.
    ///
    /// # Errors
    ///
    /// [`CgroupError::CreationFailed`] naming the file or directory at fault.
    pub fn create_hierarchy_report(&self) -> Result<HierarchyReport, CgroupError> {
        let report = hierarchy::create(
            self.root.path(),
            &self.controllers,
            self.require_controllers,
        )
        .map_err(|reason| CgroupError::CreationFailed { reason })?;
        if !report.missing.is_empty() {
            let missing: Vec<&str> = report.missing.iter().map(Controller::name).collect();
            tracing::warn!(
                root = %self.root.as_str(),
                missing = %missing.join(","),
                "wanted cgroup controllers are not offered by the kernel; scopes will get no limits for them"
            );
        }
        tracing::info!(
            root = %self.root.as_str(),
            enabled = %report.enabled.iter().map(Controller::name).collect::<Vec<_>>().join(","),
            created = report.created_slices.len(),
            "cgroup hierarchy ready"
        );
        Ok(report)
    }

    fn check_owner(&self, slice_owner: SliceOwner, path: String) -> Result<(), CgroupError> {
        if self.owner.permits(slice_owner) {
            Ok(())
        } else {
            tracing::warn!(%path, ?slice_owner, policy = ?self.owner, "refused: slice owned by another system (RI1)");
            Err(CgroupError::PermissionDenied {
                path,
                owner: slice_owner,
            })
        }
    }

    fn inside_root(&self, path: &str) -> Result<std::path::PathBuf, CgroupError> {
        let relative =
            RelativeCgroupPath::parse(path, self.root.as_str()).map_err(invalid_input)?;
        Ok(self.root.path().join(relative.as_relative()))
    }
}

fn invalid_input(refused: PathRefused) -> CgroupError {
    CgroupError::Io(io::Error::new(ErrorKind::InvalidInput, refused.0))
}

impl CgroupManager for CgroupfsManager {
    fn create_hierarchy(&self) -> Result<(), CgroupError> {
        self.create_hierarchy_report().map(|_| ())
    }

    fn create_scope(
        &self,
        parent_slice: &str,
        name: &str,
        limits: &ResourceLimits,
    ) -> Result<CgroupHandle, CgroupError> {
        let failed = |reason: String| CgroupError::CreationFailed { reason };
        let parent = SlicePath::parse(parent_slice, self.root.as_str())
            .map_err(|why| failed(format!("invalid parent slice: {why}")))?;
        let name =
            ScopeName::new(name).map_err(|why| failed(format!("invalid scope name: {why}")))?;
        self.check_owner(parent.owner(), parent.as_relative())?;
        let limits = ScopeLimits::validate(limits, &self.io_devices)
            .map_err(|why| failed(format!("invalid limits for scope {name}: {why}")))?;
        scope::create(&self.root, &parent, &name, &limits)
    }

    fn destroy_scope(&self, handle: &CgroupHandle) -> Result<(), CgroupError> {
        let scope = ScopePath::parse(&handle.path, self.root.as_str()).map_err(invalid_input)?;
        self.check_owner(scope.owner(), scope.as_relative())?;
        scope::destroy(&self.root, &scope, self.kill_timeout)
    }

    fn read_metrics(&self, path: &str) -> Result<CgroupMetrics, CgroupError> {
        metrics::read(&self.inside_root(path)?)
    }

    fn is_scope_empty(&self, handle: &CgroupHandle) -> Result<bool, CgroupError> {
        let dir = self.inside_root(&handle.path)?;
        match events::read(&dir) {
            Ok(events) => Ok(!events.populated),
            Err(EventsError::Read(err)) if err.kind() == ErrorKind::NotFound => {
                Err(CgroupError::NotFound {
                    path: dir.display().to_string(),
                })
            }
            Err(err) => Err(CgroupError::Io(io::Error::other(err.to_string()))),
        }
    }
}
