//! Watching for the ready file with inotify, in one thread per backend:
//! watch the file's directory (or, while it does not exist yet, its nearest
//! existing ancestor), re-check on every event, and when the file is there
//! latch "file seen" in the verdict cell, which wakes every waiter.
//! Waiters only `poll` the verdict's wake-up pipe: no polling loop, no
//! fixed sleeps. This module only observes; it never creates or removes files.
//!
//! Why a thread and not one inotify instance per waiter: closing an inotify
//! instance that had watches waits for an SRCU grace period in the kernel
//! (10-20 ms), which a released waiter should not pay, and instances are
//! limited per user (`fs.inotify.max_user_instances`, 128 by default).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nodeinit_sys::deadline::{self, Deadline};

use crate::verdict::VerdictCell;
use crate::{ready_file, ReadinessSetupError};

/// What stopped a wait.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WaitOutcome {
    /// `is_done` returned true.
    Done,
    /// The deadline passed first.
    TimedOut,
}

/// Block until `is_done()` is true, re-checking whenever `wake` becomes
/// readable, or until `timeout` passes (`None`: no limit).
pub(crate) fn wait_until(
    wake: BorrowedFd<'_>,
    timeout: Option<Duration>,
    mut is_done: impl FnMut() -> bool,
) -> Result<WaitOutcome, ReadinessSetupError> {
    let deadline = timeout.map(Deadline::after);
    loop {
        if is_done() {
            return Ok(WaitOutcome::Done);
        }
        if deadline.is_some_and(Deadline::has_passed) {
            return Ok(WaitOutcome::TimedOut);
        }
        // The one rounding rule: up, so the wait never ends early.
        let poll_timeout = PollTimeout::try_from(deadline::poll_timeout_ms([deadline]))
            .unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(wake, PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, poll_timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                return Err(ReadinessSetupError::io(
                    "poll",
                    "readiness wake-up pipe",
                    e,
                    "this is a bug; report it",
                ))
            }
        }
    }
}

/// The watcher thread of one backend; dropping it stops the thread.
pub(crate) struct FileWatcher {
    stop_write: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

const WATCH_MASK: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_CLOSE_WRITE)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR);

impl FileWatcher {
    /// Start watching for `file`; the first watch is armed before this
    /// returns, so setup errors reach the caller.
    pub(crate) fn start(
        file: &Path,
        verdict: Arc<VerdictCell>,
    ) -> Result<Self, ReadinessSetupError> {
        let inotify =
            Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).map_err(|e| {
                ReadinessSetupError::io(
                    "inotify_init",
                    file,
                    e,
                    "raise fs.inotify.max_user_instances",
                )
            })?;
        let first = arm(&inotify, file)?;
        let (stop_read, stop_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| {
            ReadinessSetupError::io("create stop pipe", file, e, "check the open-file limit")
        })?;
        let file_owned = file.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("readiness-watch".to_owned())
            .spawn(move || watch(&inotify, &file_owned, first, &stop_read, &verdict))
            .map_err(|e| {
                ReadinessSetupError::io("spawn watcher thread", file, e, "check memory")
            })?;
        Ok(Self {
            stop_write,
            thread: Some(thread),
        })
    }
}

impl Drop for FileWatcher {
    fn drop(&mut self) {
        let _ = nix::unistd::write(&self.stop_write, b"s");
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Watch the nearest existing directory on the way to `file`; returns it.
fn arm(inotify: &Inotify, file: &Path) -> Result<PathBuf, ReadinessSetupError> {
    let target = nearest_existing_dir(file);
    inotify.add_watch(&target, WATCH_MASK).map_err(|e| {
        ReadinessSetupError::io(
            "inotify_add_watch",
            &target,
            e,
            "raise fs.inotify.max_user_watches",
        )
    })?;
    Ok(target)
}

fn watch(
    inotify: &Inotify,
    file: &Path,
    mut watched: PathBuf,
    stop: &OwnedFd,
    verdict: &VerdictCell,
) {
    loop {
        // Checked after arming, so an appearance in between is not lost.
        if ready_file::exists(file) {
            verdict.note_file_seen();
            return;
        }
        let mut fds = [
            PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::error!(error = %e, "readiness watcher: poll failed; waiters rely on in-process signals only");
                return;
            }
        }
        if fds[1].any().unwrap_or(true) {
            return;
        }
        // Drain so the next poll sleeps until something new happens.
        while matches!(inotify.read_events(), Ok(events) if !events.is_empty()) {}
        // A directory on the way appeared or went away: move the watch.
        let target = nearest_existing_dir(file);
        if target != watched {
            match arm(inotify, file) {
                Ok(now) => watched = now,
                Err(e) => {
                    tracing::error!(error = %e, "readiness watcher stopped");
                    return;
                }
            }
        }
    }
}

/// The file's directory, or its nearest ancestor that exists.
fn nearest_existing_dir(file: &Path) -> PathBuf {
    let mut dir = file.parent().unwrap_or(Path::new("/"));
    loop {
        if dir.is_dir() {
            return dir.to_path_buf();
        }
        match dir.parent() {
            Some(parent) => dir = parent,
            None => return PathBuf::from("/"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_existing_dir_walks_up() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a/b/ready");
        assert_eq!(nearest_existing_dir(&file), dir.path());
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        assert_eq!(nearest_existing_dir(&file), dir.path().join("a/b"));
    }
}
