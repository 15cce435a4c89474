//! PID 1 duties (DESIGN.md §5): early pseudo-filesystems, stdio on the
//! console, reaping every child, shutdown signals, the `on_failure` action,
//! catching panics, and the final sync + reboot/poweroff.
//!
//! The decisions (which mounts, which action a signal or failure means) are
//! pure functions tested on their own; the functions that act on the machine
//! are thin. This module never decides *when* boot has failed: the boot
//! orchestration does, and asks this module to carry out the consequence.

mod console;
mod early_mounts;
mod failure_action;
mod mountinfo;
mod panic_report;
mod reaper;
mod shutdown;
mod signals;
#[cfg(test)]
pub(crate) mod test_process;

pub use console::attach_stdio_to_console;
pub use early_mounts::{
    apply_early_mounts, plan_early_mounts, EarlyMount, EarlyMountError, MountStep,
    CGROUP2_OPTION_ATTEMPTS, EARLY_MOUNTS,
};
pub use failure_action::{
    decide_failure_outcome, perform_failure_outcome, rescue_shell_at, FailureContext,
    FailureOutcome, NO_SHELL_REBOOT_DELAY,
};
pub use mountinfo::{mount_points, mounted_squashfs_images, MountPoint};
pub use panic_report::{catch_panic, install_panic_hook, PanicReport};
pub use reaper::{become_child_subreaper, reap_children, Reaped};
pub use shutdown::{finish_shutdown, ShutdownAction};
pub use signals::{
    reset_oom_score_adj_for_child, reset_signals_for_child, shutdown_action_for, SignalPipe,
    HANDLED_SIGNALS,
};

/// Whether this process is PID 1 (of its PID namespace).
pub fn is_pid1() -> bool {
    std::process::id() == 1
}
