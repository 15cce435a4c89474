//! One live allocation: its holder and its uenv reference.
//!
//! Owns their release, in the order that lets the mount go: kill and reap
//! the holder (the namespace, and with it the uenv bind, dies once the last
//! FD is closed), then drop the reference. Dropping an allocation releases
//! it too, so no path — error, panic, orphaned slot — leaks a holder.

use std::sync::Arc;

use hpc_node::{MountHandle, NamespaceError, NamespaceResponse, NamespaceType};
use nodeinit_handoff::AllocationId;
use nodeinit_plugin_api::AllocationMounts;

/// A uenv reference held on behalf of an allocation.
pub(crate) struct UenvReference {
    pub(crate) mounts: Arc<dyn AllocationMounts>,
    pub(crate) handle: MountHandle,
}

/// A live allocation.
pub(crate) struct Allocation {
    pub(crate) id: AllocationId,
    /// The peer uid it belongs to (root when the caller did not say).
    pub(crate) owner_uid: u32,
    pub(crate) namespaces: Vec<NamespaceType>,
    pub(crate) uenv_image: Option<String>,
    pub(crate) response: NamespaceResponse,
    pub(crate) holder: Option<crate::persist::Holder>,
    pub(crate) uenv: Option<UenvReference>,
}

impl Allocation {
    /// Kill the holder, then release the uenv reference. Both are attempted.
    pub(crate) fn release(mut self) -> Result<(), NamespaceError> {
        self.release_resources()
    }

    fn release_resources(&mut self) -> Result<(), NamespaceError> {
        let killed = match self.holder.take() {
            Some(holder) => holder
                .terminate()
                .map_err(|e| NamespaceError::CreationFailed {
                    reason: format!("releasing allocation {}: {e}", self.id),
                }),
            None => Ok(()),
        };
        let released = match self.uenv.take() {
            Some(uenv) => uenv
                .mounts
                .release_for(self.id.as_str(), &uenv.handle)
                .map_err(|e| NamespaceError::CreationFailed {
                    reason: format!(
                        "releasing uenv {} of allocation {}: {e}",
                        uenv.handle.image_path, self.id
                    ),
                }),
            None => Ok(()),
        };
        killed.and(released)
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        if let Err(e) = self.release_resources() {
            tracing::error!(allocation = %self.id, error = %e, "allocation not fully released");
        }
    }
}
