//! Provider-side operations a boot needs that `hpc_node` leaves out.
//!
//! A backend implements the plain `hpc_node` trait plus, where its kind needs
//! it, one trait of this module. They are ordinary Rust traits: nothing here
//! touches the ABI.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use std::os::fd::OwnedFd;

use hpc_node::{
    MountError, MountHandle, MountManager, NamespaceError, NamespaceProvider, NamespaceRequest,
    NamespaceResponse, ReadinessError, ReadinessGate,
};

/// A [`ReadinessGate`] that can also emit the signal (nodeinit is the provider).
///
/// # Example
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::time::Duration;
/// use hpc_node::{ReadinessError, ReadinessGate};
/// use nodeinit_contracts::ReadinessProvider;
///
/// #[derive(Default)]
/// struct Flag(AtomicBool);
/// impl ReadinessGate for Flag {
///     fn is_ready(&self) -> bool { self.0.load(Ordering::Acquire) }
///     fn wait_ready(&self) -> Result<(), ReadinessError> {
///         self.wait_ready_timeout(None)
///     }
/// }
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
/// let gate = Flag::default();
/// gate.signal_ready("node-1").unwrap();
/// assert!(gate.is_ready());
/// ```
pub trait ReadinessProvider: ReadinessGate {
    /// Declare the node ready: every waiter returns `Ok`.
    ///
    /// # Errors
    ///
    /// [`ReadinessError::BootFailed`] when the signal could not be emitted.
    fn signal_ready(&self, node_id: &str) -> Result<(), ReadinessError>;

    /// Declare the boot failed: every waiter returns [`ReadinessError::BootFailed`]
    /// carrying `reason` instead of waiting for a timeout.
    ///
    /// # Errors
    ///
    /// When the failure could not be recorded.
    fn signal_failed(&self, reason: &str) -> Result<(), ReadinessError>;

    /// [`ReadinessGate::wait_ready`] bounded by `timeout` (`None`: wait forever).
    ///
    /// # Errors
    ///
    /// [`ReadinessError::Timeout`] when the timeout passes first,
    /// [`ReadinessError::BootFailed`] after `signal_failed`.
    fn wait_ready_timeout(&self, timeout: Option<Duration>) -> Result<(), ReadinessError>;
}

/// A [`MountManager`] whose references can be attributed to allocations, so
/// that `reconstruct_state` can recount them after a crash (WI6). The namespace
/// backend reaches it through `nodeinit_plugin_api::HostServices::mounts`.
///
/// # Example
///
/// ```
/// use hpc_node::{MountError, MountHandle, MountManager};
/// use nodeinit_contracts::AllocationMounts;
///
/// fn mount_for_job(m: &dyn AllocationMounts, job: &str) -> Result<MountHandle, MountError> {
///     m.acquire_for(job, "base.sqfs")
/// }
/// ```
pub trait AllocationMounts: MountManager {
    /// [`MountManager::acquire_mount`] on behalf of `allocation_id`.
    ///
    /// # Errors
    ///
    /// As `acquire_mount`.
    fn acquire_for(&self, allocation_id: &str, image_path: &str)
        -> Result<MountHandle, MountError>;

    /// [`MountManager::release_mount`] of the reference `allocation_id` holds.
    ///
    /// # Errors
    ///
    /// [`MountError::RefcountInconsistency`] when `allocation_id` holds no
    /// reference to the image.
    fn release_for(&self, allocation_id: &str, handle: &MountHandle) -> Result<(), MountError>;

    /// A loaded plugin backend's own ABI object, shared, so the host can
    /// hand it on to a namespace plugin as it is instead of wrapping it
    /// again. Only nodeinit's adapter answers; implementors keep the default.
    #[doc(hidden)]
    fn loaded_backend(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        None
    }
}

/// A [`NamespaceProvider`] that can hand out the namespace FDs of a live allocation.
///
/// `hpc_node` returns only metadata from `create_namespaces`; the handoff server
/// needs the FDs to attach to the response.
///
/// # Example
///
/// ```
/// use std::os::fd::OwnedFd;
/// use hpc_node::{NamespaceError, NamespaceProvider, NamespaceRequest, NamespaceResponse};
/// use nodeinit_contracts::NamespaceFdProvider;
///
/// struct NoNamespaces;
/// impl NamespaceProvider for NoNamespaces {
///     fn create_namespaces(&self, r: &NamespaceRequest) -> Result<NamespaceResponse, NamespaceError> {
///         Ok(NamespaceResponse { allocation_id: r.allocation_id.clone(), fd_types: vec![], uenv_mount_path: None })
///     }
///     fn release_namespaces(&self, _: &str) -> Result<(), NamespaceError> { Ok(()) }
/// }
/// impl NamespaceFdProvider for NoNamespaces {
///     fn namespace_fds(&self, _: &str) -> Result<Vec<OwnedFd>, NamespaceError> { Ok(vec![]) }
/// }
/// assert!(NoNamespaces.namespace_fds("a").unwrap().is_empty());
/// // Providers that record no owners leave ownership to the server alone.
/// assert_eq!(NoNamespaces.allocation_owner("a"), None);
/// ```
pub trait NamespaceFdProvider: NamespaceProvider {
    /// Fresh duplicates of the namespace FDs of `allocation_id`, in the order of
    /// the `fd_types` that `create_namespaces` returned for it. The caller owns
    /// (and closes) them.
    ///
    /// # Errors
    ///
    /// [`NamespaceError::AllocationNotFound`] when the allocation is not live.
    fn namespace_fds(&self, allocation_id: &str) -> Result<Vec<OwnedFd>, NamespaceError>;

    /// [`NamespaceProvider::create_namespaces`] on behalf of the peer uid
    /// `owner_uid`. A provider whose allocations outlive the server (the
    /// unshare backend's holders under nodeinit's keeper) records the owner
    /// with the allocation, so that a new server after a restart still
    /// refuses other uids ([`NamespaceFdProvider::allocation_owner`]).
    ///
    /// The default ignores the owner and calls `create_namespaces`.
    ///
    /// # Errors
    ///
    /// As `create_namespaces`.
    fn create_namespaces_owned(
        &self,
        request: &NamespaceRequest,
        owner_uid: u32,
    ) -> Result<NamespaceResponse, NamespaceError> {
        let _ = owner_uid;
        self.create_namespaces(request)
    }

    /// The uid that owns the live allocation `allocation_id`, as the provider
    /// recorded it: the server asks when it does not know the id itself
    /// (after a restart, or for an allocation the host created — owned by
    /// root). `None`: not live, or the provider records no owners (the
    /// default); the server then treats the id as it always did.
    fn allocation_owner(&self, allocation_id: &str) -> Option<u32> {
        let _ = allocation_id;
        None
    }
}
