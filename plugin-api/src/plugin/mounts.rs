//! A plugin's view of the host's mount backend ([`HostServices::mounts`]).

use std::sync::Arc;

use abi_stable::std_types::ROption;

use crate::abi::HostServices;
use crate::bridge::from_abi::MountAdapter;
use crate::ext::AllocationMounts;

impl HostServices {
    /// The host's mount backend, when the host has one loaded: what a
    /// namespace backend mounts uenv images through.
    ///
    /// ```
    /// use nodeinit_plugin_api::HostServices;
    ///
    /// // A host without a mount backend offers none.
    /// assert!(HostServices::new("unshare", None).mounts().is_none());
    /// ```
    pub fn mounts(&self) -> Option<Arc<dyn AllocationMounts>> {
        match self.api().mount_backend() {
            ROption::RSome(backend) => {
                Some(Arc::new(MountAdapter::new(backend, "host mount backend")))
            }
            ROption::RNone => None,
        }
    }
}
