//! Errors crossing the plugin boundary.
//!
//! Owns [`PluginError`] (a stable kind code, a message and named fields) and
//! its lossless conversions to and from the four `hpc_node` error enums.
//! A kind code this build does not know (a newer plugin's) still converts:
//! it becomes a [`PluginFault`] inside the target enum's I/O or failure
//! variant, never a panic.

use std::io;

use abi_stable::std_types::{RString, RVec};
use abi_stable::StableAbi;
use hpc_node::{CgroupError, MountError, NamespaceError, ReadinessError, SliceOwner};

/// Stable numeric error kind. An open set: new codes may appear in later
/// interface minors, and old hosts map unknown codes to a [`PluginFault`].
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorKind(pub u32);

impl ErrorKind {
    /// `CgroupError::CreationFailed`.
    pub const CGROUP_CREATION_FAILED: Self = Self(100);
    /// `CgroupError::KillFailed`.
    pub const CGROUP_KILL_FAILED: Self = Self(101);
    /// `CgroupError::NotFound`.
    pub const CGROUP_NOT_FOUND: Self = Self(102);
    /// `CgroupError::PermissionDenied`.
    pub const CGROUP_PERMISSION_DENIED: Self = Self(103);
    /// `CgroupError::Io`.
    pub const CGROUP_IO: Self = Self(104);
    /// `MountError::MountFailed`.
    pub const MOUNT_FAILED: Self = Self(200);
    /// `MountError::UnmountFailed`.
    pub const MOUNT_UNMOUNT_FAILED: Self = Self(201);
    /// `MountError::RefcountInconsistency`.
    pub const MOUNT_REFCOUNT_INCONSISTENCY: Self = Self(202);
    /// `MountError::Io`.
    pub const MOUNT_IO: Self = Self(203);
    /// `NamespaceError::SocketUnavailable`.
    pub const NAMESPACE_SOCKET_UNAVAILABLE: Self = Self(300);
    /// `NamespaceError::CreationFailed`.
    pub const NAMESPACE_CREATION_FAILED: Self = Self(301);
    /// `NamespaceError::AllocationNotFound`.
    pub const NAMESPACE_ALLOCATION_NOT_FOUND: Self = Self(302);
    /// `NamespaceError::FdPassing`.
    pub const NAMESPACE_FD_PASSING: Self = Self(303);
    /// `ReadinessError::BootFailed`.
    pub const READINESS_BOOT_FAILED: Self = Self(400);
    /// `ReadinessError::Timeout`.
    pub const READINESS_TIMEOUT: Self = Self(401);
    /// A plugin method panicked; the panic was caught inside the plugin.
    pub const PANICKED: Self = Self(900);
    /// The plugin's options were rejected (unknown key, wrong type, bad value).
    pub const INVALID_OPTIONS: Self = Self(901);
    /// The constructor failed for another reason.
    pub const CONSTRUCTION_FAILED: Self = Self(902);
    /// The plugin does not provide the requested backend kind.
    pub const NOT_PROVIDED: Self = Self(903);

    /// A short stable name for logs (`"panicked"`, `"cgroup_not_found"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::CGROUP_CREATION_FAILED => "cgroup_creation_failed",
            Self::CGROUP_KILL_FAILED => "cgroup_kill_failed",
            Self::CGROUP_NOT_FOUND => "cgroup_not_found",
            Self::CGROUP_PERMISSION_DENIED => "cgroup_permission_denied",
            Self::CGROUP_IO => "cgroup_io",
            Self::MOUNT_FAILED => "mount_failed",
            Self::MOUNT_UNMOUNT_FAILED => "unmount_failed",
            Self::MOUNT_REFCOUNT_INCONSISTENCY => "refcount_inconsistency",
            Self::MOUNT_IO => "mount_io",
            Self::NAMESPACE_SOCKET_UNAVAILABLE => "socket_unavailable",
            Self::NAMESPACE_CREATION_FAILED => "namespace_creation_failed",
            Self::NAMESPACE_ALLOCATION_NOT_FOUND => "allocation_not_found",
            Self::NAMESPACE_FD_PASSING => "fd_passing",
            Self::READINESS_BOOT_FAILED => "boot_failed",
            Self::READINESS_TIMEOUT => "timeout",
            Self::PANICKED => "panicked",
            Self::INVALID_OPTIONS => "invalid_options",
            Self::CONSTRUCTION_FAILED => "construction_failed",
            Self::NOT_PROVIDED => "not_provided",
            _ => "unknown",
        }
    }
}

/// One named field of a [`PluginError`] (`path`, `reason`, `owner`, ...).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct ErrorField {
    /// Field name, as in the `hpc_node` variant.
    pub key: RString,
    /// Field value, as text.
    pub value: RString,
}

/// An error as it crosses the plugin boundary.
///
/// # Example
///
/// ```
/// use hpc_node::CgroupError;
/// use nodeinit_plugin_api::{ErrorKind, PluginError};
///
/// let crossing = PluginError::from(CgroupError::NotFound { path: "/sys/fs/cgroup/x".into() });
/// assert_eq!(crossing.kind, ErrorKind::CGROUP_NOT_FOUND);
/// let back = CgroupError::from(crossing);
/// assert!(matches!(back, CgroupError::NotFound { path } if path == "/sys/fs/cgroup/x"));
/// ```
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The human-readable message (the `Display` of the original error).
    pub message: RString,
    /// The variant's fields, by name.
    pub fields: RVec<ErrorField>,
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

impl PluginError {
    /// An error of `kind` with `message` and no fields.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: RString::from(message.into()),
            fields: RVec::new(),
        }
    }

    /// Adds a named field.
    #[must_use]
    pub fn with_field(mut self, key: &str, value: impl Into<String>) -> Self {
        self.fields.push(ErrorField {
            key: RString::from(key),
            value: RString::from(value.into()),
        });
        self
    }

    /// The value of field `key`, if present.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| f.key.as_str() == key)
            .map(|f| f.value.as_str())
    }

    fn field_or_message(&self, key: &str) -> String {
        self.field(key).unwrap_or(self.message.as_str()).to_owned()
    }

    fn from_io(kind: ErrorKind, err: &io::Error) -> Self {
        let mut out =
            Self::new(kind, err.to_string()).with_field("io_kind", io_kind_name(err.kind()));
        match (err.raw_os_error(), err.get_ref()) {
            (Some(code), None) => out = out.with_field("os_error", code.to_string()),
            (_, Some(inner)) => out = out.with_field("io_message", inner.to_string()),
            (None, None) => out = out.with_field("io_message", err.to_string()),
        }
        out
    }

    /// Rebuilds the `std::io::Error` of an `Io`/`FdPassing` variant: the OS
    /// error code when there was one, else the kind and message.
    fn to_io(&self) -> io::Error {
        if let Some(code) = self.field("os_error").and_then(|c| c.parse::<i32>().ok()) {
            return io::Error::from_raw_os_error(code);
        }
        let kind = self
            .field("io_kind")
            .map_or(io::ErrorKind::Other, io_kind_from_name);
        io::Error::new(kind, self.field_or_message("io_message"))
    }

    /// The error as a [`PluginFault`] inside an `io::Error`, for kinds the
    /// target enum has no variant for (a panic, a foreign or unknown kind).
    fn to_fault_io(&self) -> io::Error {
        io::Error::other(PluginFault {
            kind: self.kind,
            message: self.message.to_string(),
        })
    }
}

/// A plugin failure with no `hpc_node` variant of its own (a caught panic,
/// an error kind from a newer plugin). Carried inside the target enum's `Io`
/// variant; recover it with [`PluginFault::find`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFault {
    /// The kind code the plugin sent.
    pub kind: ErrorKind,
    /// The plugin's message.
    pub message: String,
}

impl std::fmt::Display for PluginFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kind == ErrorKind::PANICKED {
            write!(f, "plugin panicked: {}", self.message)
        } else {
            write!(
                f,
                "plugin error {} ({}): {}",
                self.kind.0,
                self.kind.name(),
                self.message
            )
        }
    }
}

impl std::error::Error for PluginFault {}

impl PluginFault {
    /// The fault inside an `io::Error`, if that is what it carries.
    pub fn find(err: &io::Error) -> Option<&Self> {
        err.get_ref().and_then(|e| e.downcast_ref::<Self>())
    }
}

impl From<&CgroupError> for PluginError {
    fn from(e: &CgroupError) -> Self {
        let msg = e.to_string();
        match e {
            CgroupError::CreationFailed { reason } => {
                Self::new(ErrorKind::CGROUP_CREATION_FAILED, msg)
                    .with_field("reason", reason.clone())
            }
            CgroupError::KillFailed { path, reason } => {
                Self::new(ErrorKind::CGROUP_KILL_FAILED, msg)
                    .with_field("path", path.clone())
                    .with_field("reason", reason.clone())
            }
            CgroupError::NotFound { path } => {
                Self::new(ErrorKind::CGROUP_NOT_FOUND, msg).with_field("path", path.clone())
            }
            CgroupError::PermissionDenied { path, owner } => {
                Self::new(ErrorKind::CGROUP_PERMISSION_DENIED, msg)
                    .with_field("path", path.clone())
                    .with_field("owner", owner_name(*owner))
            }
            CgroupError::Io(io) => match PluginFault::find(io) {
                Some(fault) => Self::new(fault.kind, fault.message.clone()),
                None => Self::from_io(ErrorKind::CGROUP_IO, io),
            },
        }
    }
}

impl From<CgroupError> for PluginError {
    fn from(e: CgroupError) -> Self {
        Self::from(&e)
    }
}

impl From<PluginError> for CgroupError {
    fn from(e: PluginError) -> Self {
        match e.kind {
            ErrorKind::CGROUP_CREATION_FAILED => Self::CreationFailed {
                reason: e.field_or_message("reason"),
            },
            ErrorKind::CGROUP_KILL_FAILED => Self::KillFailed {
                path: e.field_or_message("path"),
                reason: e.field_or_message("reason"),
            },
            ErrorKind::CGROUP_NOT_FOUND => Self::NotFound {
                path: e.field_or_message("path"),
            },
            ErrorKind::CGROUP_PERMISSION_DENIED => match e.field("owner").and_then(owner_from_name)
            {
                Some(owner) => Self::PermissionDenied {
                    path: e.field_or_message("path"),
                    owner,
                },
                None => Self::Io(e.to_fault_io()),
            },
            ErrorKind::CGROUP_IO => Self::Io(e.to_io()),
            _ => Self::Io(e.to_fault_io()),
        }
    }
}

impl From<&MountError> for PluginError {
    fn from(e: &MountError) -> Self {
        let msg = e.to_string();
        match e {
            MountError::MountFailed { image_path, reason } => {
                Self::new(ErrorKind::MOUNT_FAILED, msg)
                    .with_field("image_path", image_path.clone())
                    .with_field("reason", reason.clone())
            }
            MountError::UnmountFailed {
                mount_point,
                reason,
            } => Self::new(ErrorKind::MOUNT_UNMOUNT_FAILED, msg)
                .with_field("mount_point", mount_point.clone())
                .with_field("reason", reason.clone()),
            MountError::RefcountInconsistency { image_path, detail } => {
                Self::new(ErrorKind::MOUNT_REFCOUNT_INCONSISTENCY, msg)
                    .with_field("image_path", image_path.clone())
                    .with_field("detail", detail.clone())
            }
            MountError::Io(io) => match PluginFault::find(io) {
                Some(fault) => Self::new(fault.kind, fault.message.clone()),
                None => Self::from_io(ErrorKind::MOUNT_IO, io),
            },
        }
    }
}

impl From<MountError> for PluginError {
    fn from(e: MountError) -> Self {
        Self::from(&e)
    }
}

impl From<PluginError> for MountError {
    fn from(e: PluginError) -> Self {
        match e.kind {
            ErrorKind::MOUNT_FAILED => Self::MountFailed {
                image_path: e.field_or_message("image_path"),
                reason: e.field_or_message("reason"),
            },
            ErrorKind::MOUNT_UNMOUNT_FAILED => Self::UnmountFailed {
                mount_point: e.field_or_message("mount_point"),
                reason: e.field_or_message("reason"),
            },
            ErrorKind::MOUNT_REFCOUNT_INCONSISTENCY => Self::RefcountInconsistency {
                image_path: e.field_or_message("image_path"),
                detail: e.field_or_message("detail"),
            },
            ErrorKind::MOUNT_IO => Self::Io(e.to_io()),
            _ => Self::Io(e.to_fault_io()),
        }
    }
}

impl From<&NamespaceError> for PluginError {
    fn from(e: &NamespaceError) -> Self {
        let msg = e.to_string();
        match e {
            NamespaceError::SocketUnavailable { reason } => {
                Self::new(ErrorKind::NAMESPACE_SOCKET_UNAVAILABLE, msg)
                    .with_field("reason", reason.clone())
            }
            NamespaceError::CreationFailed { reason } => {
                Self::new(ErrorKind::NAMESPACE_CREATION_FAILED, msg)
                    .with_field("reason", reason.clone())
            }
            NamespaceError::AllocationNotFound { allocation_id } => {
                Self::new(ErrorKind::NAMESPACE_ALLOCATION_NOT_FOUND, msg)
                    .with_field("allocation_id", allocation_id.clone())
            }
            NamespaceError::FdPassing(io) => match PluginFault::find(io) {
                Some(fault) => Self::new(fault.kind, fault.message.clone()),
                None => Self::from_io(ErrorKind::NAMESPACE_FD_PASSING, io),
            },
        }
    }
}

impl From<NamespaceError> for PluginError {
    fn from(e: NamespaceError) -> Self {
        Self::from(&e)
    }
}

impl From<PluginError> for NamespaceError {
    fn from(e: PluginError) -> Self {
        match e.kind {
            ErrorKind::NAMESPACE_SOCKET_UNAVAILABLE => Self::SocketUnavailable {
                reason: e.field_or_message("reason"),
            },
            ErrorKind::NAMESPACE_CREATION_FAILED => Self::CreationFailed {
                reason: e.field_or_message("reason"),
            },
            ErrorKind::NAMESPACE_ALLOCATION_NOT_FOUND => Self::AllocationNotFound {
                allocation_id: e.field_or_message("allocation_id"),
            },
            ErrorKind::NAMESPACE_FD_PASSING => Self::FdPassing(e.to_io()),
            _ => Self::FdPassing(e.to_fault_io()),
        }
    }
}

impl From<&ReadinessError> for PluginError {
    fn from(e: &ReadinessError) -> Self {
        let msg = e.to_string();
        match e {
            ReadinessError::BootFailed { reason } => {
                Self::new(ErrorKind::READINESS_BOOT_FAILED, msg)
                    .with_field("reason", reason.clone())
            }
            ReadinessError::Timeout => Self::new(ErrorKind::READINESS_TIMEOUT, msg),
        }
    }
}

impl From<ReadinessError> for PluginError {
    fn from(e: ReadinessError) -> Self {
        Self::from(&e)
    }
}

impl From<PluginError> for ReadinessError {
    fn from(e: PluginError) -> Self {
        match e.kind {
            ErrorKind::READINESS_BOOT_FAILED => Self::BootFailed {
                reason: e.field_or_message("reason"),
            },
            ErrorKind::READINESS_TIMEOUT => Self::Timeout,
            // ReadinessError has no I/O variant: a fault fails the boot.
            _ => Self::BootFailed {
                reason: PluginFault {
                    kind: e.kind,
                    message: e.message.to_string(),
                }
                .to_string(),
            },
        }
    }
}

fn owner_name(owner: SliceOwner) -> &'static str {
    match owner {
        SliceOwner::Pact => "Pact",
        SliceOwner::Workload => "Workload",
    }
}

fn owner_from_name(name: &str) -> Option<SliceOwner> {
    match name {
        "Pact" => Some(SliceOwner::Pact),
        "Workload" => Some(SliceOwner::Workload),
        _ => None,
    }
}

/// `io::ErrorKind`s that cross by name. Others cross as `Other` (their
/// message and OS error code still cross).
const IO_KINDS: &[(io::ErrorKind, &str)] = &[
    (io::ErrorKind::NotFound, "NotFound"),
    (io::ErrorKind::PermissionDenied, "PermissionDenied"),
    (io::ErrorKind::ConnectionRefused, "ConnectionRefused"),
    (io::ErrorKind::ConnectionReset, "ConnectionReset"),
    (io::ErrorKind::ConnectionAborted, "ConnectionAborted"),
    (io::ErrorKind::NotConnected, "NotConnected"),
    (io::ErrorKind::AddrInUse, "AddrInUse"),
    (io::ErrorKind::AddrNotAvailable, "AddrNotAvailable"),
    (io::ErrorKind::BrokenPipe, "BrokenPipe"),
    (io::ErrorKind::AlreadyExists, "AlreadyExists"),
    (io::ErrorKind::WouldBlock, "WouldBlock"),
    (io::ErrorKind::NotADirectory, "NotADirectory"),
    (io::ErrorKind::IsADirectory, "IsADirectory"),
    (io::ErrorKind::DirectoryNotEmpty, "DirectoryNotEmpty"),
    (io::ErrorKind::ReadOnlyFilesystem, "ReadOnlyFilesystem"),
    (io::ErrorKind::InvalidInput, "InvalidInput"),
    (io::ErrorKind::InvalidData, "InvalidData"),
    (io::ErrorKind::TimedOut, "TimedOut"),
    (io::ErrorKind::WriteZero, "WriteZero"),
    (io::ErrorKind::StorageFull, "StorageFull"),
    (io::ErrorKind::ResourceBusy, "ResourceBusy"),
    (io::ErrorKind::Interrupted, "Interrupted"),
    (io::ErrorKind::Unsupported, "Unsupported"),
    (io::ErrorKind::UnexpectedEof, "UnexpectedEof"),
    (io::ErrorKind::OutOfMemory, "OutOfMemory"),
    (io::ErrorKind::Other, "Other"),
];

fn io_kind_name(kind: io::ErrorKind) -> &'static str {
    IO_KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("Other", |(_, n)| n)
}

fn io_kind_from_name(name: &str) -> io::ErrorKind {
    IO_KINDS
        .iter()
        .find(|(_, n)| *n == name)
        .map_or(io::ErrorKind::Other, |(k, _)| *k)
}

#[cfg(test)]
mod tests;
