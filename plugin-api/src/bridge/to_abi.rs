//! Rust → ABI, the plugin's half of the bridge: [`Guarded`] wraps a backend
//! written against the plain `hpc_node` traits (plus [`crate::ext`]'s) and
//! implements the ABI traits on it, running every call under `catch_unwind`
//! and converting its result. [`super::from_abi`] is the other half.
//!
//! Must never let a panic unwind across `extern "C"`: abi_stable turns that
//! into `abort()`, which for PID 1 is a kernel panic.

use std::any::Any;
use std::os::fd::IntoRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use abi_stable::std_types::{ROption, RResult, RSlice, RStr, RString, RVec};
use hpc_node::{CgroupHandle, CgroupManager, MountHandle};
use nodeinit_contracts::NamespaceFdProvider;

use crate::abi::{
    CgroupBackend, ErrorKind, MountBackend, NamespaceBackend, PluginError, RCgroupMetrics,
    RMountHandle, RNamespaceRequest, RNamespaceResponse, RResourceLimits, ReadinessBackend,
};
use crate::ext::{AllocationMounts, ReadinessProvider};

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
    fn create_namespaces_owned(
        &self,
        request: &RNamespaceRequest,
        owner_uid: u32,
    ) -> RResult<RNamespaceResponse, PluginError> {
        self.call("create_namespaces_owned", |b| {
            let req = request.to_hpc()?;
            b.create_namespaces_owned(&req, owner_uid)
                .map(|r| RNamespaceResponse::from(&r))
                .map_err(PluginError::from)
        })
    }
    fn allocation_owner(&self, allocation_id: RStr<'_>) -> ROption<u32> {
        // A panicking lookup reads as "no recorded owner".
        match self.call("allocation_owner", |b| {
            Ok::<_, PluginError>(b.allocation_owner(allocation_id.as_str()))
        }) {
            RResult::ROk(owner) => owner.into(),
            RResult::RErr(_) => ROption::RNone,
        }
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
