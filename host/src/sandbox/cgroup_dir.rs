//! Creating and removing the sandbox's cgroup directory tree. Removal is
//! depth-first `rmdir` (cgroupfs directories cannot be removed with
//! `remove_dir_all`: their control files are not unlinkable). It only runs
//! after the sandbox's PID namespace is gone, so no process is left inside.

use std::path::{Path, PathBuf};

/// A cgroup directory that could not be removed.
#[derive(Debug, thiserror::Error)]
#[error("cannot remove sandbox cgroup {}: {source}; remove it with `rmdir` (deepest first) once `cgroup.procs` is empty", path.display())]
pub struct CgroupCleanupError {
    /// The directory.
    pub path: PathBuf,
    /// The OS error.
    pub source: std::io::Error,
}

/// Remove `dir` and every cgroup below it, deepest first. A missing `dir` is fine.
///
/// # Errors
///
/// The first directory that could not be removed.
pub fn remove_cgroup_tree(dir: &Path) -> Result<(), CgroupCleanupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CgroupCleanupError {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CgroupCleanupError {
            path: dir.to_path_buf(),
            source,
        }),
    }
}
