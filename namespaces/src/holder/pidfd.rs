//! Process file descriptors for holders: signal and reap by pidfd, so a pid
//! reused after someone else reaped the holder can never be hit.
//!
//! Owns the three pidfd syscalls nix 0.29 does not wrap. Nothing else.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::unistd::Pid;

/// `pidfd_open(2)`: a pidfd for `pid`, close-on-exec.
pub(crate) fn open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no
    // memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd)
        .map_err(|_| io::Error::other("pidfd_open returned an fd out of range"))?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_send_signal(2)` with `SIGKILL`. `ESRCH` (already dead) is success.
pub(crate) fn kill(pidfd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, no siginfo (NULL), flags 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err);
        }
    }
    Ok(())
}

/// `waitid(P_PIDFD, WEXITED)`: block until the process has exited and reap
/// it. `ECHILD` (someone else, e.g. a PID-1 reaper, reaped it) is success.
pub(crate) fn reap(pidfd: BorrowedFd<'_>) -> io::Result<()> {
    loop {
        // SAFETY: zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let id = libc::id_t::try_from(pidfd.as_raw_fd())
            .map_err(|_| io::Error::other("pidfd out of range for waitid"))?;
        // SAFETY: info points to a live siginfo_t; P_PIDFD with a valid pidfd.
        let rc = unsafe { libc::waitid(libc::P_PIDFD, id, &mut info, libc::WEXITED) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ECHILD) => return Ok(()),
            _ => return Err(err),
        }
    }
}
