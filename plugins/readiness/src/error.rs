//! Errors of the readiness backend. Each names the path it failed on and what
//! to do; they are turned into `hpc_node::ReadinessError::BootFailed` at the
//! trait boundary, keeping the message.

use std::path::PathBuf;

/// What went wrong while emitting or observing readiness.
#[derive(Debug, thiserror::Error)]
pub enum ReadinessSetupError {
    /// The node id cannot be written as the ready file's content.
    #[error("invalid node id {value:?}: {reason}")]
    InvalidNodeId {
        /// The rejected value.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An option holds a value the backend cannot use.
    #[error("readiness option `{key}`: {reason}")]
    InvalidOption {
        /// The option key.
        key: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// A filesystem or socket operation failed.
    #[error("{action} {path}: {source} ({hint})")]
    Io {
        /// What was being done, e.g. "write ready file".
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
        /// What the operator can do about it.
        hint: &'static str,
    },
}

impl ReadinessSetupError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<std::io::Error>,
        hint: &'static str,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source: source.into(),
            hint,
        }
    }
}

impl From<ReadinessSetupError> for hpc_node::ReadinessError {
    fn from(err: ReadinessSetupError) -> Self {
        hpc_node::ReadinessError::BootFailed {
            reason: err.to_string(),
        }
    }
}
