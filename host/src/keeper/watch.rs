//! The keeper's wait loop while a worker runs phases: one `poll` on the
//! signal pipe and the link, with the deadline of the plugin call in
//! progress as its timeout (catatonit's loop, plus a clock).
//!
//! Owns the deadline and the attribution of a worker's death to the call it
//! died in. It never decides what a death means for the boot.

use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

use super::WorkerProcess;
use crate::link::{FromWorker, Receive, StepReport};
use crate::pid1::{reap_children, shutdown_action_for, ShutdownAction, SignalPipe};
use crate::placement::Placement;

/// How watching a worker ended.
#[derive(Debug)]
pub enum WatchEnd {
    /// The worker finished its phases and serves.
    Serving,
    /// The worker finished its phases and exited with this status.
    Finished(WaitStatus),
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

/// How long a worker that closed its link may take to exit before it is killed.
const EXIT_AFTER_CLOSE: Duration = Duration::from_secs(5);

/// Watch `worker` until it serves, finishes, dies, overruns or a shutdown
/// signal arrives. Every other message goes to `on_message`.
/// `idle_timeout_secs` bounds the worker's own code between plugin calls.
pub fn watch(
    worker: &WorkerProcess,
    signals: &SignalPipe,
    placement: Placement,
    idle_timeout_secs: u64,
    on_message: &mut dyn FnMut(&FromWorker),
) -> WatchEnd {
    let mut step: Option<StepReport> = None;
    let mut since = Instant::now();
    let mut first_report = true;
    loop {
        let timeout_secs = step.as_ref().map_or(idle_timeout_secs, |s| s.timeout_secs);
        let deadline = since + Duration::from_secs(timeout_secs);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::error!(
                pid = worker.pid().as_raw(),
                ?step,
                "deadline missed; killing the worker"
            );
            worker.kill_and_reap(signals.fd());
            return WatchEnd::Overran { step, timeout_secs };
        }
        let timeout = PollTimeout::try_from(left.as_millis().max(1)).unwrap_or(PollTimeout::MAX);
        let mut fds = [
            PollFd::new(signals.fd(), PollFlags::POLLIN),
            PollFd::new(worker.channel().fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::error!("keeper: poll failed: {e}; killing the worker");
                let status = worker.kill_and_reap(signals.fd());
                return WatchEnd::Died {
                    status: status.unwrap_or(WaitStatus::StillAlive),
                    step,
                };
            }
        }
        let signal_ready = fds[0].any().unwrap_or(false);
        let link_ready = fds[1].any().unwrap_or(false);
        if signal_ready {
            for signal in signals.drain() {
                if signal == Signal::SIGCHLD {
                    if placement.reaps_orphans() {
                        for reaped in reap_children() {
                            if reaped.pid == worker.pid() {
                                worker.note_reaped(reaped.status);
                            } else {
                                tracing::debug!(pid = reaped.pid.as_raw(), "orphan reaped");
                            }
                        }
                    }
                } else if let Some(action) = shutdown_action_for(signal) {
                    tracing::warn!(
                        signal = signal.as_str(),
                        "shutdown requested during boot; killing the worker"
                    );
                    worker.kill_and_reap(signals.fd());
                    return WatchEnd::Shutdown(action);
                }
            }
        }
        if link_ready {
            match worker.channel().receive::<FromWorker>() {
                Ok(Receive::Message(message)) => {
                    since = Instant::now();
                    if first_report {
                        first_report = false;
                        // What the split costs a boot: start to first report.
                        let ms = worker.uptime().as_secs_f64() * 1e3;
                        tracing::info!(worker_started = %format!("{ms:.3}ms"), pid = worker.pid().as_raw(), "worker up");
                    }
                    match message {
                        FromWorker::Step(s) => step = Some(s),
                        FromWorker::Serving => return WatchEnd::Serving,
                        FromWorker::Finished => {
                            let status = worker.wait_exit(EXIT_AFTER_CLOSE, signals.fd());
                            let status = status.or_else(|| worker.kill_and_reap(signals.fd()));
                            return WatchEnd::Finished(status.unwrap_or(WaitStatus::StillAlive));
                        }
                        other => {
                            if matches!(other, FromWorker::PhaseDone { .. }) {
                                step = None;
                            }
                            on_message(&other);
                        }
                    }
                }
                Ok(Receive::Closed) | Err(_) => {
                    let status = worker
                        .wait_exit(EXIT_AFTER_CLOSE, signals.fd())
                        .or_else(|| worker.kill_and_reap(signals.fd()));
                    return WatchEnd::Died {
                        status: status.unwrap_or(WaitStatus::StillAlive),
                        step,
                    };
                }
            }
        } else if let Some(status) = worker.try_reap() {
            // Dead, and the link's end-of-file not seen yet (or never: a
            // plugin closed descriptor 3).
            return WatchEnd::Died { status, step };
        }
    }
}
