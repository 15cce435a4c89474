//! One live allocation: what it was asked for, who owns it, and its
//! resources — the holder and the uenv reference, owned by one
//! `nodeinit_namespaces::allocation::Allocation` (the same type the handoff
//! client's fallback uses), which releases them in order: kill and reap the
//! holder, then give the uenv reference back. Dropping an allocation
//! releases it too, so no path — error, panic, orphaned slot — leaks a
//! holder.

use std::sync::Arc;

use hpc_node::{MountHandle, NamespaceError, NamespaceResponse, NamespaceType};
use nodeinit_contracts::AllocationId;
use nodeinit_namespaces::allocation::{self, ReleaseError, UenvReference};
use nodeinit_plugin_api::AllocationMounts;

/// The uenv reference `handle`, held on behalf of allocation `id` and
/// given back to `mounts` on release.
pub(crate) fn uenv_reference(
    mounts: Arc<dyn AllocationMounts>,
    id: &AllocationId,
    handle: MountHandle,
) -> UenvReference {
    let id = id.to_string();
    UenvReference::new(handle, move |h| mounts.release_for(&id, h))
}

/// A live allocation.
pub(crate) struct Allocation {
    pub(crate) id: AllocationId,
    /// The peer uid it belongs to (root when the caller did not say).
    pub(crate) owner_uid: u32,
    pub(crate) namespaces: Vec<NamespaceType>,
    pub(crate) uenv_image: Option<String>,
    pub(crate) response: NamespaceResponse,
    /// Its holder and uenv reference.
    pub(crate) resources: allocation::Allocation<crate::persist::Holder>,
}

impl Allocation {
    /// Kill the holder, then release the uenv reference. Both are attempted.
    pub(crate) fn release(self) -> Result<(), NamespaceError> {
        let id = self.id.clone();
        self.resources.release().map_err(|e| match e {
            ReleaseError::Holder(e) => NamespaceError::CreationFailed {
                reason: format!("releasing allocation {id}: {e}"),
            },
            ReleaseError::Uenv { image_path, source } => NamespaceError::CreationFailed {
                reason: format!("releasing uenv {image_path} of allocation {id}: {source}"),
            },
        })
    }

    /// Its holder, while alive.
    pub(crate) fn holder(&self) -> Option<&crate::persist::Holder> {
        self.resources.holder()
    }
}

impl allocation::Holder for crate::persist::Holder {
    fn terminate(self) -> std::io::Result<()> {
        crate::persist::Holder::terminate(self)
    }
}
