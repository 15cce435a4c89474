//! Reading and writing cgroup v2 interface files (`cgroup.procs`, `memory.max`, ...).
//!
//! Owns the I/O discipline the kernel expects: a value is written with exactly
//! one `write(2)` on a file opened without `O_CREAT`/`O_TRUNC` (cgroupfs files
//! always exist; creating one would mean we are not on cgroupfs). Every failure
//! carries the operation, the value and the path.
//! Must never interpret file contents: parsing lives with each file's owner module.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A failed read or write of one cgroup interface file.
#[derive(Debug, thiserror::Error)]
#[error("{operation} {path}: {source}")]
pub struct ControlFileError {
    /// `reading` or `writing "<value>" to`.
    pub operation: String,
    /// The interface file.
    pub path: PathBuf,
    /// What the kernel said.
    #[source]
    pub source: io::Error,
}

impl ControlFileError {
    /// The `errno`-level kind, so callers can tell "file missing" from "kernel refused".
    #[must_use]
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }

    /// The raw `errno`, when the kernel returned one.
    #[must_use]
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// Read a whole interface file as text.
///
/// # Errors
///
/// When the file cannot be opened or read.
pub fn read(path: &Path) -> Result<String, ControlFileError> {
    std::fs::read_to_string(path).map_err(|source| ControlFileError {
        operation: "reading".to_owned(),
        path: path.to_path_buf(),
        source,
    })
}

/// Write `value` to an existing interface file in a single `write(2)`.
///
/// # Errors
///
/// When the file does not exist, cannot be opened, or the kernel rejects the value.
pub fn write(path: &Path, value: &str) -> Result<(), ControlFileError> {
    let fail = |source| ControlFileError {
        operation: format!("writing {value:?} to"),
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new().write(true).open(path).map_err(fail)?;
    let written = file.write(value.as_bytes()).map_err(fail)?;
    if written != value.len() {
        return Err(fail(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {written} of {} bytes accepted", value.len()),
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_value_of_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cpu.weight");
        std::fs::write(&file, "100\n").unwrap();
        write(&file, "250").unwrap();
        // The fixture is a regular file, so the shorter write leaves a tail: the
        // point is that we never truncate (cgroupfs files take one value per write).
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "250\n");
    }

    #[test]
    fn write_never_creates_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("memory.max");
        let err = write(&file, "1024").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(!file.exists());
        let text = err.to_string();
        assert!(text.starts_with("writing \"1024\" to "), "{text}");
        assert!(text.contains("memory.max"), "{text}");
    }

    #[test]
    fn read_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = read(&dir.path().join("cgroup.events")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("reading "));
        assert!(err.to_string().contains("cgroup.events"));
    }
}
