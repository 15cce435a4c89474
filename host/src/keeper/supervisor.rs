//! After boot: the worker is kept alive — one of the state machines the
//! keeper's one wait loop ([`super::KeeperLoop`]) drives; no thread.
//!
//! It reads the worker's reports (which allocations may be live), notices
//! its death (end-of-file on the link, then its status from the loop's
//! reaper) and starts a new one with backoff (1 s doubling to 60 s, reset
//! after 60 s up) that resumes the node: loads the plugins again, rebuilds
//! state from the kernel and the live allocations, and serves the same
//! listening handoff socket (clients wait in its backlog meanwhile). It
//! answers the control socket (`nodeinit status`, `nodeinit reload`). A
//! reload first probes the plugins in a child (the old worker serves on);
//! then the old worker drains and hands its open handoff connections over
//! (descriptors over the link), held here until the new worker serves and
//! then passed on — or kept for the next worker if that one dies first.
//!
//! Every step is an event handler that returns at once: the loop polls what
//! [`WorkerSupervisor::poll_fds`] names and wakes at
//! [`WorkerSupervisor::deadline`]. It never reaps when the loop reaps every
//! child (it is told with [`WorkerSupervisor::on_reaped`]); otherwise it
//! waits for its own children only, by pid.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nodeinit_handoff::server::handover::HandoverRecord;
use nodeinit_handoff::HandoffListener;

use super::{describe_status, WorkerFacts, WorkerProcess};
use crate::agent::RestartBackoff;
use crate::boot::PluginRecord;
use crate::control::{ControlReply, ControlRequest};
use crate::link::{Channel, FromWorker, Receive, StepReport, ToWorker, WorkerStart, WorkerTask};
use crate::pid1::SignalPipe;

/// What `nodeinit status` shows of the worker.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct WorkerStatus {
    /// Its pid (none while a restart is pending).
    pub pid: Option<i32>,
    /// When it started serving (seconds since the epoch).
    pub serving_since: Option<u64>,
    /// Its plugins.
    pub plugins: Vec<PluginRecord>,
    /// Restarts after a worker died.
    pub restarts: u32,
    /// Reloads (new plugin files) so far.
    pub reloads: u32,
    /// Why the last worker ended.
    pub last_death: Option<String>,
    /// How long the last restart took (new worker started → serving), ms.
    pub last_restart_ms: Option<f64>,
}

/// What the supervisor needs to start the next worker.
#[derive(Debug)]
pub struct SupervisorSetup {
    /// The nodeinit binary.
    pub program: PathBuf,
    /// The start message of the boot worker (made a resume for the next).
    pub start: WorkerStart,
    /// The listening handoff socket, passed to every worker.
    pub listener: Option<HandoffListener>,
    /// What the workers reported so far.
    pub facts: WorkerFacts,
    /// Deadline of the worker's own code between plugin calls, seconds.
    pub idle_timeout_secs: u64,
    /// The restart schedule.
    pub backoff: RestartBackoff,
    /// The keeper's signal pipe (a stop at shutdown waits on it).
    pub signals: &'static SignalPipe,
    /// Whether the keeper's loop reaps every child (then only it may).
    pub loop_reaps_all: bool,
    /// The control socket (`nodeinit status`, `nodeinit reload`).
    pub control: Option<crate::control::ControlListener>,
    /// Where the fleet metrics go, and the boot's report they start from.
    pub metrics: Option<(PathBuf, crate::boot::BootReport)>,
}

/// How long a worker or probe that closed its link may take to be reaped.
const STATUS_WITHIN: Duration = Duration::from_secs(5);
/// How long a draining worker may take to hand over and exit.
const DRAIN_WITHIN: Duration = Duration::from_secs(30);
/// While a status is awaited and nobody else reaps: how often to look.
const REAP_TICK: Duration = Duration::from_millis(20);

/// A child's plugin calls being followed, with the deadline of each.
#[derive(Debug)]
struct Follow {
    step: Option<StepReport>,
    since: Instant,
    idle_timeout_secs: u64,
}

impl Follow {
    fn new(idle_timeout_secs: u64) -> Self {
        Self {
            step: None,
            since: Instant::now(),
            idle_timeout_secs,
        }
    }

    fn timeout_secs(&self) -> u64 {
        self.step
            .as_ref()
            .map_or(self.idle_timeout_secs, |s| s.timeout_secs)
    }

    fn deadline(&self) -> Instant {
        self.since + Duration::from_secs(self.timeout_secs())
    }

    fn progress(&mut self, step: Option<StepReport>) {
        if step.is_some() {
            self.step = step;
        }
        self.since = Instant::now();
    }

    /// `plugin X: worker killed by SIGSEGV in constructor`.
    fn death(&self, status: &str) -> String {
        match &self.step {
            Some(s) => format!(
                "plugin {}: worker {status} in {}",
                s.plugin.as_deref().unwrap_or("?"),
                s.method
            ),
            None => format!("worker {status}"),
        }
    }
}

/// The worker in its life cycle.
#[derive(Debug)]
enum Current {
    /// Serving.
    Serving(WorkerProcess),
    /// Started, followed until it serves; `reload`: answer this when it does.
    Starting {
        worker: WorkerProcess,
        follow: Follow,
        begun: Instant,
        reload: Option<Reply>,
    },
    /// Told to drain for a reload; the next worker starts when it is gone.
    Draining {
        old: WorkerProcess,
        until: Instant,
        reply: Reply,
    },
    /// None; the next one starts at this instant (`None`: not before the
    /// child being ended is reaped).
    RestartAt(Option<Instant>),
}

/// Whom to tell how a reload went (`None`: SIGHUP, the log is told).
type Reply = Option<Channel>;

/// The probe of a reload: `nodeinit __check` on the config, in a child.
#[derive(Debug)]
struct Probe {
    child: WorkerProcess,
    follow: Follow,
    stdout: Option<JoinHandle<String>>,
    reply: Reply,
}

/// A child whose link closed (or that was killed), waiting for its status.
#[derive(Debug)]
struct Ending {
    child: WorkerProcess,
    until: Instant,
    then: Then,
}

/// What to do once an [`Ending`] child's status is known.
#[derive(Debug)]
enum Then {
    /// A serving worker died: note it; the restart is already scheduled.
    Died,
    /// A starting worker failed: `Ok`: it died, reason from its calls;
    /// `Err`: already known (overrun).
    StartFailed {
        follow: Follow,
        known: Option<String>,
        reload: Option<Reply>,
    },
    /// A drained worker: start the next.
    Drained { reply: Reply },
    /// A probe: judge it.
    Probed {
        finished: bool,
        follow: Follow,
        known: Option<String>,
        stdout: Option<JoinHandle<String>>,
        reply: Reply,
    },
}

/// Which descriptor the loop found readable (see [`WorkerSupervisor::poll_fds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerFd {
    /// The current (or starting, or draining) worker's link.
    Link,
    /// The probe's link.
    Probe,
    /// The control socket.
    Control,
}

/// The worker after boot, as a state machine of the keeper's loop.
#[derive(Debug)]
pub struct WorkerSupervisor {
    setup: SupervisorSetup,
    status: WorkerStatus,
    current: Current,
    probe: Option<Probe>,
    ending: Vec<Ending>,
    /// Handoff connections a drained worker handed over, held (sockets
    /// open, their clients' unread requests in them) for the next worker.
    handed_over: Vec<(HandoverRecord, Vec<OwnedFd>)>,
    /// Reload asked while a restart was under way: run it once serving.
    reload_pending: Option<Reply>,
}

fn now_secs() -> Option<u64> {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

fn answer(reply: Reply, message: &ControlReply) {
    if let Some(client) = reply {
        if let Err(e) = client.send(message) {
            tracing::warn!("control reply not sent: {e}");
        }
    }
}

impl WorkerSupervisor {
    /// Take over `worker`, serving.
    pub fn start(worker: WorkerProcess, setup: SupervisorSetup) -> Self {
        let status = WorkerStatus {
            pid: Some(worker.pid().as_raw()),
            serving_since: now_secs(),
            plugins: setup.facts.plugins.clone(),
            ..WorkerStatus::default()
        };
        Self {
            setup,
            status,
            current: Current::Serving(worker),
            probe: None,
            ending: Vec::new(),
            handed_over: Vec::new(),
            reload_pending: None,
        }
    }

    /// What `nodeinit status` shows.
    pub fn status(&self) -> WorkerStatus {
        let mut status = self.status.clone();
        // The worker sends its records again, with file hashes, once serving.
        status.plugins = self.setup.facts.plugins.clone();
        status
    }

    /// The descriptors to poll, each with what it is.
    pub fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, WorkerFd)> {
        let mut fds = Vec::with_capacity(3);
        match &self.current {
            Current::Serving(w) | Current::Starting { worker: w, .. } => {
                fds.push((w.channel().fd(), WorkerFd::Link));
            }
            Current::Draining { old, .. } => fds.push((old.channel().fd(), WorkerFd::Link)),
            Current::RestartAt(_) => {}
        }
        if let Some(probe) = &self.probe {
            fds.push((probe.child.channel().fd(), WorkerFd::Probe));
        }
        if let Some(control) = &self.setup.control {
            fds.push((control.fd(), WorkerFd::Control));
        }
        fds
    }

    /// The nearest instant something is due: a restart, a plugin call's
    /// deadline (starting worker, probe), a drain limit, a status awaited.
    pub fn deadline(&self) -> Option<Instant> {
        let current = match &self.current {
            Current::RestartAt(at) => *at,
            Current::Starting { follow, .. } => Some(follow.deadline()),
            Current::Draining { until, .. } => Some(*until),
            Current::Serving(_) => None,
        };
        let tick = (!self.ending.is_empty()).then(|| Instant::now() + REAP_TICK);
        [
            current,
            self.probe.as_ref().map(|p| p.follow.deadline()),
            self.ending.iter().map(|e| e.until).min(),
            tick,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A reaped child: `true` if it was one of ours.
    pub fn on_reaped(&mut self, pid: nix::unistd::Pid, status: WaitStatus) -> bool {
        if let Some(i) = self.ending.iter().position(|e| e.child.pid() == pid) {
            let ending = self.ending.remove(i);
            self.ended(ending, describe_status(&status));
            return true;
        }
        let live = match &self.current {
            Current::Serving(w) | Current::Starting { worker: w, .. } => Some(w),
            Current::Draining { old, .. } => Some(old),
            Current::RestartAt(_) => None,
        };
        for child in live
            .into_iter()
            .chain(self.probe.as_ref().map(|p| &p.child))
        {
            if child.pid() == pid {
                // Its link's end-of-file follows; the status waits there.
                child.note_reaped(status);
                return true;
            }
        }
        false
    }

    /// The loop does not reap every child: look for our own, by pid.
    pub fn reap_own(&mut self) {
        let mut i = 0;
        while i < self.ending.len() {
            if let Some(status) = self.ending[i].child.try_reap() {
                let ending = self.ending.remove(i);
                self.ended(ending, describe_status(&status));
            } else {
                i += 1;
            }
        }
    }

    /// A readable descriptor.
    pub fn on_ready(&mut self, which: WorkerFd) {
        match which {
            WorkerFd::Link => self.on_link(),
            WorkerFd::Probe => self.on_probe(),
            WorkerFd::Control => self.on_control(),
        }
    }

    /// Deadlines that passed.
    pub fn on_timer(&mut self, now: Instant) {
        if !self.setup.loop_reaps_all {
            self.reap_own();
        }
        let mut i = 0;
        while i < self.ending.len() {
            if self.ending[i].until <= now {
                let ending = self.ending.remove(i);
                let _ = kill(ending.child.pid(), Signal::SIGKILL);
                self.ended(ending, "ended (status unknown)".to_owned());
            } else {
                i += 1;
            }
        }
        if self
            .probe
            .as_ref()
            .is_some_and(|p| p.follow.deadline() <= now)
        {
            if let Some(probe) = self.probe.take() {
                let known =
                    super::overrun_reason(probe.follow.step.as_ref(), probe.follow.timeout_secs());
                let _ = kill(probe.child.pid(), Signal::SIGKILL);
                self.end(
                    probe.child,
                    Then::Probed {
                        finished: false,
                        follow: probe.follow,
                        known: Some(known),
                        stdout: probe.stdout,
                        reply: probe.reply,
                    },
                );
            }
        }
        match std::mem::replace(&mut self.current, Current::RestartAt(None)) {
            Current::RestartAt(Some(at)) if at <= now => self.start_worker(None),
            Current::Starting {
                worker,
                follow,
                reload,
                ..
            } if follow.deadline() <= now => {
                let known = super::overrun_reason(follow.step.as_ref(), follow.timeout_secs());
                let _ = kill(worker.pid(), Signal::SIGKILL);
                self.end(
                    worker,
                    Then::StartFailed {
                        follow,
                        known: Some(known),
                        reload,
                    },
                );
            }
            Current::Draining { old, until, reply } if until <= now => {
                tracing::warn!(
                    pid = old.pid().as_raw(),
                    "reload: the old worker did not hand over within {} s; killed",
                    DRAIN_WITHIN.as_secs()
                );
                let _ = kill(old.pid(), Signal::SIGKILL);
                self.end(old, Then::Drained { reply });
            }
            other => self.current = other,
        }
    }

    /// Reload the plugins (SIGHUP); the outcome is logged.
    pub fn request_reload(&mut self) {
        self.reload(None);
    }

    // ---- the current worker ----

    fn on_link(&mut self) {
        let received = match &self.current {
            Current::Serving(w) | Current::Starting { worker: w, .. } => {
                w.channel().receive::<FromWorker>()
            }
            Current::Draining { old, .. } => match old.channel().receive_with_fds::<FromWorker>() {
                Ok((Receive::Message(FromWorker::HandedOver(record)), fds)) => {
                    tracing::info!(
                        connections = fds.len(),
                        "reload: holding handed-over connections for the next worker"
                    );
                    self.handed_over.push((record, fds));
                    return;
                }
                Ok((message, _)) => Ok(message),
                Err(e) => Err(e),
            },
            Current::RestartAt(_) => return,
        };
        match received {
            Ok(Receive::Message(message)) => self.on_message(message),
            Ok(Receive::Closed) | Err(_) => self.on_link_closed(),
        }
    }

    fn on_message(&mut self, message: FromWorker) {
        match (&mut self.current, message) {
            (Current::Starting { follow, .. }, FromWorker::Step(step)) => {
                follow.progress(Some(step));
            }
            (Current::Starting { .. }, FromWorker::Serving) => self.now_serving(),
            (current, message) => {
                if let Current::Starting { follow, .. } = current {
                    follow.progress(None);
                }
                self.setup.facts.absorb(&message);
            }
        }
    }

    fn on_link_closed(&mut self) {
        match std::mem::replace(&mut self.current, Current::RestartAt(None)) {
            Current::Serving(worker) => {
                let delay = self.setup.backoff.delay_after_run(worker.uptime());
                tracing::error!(
                    pid = worker.pid().as_raw(),
                    delay_ms = delay.as_millis() as u64,
                    "worker died after boot; restarting it"
                );
                self.status.pid = None;
                self.status.serving_since = None;
                self.current = Current::RestartAt(Some(Instant::now() + delay));
                self.end(worker, Then::Died);
            }
            Current::Starting {
                worker,
                follow,
                reload,
                ..
            } => self.end(
                worker,
                Then::StartFailed {
                    follow,
                    known: None,
                    reload,
                },
            ),
            Current::Draining { old, reply, .. } => self.end(old, Then::Drained { reply }),
            Current::RestartAt(at) => self.current = Current::RestartAt(at),
        }
    }

    /// Wait for `child`'s status, then do `then` (at once if it is known).
    fn end(&mut self, child: WorkerProcess, then: Then) {
        let known = if self.setup.loop_reaps_all {
            child.reaped_status()
        } else {
            child.try_reap()
        };
        let ending = Ending {
            child,
            until: Instant::now() + STATUS_WITHIN,
            then,
        };
        match known {
            Some(status) => self.ended(ending, describe_status(&status)),
            None => self.ending.push(ending),
        }
    }

    /// `ending`'s child is gone, `status` in words.
    fn ended(&mut self, ending: Ending, status: String) {
        match ending.then {
            Then::Died => {
                tracing::error!(pid = ending.child.pid().as_raw(), %status, "the dead worker's status");
                self.status.last_death = Some(format!("worker {status}"));
            }
            Then::StartFailed {
                follow,
                known,
                reload,
            } => {
                let why = known.unwrap_or_else(|| follow.death(&status));
                let delay = self.setup.backoff.delay_after_run(Duration::ZERO);
                tracing::error!(%why, delay_ms = delay.as_millis() as u64, "worker restart failed; trying again");
                self.status.last_death = Some(why.clone());
                self.current = Current::RestartAt(Some(Instant::now() + delay));
                if let Some(reply) = reload {
                    answer(
                        reply,
                        &ControlReply::Error(format!(
                            "the probe passed but the new worker failed: {why}; restarting with backoff"
                        )),
                    );
                }
            }
            Then::Drained { reply } => {
                tracing::info!(pid = ending.child.pid().as_raw(), %status, "reload: old worker drained");
                self.setup.start.excluded.clear();
                self.start_worker(Some(reply));
            }
            Then::Probed {
                finished,
                follow,
                known,
                stdout,
                reply,
            } => {
                let report = stdout.and_then(|r| r.join().ok()).unwrap_or_default();
                let verdict = match known {
                    Some(why) => Err(format!("the new plugins {why}; nothing changed\n{report}")),
                    None if !finished => Err(format!(
                        "the new plugins {} while loading; nothing changed\n{report}",
                        follow.death(&status)
                    )),
                    None if report.trim_end().ends_with("check: ok") => Ok(()),
                    None => Err(format!(
                        "the probe refused the config ({status}); nothing changed\n{report}"
                    )),
                };
                match verdict {
                    Ok(()) => self.probe_passed(reply),
                    Err(why) => {
                        tracing::error!("reload: {why}");
                        answer(reply, &ControlReply::Error(why));
                    }
                }
            }
        }
    }

    /// Start a worker that resumes the node (`reload`: after a reload).
    fn start_worker(&mut self, reload: Option<Reply>) {
        let mut start = self.setup.start.clone();
        start.task = WorkerTask::Resume;
        start.phases.clear();
        start.boot_mounts = self.setup.facts.boot_mounts.clone();
        start.live_allocations = self.setup.facts.live_allocations.iter().cloned().collect();
        start.listener_passed = self.setup.listener.is_some();
        match WorkerProcess::spawn(&self.setup.program, &start, self.setup.listener.as_ref()) {
            Ok(worker) => {
                self.current = Current::Starting {
                    worker,
                    follow: Follow::new(self.setup.idle_timeout_secs),
                    begun: Instant::now(),
                    reload,
                };
            }
            Err(e) => {
                let delay = self.setup.backoff.delay_after_run(Duration::ZERO);
                tracing::error!(why = %e, delay_ms = delay.as_millis() as u64, "worker restart failed; trying again");
                self.status.last_death = Some(e.to_string());
                self.current = Current::RestartAt(Some(Instant::now() + delay));
                if let Some(reply) = reload {
                    answer(
                        reply,
                        &ControlReply::Error(format!(
                            "the probe passed but the new worker failed: {e}; restarting with backoff"
                        )),
                    );
                }
            }
        }
    }

    /// The starting worker serves: hand it the held connections, count it.
    fn now_serving(&mut self) {
        let Current::Starting {
            worker,
            begun,
            reload,
            ..
        } = std::mem::replace(&mut self.current, Current::RestartAt(None))
        else {
            return;
        };
        self.pass_handover(&worker);
        let ms = begun.elapsed().as_secs_f64() * 1e3;
        tracing::info!(
            pid = worker.pid().as_raw(),
            restart_ms = ms,
            reload = reload.is_some(),
            "worker restarted and serving"
        );
        self.status.pid = Some(worker.pid().as_raw());
        self.status.serving_since = now_secs();
        self.status.plugins = self.setup.facts.plugins.clone();
        if reload.is_some() {
            self.status.reloads += 1;
        } else {
            self.status.restarts += 1;
        }
        self.status.last_restart_ms = Some(ms);
        self.current = Current::Serving(worker);
        self.publish_metrics();
        if let Some(reply) = reload {
            tracing::info!(pid = ?self.status.pid, "reload done");
            answer(reply, &ControlReply::Reloaded(self.status()));
        }
        if let Some(reply) = self.reload_pending.take() {
            self.reload(reply);
        }
    }

    /// Give the held handed-over connections to `worker` (serving); what
    /// cannot be sent stays held for the next one.
    fn pass_handover(&mut self, worker: &WorkerProcess) {
        let mut parts = std::mem::take(&mut self.handed_over).into_iter();
        while let Some((record, fds)) = parts.next() {
            let message = ToWorker::Adopt(record);
            if let Err(e) = worker.channel().send_with_fds(&message, &fds) {
                tracing::warn!("handed-over connections kept for the next worker: {e}");
                if let ToWorker::Adopt(record) = message {
                    self.handed_over.push((record, fds));
                }
                self.handed_over.extend(parts);
                return;
            }
            // Our copies close here; the worker holds its own.
        }
    }

    /// The fleet view after a restart or reload: restarts, live allocations,
    /// and the plugins now loaded.
    fn publish_metrics(&self) {
        let Some((path, report)) = &self.setup.metrics else {
            return;
        };
        let mut report = report.clone();
        report.plugins = self.setup.facts.plugins.clone();
        crate::metrics::publish(
            path,
            &report,
            &crate::metrics::RuntimeCounts {
                worker_restarts: u64::from(self.status.restarts),
                live_allocations: Some(self.setup.facts.live_allocations.len() as u64),
                mounted_images: crate::pid1::mounted_squashfs_images(),
            },
        );
    }

    // ---- reload ----

    /// Probe the config's plugins in a child; if they load, drain the
    /// worker and start one with them. Nothing changes when the probe fails.
    fn reload(&mut self, reply: Reply) {
        let reloading = self
            .ending
            .iter()
            .any(|e| matches!(e.then, Then::Probed { .. } | Then::Drained { .. }));
        if reloading || self.probe.is_some() || matches!(self.current, Current::Draining { .. }) {
            answer(
                reply,
                &ControlReply::Error("a reload is already running; nothing changed".into()),
            );
            return;
        }
        if matches!(self.current, Current::Starting { .. }) {
            if self.reload_pending.is_some() {
                answer(
                    reply,
                    &ControlReply::Error("a reload is already waiting; nothing changed".into()),
                );
            } else {
                // A worker is starting: reload once it serves.
                self.reload_pending = Some(reply);
            }
            return;
        }
        tracing::info!("reload: probing the plugins in a child");
        let mut args: Vec<std::ffi::OsString> = vec!["__check".into()];
        if let Some(file) = &self.setup.start.config_file {
            args.push("--config".into());
            args.push(file.into());
        }
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsString::as_os_str).collect();
        match WorkerProcess::spawn_child(&self.setup.program, &args, true, false) {
            Ok((child, stdout)) => {
                // Its report is read off the loop: a pipe the probe fills.
                let stdout = stdout.map(|mut out| {
                    std::thread::spawn(move || {
                        let mut text = String::new();
                        let _ = std::io::Read::read_to_string(&mut out, &mut text);
                        text
                    })
                });
                self.probe = Some(Probe {
                    child,
                    follow: Follow::new(self.setup.idle_timeout_secs),
                    stdout,
                    reply,
                });
            }
            Err(e) => answer(
                reply,
                &ControlReply::Error(format!("cannot start the probe: {e}")),
            ),
        }
    }

    fn on_probe(&mut self) {
        let Some(probe) = self.probe.as_mut() else {
            return;
        };
        let finished = match probe.child.channel().receive::<FromWorker>() {
            Ok(Receive::Message(FromWorker::Step(step))) => {
                probe.follow.progress(Some(step));
                return;
            }
            Ok(Receive::Message(FromWorker::Finished)) => true,
            Ok(Receive::Message(_)) => {
                probe.follow.progress(None);
                return;
            }
            Ok(Receive::Closed) | Err(_) => false,
        };
        if let Some(probe) = self.probe.take() {
            self.end(
                probe.child,
                Then::Probed {
                    finished,
                    follow: probe.follow,
                    known: None,
                    stdout: probe.stdout,
                    reply: probe.reply,
                },
            );
        }
    }

    fn probe_passed(&mut self, reply: Reply) {
        tracing::info!("reload: probe passed; draining worker");
        match std::mem::replace(&mut self.current, Current::RestartAt(None)) {
            Current::Serving(old) => {
                if old.channel().send(&ToWorker::Drain).is_ok() {
                    self.current = Current::Draining {
                        old,
                        until: Instant::now() + DRAIN_WITHIN,
                        reply,
                    };
                } else {
                    self.end(old, Then::Drained { reply });
                }
            }
            Current::RestartAt(_) => {
                self.setup.start.excluded.clear();
                self.start_worker(Some(reply));
            }
            other => {
                self.current = other;
                answer(
                    reply,
                    &ControlReply::Error("a worker is starting; try again".into()),
                );
            }
        }
    }

    // ---- control socket ----

    /// One control request: a status is answered at once; a reload when done.
    fn on_control(&mut self) {
        let Some(client) = self.setup.control.as_ref().and_then(|c| c.accept()) else {
            return;
        };
        match client.receive::<ControlRequest>() {
            Ok(Receive::Message(ControlRequest::Status)) => {
                answer(Some(client), &ControlReply::Status(self.status()));
            }
            Ok(Receive::Message(ControlRequest::Reload)) => self.reload(Some(client)),
            Ok(Receive::Closed) => {}
            Err(e) => answer(
                Some(client),
                &ControlReply::Error(format!("bad control request: {e}")),
            ),
        }
    }

    // ---- shutdown ----

    /// Stop the worker (it releases the boot mounts) and close the sockets:
    /// the last step, after the loop.
    pub fn stop(mut self, grace: Duration) {
        let fd = self.setup.signals.fd();
        if let Some(probe) = self.probe.take() {
            probe.child.kill_and_reap(fd);
        }
        let worker = match std::mem::replace(&mut self.current, Current::RestartAt(None)) {
            Current::Serving(w) | Current::Starting { worker: w, .. } => Some(w),
            Current::Draining { old, .. } => Some(old),
            Current::RestartAt(_) => None,
        };
        if let Some(worker) = worker {
            match worker.stop(grace, fd) {
                Some(status) => {
                    tracing::info!(status = %describe_status(&status), "worker stopped")
                }
                None => tracing::warn!("worker stop: status unknown"),
            }
        }
        for ending in std::mem::take(&mut self.ending) {
            let _ = kill(ending.child.pid(), Signal::SIGKILL);
            ending.child.wait_exit(Duration::from_secs(2), fd);
        }
        if let Some(reply) = self.reload_pending.take() {
            answer(reply, &ControlReply::Error("the node shuts down".into()));
        }
        if let Some(listener) = self.setup.listener.take() {
            listener.unpublish();
        }
        if let Some(control) = self.setup.control.take() {
            control.unpublish();
        }
    }
}
