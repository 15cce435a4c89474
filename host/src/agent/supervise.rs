//! `mode = "supervise"`: nodeinit stays (PID 1, or a child subreaper when not),
//! runs the agent as a child, restarts it with [`RestartBackoff`] when it
//! exits, reaps every orphan, forwards SIGHUP, and on a shutdown signal stops
//! the agent (its stop signal, grace period, SIGKILL) and returns.
//!
//! Everything is driven by the [`SignalPipe`]: `poll` on it, with a timeout
//! only while a restart is pending. The sockets and mount hold timers live in
//! their own threads and keep running meanwhile. Releasing mounts and the
//! final sync/reboot are the caller's, after this returns.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::agent::{AgentCommand, RestartBackoff};
use crate::pid1::{
    reap_children, reset_signals_for_child, shutdown_action_for, ShutdownAction, SignalPipe,
};

/// Whether an agent that exits is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Always (a node agent must run).
    Always,
    /// Never: supervision ends with the agent's status (the sandbox's demo agent).
    Never,
}

/// Supervision settings.
#[derive(Debug, Clone)]
pub struct SuperviseOptions {
    /// The first signal at shutdown (`HandoffSection::effective_stop_signal`:
    /// SIGINT for pact and lattice, which stop gracefully only on it).
    pub stop_signal: Signal,
    /// Stop signal → SIGKILL delay at shutdown (`handoff.grace_secs`).
    pub grace: Duration,
    /// The restart schedule.
    pub backoff: RestartBackoff,
    /// Whether to restart.
    pub restart: RestartPolicy,
}

/// What happened, for logs (and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuperviseEvent {
    /// The agent was started.
    Started {
        /// Its pid.
        pid: i32,
    },
    /// The agent could not be started.
    SpawnFailed {
        /// The error.
        error: String,
    },
    /// The agent ended.
    Exited {
        /// Its pid.
        pid: i32,
        /// `exited N` or `killed by SIGX`.
        status: String,
    },
    /// A restart is scheduled.
    RestartScheduled {
        /// 1 for the first restart.
        attempt: u32,
        /// The delay before it.
        delay: Duration,
    },
    /// An orphan (not the agent) was reaped.
    OrphanReaped {
        /// Its pid.
        pid: i32,
        /// `exited N` or `killed by SIGX`.
        status: String,
    },
    /// A signal was passed on to the agent.
    Forwarded {
        /// The signal.
        signal: Signal,
    },
    /// A shutdown signal arrived.
    ShutdownRequested {
        /// The signal.
        signal: Signal,
    },
    /// The agent is being stopped.
    Stopping {
        /// Its pid.
        pid: i32,
        /// The stop signal first, SIGKILL after the grace period.
        signal: Signal,
    },
}

/// How supervision ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuperviseOutcome {
    /// A shutdown signal; the agent is stopped and reaped.
    Shutdown {
        /// The signal.
        signal: Signal,
        /// What it asks of PID 1.
        action: ShutdownAction,
    },
    /// With [`RestartPolicy::Never`]: the agent ended with this exit code
    /// (128 + signal number when killed).
    AgentFinished {
        /// The code.
        code: i32,
    },
}

/// Supervision could not go on.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// poll(2) on the signal pipe failed.
    #[error("supervise: waiting for signals failed: {0}")]
    Poll(nix::Error),
}

enum AgentState {
    Running { pid: Pid, since: Instant },
    RestartAt(Instant),
}

/// `exited N` / `killed by SIGX`, and the shell-style exit code.
fn describe(status: &WaitStatus) -> (String, i32) {
    match status {
        WaitStatus::Exited(_, code) => (format!("exited {code}"), *code),
        WaitStatus::Signaled(_, signal, _) => (
            format!("killed by {}", signal.as_str()),
            128 + *signal as i32,
        ),
        other => (format!("{other:?}"), 1),
    }
}

fn spawn(command: &AgentCommand) -> std::io::Result<Pid> {
    let mut cmd = Command::new(&command.program);
    cmd.args(&command.args)
        .envs(command.env.iter().map(|(k, v)| (k, v)));
    // SAFETY: the closure runs between fork and exec and only calls
    // open/write/close, sigaction(2) and sigprocmask(2), which are
    // async-signal-safe. The agent must not inherit PID 1's -1000.
    unsafe {
        cmd.pre_exec(|| {
            crate::pid1::reset_oom_score_adj_for_child();
            reset_signals_for_child().map_err(std::io::Error::from)
        });
    }
    let child = cmd.spawn()?;
    // Reaped through waitpid(-1) below, never through `child`.
    Ok(Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX)))
}

fn wait_for_signal(signals: &SignalPipe, timeout: Option<Duration>) -> Result<(), SuperviseError> {
    let timeout = match timeout {
        None => PollTimeout::NONE,
        Some(t) => PollTimeout::try_from(t.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX),
    };
    let mut fds = [PollFd::new(signals.fd(), PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, timeout) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(SuperviseError::Poll(e)),
    }
}

/// Run and supervise `command` until a shutdown signal (or, with
/// [`RestartPolicy::Never`], until the agent ends). `signals` must be
/// installed before; `observe` sees every event.
///
/// # Errors
///
/// [`SuperviseError`] when the signal pipe cannot be waited on.
pub fn supervise(
    command: &AgentCommand,
    options: &mut SuperviseOptions,
    signals: &SignalPipe,
    observe: &mut dyn FnMut(&SuperviseEvent),
) -> Result<SuperviseOutcome, SuperviseError> {
    let mut attempt = 0u32;
    let mut state = AgentState::RestartAt(Instant::now());
    loop {
        if let AgentState::RestartAt(at) = state {
            if Instant::now() >= at {
                state = match spawn(command) {
                    Ok(pid) => {
                        observe(&SuperviseEvent::Started { pid: pid.as_raw() });
                        AgentState::Running {
                            pid,
                            since: Instant::now(),
                        }
                    }
                    Err(e) => {
                        observe(&SuperviseEvent::SpawnFailed {
                            error: format!("{}: {e}", command.program.display()),
                        });
                        if options.restart == RestartPolicy::Never {
                            return Ok(SuperviseOutcome::AgentFinished { code: 127 });
                        }
                        attempt += 1;
                        let delay = options.backoff.delay_after_run(Duration::ZERO);
                        observe(&SuperviseEvent::RestartScheduled { attempt, delay });
                        AgentState::RestartAt(Instant::now() + delay)
                    }
                };
            }
        }
        let timeout = match state {
            AgentState::Running { .. } => None,
            AgentState::RestartAt(at) => Some(at.saturating_duration_since(Instant::now())),
        };
        wait_for_signal(signals, timeout)?;
        for signal in signals.drain() {
            if signal == Signal::SIGCHLD {
                for reaped in reap_children() {
                    let (status, code) = describe(&reaped.status);
                    match state {
                        AgentState::Running { pid, since } if pid == reaped.pid => {
                            observe(&SuperviseEvent::Exited {
                                pid: pid.as_raw(),
                                status,
                            });
                            if options.restart == RestartPolicy::Never {
                                return Ok(SuperviseOutcome::AgentFinished { code });
                            }
                            attempt += 1;
                            let delay = options.backoff.delay_after_run(since.elapsed());
                            observe(&SuperviseEvent::RestartScheduled { attempt, delay });
                            state = AgentState::RestartAt(Instant::now() + delay);
                        }
                        _ => observe(&SuperviseEvent::OrphanReaped {
                            pid: reaped.pid.as_raw(),
                            status,
                        }),
                    }
                }
            } else if let Some(action) = shutdown_action_for(signal) {
                observe(&SuperviseEvent::ShutdownRequested { signal });
                if let AgentState::Running { pid, .. } = state {
                    stop_agent(pid, options, signals, observe)?;
                }
                return Ok(SuperviseOutcome::Shutdown { signal, action });
            } else if let AgentState::Running { pid, .. } = state {
                // SIGHUP and the like belong to the agent (reload conventions).
                if kill(pid, signal).is_ok() {
                    observe(&SuperviseEvent::Forwarded { signal });
                }
            }
        }
    }
}

/// The stop signal, wait up to the grace period for the agent to be
/// reaped, then SIGKILL. Orphans reaped meanwhile are reported too.
fn stop_agent(
    pid: Pid,
    options: &SuperviseOptions,
    signals: &SignalPipe,
    observe: &mut dyn FnMut(&SuperviseEvent),
) -> Result<(), SuperviseError> {
    /// After SIGKILL only an uninterruptible sleep can delay the exit; do not hang shutdown on it.
    const AFTER_KILL: Duration = Duration::from_secs(10);
    for (signal, wait) in [
        (options.stop_signal, options.grace),
        (Signal::SIGKILL, AFTER_KILL),
    ] {
        observe(&SuperviseEvent::Stopping {
            pid: pid.as_raw(),
            signal,
        });
        if kill(pid, signal) == Err(Errno::ESRCH) {
            // Already gone (a zombie would still accept the signal): reap below.
        }
        let deadline = Instant::now() + wait;
        loop {
            for reaped in reap_children() {
                let (status, _) = describe(&reaped.status);
                if reaped.pid == pid {
                    observe(&SuperviseEvent::Exited {
                        pid: pid.as_raw(),
                        status,
                    });
                    return Ok(());
                }
                observe(&SuperviseEvent::OrphanReaped {
                    pid: reaped.pid.as_raw(),
                    status,
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            wait_for_signal(signals, Some(left))?;
            // Further shutdown signals while stopping change nothing.
            signals.drain();
        }
    }
    tracing::error!(
        pid = pid.as_raw(),
        "agent survived SIGKILL (uninterruptible sleep?); continuing shutdown"
    );
    Ok(())
}
