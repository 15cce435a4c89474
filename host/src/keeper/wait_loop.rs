//! The keeper's one wait loop (catatonit's loop, plus a clock): one `poll`
//! on the signal pipe, the worker's link (or the probe's), the control
//! socket and, for tests, a stop descriptor, with one timeout — the nearest
//! deadline of its state machines (the boot worker's plugin call, a starting
//! worker's or the probe's, the worker's restart backoff, a drain limit, the
//! agent's restart or stop escalation). During boot it drives the boot
//! phases' machine ([`super::watch`]); after it, the worker's and the
//! agent's. Read top to bottom:
//!
//! 1. wait;
//! 2. signals: `SIGCHLD` → reap (here and only here when the keeper reaps
//!    every child) and tell whose child it was — the boot machine's or the
//!    worker machine's (worker, probe), else the agent machine's (agent, or
//!    an orphan); a shutdown signal → the boot worker is killed, or the
//!    agent is stopped (the loop ends once it is reaped) or, with neither,
//!    the loop ends; `SIGHUP` → reload the
//!    plugins and pass it to the agent; any other → the agent;
//! 3. readable descriptors → the boot or the worker machine;
//! 4. deadlines → each machine.
//!
//! Owns nothing but the order of these steps; what an event means is the
//! machines' ([`super::WorkerSupervisor`], [`crate::agent::AgentSupervision`]).
//! It must never block anywhere but in its `poll`.

use std::os::fd::BorrowedFd;
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nodeinit_sys::deadline::{self, Deadline};

use super::supervisor::WorkerFd;
use super::watch::BootWatch;
use super::WorkerSupervisor;
use crate::agent::{AgentSupervision, SuperviseOutcome};
use crate::pid1::{reap_children, shutdown_action_for, ShutdownAction, SignalPipe};

/// How the loop ended.
#[derive(Debug)]
pub enum LoopEnd {
    /// A shutdown signal, with no agent to stop first.
    Shutdown {
        /// The signal.
        signal: Signal,
        /// What it asks of PID 1.
        action: ShutdownAction,
    },
    /// The agent machine is done (stopped after a shutdown signal, or
    /// ended under [`crate::agent::RestartPolicy::Never`]).
    Agent(SuperviseOutcome),
    /// The stop descriptor became readable.
    Stopped,
    /// The boot machine ended (its [`super::WatchEnd`] is in it).
    Boot,
    /// `poll(2)` failed.
    PollFailed(nix::Error),
}

/// The loop and the machines it drives.
#[derive(Debug)]
pub struct KeeperLoop<'a, 'b> {
    /// The keeper's signal pipe.
    pub signals: &'a SignalPipe,
    /// Whether the keeper reaps every child (`waitpid(-1)`): PID 1, a
    /// subreaper, or an agent to supervise. Otherwise (a test process) the
    /// worker machine waits for its own children by pid.
    pub reap_all: bool,
    /// The worker running the boot phases.
    pub boot: Option<&'a mut BootWatch<'b>>,
    /// The worker after boot.
    pub workers: Option<&'a mut WorkerSupervisor>,
    /// The agent (supervise mode). Requires `reap_all`.
    pub agent: Option<&'a mut AgentSupervision<'b>>,
    /// Readable (or hung up): the loop ends (tests run it in a thread).
    pub stop: Option<BorrowedFd<'a>>,
}

/// What a polled descriptor is.
#[derive(Clone, Copy)]
enum Source {
    Signals,
    Stop,
    Boot,
    Worker(WorkerFd),
}

impl KeeperLoop<'_, '_> {
    /// Run until a shutdown, the agent's end, or the stop descriptor.
    pub fn run(&mut self) -> LoopEnd {
        loop {
            if let Some(outcome) = self.agent.as_ref().and_then(|a| a.outcome()) {
                return LoopEnd::Agent(outcome);
            }
            if self.boot.as_ref().is_some_and(|b| b.ended()) {
                return LoopEnd::Boot;
            }
            // 1. Wait, until the nearest deadline.
            let deadline = [
                self.boot.as_ref().map(|b| b.deadline()),
                self.workers.as_ref().and_then(|w| w.deadline()),
                self.agent.as_ref().and_then(|a| a.deadline()),
            ]
            .into_iter()
            .flatten()
            .min();
            // The one deadline rule (nodeinit_sys): rounded up, never early.
            let timeout =
                PollTimeout::try_from(deadline::poll_timeout_ms([deadline.map(Deadline::at)]))
                    .unwrap_or(PollTimeout::MAX);
            let mut sources = vec![Source::Signals];
            let mut fds = vec![PollFd::new(self.signals.fd(), PollFlags::POLLIN)];
            if let Some(stop) = self.stop {
                sources.push(Source::Stop);
                fds.push(PollFd::new(stop, PollFlags::POLLIN));
            }
            if let Some(boot) = self.boot.as_deref() {
                sources.push(Source::Boot);
                fds.push(PollFd::new(boot.link(), PollFlags::POLLIN));
            }
            if let Some(workers) = self.workers.as_deref() {
                for (fd, which) in workers.poll_fds() {
                    sources.push(Source::Worker(which));
                    fds.push(PollFd::new(fd, PollFlags::POLLIN));
                }
            }
            match nix::poll::poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return LoopEnd::PollFailed(e),
            }
            let ready: Vec<Source> = sources
                .into_iter()
                .zip(fds.iter())
                .filter(|(_, fd)| fd.any().unwrap_or(false))
                .map(|(source, _)| source)
                .collect();
            drop(fds);
            // 2. Signals first: a reaped worker's status is known before its
            // link's end-of-file is read.
            for source in &ready {
                match source {
                    Source::Stop => return LoopEnd::Stopped,
                    Source::Signals => {
                        if let Some(end) = self.on_signals() {
                            return end;
                        }
                    }
                    Source::Worker(_) | Source::Boot => {}
                }
            }
            if self.boot.as_ref().is_some_and(|b| b.ended()) {
                continue;
            }
            // 3. The worker machine's descriptors.
            for source in ready {
                match source {
                    Source::Boot => {
                        if let Some(boot) = self.boot.as_deref_mut() {
                            boot.on_link();
                        }
                    }
                    Source::Worker(which) => {
                        if let Some(workers) = self.workers.as_deref_mut() {
                            workers.on_ready(which);
                        }
                    }
                    Source::Signals | Source::Stop => {}
                }
            }
            // 4. Deadlines.
            let now = Instant::now();
            if let Some(boot) = self.boot.as_deref_mut() {
                boot.on_timer(now);
            }
            if let Some(workers) = self.workers.as_deref_mut() {
                workers.on_timer(now);
            }
            if let Some(agent) = self.agent.as_deref_mut() {
                agent.on_timer(now);
            }
        }
    }

    fn on_signals(&mut self) -> Option<LoopEnd> {
        for signal in self.signals.drain() {
            if signal == Signal::SIGCHLD {
                self.reap();
            } else if let Some(action) = shutdown_action_for(signal) {
                if let Some(boot) = self.boot.as_deref_mut() {
                    boot.on_shutdown(signal, action);
                    return Some(LoopEnd::Boot);
                }
                match self.agent.as_deref_mut() {
                    Some(agent) => agent.on_shutdown(signal, action),
                    None => return Some(LoopEnd::Shutdown { signal, action }),
                }
            } else {
                if signal == Signal::SIGHUP {
                    if let Some(workers) = self.workers.as_deref_mut() {
                        workers.request_reload();
                    }
                }
                if let Some(agent) = self.agent.as_deref_mut() {
                    agent.forward(signal);
                }
            }
        }
        None
    }

    /// The one place children are reaped (when the keeper reaps them all).
    fn reap(&mut self) {
        if !self.reap_all {
            // The boot machine looks for its worker by pid each round.
            if let Some(workers) = self.workers.as_deref_mut() {
                workers.reap_own();
            }
            return;
        }
        for reaped in reap_children() {
            let boot = self
                .boot
                .as_deref_mut()
                .is_some_and(|b| b.on_reaped(reaped.pid, reaped.status));
            let ours = boot
                || self
                    .workers
                    .as_deref_mut()
                    .is_some_and(|w| w.on_reaped(reaped.pid, reaped.status));
            if ours {
                continue;
            }
            match self.agent.as_deref_mut() {
                Some(agent) => agent.on_reaped(reaped.pid, &reaped.status),
                None => tracing::debug!(pid = reaped.pid.as_raw(), "orphan reaped"),
            }
        }
    }
}
