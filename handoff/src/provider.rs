//! What a namespace backend must offer beyond `hpc_node::NamespaceProvider`:
//! the namespace file descriptors themselves, to send as `SCM_RIGHTS`.

use std::os::fd::OwnedFd;

use hpc_node::{NamespaceError, NamespaceProvider, NamespaceRequest, NamespaceResponse};

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
/// use nodeinit_handoff::NamespaceFdProvider;
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
