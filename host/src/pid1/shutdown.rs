//! The end of the node's life as nodeinit sees it: sync, then reboot, power
//! off or halt when PID 1; when not PID 1 only sync (the caller exits).
//! Stopping the agent and releasing mounts happen before, in the caller.

use std::time::Duration;

use nix::sys::reboot::RebootMode;

/// How the node goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownAction {
    /// Restart the machine.
    Reboot,
    /// Power the machine off.
    Poweroff,
    /// Stop the CPUs, power stays on.
    Halt,
}

impl ShutdownAction {
    /// Lowercase name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reboot => "reboot",
            Self::Poweroff => "poweroff",
            Self::Halt => "halt",
        }
    }

    fn mode(self) -> RebootMode {
        match self {
            Self::Reboot => RebootMode::RB_AUTOBOOT,
            Self::Poweroff => RebootMode::RB_POWER_OFF,
            Self::Halt => RebootMode::RB_HALT_SYSTEM,
        }
    }
}

/// Sync and, as PID 1, carry out `action`. As PID 1 this never returns: if
/// reboot(2) fails it logs and waits forever, because PID 1 exiting panics
/// the kernel. Not as PID 1 it returns after the sync.
pub fn finish_shutdown(action: ShutdownAction, is_pid1: bool) {
    nix::unistd::sync();
    if !is_pid1 {
        return;
    }
    tracing::info!(action = action.as_str(), "shutting down");
    let err = nix::sys::reboot::reboot(action.mode());
    tracing::error!(action = action.as_str(), error = ?err, "reboot(2) failed; waiting forever");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
