//! Reaping: collecting the exit status of every child, including orphans the
//! kernel reparents to PID 1 (or to a child subreaper). Never blocks.

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// A child that was reaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// Its pid.
    pub pid: Pid,
    /// How it ended.
    pub status: WaitStatus,
}

/// Reap every child that has ended, without blocking.
pub fn reap_children() -> Vec<Reaped> {
    let mut reaped = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return reaped,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    reaped.push(Reaped { pid, status });
                }
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return reaped,
        }
    }
}

/// Become a child subreaper (prctl `PR_SET_CHILD_SUBREAPER`): orphans of our
/// descendants are reparented to us instead of to PID 1. Used when nodeinit
/// supervises an agent without being PID 1.
///
/// # Errors
///
/// The OS error.
pub fn become_child_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}
