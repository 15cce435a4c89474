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
        let id = &request.allocation_id;
        self.report(AllocationEvent::Live(id.clone()));
        let created = self.inner.create_namespaces(request);
        // A refused request leaves nothing live (unless the id already was).
        if created.is_err() && self.inner.namespace_fds(id).is_err() {
            self.report(AllocationEvent::Ended(id.clone()));
        }
        created
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
}
