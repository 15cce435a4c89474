//! Config errors. Each says which file, where (line and key) and what to do.

use std::path::PathBuf;

use crate::config::SourceLocation;

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing when named explicitly, permissions, ...).
    #[error("{}: cannot read config: {source} (check the path given by --config or nodeinit.config=, and that it is readable by root)", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not UTF-8 (TOML must be).
    #[error("{}:{}:{}: key `{}`: file is not valid UTF-8 (invalid byte {byte:#04x}); TOML files must be UTF-8, re-save it as UTF-8", path.display(), location.line, location.column, location.key)]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Where the first invalid byte is.
        location: SourceLocation,
        /// The invalid byte.
        byte: u8,
    },
    /// A syntax error, wrong type, unknown key, invalid value or missing key.
    #[error("{}:{}:{}: key `{}`: {message}", path.display(), location.line, location.column, location.key)]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where it is.
        location: SourceLocation,
        /// What is wrong and what is expected.
        message: String,
    },
    /// The node id from the command line or hostname file is not valid.
    #[error("node id from {source_name}: {reason}")]
    InvalidNodeId {
        /// Where the bad id came from.
        source_name: String,
        /// Why it is invalid.
        reason: String,
    },
    /// No source gave a node id.
    #[error("no node id: {detail}; set nodeinit.node_id= on the kernel command line, [host].node_id in the config, or /etc/hostname")]
    NoNodeId {
        /// What was tried.
        detail: String,
    },
}
