//! The namespace backend as the handoff server sees it in a worker: every
//! call passes through, and the keeper learns which allocations may be
//! live — before the backend creates one (so a worker killed mid-creation
//! still leaves the id with the keeper) and after it released one. The next
//! worker checks those ids against the backend and rebuilds the mount
//! references of the live ones.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use hpc_node::{NamespaceError, NamespaceProvider, NamespaceRequest, NamespaceResponse};
use nodeinit_handoff::NamespaceFdProvider;

use crate::link::{AllocationEvent, Channel, FromWorker};

/// A reporting wrapper around the namespace backend.
pub struct TrackedNamespaces {
    inner: Arc<dyn NamespaceFdProvider>,
    keeper: Arc<Channel>,
}

impl TrackedNamespaces {
    /// Wrap `inner`, reporting to `keeper`.
    pub fn new(inner: Arc<dyn NamespaceFdProvider>, keeper: Arc<Channel>) -> Self {
        Self { inner, keeper }
    }

    /// Runs one creation, with the keeper told first that `request`'s id
    /// may be live, and told again if the creation left nothing live.
    fn tracked(
        &self,
        request: &NamespaceRequest,
        create: impl FnOnce(&dyn NamespaceFdProvider) -> Result<NamespaceResponse, NamespaceError>,
    ) -> Result<NamespaceResponse, NamespaceError> {
        let id = &request.allocation_id;
        self.report(AllocationEvent::Live(id.clone()));
        let created = create(self.inner.as_ref());
        // A refused request leaves nothing live (unless the id already was).
        if created.is_err() && self.inner.namespace_fds(id).is_err() {
            self.report(AllocationEvent::Ended(id.clone()));
        }
        created
    }

    fn report(&self, event: AllocationEvent) {
        if let Err(e) = self.keeper.send(&FromWorker::Allocation(event)) {
            tracing::error!("cannot tell the keeper about an allocation: {e}");
        }
    }
}

impl NamespaceProvider for TrackedNamespaces {
    fn create_namespaces(
        &self,
        request: &NamespaceRequest,
    ) -> Result<NamespaceResponse, NamespaceError> {
        self.tracked(request, |inner| inner.create_namespaces(request))
    }

    fn release_namespaces(&self, allocation_id: &str) -> Result<(), NamespaceError> {
        let released = self.inner.release_namespaces(allocation_id);
        if released.is_ok() {
            self.report(AllocationEvent::Ended(allocation_id.to_owned()));
        }
        released
    }
}

impl NamespaceFdProvider for TrackedNamespaces {
    fn namespace_fds(&self, allocation_id: &str) -> Result<Vec<OwnedFd>, NamespaceError> {
        self.inner.namespace_fds(allocation_id)
    }

    fn create_namespaces_owned(
        &self,
        request: &NamespaceRequest,
        owner_uid: u32,
    ) -> Result<NamespaceResponse, NamespaceError> {
        self.tracked(request, |inner| {
            inner.create_namespaces_owned(request, owner_uid)
        })
    }

    fn allocation_owner(&self, allocation_id: &str) -> Option<u32> {
        self.inner.allocation_owner(allocation_id)
    }
}
