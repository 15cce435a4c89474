//! The `kind` of an `error` message: a closed list in v1, spelled in snake_case.

use serde::{Deserialize, Serialize};

/// Why a request failed, as sent in `error.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The node did not become ready within the server's queue wait, or its boot failed.
    NotReady,
    /// The message could not be decoded or broke a rule (size, JSON, version, type, fields, ids).
    InvalidRequest,
    /// The peer's uid/gid (`SO_PEERCRED`) is not in the server's access policy.
    Unauthorized,
    /// The provider failed to create the namespaces (including a refused `uenv_image`).
    CreationFailed,
    /// `allocation_ended` named an allocation that is not live.
    AllocationNotFound,
    /// Too many connections, or too many requests queued waiting for readiness.
    Busy,
    /// The server failed in a way that is not the request's fault.
    Internal,
}

impl ErrorKind {
    /// The wire spelling (`"not_ready"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotReady => "not_ready",
            Self::InvalidRequest => "invalid_request",
            Self::Unauthorized => "unauthorized",
            Self::CreationFailed => "creation_failed",
            Self::AllocationNotFound => "allocation_not_found",
            Self::Busy => "busy",
            Self::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_wire_spelling_is_serdes_for_every_kind() {
        for kind in [
            ErrorKind::NotReady,
            ErrorKind::InvalidRequest,
            ErrorKind::Unauthorized,
            ErrorKind::CreationFailed,
            ErrorKind::AllocationNotFound,
            ErrorKind::Busy,
            ErrorKind::Internal,
        ] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(kind.to_string(), kind.as_str());
            assert_eq!(serde_json::from_str::<ErrorKind>(&json).unwrap(), kind);
        }
        // v1's list is closed: a kind it does not define is refused.
        assert!(serde_json::from_str::<ErrorKind>("\"teapot\"")
            .unwrap_err()
            .to_string()
            .starts_with("unknown variant `teapot`"));
    }
}
