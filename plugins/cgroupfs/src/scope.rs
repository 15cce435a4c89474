//! Creating and destroying scope directories.
//!
//! Owns the lifecycle of `<parent>/<name>.scope`: `mkdir`, limits, rollback
//! on failure (only what this call created is removed), and destruction —
//! kill, wait for `populated 0`, remove the subtree bottom-up. Must never
//! decide ownership or validate names: callers hand in validated types.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hpc_node::{CgroupError, CgroupHandle};

use crate::cgroup_path::{ScopePath, SlicePath};
use crate::events::{self, WaitOutcome};
use crate::kill;
use crate::limits::ScopeLimits;
use crate::names::ScopeName;
use crate::root::CgroupRoot;

/// Removes a directory this call created unless the call succeeds.
struct CreatedDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for CreatedDir {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Err(err) = std::fs::remove_dir(&self.path) {
            tracing::warn!(scope = %self.path.display(), error = %err, "rolling back a failed scope: rmdir failed");
        }
    }
}

/// Create `<parent>/<name>.scope` below `root` and apply `limits`.
///
/// # Errors
///
/// [`CgroupError::CreationFailed`] when the parent does not exist, the scope
/// already exists, or a limit is refused — in which case the new directory is
/// removed again.
pub fn create(
    root: &CgroupRoot,
    parent: &SlicePath,
    name: &ScopeName,
    limits: &ScopeLimits,
) -> Result<CgroupHandle, CgroupError> {
    let parent_dir = root.path().join(parent.as_relative());
    let scope_dir = parent_dir.join(name.directory_name());
    let failed = |reason: String| CgroupError::CreationFailed { reason };
    match std::fs::create_dir(&scope_dir) {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::AlreadyExists => {
            return Err(failed(format!(
                "scope {} already exists: destroy_scope it first (it may still hold processes)",
                scope_dir.display()
            )))
        }
        Err(err) if err.kind() == ErrorKind::NotFound => {
            return Err(failed(format!(
                "creating {}: parent slice {} does not exist; run create_hierarchy first or create the parent",
                scope_dir.display(),
                parent_dir.display()
            )))
        }
        Err(err) => return Err(failed(format!("creating {}: {err}", scope_dir.display()))),
    }
    let mut guard = CreatedDir {
        path: scope_dir,
        keep: false,
    };
    limits.apply(&guard.path).map_err(|why| {
        failed(format!(
            "scope {} removed again: {why}",
            guard.path.display()
        ))
    })?;
    guard.keep = true;
    Ok(CgroupHandle {
        path: guard.path.display().to_string(),
    })
}

/// Kill everything in the scope, wait until it is empty, and remove it.
///
/// # Errors
///
/// [`CgroupError::KillFailed`] when processes remain after `timeout` (listing
/// their pids and states; the scope is left in place) or the kill or removal
/// fails; [`CgroupError::Io`] when waiting itself fails.
pub fn destroy(root: &CgroupRoot, scope: &ScopePath, timeout: Duration) -> Result<(), CgroupError> {
    destroy_dir(&root.path().join(scope.as_relative()), timeout)
}

/// [`destroy`] of an already resolved and authorised cgroup directory.
///
/// # Errors
///
/// As [`destroy`].
pub fn destroy_dir(dir: &Path, timeout: Duration) -> Result<(), CgroupError> {
    let path = dir.display().to_string();
    let kill_failed = |reason: String| CgroupError::KillFailed {
        path: path.clone(),
        reason,
    };
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(kill_failed("not a cgroup directory".to_owned())),
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(kill_failed(format!("stat: {err}"))),
    }
    match kill::kill_all(dir) {
        Ok(method) => tracing::debug!(scope = %path, ?method, "killed scope processes"),
        Err(_) if !dir.exists() => return Ok(()),
        Err(why) => return Err(kill_failed(why)),
    }
    match events::wait_until_empty(dir, timeout)? {
        WaitOutcome::Emptied => {}
        WaitOutcome::Vanished => return Ok(()),
        WaitOutcome::TimedOut => {
            return Err(kill_failed(format!(
                "processes still there after {} ms: {}; the scope is left in place, retry destroy_scope later",
                timeout.as_millis(),
                kill::describe_survivors(dir)
            )))
        }
    }
    remove_subtree(dir)
        .map_err(|err| kill_failed(format!("scope is empty but removing it failed: {err}")))
}

/// `rmdir` `dir` and every cgroup below it, children first. Vanished ones are fine.
fn remove_subtree(dir: &Path) -> io::Result<()> {
    let dirs =
        kill::subtree_dirs(dir).map_err(|err| io::Error::new(err.kind(), err.to_string()))?;
    for cgroup in dirs.iter().rev() {
        match std::fs::remove_dir(cgroup) {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => {
                return Err(io::Error::new(
                    err.kind(),
                    format!("rmdir {}: {err}", cgroup.display()),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A regular-file stand-in for a scope whose process will not die.
    #[test]
    fn timeout_reports_pids_and_states_and_keeps_the_scope() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        std::fs::write(dir.path().join("cgroup.kill"), "0").unwrap();
        std::fs::write(dir.path().join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        std::fs::write(dir.path().join("cgroup.procs"), format!("{me}\n")).unwrap();
        match destroy_dir(dir.path(), Duration::ZERO) {
            Err(CgroupError::KillFailed { path, reason }) => {
                assert_eq!(path, dir.path().display().to_string());
                assert!(
                    reason.starts_with("processes still there after 0 ms: "),
                    "{reason}"
                );
                assert!(reason.contains(&format!("pid {me} (")), "{reason}");
                assert!(reason.contains(" state "), "{reason}");
                assert!(reason.contains("the scope is left in place"), "{reason}");
            }
            other => panic!("expected KillFailed, got {other:?}"),
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cgroup.kill")).unwrap(),
            "1"
        );
        assert!(dir.path().join("cgroup.procs").exists());
    }

    #[test]
    fn missing_scope_is_already_destroyed() {
        let dir = tempfile::tempdir().unwrap();
        destroy_dir(&dir.path().join("gone.scope"), Duration::ZERO).unwrap();
    }
}
