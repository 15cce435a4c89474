//! `mode = "supervise"`: nodeinit stays (PID 1, or a child subreaper when not),
//! runs the agent as a child, restarts it with [`RestartBackoff`] when it
//! exits, reaps every orphan, forwards SIGHUP, and on a shutdown signal stops
//! the agent (its stop signal, grace period, SIGKILL) and returns.
//!
//! [`AgentSupervision`] is one of the state machines of the keeper's one
//! wait loop ([`crate::keeper::KeeperLoop`]): the loop reaps, reads the
//! signal pipe and keeps the clock; this machine is told what it needs
//! (its agent reaped, a signal to pass on, a shutdown, its deadline) and
//! never waits. [`supervise`] runs the loop with this machine alone.
//! Releasing mounts and the final sync/reboot are the caller's, after the
//! loop returns.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::agent::{AgentCommand, RestartBackoff};
use crate::keeper::{KeeperLoop, LoopEnd};
use crate::pid1::{reset_signals_for_child, ShutdownAction, SignalPipe};

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

/// After SIGKILL only an uninterruptible sleep can delay the exit; do not hang shutdown on it.
const AFTER_KILL: Duration = Duration::from_secs(10);

enum AgentState {
    Running {
        pid: Pid,
        since: Instant,
    },
    RestartAt(Instant),
    /// A shutdown: `signal` sent, SIGKILL (or giving up, `killed`) at `until`.
    Stopping {
        pid: Pid,
        until: Instant,
        killed: bool,
        signal: Signal,
        action: ShutdownAction,
    },
    Done(SuperviseOutcome),
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
    // Reaped by the keeper's loop (waitpid(-1)), never through `child`.
    Ok(Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX)))
}

/// The agent, as a state machine of the keeper's loop (which must reap
/// every child while it runs one).
pub struct AgentSupervision<'a> {
    command: &'a AgentCommand,
    options: &'a mut SuperviseOptions,
    observe: &'a mut dyn FnMut(&SuperviseEvent),
    state: AgentState,
    attempt: u32,
}

impl std::fmt::Debug for AgentSupervision<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSupervision").finish_non_exhaustive()
    }
}

impl<'a> AgentSupervision<'a> {
    /// Supervise `command` (started at the loop's first timer); `observe`
    /// sees every event.
    pub fn new(
        command: &'a AgentCommand,
        options: &'a mut SuperviseOptions,
        observe: &'a mut dyn FnMut(&SuperviseEvent),
    ) -> Self {
        Self {
            command,
            options,
            observe,
            state: AgentState::RestartAt(Instant::now()),
            attempt: 0,
        }
    }

    /// How supervision ended, once it has.
    pub fn outcome(&self) -> Option<SuperviseOutcome> {
        match &self.state {
            AgentState::Done(outcome) => Some(outcome.clone()),
            _ => None,
        }
    }

    /// When the loop must wake for this machine.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            AgentState::RestartAt(at) => Some(at),
            AgentState::Stopping { until, .. } => Some(until),
            AgentState::Running { .. } | AgentState::Done(_) => None,
        }
    }

    /// Start the agent when due; escalate a stop when its grace ran out.
    pub fn on_timer(&mut self, now: Instant) {
        match self.state {
            AgentState::RestartAt(at) if now >= at => self.start(),
            AgentState::Stopping {
                pid,
                until,
                killed,
                signal,
                action,
            } if now >= until => {
                if killed {
                    tracing::error!(
                        pid = pid.as_raw(),
                        "agent survived SIGKILL (uninterruptible sleep?); continuing shutdown"
                    );
                    self.state = AgentState::Done(SuperviseOutcome::Shutdown { signal, action });
                } else {
                    self.send_stop(pid, Signal::SIGKILL);
                    self.state = AgentState::Stopping {
                        pid,
                        until: Instant::now() + AFTER_KILL,
                        killed: true,
                        signal,
                        action,
                    };
                }
            }
            _ => {}
        }
    }

    fn start(&mut self) {
        self.state = match spawn(self.command) {
            Ok(pid) => {
                (self.observe)(&SuperviseEvent::Started { pid: pid.as_raw() });
                AgentState::Running {
                    pid,
                    since: Instant::now(),
                }
            }
            Err(e) => {
                (self.observe)(&SuperviseEvent::SpawnFailed {
                    error: format!("{}: {e}", self.command.program.display()),
                });
                if self.options.restart == RestartPolicy::Never {
                    AgentState::Done(SuperviseOutcome::AgentFinished { code: 127 })
                } else {
                    self.attempt += 1;
                    let delay = self.options.backoff.delay_after_run(Duration::ZERO);
                    (self.observe)(&SuperviseEvent::RestartScheduled {
                        attempt: self.attempt,
                        delay,
                    });
                    AgentState::RestartAt(Instant::now() + delay)
                }
            }
        };
    }

    fn send_stop(&mut self, pid: Pid, signal: Signal) {
        (self.observe)(&SuperviseEvent::Stopping {
            pid: pid.as_raw(),
            signal,
        });
        if kill(pid, signal) == Err(Errno::ESRCH) {
            // Already gone (a zombie would still accept the signal): reaped next.
        }
    }

    /// A reaped child: the agent (restart, or the end), else an orphan.
    pub fn on_reaped(&mut self, reaped: Pid, status: &WaitStatus) {
        let (text, code) = describe(status);
        match self.state {
            AgentState::Running { pid, since } if pid == reaped => {
                (self.observe)(&SuperviseEvent::Exited {
                    pid: pid.as_raw(),
                    status: text,
                });
                if self.options.restart == RestartPolicy::Never {
                    self.state = AgentState::Done(SuperviseOutcome::AgentFinished { code });
                    return;
                }
                self.attempt += 1;
                let delay = self.options.backoff.delay_after_run(since.elapsed());
                (self.observe)(&SuperviseEvent::RestartScheduled {
                    attempt: self.attempt,
                    delay,
                });
                self.state = AgentState::RestartAt(Instant::now() + delay);
            }
            AgentState::Stopping {
                pid,
                signal,
                action,
                ..
            } if pid == reaped => {
                (self.observe)(&SuperviseEvent::Exited {
                    pid: pid.as_raw(),
                    status: text,
                });
                self.state = AgentState::Done(SuperviseOutcome::Shutdown { signal, action });
            }
            _ => (self.observe)(&SuperviseEvent::OrphanReaped {
                pid: reaped.as_raw(),
                status: text,
            }),
        }
    }

    /// A shutdown signal: stop the agent (its stop signal, the grace
    /// period, SIGKILL); further shutdown signals change nothing.
    pub fn on_shutdown(&mut self, signal: Signal, action: ShutdownAction) {
        match self.state {
            AgentState::Stopping { .. } | AgentState::Done(_) => {}
            AgentState::Running { pid, .. } => {
                (self.observe)(&SuperviseEvent::ShutdownRequested { signal });
                let stop = self.options.stop_signal;
                self.send_stop(pid, stop);
                self.state = AgentState::Stopping {
                    pid,
                    until: Instant::now() + self.options.grace,
                    killed: false,
                    signal,
                    action,
                };
            }
            AgentState::RestartAt(_) => {
                (self.observe)(&SuperviseEvent::ShutdownRequested { signal });
                self.state = AgentState::Done(SuperviseOutcome::Shutdown { signal, action });
            }
        }
    }

    /// Any other signal (SIGHUP and the like) belongs to the agent.
    pub fn forward(&mut self, signal: Signal) {
        if let AgentState::Running { pid, .. } = self.state {
            if kill(pid, signal).is_ok() {
                (self.observe)(&SuperviseEvent::Forwarded { signal });
            }
        }
    }
}

/// Run and supervise `command` until a shutdown signal (or, with
/// [`RestartPolicy::Never`], until the agent ends): the keeper's loop with
/// this machine alone. `signals` must be installed before; `observe` sees
/// every event.
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
    let mut agent = AgentSupervision::new(command, options, observe);
    let end = KeeperLoop {
        signals,
        reap_all: true,
        boot: None,
        workers: None,
        agent: Some(&mut agent),
        stop: None,
    }
    .run();
    match end {
        LoopEnd::Agent(outcome) => Ok(outcome),
        LoopEnd::Shutdown { signal, action } => Ok(SuperviseOutcome::Shutdown { signal, action }),
        LoopEnd::PollFailed(e) => Err(SuperviseError::Poll(e)),
        LoopEnd::Stopped | LoopEnd::Boot => Err(SuperviseError::Poll(nix::errno::Errno::EINTR)),
    }
}
