//! The host's mount backend as it is offered to a namespace plugin: one
//! shared handle, crossing the boundary once.
//!
//! When the host's mount backend is itself a loaded plugin's (the normal
//! case), the namespace plugin receives [`Forward`]: each ABI call goes
//! straight to the mount plugin's own object, unconverted — no second
//! `catch_unwind` (the mount plugin catches its own panics) and no error
//! conversions. Only an in-process backend (an rlib, in tests and benches)
//! is guarded here, once.
//!
//! Owns nothing else; never converts between ABI and `hpc_node` types for a
//! loaded backend.

use std::sync::Arc;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RSlice, RStr, RString};

use super::to_abi::Guarded;
use crate::abi::{MountBackend, MountBox, PluginError, RMountHandle};
use crate::ext::AllocationMounts;

/// The ABI object a namespace plugin receives for `mounts`.
pub(crate) fn offer(mounts: &Arc<dyn AllocationMounts>) -> MountBox {
    match mounts
        .loaded_backend()
        .and_then(|any| any.downcast::<MountBox>().ok())
    {
        Some(shared) => MountBox::from_value(Forward(shared), TD_Opaque),
        None => MountBox::from_value(
            Guarded::new(InProcess(Arc::clone(mounts)), "host"),
            TD_Opaque,
        ),
    }
}

/// A loaded mount plugin's object, shared with the host's adapter.
struct Forward(Arc<MountBox>);

impl MountBackend for Forward {
    fn acquire_mount(&self, image_path: RStr<'_>) -> RResult<RMountHandle, PluginError> {
        self.0.acquire_mount(image_path)
    }
    fn release_mount(&self, handle: &RMountHandle) -> RResult<(), PluginError> {
        self.0.release_mount(handle)
    }
    fn force_unmount(&self, image_path: RStr<'_>) -> RResult<(), PluginError> {
        self.0.force_unmount(image_path)
    }
    fn reconstruct_state(&self, active: RSlice<'_, RString>) -> RResult<(), PluginError> {
        self.0.reconstruct_state(active)
    }
    fn acquire_for(
        &self,
        allocation_id: RStr<'_>,
        image_path: RStr<'_>,
    ) -> RResult<RMountHandle, PluginError> {
        self.0.acquire_for(allocation_id, image_path)
    }
    fn release_for(
        &self,
        allocation_id: RStr<'_>,
        handle: &RMountHandle,
    ) -> RResult<(), PluginError> {
        self.0.release_for(allocation_id, handle)
    }
}

/// An in-process mount backend (no ABI object of its own), shared.
struct InProcess(Arc<dyn AllocationMounts>);

impl hpc_node::MountManager for InProcess {
    fn acquire_mount(
        &self,
        image_path: &str,
    ) -> Result<hpc_node::MountHandle, hpc_node::MountError> {
        self.0.acquire_mount(image_path)
    }
    fn release_mount(&self, handle: &hpc_node::MountHandle) -> Result<(), hpc_node::MountError> {
        self.0.release_mount(handle)
    }
    fn force_unmount(&self, image_path: &str) -> Result<(), hpc_node::MountError> {
        self.0.force_unmount(image_path)
    }
    fn reconstruct_state(&self, active: &[String]) -> Result<(), hpc_node::MountError> {
        self.0.reconstruct_state(active)
    }
}

impl AllocationMounts for InProcess {
    fn acquire_for(
        &self,
        allocation_id: &str,
        image_path: &str,
    ) -> Result<hpc_node::MountHandle, hpc_node::MountError> {
        self.0.acquire_for(allocation_id, image_path)
    }
    fn release_for(
        &self,
        allocation_id: &str,
        handle: &hpc_node::MountHandle,
    ) -> Result<(), hpc_node::MountError> {
        self.0.release_for(allocation_id, handle)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::abi::ErrorKind;
    use crate::bridge::from_abi::MountAdapter;
    use hpc_node::{MountError, MountHandle, MountManager};

    /// A mount backend that panics in `acquire_for`.
    struct Panics;

    impl MountManager for Panics {
        fn acquire_mount(&self, _p: &str) -> Result<MountHandle, MountError> {
            Err(MountError::MountFailed {
                image_path: "x".into(),
                reason: "no".into(),
            })
        }
        fn release_mount(&self, _h: &MountHandle) -> Result<(), MountError> {
            Ok(())
        }
        fn force_unmount(&self, _p: &str) -> Result<(), MountError> {
            Ok(())
        }
        fn reconstruct_state(&self, _a: &[String]) -> Result<(), MountError> {
            Ok(())
        }
    }

    impl AllocationMounts for Panics {
        fn acquire_for(&self, _a: &str, _p: &str) -> Result<MountHandle, MountError> {
            panic!("disk on fire")
        }
        fn release_for(&self, _a: &str, _h: &MountHandle) -> Result<(), MountError> {
            Ok(())
        }
    }

    #[test]
    fn a_loaded_mount_backend_is_offered_as_itself() {
        // As the host holds a loaded plugin's mount backend: its ABI object
        // (guarded on the plugin's side) inside nodeinit's adapter.
        let loaded: Arc<dyn AllocationMounts> = Arc::new(MountAdapter::new(
            MountBox::from_value(Guarded::new(Panics, "squashfs"), TD_Opaque),
            "squashfs",
        ));
        let offered = offer(&loaded);
        let err = offered
            .acquire_for("job-1".into(), "base.sqfs".into())
            .into_result()
            .unwrap_err();
        // The mount plugin's own error, untouched: caught once, by the mount
        // plugin's guard, with its fields — no second guard, no round trip
        // through MountError (which has no place for them).
        assert_eq!(err.kind, ErrorKind::PANICKED);
        assert_eq!(
            err.message.as_str(),
            "acquire_for in plugin squashfs: disk on fire"
        );
        assert_eq!(err.field("panic"), Some("disk on fire"));
        assert_eq!(err.field("method"), Some("acquire_for"));
    }

    #[test]
    fn an_in_process_mount_backend_is_guarded_once_here() {
        let in_process: Arc<dyn AllocationMounts> = Arc::new(Panics);
        assert!(in_process.loaded_backend().is_none());
        let err = offer(&in_process)
            .acquire_for("job-1".into(), "base.sqfs".into())
            .into_result()
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::PANICKED);
        assert_eq!(
            err.message.as_str(),
            "acquire_for in plugin host: disk on fire"
        );
    }
}
