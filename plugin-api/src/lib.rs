//! placeholder, replaced below
pub mod ext;
pub use ext::{AllocationMounts, ReadinessProvider};
/// Services the host hands to plugin constructors.
pub struct HostServices;
impl HostServices {
    /// placeholder
    pub fn mounts(&self) {}
}
