//! Carrying out `on_failure` once the boot orchestration decided a required
//! phase failed. The decision table is a pure function; `perform` acts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::config::OnFailure;
use crate::pid1::{finish_shutdown, reap_children, ShutdownAction};

/// Where the decision is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureContext {
    /// nodeinit is PID 1.
    pub is_pid1: bool,
    /// Running as `nodeinit --sandbox` (PID 1 of a private PID namespace).
    pub sandbox: bool,
    /// The rescue shell, when it exists (normally `/bin/sh`).
    pub shell: Option<PathBuf>,
}

/// How long PID 1 waits before rebooting when `shell` was asked for but no
/// shell exists: long enough to read the console.
pub const NO_SHELL_REBOOT_DELAY: Duration = Duration::from_secs(30);

/// What will happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Boot goes on.
    Continue,
    /// Exit with this status (not PID 1, or in the sandbox).
    Exit(i32),
    /// Start this shell on the console, reboot when it exits.
    RescueShell(PathBuf),
    /// No shell exists: reboot after [`NO_SHELL_REBOOT_DELAY`].
    RebootAfterDelay(Duration),
    /// Go down now.
    Shutdown(ShutdownAction),
}

/// The outcome of `on_failure` in `context`. Not as PID 1, and in the
/// sandbox, a failure is a non-zero exit: nodeinit must never reboot a
/// developer's machine.
pub fn decide_failure_outcome(on_failure: OnFailure, context: &FailureContext) -> FailureOutcome {
    if on_failure == OnFailure::Continue {
        return FailureOutcome::Continue;
    }
    if !context.is_pid1 || context.sandbox {
        return FailureOutcome::Exit(1);
    }
    match on_failure {
        OnFailure::Shell => match &context.shell {
            Some(shell) => FailureOutcome::RescueShell(shell.clone()),
            None => FailureOutcome::RebootAfterDelay(NO_SHELL_REBOOT_DELAY),
        },
        OnFailure::Reboot => FailureOutcome::Shutdown(ShutdownAction::Reboot),
        OnFailure::Poweroff => FailureOutcome::Shutdown(ShutdownAction::Poweroff),
        OnFailure::Halt => FailureOutcome::Shutdown(ShutdownAction::Halt),
        OnFailure::Continue => FailureOutcome::Continue,
    }
}

/// The shell to offer, if `path` exists and is a file.
pub fn rescue_shell_at(path: &Path) -> Option<PathBuf> {
    path.is_file().then(|| path.to_path_buf())
}

/// Carry out `outcome`. Returns `None` for `Continue`, `Some(code)` for
/// `Exit(code)` (the caller exits); the PID 1 outcomes never return.
pub fn perform_failure_outcome(outcome: &FailureOutcome, reason: &str) -> Option<i32> {
    match outcome {
        FailureOutcome::Continue => {
            tracing::warn!(reason, "required phase failed; on_failure = continue");
            None
        }
        FailureOutcome::Exit(code) => {
            tracing::error!(reason, code, "boot failed; exiting");
            Some(*code)
        }
        FailureOutcome::RescueShell(shell) => {
            eprintln!("nodeinit: boot failed: {reason}\nnodeinit: starting {} on the console; the node reboots when it exits", shell.display());
            run_rescue_shell(shell);
            finish_shutdown(ShutdownAction::Reboot, true);
            None
        }
        FailureOutcome::RebootAfterDelay(delay) => {
            eprintln!("nodeinit: boot failed: {reason}\nnodeinit: no shell on this image; rebooting in {}s", delay.as_secs());
            // A real wait for a human to read the console, not a synchronisation.
            std::thread::sleep(*delay);
            finish_shutdown(ShutdownAction::Reboot, true);
            None
        }
        FailureOutcome::Shutdown(action) => {
            eprintln!(
                "nodeinit: boot failed: {reason}\nnodeinit: on_failure = {}",
                action.as_str()
            );
            finish_shutdown(*action, true);
            None
        }
    }
}

/// Run the shell as a child (PID 1 must outlive it) and reap everything
/// until it exits.
fn run_rescue_shell(shell: &Path) {
    let mut command = Command::new(shell);
    command.env("PS1", "(nodeinit rescue) # ");
    match command.spawn() {
        Ok(child) => {
            let shell_pid =
                nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
            loop {
                match nix::sys::wait::waitpid(None, None) {
                    Ok(status) if status.pid() == Some(shell_pid) => break,
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => break,
                }
            }
            let _ = reap_children();
        }
        Err(e) => eprintln!("nodeinit: cannot start {}: {e}", shell.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(is_pid1: bool, sandbox: bool, shell: bool) -> FailureContext {
        FailureContext {
            is_pid1,
            sandbox,
            shell: shell.then(|| PathBuf::from("/bin/sh")),
        }
    }

    #[test]
    fn decision_table() {
        use FailureOutcome::*;
        use OnFailure as F;
        let pid1 = ctx(true, false, true);
        assert_eq!(
            decide_failure_outcome(F::Shell, &pid1),
            RescueShell("/bin/sh".into())
        );
        assert_eq!(
            decide_failure_outcome(F::Shell, &ctx(true, false, false)),
            RebootAfterDelay(NO_SHELL_REBOOT_DELAY)
        );
        assert_eq!(
            decide_failure_outcome(F::Reboot, &pid1),
            Shutdown(ShutdownAction::Reboot)
        );
        assert_eq!(
            decide_failure_outcome(F::Poweroff, &pid1),
            Shutdown(ShutdownAction::Poweroff)
        );
        assert_eq!(
            decide_failure_outcome(F::Halt, &pid1),
            Shutdown(ShutdownAction::Halt)
        );
        for on_failure in [F::Shell, F::Reboot, F::Poweroff, F::Halt] {
            assert_eq!(
                decide_failure_outcome(on_failure, &ctx(false, false, true)),
                Exit(1)
            );
            assert_eq!(
                decide_failure_outcome(on_failure, &ctx(true, true, true)),
                Exit(1)
            );
        }
        for c in [pid1, ctx(false, false, false), ctx(true, true, true)] {
            assert_eq!(decide_failure_outcome(F::Continue, &c), Continue);
        }
    }

    #[test]
    fn exit_and_continue_return_to_the_caller() {
        assert_eq!(
            perform_failure_outcome(&FailureOutcome::Exit(1), "x"),
            Some(1)
        );
        assert_eq!(
            perform_failure_outcome(&FailureOutcome::Continue, "x"),
            None
        );
    }

    #[test]
    fn rescue_shell_only_when_present() {
        assert_eq!(
            rescue_shell_at(Path::new("/bin/sh")),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(rescue_shell_at(Path::new("/nonexistent/sh")), None);
    }
}
