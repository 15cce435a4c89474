//! `#[repr(C)]` mirrors of the `hpc_node` value types that cross the boundary,
//! with lossless conversions. Nothing here may hold a `std` `String`/`Vec`.

use abi_stable::std_types::{ROption, RString, RVec};
use abi_stable::StableAbi;
use hpc_node::{
    CgroupMetrics, MountHandle, NamespaceRequest, NamespaceResponse, NamespaceType, ResourceLimits,
};

use super::error::{ErrorKind, PluginError};

/// `hpc_node::ResourceLimits` across the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct RResourceLimits {
    /// `memory.max` in bytes.
    pub memory_max: ROption<u64>,
    /// `cpu.weight`.
    pub cpu_weight: ROption<u16>,
    /// IO bytes/s.
    pub io_max: ROption<u64>,
}

impl From<&ResourceLimits> for RResourceLimits {
    fn from(l: &ResourceLimits) -> Self {
        Self {
            memory_max: l.memory_max.into(),
            cpu_weight: l.cpu_weight.into(),
            io_max: l.io_max.into(),
        }
    }
}

impl From<RResourceLimits> for ResourceLimits {
    fn from(l: RResourceLimits) -> Self {
        Self {
            memory_max: l.memory_max.into(),
            cpu_weight: l.cpu_weight.into(),
            io_max: l.io_max.into(),
        }
    }
}

/// `hpc_node::CgroupMetrics` across the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct RCgroupMetrics {
    /// `memory.current`.
    pub memory_current: u64,
    /// `memory.max`, `None` for `max`.
    pub memory_max: ROption<u64>,
    /// `cpu.stat` `usage_usec`.
    pub cpu_usage_usec: u64,
    /// Processes in `cgroup.procs`.
    pub nr_processes: u32,
}

impl From<&CgroupMetrics> for RCgroupMetrics {
    fn from(m: &CgroupMetrics) -> Self {
        Self {
            memory_current: m.memory_current,
            memory_max: m.memory_max.into(),
            cpu_usage_usec: m.cpu_usage_usec,
            nr_processes: m.nr_processes,
        }
    }
}

impl From<RCgroupMetrics> for CgroupMetrics {
    fn from(m: RCgroupMetrics) -> Self {
        Self {
            memory_current: m.memory_current,
            memory_max: m.memory_max.into(),
            cpu_usage_usec: m.cpu_usage_usec,
            nr_processes: m.nr_processes,
        }
    }
}

/// `hpc_node::MountHandle` across the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct RMountHandle {
    /// The image.
    pub image_path: RString,
    /// Where it is mounted.
    pub mount_point: RString,
}

impl From<&MountHandle> for RMountHandle {
    fn from(h: &MountHandle) -> Self {
        Self {
            image_path: h.image_path.as_str().into(),
            mount_point: h.mount_point.as_str().into(),
        }
    }
}

impl From<RMountHandle> for MountHandle {
    fn from(h: RMountHandle) -> Self {
        Self {
            image_path: h.image_path.into(),
            mount_point: h.mount_point.into(),
        }
    }
}

/// `hpc_node::NamespaceType` across the boundary: an open code, so that a
/// later interface may add namespace kinds without breaking old plugins.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RNamespaceType(pub u8);

impl RNamespaceType {
    /// `NamespaceType::Pid`.
    pub const PID: Self = Self(1);
    /// `NamespaceType::Net`.
    pub const NET: Self = Self(2);
    /// `NamespaceType::Mount`.
    pub const MOUNT: Self = Self(3);

    fn to_hpc(self) -> Result<NamespaceType, PluginError> {
        match self {
            Self::PID => Ok(NamespaceType::Pid),
            Self::NET => Ok(NamespaceType::Net),
            Self::MOUNT => Ok(NamespaceType::Mount),
            Self(other) => Err(PluginError::new(
                ErrorKind::NAMESPACE_CREATION_FAILED,
                format!("unknown namespace type code {other} from the other side of the plugin boundary"),
            )
            .with_field("reason", format!("unknown namespace type code {other}"))),
        }
    }
}

impl From<NamespaceType> for RNamespaceType {
    fn from(t: NamespaceType) -> Self {
        match t {
            NamespaceType::Pid => Self::PID,
            NamespaceType::Net => Self::NET,
            NamespaceType::Mount => Self::MOUNT,
        }
    }
}

fn types_to_hpc(types: &RVec<RNamespaceType>) -> Result<Vec<NamespaceType>, PluginError> {
    types.iter().map(|t| t.to_hpc()).collect()
}

/// `hpc_node::NamespaceRequest` across the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct RNamespaceRequest {
    /// Allocation id.
    pub allocation_id: RString,
    /// Requested namespaces.
    pub namespaces: RVec<RNamespaceType>,
    /// Optional uenv image.
    pub uenv_image: ROption<RString>,
}

impl From<&NamespaceRequest> for RNamespaceRequest {
    fn from(r: &NamespaceRequest) -> Self {
        Self {
            allocation_id: r.allocation_id.as_str().into(),
            namespaces: r
                .namespaces
                .iter()
                .map(|t| RNamespaceType::from(*t))
                .collect(),
            uenv_image: r.uenv_image.as_deref().map(RString::from).into(),
        }
    }
}

impl RNamespaceRequest {
    /// Back to the `hpc_node` type.
    ///
    /// # Errors
    ///
    /// A namespace type code this build does not know.
    pub fn to_hpc(&self) -> Result<NamespaceRequest, PluginError> {
        Ok(NamespaceRequest {
            allocation_id: self.allocation_id.to_string(),
            namespaces: types_to_hpc(&self.namespaces)?,
            uenv_image: self
                .uenv_image
                .as_ref()
                .map(|s| s.to_string())
                .into_option(),
        })
    }
}

/// `hpc_node::NamespaceResponse` across the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct RNamespaceResponse {
    /// Allocation id.
    pub allocation_id: RString,
    /// Namespace types, in FD order.
    pub fd_types: RVec<RNamespaceType>,
    /// Where the uenv is visible inside the mount namespace.
    pub uenv_mount_path: ROption<RString>,
}

impl From<&NamespaceResponse> for RNamespaceResponse {
    fn from(r: &NamespaceResponse) -> Self {
        Self {
            allocation_id: r.allocation_id.as_str().into(),
            fd_types: r
                .fd_types
                .iter()
                .map(|t| RNamespaceType::from(*t))
                .collect(),
            uenv_mount_path: r.uenv_mount_path.as_deref().map(RString::from).into(),
        }
    }
}

impl RNamespaceResponse {
    /// Back to the `hpc_node` type.
    ///
    /// # Errors
    ///
    /// A namespace type code this build does not know.
    pub fn to_hpc(&self) -> Result<NamespaceResponse, PluginError> {
        Ok(NamespaceResponse {
            allocation_id: self.allocation_id.to_string(),
            fd_types: types_to_hpc(&self.fd_types)?,
            uenv_mount_path: self
                .uenv_mount_path
                .as_ref()
                .map(|s| s.to_string())
                .into_option(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip() {
        let req = NamespaceRequest {
            allocation_id: "a-1".into(),
            namespaces: vec![NamespaceType::Mount, NamespaceType::Pid, NamespaceType::Net],
            uenv_image: Some("base.sqfs".into()),
        };
        let back = RNamespaceRequest::from(&req).to_hpc().unwrap();
        assert_eq!(back.allocation_id, "a-1");
        assert_eq!(back.namespaces, req.namespaces);
        assert_eq!(back.uenv_image.as_deref(), Some("base.sqfs"));
    }

    #[test]
    fn unknown_namespace_code_is_an_error() {
        let mut r = RNamespaceResponse::from(&NamespaceResponse {
            allocation_id: "a".into(),
            fd_types: vec![],
            uenv_mount_path: None,
        });
        r.fd_types.push(RNamespaceType(9));
        let err = r.to_hpc().unwrap_err();
        assert_eq!(err.kind, ErrorKind::NAMESPACE_CREATION_FAILED);
        assert_eq!(err.field("reason"), Some("unknown namespace type code 9"));
    }

    #[test]
    fn limits_and_metrics_round_trip() {
        let l = ResourceLimits {
            memory_max: Some(1 << 30),
            cpu_weight: Some(250),
            io_max: None,
        };
        let back = ResourceLimits::from(RResourceLimits::from(&l));
        assert_eq!(
            (back.memory_max, back.cpu_weight, back.io_max),
            (Some(1 << 30), Some(250), None)
        );
        let m = CgroupMetrics {
            memory_current: 5,
            memory_max: None,
            cpu_usage_usec: 7,
            nr_processes: 2,
        };
        let back = CgroupMetrics::from(RCgroupMetrics::from(&m));
        assert_eq!(
            (
                back.memory_current,
                back.memory_max,
                back.cpu_usage_usec,
                back.nr_processes
            ),
            (5, None, 7, 2)
        );
    }
}
