//! Signals as events: a handler writes the signal number into a non-blocking
//! pipe (the self-pipe trick), and the main loop polls the pipe's read end.
//! A handler, unlike `signalfd`, works whatever other threads block, and
//! PID 1 receives only signals it has a handler for.
//! This module maps signals to shutdown requests; it never acts on them.

use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

use nix::fcntl::OFlag;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::pid1::ShutdownAction;

/// Signals routed into the pipe.
pub const HANDLED_SIGNALS: [Signal; 7] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGPWR,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGHUP,
];

/// What a signal asks of init, following busybox/sysvinit conventions:
/// SIGTERM and SIGINT (Ctrl-Alt-Del) reboot, SIGPWR and SIGUSR2 power off,
/// SIGUSR1 halts. When nodeinit is not PID 1 every one of them means "stop".
pub fn shutdown_action_for(signal: Signal) -> Option<ShutdownAction> {
    match signal {
        Signal::SIGTERM | Signal::SIGINT => Some(ShutdownAction::Reboot),
        Signal::SIGPWR | Signal::SIGUSR2 => Some(ShutdownAction::Poweroff),
        Signal::SIGUSR1 => Some(ShutdownAction::Halt),
        _ => None,
    }
}

/// The write end, for the handler (which may only use async-signal-safe calls).
static WRITE_FD: AtomicI32 = AtomicI32::new(-1);
static PIPE: OnceLock<SignalPipe> = OnceLock::new();

/// The process-wide signal pipe.
#[derive(Debug)]
pub struct SignalPipe {
    read: OwnedFd,
}

extern "C" fn on_signal(signo: nix::libc::c_int) {
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = u8::try_from(signo).unwrap_or(0);
        // SAFETY: write(2) is async-signal-safe; `fd` is the pipe's write end,
        // kept open for the life of the process; the buffer is a live local.
        unsafe { nix::libc::write(fd, std::ptr::addr_of!(byte).cast(), 1) };
    }
}

impl SignalPipe {
    /// Install the handlers (once per process) and return the pipe.
    ///
    /// # Errors
    ///
    /// The OS error when the pipe or a handler cannot be set up.
    pub fn install() -> nix::Result<&'static SignalPipe> {
        if let Some(pipe) = PIPE.get() {
            return Ok(pipe);
        }
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        // The write end lives as long as the process: the handler may run at any time.
        WRITE_FD.store(write.into_raw_fd(), Ordering::Relaxed);
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
            SigSet::empty(),
        );
        for signal in HANDLED_SIGNALS {
            // SAFETY: `on_signal` only loads an atomic and calls write(2), both
            // async-signal-safe.
            unsafe { sigaction(signal, &action) }?;
        }
        Ok(PIPE.get_or_init(|| SignalPipe { read }))
    }

    /// The read end, readable when a signal arrived.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// The signals received since the last call, in order.
    pub fn drain(&self) -> Vec<Signal> {
        let mut signals = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n @ 1..) =
            nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&self.read), &mut buf)
        {
            signals.extend(
                buf[..n]
                    .iter()
                    .filter_map(|&b| Signal::try_from(i32::from(b)).ok()),
            );
        }
        signals
    }
}

/// Reset the handled signals to their defaults and unblock everything: run
/// in a child between fork and exec, so the agent starts with a clean slate.
///
/// # Errors
///
/// The OS error.
pub fn reset_signals_for_child() -> nix::Result<()> {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in HANDLED_SIGNALS {
        // SAFETY: installing SIG_DFL has no handler safety requirements.
        unsafe { sigaction(signal, &default) }?;
    }
    SigSet::empty().thread_set_mask()
}

/// `/proc/self/oom_score_adj`, as a C string (no allocation after fork).
const OOM_SCORE_ADJ: &std::ffi::CStr = c"/proc/self/oom_score_adj";

/// In a child between fork and exec: give up the keeper's `oom_score_adj`
/// of -1000 (0, the kernel's default), so the OOM killer may pick the
/// worker or the agent, never PID 1. Best effort: only async-signal-safe
/// calls, and a failure leaves the inherited value.
pub fn reset_oom_score_adj_for_child() {
    // SAFETY: open/write/close on a static C string and a static buffer;
    // all async-signal-safe, no allocation.
    unsafe {
        let fd = nix::libc::open(
            OOM_SCORE_ADJ.as_ptr(),
            nix::libc::O_WRONLY | nix::libc::O_CLOEXEC,
        );
        if fd >= 0 {
            nix::libc::write(fd, b"0".as_ptr().cast(), 1);
            nix::libc::close(fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_mapping() {
        assert_eq!(
            shutdown_action_for(Signal::SIGTERM),
            Some(ShutdownAction::Reboot)
        );
        assert_eq!(
            shutdown_action_for(Signal::SIGINT),
            Some(ShutdownAction::Reboot)
        );
        assert_eq!(
            shutdown_action_for(Signal::SIGPWR),
            Some(ShutdownAction::Poweroff)
        );
        assert_eq!(
            shutdown_action_for(Signal::SIGUSR1),
            Some(ShutdownAction::Halt)
        );
        assert_eq!(shutdown_action_for(Signal::SIGCHLD), None);
        assert_eq!(shutdown_action_for(Signal::SIGHUP), None);
    }
}
