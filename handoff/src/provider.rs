//! What a namespace backend must offer beyond `hpc_node::NamespaceProvider`:
//! the namespace file descriptors themselves, to send as `SCM_RIGHTS`.

use std::os::fd::OwnedFd;

use hpc_node::{NamespaceError, NamespaceProvider};

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
}
