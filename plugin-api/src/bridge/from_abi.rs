//! ABI → Rust, the host's half of the bridge: each adapter wraps a loaded
//! backend object and implements the `hpc_node` trait (plus the matching
//! extension trait) over it, so boot code, tests and benchmarks only ever
//! talk to `hpc_node` traits. [`super::to_abi`] is the other half.
//!
//! Never catches panics (the plugin side already did) and never touches a
//! backend's state beyond forwarding calls.

use std::any::Any;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use abi_stable::std_types::{ROption, RString};
use hpc_node::{
    CgroupError, CgroupHandle, CgroupManager, CgroupMetrics, MountError, MountHandle, MountManager,
    NamespaceError, NamespaceProvider, NamespaceRequest, NamespaceResponse, ReadinessError,
    ReadinessGate, ResourceLimits,
};
use nodeinit_contracts::NamespaceFdProvider;

use crate::abi::{
    CgroupBox, MountBox, NamespaceBox, RMountHandle, RNamespaceRequest, RResourceLimits,
    ReadinessBox,
};
use crate::ext::{AllocationMounts, ReadinessProvider};

/// A loaded cgroup backend as an `hpc_node::CgroupManager`.
pub struct CgroupAdapter {
    backend: CgroupBox,
    label: String,
}

impl CgroupAdapter {
    /// Wraps a constructed backend; `label` names it in `Debug` output.
    pub fn new(backend: CgroupBox, label: &str) -> Self {
        Self {
            backend,
            label: label.to_owned(),
        }
    }
}

impl std::fmt::Debug for CgroupAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CgroupAdapter({})", self.label)
    }
}

impl CgroupManager for CgroupAdapter {
    fn create_hierarchy(&self) -> Result<(), CgroupError> {
        self.backend
            .create_hierarchy()
            .into_result()
            .map_err(CgroupError::from)
    }
    fn create_scope(
        &self,
        parent_slice: &str,
        name: &str,
        limits: &ResourceLimits,
    ) -> Result<CgroupHandle, CgroupError> {
        self.backend
            .create_scope(
                parent_slice.into(),
                name.into(),
                RResourceLimits::from(limits),
            )
            .into_result()
            .map(|path| CgroupHandle { path: path.into() })
            .map_err(CgroupError::from)
    }
    fn destroy_scope(&self, handle: &CgroupHandle) -> Result<(), CgroupError> {
        self.backend
            .destroy_scope(handle.path.as_str().into())
            .into_result()
            .map_err(CgroupError::from)
    }
    fn read_metrics(&self, path: &str) -> Result<CgroupMetrics, CgroupError> {
        self.backend
            .read_metrics(path.into())
            .into_result()
            .map(CgroupMetrics::from)
            .map_err(CgroupError::from)
    }
    fn is_scope_empty(&self, handle: &CgroupHandle) -> Result<bool, CgroupError> {
        self.backend
            .is_scope_empty(handle.path.as_str().into())
            .into_result()
            .map_err(CgroupError::from)
    }
}

/// A loaded mount backend as an `hpc_node::MountManager` + [`AllocationMounts`].
///
/// Its object is shared: the host offers the same one to namespace plugins
/// (see [`AllocationMounts::loaded_backend`]).
pub struct MountAdapter {
    backend: Arc<MountBox>,
    label: String,
}

impl MountAdapter {
    /// Wraps a constructed backend.
    pub fn new(backend: MountBox, label: &str) -> Self {
        Self {
            backend: Arc::new(backend),
            label: label.to_owned(),
        }
    }
}

impl std::fmt::Debug for MountAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MountAdapter({})", self.label)
    }
}

impl MountManager for MountAdapter {
    fn acquire_mount(&self, image_path: &str) -> Result<MountHandle, MountError> {
        self.backend
            .acquire_mount(image_path.into())
            .into_result()
            .map(MountHandle::from)
            .map_err(MountError::from)
    }
    fn release_mount(&self, handle: &MountHandle) -> Result<(), MountError> {
        self.backend
            .release_mount(&RMountHandle::from(handle))
            .into_result()
            .map_err(MountError::from)
    }
    fn force_unmount(&self, image_path: &str) -> Result<(), MountError> {
        self.backend
            .force_unmount(image_path.into())
            .into_result()
            .map_err(MountError::from)
    }
    fn reconstruct_state(&self, active_allocations: &[String]) -> Result<(), MountError> {
        let active: Vec<RString> = active_allocations
            .iter()
            .map(|s| RString::from(s.as_str()))
            .collect();
        self.backend
            .reconstruct_state(active.as_slice().into())
            .into_result()
            .map_err(MountError::from)
    }
}

impl AllocationMounts for MountAdapter {
    fn acquire_for(
        &self,
        allocation_id: &str,
        image_path: &str,
    ) -> Result<MountHandle, MountError> {
        self.backend
            .acquire_for(allocation_id.into(), image_path.into())
            .into_result()
            .map(MountHandle::from)
            .map_err(MountError::from)
    }
    fn release_for(&self, allocation_id: &str, handle: &MountHandle) -> Result<(), MountError> {
        self.backend
            .release_for(allocation_id.into(), &RMountHandle::from(handle))
            .into_result()
            .map_err(MountError::from)
    }
    fn loaded_backend(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        Some(Arc::clone(&self.backend) as Arc<dyn Any + Send + Sync>)
    }
}

/// A loaded namespace backend as an `hpc_node::NamespaceProvider` +
/// [`NamespaceFdProvider`].
pub struct NamespaceAdapter {
    backend: NamespaceBox,
    label: String,
}

impl NamespaceAdapter {
    /// Wraps a constructed backend.
    pub fn new(backend: NamespaceBox, label: &str) -> Self {
        Self {
            backend,
            label: label.to_owned(),
        }
    }
}

impl std::fmt::Debug for NamespaceAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NamespaceAdapter({})", self.label)
    }
}

impl NamespaceProvider for NamespaceAdapter {
    fn create_namespaces(
        &self,
        request: &NamespaceRequest,
    ) -> Result<NamespaceResponse, NamespaceError> {
        let response = self
            .backend
            .create_namespaces(&RNamespaceRequest::from(request))
            .into_result()
            .map_err(NamespaceError::from)?;
        response.to_hpc().map_err(NamespaceError::from)
    }
    fn release_namespaces(&self, allocation_id: &str) -> Result<(), NamespaceError> {
        self.backend
            .release_namespaces(allocation_id.into())
            .into_result()
            .map_err(NamespaceError::from)
    }
}

impl NamespaceFdProvider for NamespaceAdapter {
    fn namespace_fds(&self, allocation_id: &str) -> Result<Vec<OwnedFd>, NamespaceError> {
        let raw = self
            .backend
            .namespace_fds(allocation_id.into())
            .into_result()
            .map_err(NamespaceError::from)?;
        Ok(raw.into_iter().map(take_fd).collect())
    }
    fn create_namespaces_owned(
        &self,
        request: &NamespaceRequest,
        owner_uid: u32,
    ) -> Result<NamespaceResponse, NamespaceError> {
        let response = self
            .backend
            .create_namespaces_owned(&RNamespaceRequest::from(request), owner_uid)
            .into_result()
            .map_err(NamespaceError::from)?;
        response.to_hpc().map_err(NamespaceError::from)
    }
    fn allocation_owner(&self, allocation_id: &str) -> Option<u32> {
        self.backend
            .allocation_owner(allocation_id.into())
            .into_option()
    }
}

fn take_fd(fd: i32) -> OwnedFd {
    // SAFETY: `NamespaceBackend::namespace_fds` transfers ownership of each FD
    // it returns (the plugin side gave them up with `into_raw_fd`); nothing
    // else holds them.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A loaded readiness backend as an `hpc_node::ReadinessGate` + [`ReadinessProvider`].
pub struct ReadinessAdapter {
    backend: ReadinessBox,
    label: String,
}

impl ReadinessAdapter {
    /// Wraps a constructed backend.
    pub fn new(backend: ReadinessBox, label: &str) -> Self {
        Self {
            backend,
            label: label.to_owned(),
        }
    }
}

impl std::fmt::Debug for ReadinessAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadinessAdapter({})", self.label)
    }
}

impl ReadinessGate for ReadinessAdapter {
    fn is_ready(&self) -> bool {
        self.backend.is_ready()
    }
    fn wait_ready(&self) -> Result<(), ReadinessError> {
        self.wait_ready_timeout(None)
    }
}

impl ReadinessProvider for ReadinessAdapter {
    fn signal_ready(&self, node_id: &str) -> Result<(), ReadinessError> {
        self.backend
            .signal_ready(node_id.into())
            .into_result()
            .map_err(ReadinessError::from)
    }
    fn signal_failed(&self, reason: &str) -> Result<(), ReadinessError> {
        self.backend
            .signal_failed(reason.into())
            .into_result()
            .map_err(ReadinessError::from)
    }
    fn wait_ready_timeout(&self, timeout: Option<Duration>) -> Result<(), ReadinessError> {
        let ms = timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        self.backend
            .wait_ready(ROption::from(ms))
            .into_result()
            .map_err(ReadinessError::from)
    }
}
