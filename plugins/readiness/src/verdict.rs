//! The in-process verdict of the boot (pending, ready, failed) and the
//! wake-up pipe that tells waiters it changed.
//!
//! Waiters poll the pipe's read end without ever reading it: once a byte is
//! in it, every `poll` returns at once (level-triggered), so one write wakes
//! all present and future waiters. A verdict is final for waiters; this module
//! never decides what a verdict means for the files on disk.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::fcntl::OFlag;

use crate::ReadinessSetupError;

/// The boot's verdict as this process knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No signal yet.
    Pending,
    /// `signal_ready` succeeded.
    Ready,
    /// `signal_failed` was called with this reason.
    Failed(String),
}

/// Shared verdict plus wake-up pipe.
pub(crate) struct VerdictCell {
    verdict: Mutex<Verdict>,
    /// Latched once the ready file was seen: readiness does not go back.
    file_seen: AtomicBool,
    wake_read: OwnedFd,
    wake_write: OwnedFd,
}

impl VerdictCell {
    pub(crate) fn new() -> Result<Self, ReadinessSetupError> {
        let (wake_read, wake_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| {
                ReadinessSetupError::io(
                    "create wake-up pipe",
                    "pipe2",
                    e,
                    "check the open-file limit",
                )
            })?;
        Ok(Self {
            verdict: Mutex::new(Verdict::Pending),
            file_seen: AtomicBool::new(false),
            wake_read,
            wake_write,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Verdict> {
        // A poisoned lock only means a panic elsewhere; the enum is always valid.
        self.verdict.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn get(&self) -> Verdict {
        self.lock().clone()
    }

    /// Record `verdict` and wake every waiter.
    pub(crate) fn set(&self, verdict: Verdict) {
        *self.lock() = verdict;
        // EAGAIN means the pipe already holds bytes: waiters are awake anyway.
        let _ = nix::unistd::write(&self.wake_write, b"!");
    }

    /// Record that the ready file appeared and wake every waiter.
    pub(crate) fn note_file_seen(&self) {
        self.file_seen.store(true, Ordering::Release);
        let _ = nix::unistd::write(&self.wake_write, b"f");
    }

    /// Whether the ready file was seen by the watcher.
    pub(crate) fn file_seen(&self) -> bool {
        self.file_seen.load(Ordering::Acquire)
    }

    /// The read end to poll for "the verdict changed".
    pub(crate) fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake_read.as_fd()
    }
}
