//! Waiting for the ready file with inotify: watch the file's directory (or,
//! while it does not exist yet, its nearest existing ancestor), re-check on
//! every event, sleep in `poll` otherwise. No polling loop, no fixed sleeps.
//! This module only observes; it never creates or removes anything.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::ReadinessSetupError;

/// What stopped the wait.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WaitOutcome {
    /// `is_done` returned true.
    Done,
    /// The deadline passed first.
    TimedOut,
}

/// Block until `is_done()` is true, re-checking whenever something appears in
/// the directories leading to `file` or `wake` becomes readable, or until
/// `timeout` passes (`None`: no limit).
pub(crate) fn wait_until(
    file: &Path,
    wake: BorrowedFd<'_>,
    timeout: Option<Duration>,
    mut is_done: impl FnMut() -> bool,
) -> Result<WaitOutcome, ReadinessSetupError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).map_err(|e| {
        ReadinessSetupError::io(
            "inotify_init",
            file,
            e,
            "raise fs.inotify.max_user_instances",
        )
    })?;
    let owner = CloseInBackground(Some(inotify));
    let inotify = owner.get();
    let mut watched: Option<PathBuf> = None;
    loop {
        let target = nearest_existing_dir(file);
        if watched.as_deref() != Some(target.as_path()) {
            // Changes to the tree (a directory appearing or going away) move the watch.
            let mask = AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF
                | AddWatchFlags::IN_ONLYDIR;
            inotify.add_watch(&target, mask).map_err(|e| {
                ReadinessSetupError::io(
                    "inotify_add_watch",
                    &target,
                    e,
                    "raise fs.inotify.max_user_watches",
                )
            })?;
            watched = Some(target);
        }
        // Checked after arming the watch, so an appearance in between is not lost.
        if is_done() {
            return Ok(WaitOutcome::Done);
        }
        let poll_timeout = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(WaitOutcome::TimedOut);
                }
                // Round up so the wait never ends a fraction of a millisecond early.
                let millis = left.as_micros().div_ceil(1000);
                PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [
            PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
            PollFd::new(wake, PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, poll_timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                return Err(ReadinessSetupError::io(
                    "poll",
                    file,
                    e,
                    "this is a bug; report it",
                ))
            }
        }
        // Drain so the next poll sleeps until something new happens.
        loop {
            match inotify.read_events() {
                Ok(events) if !events.is_empty() => continue,
                _ => break,
            }
        }
    }
}

/// Closing an inotify instance that had watches waits for an SRCU grace
/// period in the kernel (`fsnotify_destroy_group`), 10-20 ms: a waiter
/// released by readiness must not pay it. The instance is closed by a
/// short-lived thread instead (inline if no thread can be started).
struct CloseInBackground(Option<Inotify>);

impl CloseInBackground {
    fn get(&self) -> &Inotify {
        match &self.0 {
            Some(inotify) => inotify,
            None => unreachable!("taken only in drop"),
        }
    }
}

impl Drop for CloseInBackground {
    fn drop(&mut self) {
        if let Some(inotify) = self.0.take() {
            let _ = std::thread::Builder::new()
                .name("inotify-close".to_owned())
                .spawn(move || drop(inotify));
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
