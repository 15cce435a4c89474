//! The boot phases' state machine of the keeper's one wait loop
//! ([`super::KeeperLoop`]) while a worker runs phases: its link is polled,
//! the deadline of the plugin call in progress is the loop's timeout.
//!
//! Owns the deadline and the attribution of a worker's death to the call it
//! died in. It never decides what a death means for the boot.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::{KeeperLoop, LoopEnd, WorkerProcess};
use crate::link::{FromWorker, Receive, StepReport};
use crate::pid1::{ShutdownAction, SignalPipe};
use crate::placement::Placement;

/// How watching a worker ended.
#[derive(Debug)]
pub enum WatchEnd {
    /// The worker finished its phases and serves.
    Serving,
    /// The worker finished its phases and is exiting: reap it with
    /// [`WorkerProcess::await_exit`] (what the keeper does meanwhile
    /// overlaps the worker's teardown).
    Finished,
    /// The worker died during `step` (or between calls, when `None`).
    Died {
        /// Its status.
        status: WaitStatus,
        /// The call in progress.
        step: Option<StepReport>,
    },
    /// A call overran its deadline; the worker was killed.
    Overran {
        /// The call (or `None`: the worker's own code between calls).
        step: Option<StepReport>,
        /// The deadline it missed, in seconds.
        timeout_secs: u64,
    },
    /// A shutdown signal arrived; the worker was killed.
    Shutdown(ShutdownAction),
}

/// A worker running boot phases, followed call by call.
pub struct BootWatch<'w> {
    worker: &'w WorkerProcess,
    signals: &'w SignalPipe,
    idle_timeout_secs: u64,
    on_message: &'w mut dyn FnMut(&FromWorker),
    step: Option<StepReport>,
    since: Instant,
    first_report: bool,
    /// The link was read in this round of the loop.
    read_this_round: bool,
    end: Option<WatchEnd>,
}

impl std::fmt::Debug for BootWatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootWatch")
            .field("worker", &self.worker.pid())
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl<'w> BootWatch<'w> {
    fn timeout_secs(&self) -> u64 {
        self.step
            .as_ref()
            .map_or(self.idle_timeout_secs, |s| s.timeout_secs)
    }

    /// How watching ended, once it has.
    pub fn take_end(&mut self) -> Option<WatchEnd> {
        self.end.take()
    }

    /// Whether it has ended.
    pub fn ended(&self) -> bool {
        self.end.is_some()
    }

    /// The link, to poll.
    pub fn link(&self) -> BorrowedFd<'_> {
        self.worker.channel().fd()
    }

    /// The call in progress's deadline.
    pub fn deadline(&self) -> Instant {
        self.since + Duration::from_secs(self.timeout_secs())
    }

    /// A reaped child: `true` if it was the worker.
    pub fn on_reaped(&mut self, pid: Pid, status: WaitStatus) -> bool {
        if pid == self.worker.pid() {
            self.worker.note_reaped(status);
            return true;
        }
        false
    }

    /// Is the worker dead (reaped by the loop, or by pid here) and its link
    /// silent — no end-of-file (a child of a plugin may hold descriptor 3)?
    fn dead_and_silent(&mut self) {
        if self.end.is_none() {
            if let Some(status) = self.worker.try_reap() {
                self.end = Some(WatchEnd::Died {
                    status,
                    step: self.step.take(),
                });
            }
        }
    }

    /// A shutdown signal: the worker is killed.
    pub fn on_shutdown(&mut self, signal: nix::sys::signal::Signal, action: ShutdownAction) {
        tracing::warn!(
            signal = signal.as_str(),
            "shutdown requested during boot; killing the worker"
        );
        self.worker.kill_and_reap(self.signals.fd());
        self.end = Some(WatchEnd::Shutdown(action));
    }

    /// The deadline passed: the worker is killed.
    pub fn on_timer(&mut self, now: Instant) {
        if !std::mem::take(&mut self.read_this_round) {
            self.dead_and_silent();
        }
        if self.end.is_some() || now < self.deadline() {
            return;
        }
        let timeout_secs = self.timeout_secs();
        tracing::error!(
            pid = self.worker.pid().as_raw(),
            step = ?self.step,
            "deadline missed; killing the worker"
        );
        self.worker.kill_and_reap(self.signals.fd());
        self.end = Some(WatchEnd::Overran {
            step: self.step.take(),
            timeout_secs,
        });
    }

    /// The link is readable.
    pub fn on_link(&mut self) {
        let worker = self.worker;
        let fd = self.signals.fd();
        self.read_this_round = true;
        match worker.channel().receive::<FromWorker>() {
            Ok(Receive::Message(message)) => {
                if self.first_report {
                    self.first_report = false;
                    // What the split costs a boot: start message (the
                    // watch's beginning) to first report.
                    let ms = self.since.elapsed().as_secs_f64() * 1e3;
                    tracing::info!(worker_started = %format!("{ms:.3}ms"), pid = worker.pid().as_raw(), "worker up");
                }
                self.since = Instant::now();
                match message {
                    FromWorker::Step(s) => self.step = Some(s),
                    FromWorker::Serving => self.end = Some(WatchEnd::Serving),
                    FromWorker::Finished => {
                        self.end = Some(WatchEnd::Finished);
                    }
                    other => {
                        if matches!(other, FromWorker::PhaseDone { .. }) {
                            self.step = None;
                        }
                        (self.on_message)(&other);
                    }
                }
            }
            Ok(Receive::Closed) | Err(_) => {
                let status = worker.await_exit(fd);
                self.end = Some(WatchEnd::Died {
                    status: status.unwrap_or(WaitStatus::StillAlive),
                    step: self.step.take(),
                });
            }
        }
    }
}

/// Watch `worker` until it serves, finishes, dies, overruns or a shutdown
/// signal arrives: the keeper's loop with the boot machine alone. Every
/// other message goes to `on_message`. `idle_timeout_secs` bounds the
/// worker's own code between plugin calls.
pub fn watch(
    worker: &WorkerProcess,
    signals: &SignalPipe,
    placement: Placement,
    idle_timeout_secs: u64,
    on_message: &mut dyn FnMut(&FromWorker),
) -> WatchEnd {
    let mut boot = BootWatch {
        worker,
        signals,
        idle_timeout_secs,
        on_message,
        step: None,
        since: Instant::now(),
        first_report: true,
        read_this_round: false,
        end: None,
    };
    let end = KeeperLoop {
        signals,
        reap_all: placement.reaps_orphans(),
        boot: Some(&mut boot),
        workers: None,
        agent: None,
        stop: None,
    }
    .run();
    match end {
        LoopEnd::Boot => boot.take_end().unwrap_or(WatchEnd::Died {
            status: WaitStatus::StillAlive,
            step: None,
        }),
        LoopEnd::PollFailed(e) => {
            tracing::error!("keeper: poll failed: {e}; killing the worker");
            let status = worker.kill_and_reap(signals.fd());
            WatchEnd::Died {
                status: status.unwrap_or(WaitStatus::StillAlive),
                step: boot.step.take(),
            }
        }
        LoopEnd::Shutdown { action, .. } => WatchEnd::Shutdown(action),
        LoopEnd::Agent(_) | LoopEnd::Stopped => WatchEnd::Died {
            status: WaitStatus::StillAlive,
            step: boot.step.take(),
        },
    }
}
