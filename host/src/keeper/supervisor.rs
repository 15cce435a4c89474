//! After boot: the worker is kept alive. A thread of the keeper owns it —
//! reads its reports (which allocations may be live), notices its death
//! (end-of-file on the link) and starts a new one with backoff (1 s
//! doubling to 60 s, reset after 60 s up) that resumes the node: loads the
//! plugins again, rebuilds state from the kernel and the live allocations,
//! and serves the same listening handoff socket (clients wait in its
//! backlog meanwhile). On a reload the draining worker hands its open
//! handoff connections over (descriptors over the link); this thread holds
//! them until the new worker serves and then passes them on, or keeps them
//! for the next worker if that one dies first.
//!
//! The keeper's main thread keeps the signal pipe and the reaping (the
//! agent's supervision loop reaps every child); it hands each reaped status
//! here with [`WorkerSupervisor::note_reaped`]. This thread never reads the
//! signal pipe and never waits for a child the main thread may reap. Workers
//! are spawned from this thread, which lives as long as the keeper, so
//! their `PR_SET_PDEATHSIG` (and that of holders they clone with
//! `CLONE_PARENT`) fires only when the keeper goes.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nodeinit_handoff::server::handover::HandoverRecord;
use nodeinit_handoff::HandoffListener;

use super::{describe_status, WorkerFacts, WorkerProcess};
use crate::agent::RestartBackoff;
use crate::boot::PluginRecord;
use crate::control::{ControlReply, ControlRequest};
use crate::link::{FromWorker, Receive, StepReport, ToWorker, WorkerStart, WorkerTask};

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

enum Command {
    Stop(Duration),
    Reload,
}

/// The handle the keeper's main thread keeps.
pub struct WorkerSupervisor {
    commands: Sender<Command>,
    reaped: Sender<(i32, String)>,
    wake: OwnedFd,
    thread: Option<JoinHandle<()>>,
    status: Arc<Mutex<WorkerStatus>>,
}

impl std::fmt::Debug for WorkerSupervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSupervisor").finish_non_exhaustive()
    }
}

/// What the thread needs to start the next worker.
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
    /// Whether the main thread reaps every child (then only it may).
    pub main_thread_reaps: bool,
    /// The control socket (`nodeinit status`, `nodeinit reload`).
    pub control: Option<crate::control::ControlListener>,
    /// Where the fleet metrics go, and the boot's report they start from.
    pub metrics: Option<(PathBuf, crate::boot::BootReport)>,
}

impl WorkerSupervisor {
    /// Take over `worker` (serving) in a thread of its own.
    ///
    /// # Errors
    ///
    /// The wake pipe or the thread cannot be created.
    pub fn start(worker: WorkerProcess, setup: SupervisorSetup) -> io::Result<Self> {
        let (wake_read, wake_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io::Error::other(format!("pipe2: {e}")))?;
        let (commands, command_queue) = channel();
        let (reaped, reaped_queue) = channel();
        let status = Arc::new(Mutex::new(WorkerStatus {
            pid: Some(worker.pid().as_raw()),
            serving_since: now_secs(),
            plugins: setup.facts.plugins.clone(),
            ..WorkerStatus::default()
        }));
        let thread_status = Arc::clone(&status);
        let thread = std::thread::Builder::new()
            .name("nodeinit-worker-keeper".into())
            .spawn(move || {
                Keeping {
                    setup,
                    commands: command_queue,
                    reaped: reaped_queue,
                    wake: wake_read,
                    status: thread_status,
                    stopping: false,
                    handed_over: Vec::new(),
                }
                .run(worker);
            })?;
        Ok(Self {
            commands,
            reaped,
            wake: wake_write,
            thread: Some(thread),
            status,
        })
    }

    /// A child the main thread reaped (it may be the worker).
    pub fn note_reaped(&self, pid: i32, status: String) {
        let _ = self.reaped.send((pid, status));
        self.poke();
    }

    /// What `nodeinit status` shows.
    pub fn status(&self) -> WorkerStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reload the plugins (SIGHUP); the outcome is logged.
    pub fn request_reload(&self) {
        let _ = self.commands.send(Command::Reload);
        self.poke();
    }

    fn poke(&self) {
        let _ = nix::unistd::write(&self.wake, b"!");
    }

    /// Stop the worker (it releases the boot mounts) and the thread.
    pub fn stop(mut self, grace: Duration) {
        let _ = self.commands.send(Command::Stop(grace));
        self.poke();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the worker-keeper thread panicked");
            }
        }
    }
}

fn now_secs() -> Option<u64> {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

struct Keeping {
    setup: SupervisorSetup,
    commands: Receiver<Command>,
    reaped: Receiver<(i32, String)>,
    wake: OwnedFd,
    status: Arc<Mutex<WorkerStatus>>,
    /// A stop arrived while a new worker was starting.
    stopping: bool,
    /// Handoff connections a drained worker handed over, held (sockets
    /// open, their clients' unread requests in them) for the next worker.
    handed_over: Vec<(HandoverRecord, Vec<OwnedFd>)>,
}

enum Woke {
    Stop(Duration),
    Reload,
    Control,
    Timeout,
    Link,
    Nothing,
}

/// What a followed child must reach.
#[derive(PartialEq, Eq)]
enum Until {
    /// A worker: serving.
    Serving,
    /// A probe: finished.
    Finished,
}

impl Keeping {
    /// The fleet view after a restart or reload: restarts, live allocations,
    /// and the plugins now loaded.
    fn publish_metrics(&self) {
        let Some((path, report)) = &self.setup.metrics else {
            return;
        };
        let mut report = report.clone();
        report.plugins = self.setup.facts.plugins.clone();
        let status = self
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        crate::metrics::publish(
            path,
            &report,
            &crate::metrics::RuntimeCounts {
                worker_restarts: u64::from(status.restarts),
                live_allocations: Some(self.setup.facts.live_allocations.len() as u64),
                mounted_images: crate::pid1::mounted_squashfs_images(),
            },
        );
    }

    fn set_status(&self, f: impl FnOnce(&mut WorkerStatus)) {
        f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn drain_wake(&self) {
        let mut buf = [0u8; 64];
        let _ = nix::unistd::read(self.wake.as_raw_fd(), &mut buf);
    }

    /// Wait for the link (if any), a command, or `until`.
    fn wait(&self, link: Option<&WorkerProcess>, until: Option<Instant>) -> Woke {
        let timeout = match until {
            None => PollTimeout::NONE,
            Some(t) => PollTimeout::try_from(
                t.saturating_duration_since(Instant::now())
                    .as_millis()
                    .max(1),
            )
            .unwrap_or(PollTimeout::MAX),
        };
        let mut fds = vec![PollFd::new(self.wake.as_fd(), PollFlags::POLLIN)];
        let control_at = self.setup.control.as_ref().map(|c| {
            fds.push(PollFd::new(c.fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let link_at = link.map(|w| {
            fds.push(PollFd::new(w.channel().fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let ready = nix::poll::poll(&mut fds, timeout);
        let is_ready = |at: Option<usize>| {
            at.and_then(|i| fds.get(i))
                .is_some_and(|f| f.any().unwrap_or(false))
        };
        let woke = is_ready(Some(0));
        let control_ready = is_ready(control_at);
        let link_ready = is_ready(link_at);
        if woke {
            self.drain_wake();
            match self.commands.try_recv() {
                Ok(Command::Stop(grace)) => return Woke::Stop(grace),
                Ok(Command::Reload) => return Woke::Reload,
                Err(_) => {}
            }
        }
        match ready {
            Ok(0) => Woke::Timeout,
            _ if link_ready => Woke::Link,
            _ if control_ready => Woke::Control,
            _ => Woke::Nothing,
        }
    }

    /// The status of the worker `pid`, from the main thread's reaper or
    /// (when nobody else reaps) our own waitpid, within `within`.
    fn death_status(&self, worker: &WorkerProcess, within: Duration) -> String {
        self.death_status_reaping(worker, within, !self.setup.main_thread_reaps)
    }

    /// [`Self::death_status`]; `may_reap`: no other thread reaps now.
    fn death_status_reaping(
        &self,
        worker: &WorkerProcess,
        within: Duration,
        may_reap: bool,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            while let Ok((pid, status)) = self.reaped.try_recv() {
                if pid == worker.pid().as_raw() {
                    return status;
                }
            }
            if may_reap {
                if let Some(status) = worker.try_reap() {
                    return describe_status(&status);
                }
            }
            if Instant::now() >= deadline {
                let _ = nix::sys::signal::kill(worker.pid(), nix::sys::signal::Signal::SIGKILL);
                return "ended (status unknown)".to_owned();
            }
            let _ = self.wait(None, Some(Instant::now() + Duration::from_millis(20)));
        }
    }

    fn run(mut self, first: WorkerProcess) {
        let mut current = Some(first);
        let mut restart_at: Option<Instant> = None;
        loop {
            match self.wait(current.as_ref(), restart_at) {
                Woke::Stop(grace) => {
                    if let Some(worker) = current.take() {
                        self.stop_worker(&worker, grace);
                    }
                    self.close_sockets();
                    return;
                }
                Woke::Reload => {
                    match self.reload(&mut current) {
                        Ok(status) => tracing::info!(pid = ?status.pid, "reload done"),
                        Err(why) => tracing::error!("reload: {why}"),
                    }
                    if current.is_none() && restart_at.is_none() {
                        restart_at = Some(
                            Instant::now() + self.setup.backoff.delay_after_run(Duration::ZERO),
                        );
                    }
                    if self.stopping {
                        self.close_sockets();
                        return;
                    }
                }
                Woke::Control => {
                    self.serve_control(&mut current);
                    if current.is_none() && restart_at.is_none() {
                        restart_at = Some(
                            Instant::now() + self.setup.backoff.delay_after_run(Duration::ZERO),
                        );
                    }
                    if self.stopping {
                        self.close_sockets();
                        return;
                    }
                }
                Woke::Link => {
                    let Some(worker) = current.as_ref() else {
                        continue;
                    };
                    match worker.channel().receive::<FromWorker>() {
                        Ok(Receive::Message(message)) => self.setup.facts.absorb(&message),
                        Ok(Receive::Closed) | Err(_) => {
                            let status = self.death_status(worker, Duration::from_secs(5));
                            let delay = self.setup.backoff.delay_after_run(worker.uptime());
                            tracing::error!(pid = worker.pid().as_raw(), %status, delay_ms = delay.as_millis() as u64,
                                "worker died after boot; restarting it");
                            self.set_status(|s| {
                                s.pid = None;
                                s.serving_since = None;
                                s.last_death = Some(format!("worker {status}"));
                            });
                            current = None;
                            restart_at = Some(Instant::now() + delay);
                        }
                    }
                }
                Woke::Timeout | Woke::Nothing => {
                    if restart_at.is_some_and(|t| Instant::now() >= t) {
                        restart_at = None;
                        match self.resume(false) {
                            Ok(worker) => current = Some(worker),
                            Err(_) if self.stopping => {
                                self.close_sockets();
                                return;
                            }
                            Err(why) => {
                                let delay = self.setup.backoff.delay_after_run(Duration::ZERO);
                                tracing::error!(%why, delay_ms = delay.as_millis() as u64, "worker restart failed; trying again");
                                self.set_status(|s| s.last_death = Some(why));
                                restart_at = Some(Instant::now() + delay);
                            }
                        }
                    }
                }
            }
        }
    }

    fn stop_worker(&self, worker: &WorkerProcess, grace: Duration) {
        if worker.channel().send(&ToWorker::Stop).is_ok() {
            // The worker closes the link as it exits.
            let deadline = Instant::now() + grace;
            loop {
                match self.wait(Some(worker), Some(deadline)) {
                    Woke::Link => match worker.channel().receive::<FromWorker>() {
                        Ok(Receive::Message(_)) => continue,
                        Ok(Receive::Closed) | Err(_) => break,
                    },
                    Woke::Timeout => {
                        tracing::warn!(
                            "worker did not stop within {} s; killing it",
                            grace.as_secs()
                        );
                        break;
                    }
                    _ => {}
                }
            }
        }
        // The main thread is waiting for this stop, not reaping.
        let status = self.death_status_reaping(worker, Duration::from_secs(2), true);
        tracing::info!(%status, "worker stopped");
    }

    fn close_sockets(&mut self) {
        if let Some(listener) = self.setup.listener.take() {
            listener.unpublish();
        }
        if let Some(control) = self.setup.control.take() {
            control.unpublish();
        }
    }

    fn status_now(&self) -> WorkerStatus {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        // The worker sends its records again, with file hashes, once serving.
        status.plugins = self.setup.facts.plugins.clone();
        status.clone()
    }

    /// One control request, answered.
    fn serve_control(&mut self, current: &mut Option<WorkerProcess>) {
        let Some(client) = self.setup.control.as_ref().and_then(|c| c.accept()) else {
            return;
        };
        let reply = match client.receive::<ControlRequest>() {
            Ok(Receive::Message(ControlRequest::Status)) => ControlReply::Status(self.status_now()),
            Ok(Receive::Message(ControlRequest::Reload)) => match self.reload(current) {
                Ok(status) => ControlReply::Reloaded(status),
                Err(why) => ControlReply::Error(why),
            },
            Ok(Receive::Closed) => return,
            Err(e) => ControlReply::Error(format!("bad control request: {e}")),
        };
        if let Err(e) = client.send(&reply) {
            tracing::warn!("control reply not sent: {e}");
        }
    }

    /// Probe the config's plugins in a child; if they load, drain the
    /// worker and start one with them. Nothing changes when the probe fails.
    fn reload(&mut self, current: &mut Option<WorkerProcess>) -> Result<WorkerStatus, String> {
        tracing::info!("reload: probing the plugins in a child");
        let report = self.probe()?;
        tracing::info!("reload: probe passed; draining worker");
        if let Some(old) = current.take() {
            if old.channel().send(&ToWorker::Drain).is_ok() {
                self.follow_to_exit(&old, Duration::from_secs(30));
            }
            let status = self.death_status(&old, Duration::from_secs(5));
            tracing::info!(pid = old.pid().as_raw(), %status, "reload: old worker drained");
        }
        self.setup.start.excluded.clear();
        let worker = self
            .resume(true)
            .map_err(|e| format!("the probe passed but the new worker failed: {e}; restarting with backoff\n{report}"))?;
        *current = Some(worker);
        Ok(self.status_now())
    }

    /// `nodeinit __check` on the config, in a child followed like a worker.
    fn probe(&mut self) -> Result<String, String> {
        let mut args: Vec<std::ffi::OsString> = vec!["__check".into()];
        if let Some(file) = &self.setup.start.config_file {
            args.push("--config".into());
            args.push(file.into());
        }
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsString::as_os_str).collect();
        let (child, stdout) =
            WorkerProcess::spawn_child(&self.setup.program, &args, None, true, false)
                .map_err(|e| format!("cannot start the probe: {e}"))?;
        let reader = stdout.map(|mut out| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(&mut out, &mut text);
                text
            })
        });
        let followed = self.follow(&child, Until::Finished);
        let status = self.death_status(&child, Duration::from_secs(5));
        let report = reader.and_then(|r| r.join().ok()).unwrap_or_default();
        match followed {
            Err(why) => Err(format!(
                "the new plugins {why} while loading; nothing changed\n{report}"
            )),
            Ok(()) if report.trim_end().ends_with("check: ok") => Ok(report),
            Ok(()) => Err(format!(
                "the probe refused the config ({status}); nothing changed\n{report}"
            )),
        }
    }

    /// Read the link until the child closes it (it exits), at most `within`.
    fn follow_to_exit(&mut self, child: &WorkerProcess, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            match self.wait(Some(child), Some(deadline)) {
                Woke::Link => match child.channel().receive_with_fds::<FromWorker>() {
                    Ok((Receive::Message(FromWorker::HandedOver(record)), fds)) => {
                        tracing::info!(
                            connections = fds.len(),
                            "reload: holding handed-over connections for the next worker"
                        );
                        self.handed_over.push((record, fds));
                    }
                    Ok((Receive::Message(message), _)) => self.setup.facts.absorb(&message),
                    Ok((Receive::Closed, _)) | Err(_) => return,
                },
                Woke::Timeout => {
                    let _ = nix::sys::signal::kill(child.pid(), nix::sys::signal::Signal::SIGKILL);
                    return;
                }
                Woke::Stop(_) => self.stopping = true,
                _ => {}
            }
        }
    }

    /// Follow a child's reports, with each call's deadline, until it
    /// serves or finishes. `Err`: how it died or hung.
    fn follow(&mut self, child: &WorkerProcess, until: Until) -> Result<(), String> {
        let mut step: Option<StepReport> = None;
        let mut since = Instant::now();
        loop {
            let timeout = step
                .as_ref()
                .map_or(self.setup.idle_timeout_secs, |s| s.timeout_secs);
            let deadline = since + Duration::from_secs(timeout);
            match self.wait(Some(child), Some(deadline)) {
                Woke::Link => match child.channel().receive::<FromWorker>() {
                    Ok(Receive::Message(FromWorker::Serving)) if until == Until::Serving => {
                        return Ok(())
                    }
                    Ok(Receive::Message(FromWorker::Finished)) if until == Until::Finished => {
                        return Ok(())
                    }
                    Ok(Receive::Message(FromWorker::Step(s))) => {
                        step = Some(s);
                        since = Instant::now();
                    }
                    Ok(Receive::Message(message)) => {
                        self.setup.facts.absorb(&message);
                        since = Instant::now();
                    }
                    Ok(Receive::Closed) | Err(_) => {
                        let status = self.death_status(child, Duration::from_secs(5));
                        return Err(match step {
                            Some(s) => format!(
                                "plugin {}: worker {status} in {}",
                                s.plugin.as_deref().unwrap_or("?"),
                                s.method
                            ),
                            None => format!("worker {status}"),
                        });
                    }
                },
                Woke::Timeout => {
                    let _ = nix::sys::signal::kill(child.pid(), nix::sys::signal::Signal::SIGKILL);
                    return Err(crate::keeper::overrun_reason(step.as_ref(), timeout));
                }
                Woke::Stop(grace) => {
                    self.stop_worker(child, grace);
                    self.stopping = true;
                    return Err("stopping".to_owned());
                }
                Woke::Reload | Woke::Control | Woke::Nothing => {}
            }
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

    /// Start a worker that resumes the node; follow it until it serves.
    fn resume(&mut self, reload: bool) -> Result<WorkerProcess, String> {
        let mut start = self.setup.start.clone();
        start.task = WorkerTask::Resume;
        start.phases.clear();
        start.boot_mounts = self.setup.facts.boot_mounts.clone();
        start.live_allocations = self.setup.facts.live_allocations.iter().cloned().collect();
        start.listener_passed = self.setup.listener.is_some();
        let begun = Instant::now();
        let worker =
            WorkerProcess::spawn(&self.setup.program, &start, self.setup.listener.as_ref())
                .map_err(|e| e.to_string())?;
        self.follow(&worker, Until::Serving)?;
        self.pass_handover(&worker);
        let ms = begun.elapsed().as_secs_f64() * 1e3;
        tracing::info!(
            pid = worker.pid().as_raw(),
            restart_ms = ms,
            reload,
            "worker restarted and serving"
        );
        let plugins = self.setup.facts.plugins.clone();
        self.set_status(|s| {
            s.pid = Some(worker.pid().as_raw());
            s.serving_since = now_secs();
            s.plugins = plugins;
            if reload {
                s.reloads += 1;
            } else {
                s.restarts += 1;
            }
            s.last_restart_ms = Some(ms);
        });
        self.publish_metrics();
        Ok(worker)
    }
}
