//! Process descriptors (`pidfd_open(2)`): a handle on one process that a
//! reused pid can never alias — it becomes readable when the process exits,
//! and a signal sent through it reaches that process or fails.
//!
//! Wraps `rustix`; owns no process.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::process::{Pid, PidfdFlags, Signal};

/// A pidfd for `pid` (close-on-exec, as the kernel makes every pidfd).
///
/// # Errors
///
/// `ESRCH` when no such process exists, `EINVAL` for a pid ≤ 0, `ENOSYS`
/// before Linux 5.3.
///
/// ```
/// let me = nodeinit_sys::pidfd::open(std::process::id() as i32).unwrap();
/// assert!(!nodeinit_sys::pidfd::has_exited(&me).unwrap());
/// ```
pub fn open(pid: i32) -> io::Result<OwnedFd> {
    // Checked first: rustix's `Pid::from_raw` debug-asserts on a negative
    // value (a process group, to kill(2)), which would be a panic here.
    let valid = if pid > 0 { Pid::from_raw(pid) } else { None };
    let pid = valid.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("pid {pid} is not a process id"),
        )
    })?;
    Ok(rustix::process::pidfd_open(pid, PidfdFlags::empty())?)
}

/// Sends `SIGKILL` to the process behind `pidfd`. A process that is already
/// gone (`ESRCH`: exited and reaped) counts as killed.
///
/// # Errors
///
/// Any other `pidfd_send_signal` error (`EPERM`, a bad descriptor).
pub fn kill(pidfd: impl AsFd) -> io::Result<()> {
    match rustix::process::pidfd_send_signal(pidfd, Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Waits until the process behind `pidfd` (a child of this process) has
/// exited, and reaps it. One reaped by someone else (`ECHILD`: a PID-1
/// reaper got there first) counts as reaped.
///
/// # Errors
///
/// Any other `waitid` error.
pub fn reap(pidfd: impl AsFd) -> io::Result<()> {
    loop {
        match rustix::process::waitid(
            rustix::process::WaitId::PidFd(pidfd.as_fd()),
            rustix::process::WaitIdOptions::EXITED,
        ) {
            Ok(_) | Err(rustix::io::Errno::CHILD) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether the process behind `pidfd` has exited (its pidfd is readable).
///
/// # Errors
///
/// `poll` failed.
pub fn has_exited(pidfd: impl AsFd) -> io::Result<bool> {
    let mut fds = [rustix::event::PollFd::new(
        &pidfd,
        rustix::event::PollFlags::IN,
    )];
    let ready = rustix::event::poll(&mut fds, Some(&rustix::event::Timespec::default()))?;
    Ok(ready > 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn follows_one_process_to_its_end() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fd = open(child.id() as i32).unwrap();
        assert!(!has_exited(&fd).unwrap());
        kill(&fd).unwrap();
        reap(&fd).unwrap();
        assert!(has_exited(&fd).unwrap());
        // Reaped: the pidfd still names it, and only it; gone counts as killed
        // and as reaped.
        kill(&fd).unwrap();
        reap(&fd).unwrap();
        // std's handle agrees it is gone (ECHILD).
        assert_eq!(child.wait().unwrap_err().raw_os_error(), Some(10));
    }

    #[test]
    fn refuses_pids_that_are_not_processes() {
        assert_eq!(open(0).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(open(-5).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
