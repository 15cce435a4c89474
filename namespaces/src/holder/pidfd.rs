//! Process file descriptors for holders: signal and reap by pidfd, so a pid
//! reused after someone else reaped the holder can never be hit. The one
//! pidfd helper is `nodeinit_sys::pidfd`; this module adapts it to `nix`'s
//! `Pid`.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use nix::unistd::Pid;

/// `pidfd_open(2)`: a pidfd for `pid`, close-on-exec.
pub(crate) fn open(pid: Pid) -> io::Result<OwnedFd> {
    nodeinit_sys::pidfd::open(pid.as_raw())
}

/// `pidfd_send_signal(2)` with `SIGKILL`. `ESRCH` (already dead) is success.
pub(crate) fn kill(pidfd: BorrowedFd<'_>) -> io::Result<()> {
    nodeinit_sys::pidfd::kill(pidfd)
}

/// `waitid(P_PIDFD, WEXITED)`: block until the process has exited and reap
/// it. `ECHILD` (someone else, e.g. a PID-1 reaper, reaped it) is success.
pub(crate) fn reap(pidfd: BorrowedFd<'_>) -> io::Result<()> {
    nodeinit_sys::pidfd::reap(pidfd)
}
