//! Options of the readiness backend (`[plugins.readiness.options]`).

use std::path::PathBuf;

use hpc_node::readiness::{READINESS_FILE_PATH, READINESS_SOCKET_PATH};
use nodeinit_contracts::AbsolutePath;
use serde::Deserialize;

use crate::ReadinessSetupError;

/// Options of the readiness backend. Every key is optional; unknown keys are
/// rejected so that a typo is reported instead of ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadinessOptions {
    /// The ready file (default `READINESS_FILE_PATH`, `/run/pact/ready`).
    pub file: PathBuf,
    /// Whether `signal_ready` writes the ready file. Set to `false` when the
    /// agent writes it itself (pact does, at the end of its own boot); waiting
    /// still watches the file.
    pub write_file: bool,
    /// Whether to serve the readiness socket once the verdict is known.
    pub socket: bool,
    /// The readiness socket (default `READINESS_SOCKET_PATH`).
    pub socket_path: PathBuf,
    /// Whether to send `READY=1` to `$NOTIFY_SOCKET` when that is set.
    pub sd_notify: bool,
}

impl Default for ReadinessOptions {
    fn default() -> Self {
        Self {
            file: PathBuf::from(READINESS_FILE_PATH),
            write_file: true,
            socket: true,
            socket_path: PathBuf::from(READINESS_SOCKET_PATH),
            sd_notify: true,
        }
    }
}

impl ReadinessOptions {
    /// Check the values serde cannot: paths must be absolute and name a file.
    ///
    /// # Errors
    ///
    /// [`ReadinessSetupError::InvalidOption`] naming the key.
    pub fn validate(&self) -> Result<(), ReadinessSetupError> {
        for (key, path) in [("file", &self.file), ("socket_path", &self.socket_path)] {
            // The one absolute-path rule (no `..`), and a file name.
            let names_a_file = path
                .to_str()
                .and_then(|p| AbsolutePath::parse(p).ok())
                .is_some_and(|p| p.has_file_name());
            if !names_a_file {
                return Err(ReadinessSetupError::InvalidOption {
                    key,
                    reason: format!(
                        "{} must be an absolute path to a file, e.g. {}",
                        path.display(),
                        if key == "file" {
                            READINESS_FILE_PATH
                        } else {
                            READINESS_SOCKET_PATH
                        }
                    ),
                });
            }
        }
        // sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
        if self.socket && self.socket_path.as_os_str().len() > 107 {
            return Err(ReadinessSetupError::InvalidOption {
                key: "socket_path",
                reason: format!(
                    "{} is longer than the 107 bytes a unix socket path may have",
                    self.socket_path.display()
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_hpc_node_paths() {
        let options: ReadinessOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(options.file, PathBuf::from(READINESS_FILE_PATH));
        assert_eq!(options.socket_path, PathBuf::from(READINESS_SOCKET_PATH));
        assert!(options.write_file && options.socket && options.sd_notify);
        options.validate().unwrap();
    }

    #[test]
    fn unknown_key_is_named() {
        let err = serde_json::from_str::<ReadinessOptions>(r#"{"fiel": "/x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `fiel`"), "{err}");
    }

    #[test]
    fn relative_path_is_refused_naming_the_key() {
        let options = ReadinessOptions {
            file: PathBuf::from("ready"),
            ..ReadinessOptions::default()
        };
        let err = options.validate().unwrap_err();
        assert!(
            matches!(err, ReadinessSetupError::InvalidOption { key: "file", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("must be an absolute path"));
    }

    #[test]
    fn overlong_socket_path_is_refused() {
        let options = ReadinessOptions {
            socket_path: PathBuf::from(format!("/{}", "s".repeat(120))),
            ..ReadinessOptions::default()
        };
        let err = options.validate().unwrap_err();
        assert!(
            err.to_string().contains("longer than the 107 bytes"),
            "{err}"
        );
    }
}
