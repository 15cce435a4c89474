//! Pidfds of the processes in a cgroup subtree, so a wait wakes the moment
//! they exit.
//!
//! Why: the kernel rate-limits `cgroup.events` notifications to one per
//! ~10 ms per file (`CGROUP_FILE_NOTIFY_MIN_INTV`), so a scope whose process
//! was placed just before `destroy_scope` would see its `populated 0` wake-up
//! delayed by up to that much. A pidfd becomes readable as soon as its process
//! has exited — after it left its cgroup — so the waiter re-reads
//! `cgroup.events` at once. Best effort: a pid that cannot be watched only
//! means waiting for the (slower) `cgroup.events` notification. Must never
//! signal a process.

use std::os::fd::OwnedFd;
use std::path::Path;

use crate::kill::subtree_pids;

/// At most this many processes are watched; beyond, `cgroup.events` alone wakes the wait.
pub const MAX_WATCHED: usize = 64;

/// Pidfds of processes still running in a subtree.
#[derive(Debug, Default)]
pub struct ExitWatch {
    pidfds: Vec<OwnedFd>,
}

impl ExitWatch {
    /// Watch up to [`MAX_WATCHED`] processes listed in `cgroup_dir` and below.
    #[must_use]
    pub fn of_subtree(cgroup_dir: &Path) -> Self {
        let pids = match subtree_pids(cgroup_dir) {
            Ok(pids) => pids,
            Err(err) => {
                tracing::debug!(error = %err, "no pid watch: relying on cgroup.events alone");
                return Self::default();
            }
        };
        let pidfds = pids
            .into_iter()
            .take(MAX_WATCHED)
            .filter_map(|pid| match nodeinit_sys::pidfd::open(pid) {
                Ok(fd) => Some(fd),
                // Gone already (ESRCH), or a kernel before 5.3 (ENOSYS): nothing to watch.
                Err(err) => {
                    tracing::trace!(pid, error = %err, "pidfd_open failed");
                    None
                }
            })
            .collect();
        Self { pidfds }
    }

    /// The watched pidfds, in a stable order.
    #[must_use]
    pub fn pidfds(&self) -> &[OwnedFd] {
        &self.pidfds
    }

    /// Stop watching the pidfds at `indices` (their processes have exited;
    /// a readable pidfd stays readable, so keeping it would make poll spin).
    pub fn forget(&mut self, indices: &[usize]) {
        let mut index = 0;
        self.pidfds.retain(|_| {
            let keep = !indices.contains(&index);
            index += 1;
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_listed_live_processes_and_skips_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        // i32::MAX is above pid_max: never a live process.
        std::fs::write(
            dir.path().join("cgroup.procs"),
            format!("{me}\n{}\n", i32::MAX),
        )
        .unwrap();
        let mut watch = ExitWatch::of_subtree(dir.path());
        assert_eq!(watch.pidfds().len(), 1);
        watch.forget(&[0]);
        assert!(watch.pidfds().is_empty());
    }

    #[test]
    fn unreadable_subtree_gives_an_empty_watch() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("cgroup.procs")).unwrap();
        assert!(ExitWatch::of_subtree(dir.path()).pidfds().is_empty());
    }
}
