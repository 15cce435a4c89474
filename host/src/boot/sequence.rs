//! The boot sequence up to the handoff, as the keeper runs it (DESIGN.md §5
//! "Phases"): the keeper's own phases (early mounts; kernel modules in a
//! thread of their own, [`super::modules`]; config), then one worker for the
//! phases that call plugins, watched with deadlines, following [`PHASES`]
//! and its dependencies: the worker waits for the modules only where the
//! table says so, and the handoff waits for them all. A worker that dies or overruns is a
//! failed phase naming the plugin and method; an optional backend that did
//! it is left out and a new worker carries on from the next phase.
//!
//! Never applies `on_failure` and never hands off: the caller decides what
//! a failure means (exit, shell, reboot) and runs the agent.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nodeinit_handoff::{AccessPolicy, HandoffListener, ServerConfig};

use super::modules::ModulesInBackground;
use super::phases::{PhaseResult, PhaseRunner, PhaseStatus};
use super::report::{uptime_secs, BootReport};
use super::table::worker_phases;
use crate::agent::{RestartBackoff, DEFAULT_INITIAL_DELAY, DEFAULT_MAX_DELAY};
use crate::config::{
    self, BackendKind, HandoffMode, KernelCmdline, LoadedConfig, NodeConfig, NodeId, WorkerThreads,
};
use crate::keeper::{
    death_reason, overrun_reason, watch, SupervisorSetup, WatchEnd, WorkerFacts, WorkerProcess,
    WorkerSupervisor,
};
use crate::link::{FromWorker, WorkerStart, WorkerTask};
use crate::pid1::{self, ShutdownAction, SignalPipe};
use crate::placement::Placement;

/// The allocation id under which boot mounts are held.
pub const BOOT_ALLOCATION: &str = "nodeinit-boot";

/// How long a worker gets to stop cleanly at shutdown or after a failure.
pub const WORKER_STOP_GRACE: Duration = Duration::from_secs(10);

/// Where and how this boot runs.
#[derive(Debug, Clone)]
pub struct BootEnv {
    /// `--config`.
    pub config_arg: Option<PathBuf>,
    /// The default config path (`None`: `/etc/nodeinit/nodeinit.toml`).
    pub default_config: Option<PathBuf>,
    /// The kernel command line words; `None`: read `/proc/cmdline` in the
    /// config phase (as the kernel's PID 1, `/proc` is only mounted by the
    /// early-mounts phase).
    pub cmdline: Option<KernelCmdline>,
    /// The hostname file for the node id fallback.
    pub hostname_file: PathBuf,
    /// Where `boot.json` goes (`/run/nodeinit`).
    pub run_dir: PathBuf,
    /// The handoff socket path.
    pub handoff_socket: PathBuf,
    /// Where nodeinit runs.
    pub placement: Placement,
    /// Used instead of the default plugin directory when that does not exist
    /// and the config did not name another (the sandbox: the build directory).
    pub fallback_plugin_dir: Option<PathBuf>,
    /// The nodeinit binary a worker is started from (`/proc/self/exe`).
    pub worker_program: PathBuf,
}

impl BootEnv {
    /// The environment of a real boot, read from this machine.
    pub fn from_system(config_arg: Option<PathBuf>) -> Self {
        Self {
            config_arg,
            default_config: None,
            cmdline: None,
            hostname_file: PathBuf::from("/etc/hostname"),
            run_dir: PathBuf::from("/run/nodeinit"),
            handoff_socket: PathBuf::from(hpc_node::namespace::HANDOFF_SOCKET_PATH),
            placement: Placement::detect(),
            fallback_plugin_dir: None,
            worker_program: worker_program(),
        }
    }

    /// Inside `nodeinit --sandbox`: PID 1 of a private PID namespace, the
    /// kernel command line ignored (it is the developer machine's), bare
    /// plugin names next to the nodeinit binary when the default plugin
    /// directory does not exist.
    pub fn for_sandbox(config: PathBuf) -> Self {
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf));
        Self {
            config_arg: Some(config),
            cmdline: Some(KernelCmdline::default()),
            placement: Placement::Sandbox,
            fallback_plugin_dir: exe_dir,
            ..Self::from_system(None)
        }
    }
}

/// This very binary, by its path (so the worker's `comm` is nodeinit's),
/// else `/proc/self/exe`.
fn worker_program() -> PathBuf {
    std::env::current_exe()
        .ok()
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
}

/// The handoff server's settings from the config (socket mode and group,
/// allowed peers), for the keeper's listener and the worker's server alike.
pub fn server_config(config: &NodeConfig, socket_path: &Path) -> ServerConfig {
    let access = config
        .handoff
        .as_ref()
        .map(|h| h.socket.clone())
        .unwrap_or_default();
    let defaults = ServerConfig::default();
    ServerConfig {
        socket_path: socket_path.to_path_buf(),
        socket_mode: if access.group.is_some() { 0o660 } else { 0o600 },
        socket_group: access.group,
        access: AccessPolicy {
            uids: access.uids,
            gids: access.gids,
        },
        max_connections: access
            .max_connections
            .map_or(defaults.max_connections, NonZeroUsize::get),
        max_queued_requests: access
            .max_queued_requests
            .map_or(defaults.max_queued_requests, NonZeroUsize::get),
        ready_wait: access
            .ready_wait_secs
            .map_or(defaults.ready_wait, Duration::from_secs),
        max_allocations: access
            .max_allocations
            .map_or(defaults.max_allocations, NonZeroUsize::get),
        max_allocations_per_peer: access
            .max_allocations_per_peer
            .map_or(defaults.max_allocations_per_peer, NonZeroUsize::get),
        idle_timeout: access
            .idle_timeout_secs
            .map_or(defaults.idle_timeout, |s| Duration::from_secs(s.get())),
        worker_threads: access
            .worker_threads
            .map_or(defaults.worker_threads, WorkerThreads::get),
        cgroup_root: if access.watch_cgroup_scopes {
            Some(access.cgroup_root.map_or_else(
                || {
                    defaults
                        .cgroup_root
                        .clone()
                        .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"))
                },
                |p| p.as_path().to_path_buf(),
            ))
        } else {
            None
        },
    }
}

/// Everything the boot prepared, for the handoff and for shutdown.
pub struct Prepared {
    /// The config, once read.
    pub config: Option<LoadedConfig>,
    /// The node id, once resolved.
    pub node_id: Option<NodeId>,
    /// The phases so far.
    pub phases: PhaseRunner,
    /// What the workers reported (plugins, boot mounts, allocations).
    pub facts: WorkerFacts,
    /// The worker that serves (supervise mode, no agent).
    pub worker: Option<WorkerProcess>,
    /// The worker that finished its phases and is exiting (exec mode):
    /// reaped in [`Prepared::release`], so its teardown overlaps the
    /// keeper's report and preflight instead of delaying them.
    pub exiting: Option<WorkerProcess>,
    /// The listening handoff socket (supervise mode), kept for every worker.
    pub listener: Option<HandoffListener>,
    /// The signal pipe (`None` if it could not be installed).
    pub signals: Option<&'static SignalPipe>,
    /// A shutdown signal that arrived during the boot.
    pub shutdown_requested: Option<ShutdownAction>,
    /// Backends left out because they killed a worker: (kind, reason).
    pub excluded: Vec<(String, String)>,
    /// The start message of the last worker (the template of the next).
    pub worker_start: Option<WorkerStart>,
    /// After boot: the state machine that keeps a worker serving.
    pub supervisor: Option<WorkerSupervisor>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("node_id", &self.node_id)
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// The report of what was done so far.
    pub fn report(&self, placement: Placement) -> BootReport {
        let phases = self.phases.records().to_vec();
        BootReport {
            nodeinit_version: env!("CARGO_PKG_VERSION").to_owned(),
            node_id: self.node_id.as_ref().map(|n| n.as_str().to_owned()),
            config: self.config.as_ref().map(|c| match c.origin.path() {
                Some(p) => p.display().to_string(),
                None => "<built-in>".to_owned(),
            }),
            pid1: placement.is_pid1(),
            total_ms: phases.iter().map(|p| p.elapsed_ms).sum(),
            phases,
            timeline: self.phases.spans(),
            plugins: self.facts.plugins.clone(),
            errors: self
                .phases
                .records()
                .iter()
                .filter(|r| matches!(r.status, PhaseStatus::Failed | PhaseStatus::Degraded))
                .map(|r| {
                    format!(
                        "phase {}: {}",
                        r.name,
                        r.detail.as_deref().unwrap_or("no detail")
                    )
                })
                .collect(),
            uptime_secs: uptime_secs(),
        }
    }

    /// Writes `boot.json` and the metrics file (the fleet view: once per
    /// boot, not after every phase — nothing scrapes it before the handoff,
    /// and each write costs a mountinfo read and two fsyncs).
    pub fn write_report(&self, env: &BootEnv) {
        let report = self.report(env.placement);
        match report.write_to(&env.run_dir) {
            Ok(path) => tracing::debug!(path = %path.display(), "boot report written"),
            Err(e) => tracing::warn!("boot report not written: {e}"),
        }
        if let Some(config) = &self.config {
            crate::metrics::publish(
                &crate::metrics::metrics_path(
                    config.config.host.metrics_file.as_path(),
                    &env.run_dir,
                ),
                &report,
                &crate::metrics::RuntimeCounts {
                    live_allocations: Some(self.facts.live_allocations.len() as u64),
                    mounted_images: crate::pid1::mounted_squashfs_images(),
                    ..Default::default()
                },
            );
        }
        if report
            .phases
            .iter()
            .any(|p| p.status == PhaseStatus::Failed)
        {
            tracing::error!("boot failed; see `nodeinit report`");
        }
    }

    /// Stops the serving worker (it releases the boot mounts and the
    /// server) and closes the listener. Idempotent.
    pub fn release(&mut self) {
        if let (Some(worker), Some(signals)) = (self.exiting.take(), self.signals) {
            if let Some(status) = worker.await_exit(signals.fd()) {
                tracing::debug!(status = %crate::keeper::describe_status(&status), "worker finished its phases");
            }
        }
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.stop(WORKER_STOP_GRACE);
        }
        if let (Some(worker), Some(signals)) = (self.worker.take(), self.signals) {
            if let Some(status) = worker.stop(WORKER_STOP_GRACE, signals.fd()) {
                tracing::info!(status = %crate::keeper::describe_status(&status), "worker stopped");
            }
        }
        if let Some(listener) = self.listener.take() {
            listener.unpublish();
        }
    }

    /// Hand the serving worker to the state machine that restarts it when
    /// it dies, for the keeper's loop ([`crate::keeper::KeeperLoop`]) to
    /// drive. `loop_reaps_all`: that loop reaps every child.
    pub fn keep_worker(&mut self, env: &BootEnv, loop_reaps_all: bool) {
        let (Some(worker), Some(start), Some(signals)) =
            (self.worker.take(), self.worker_start.clone(), self.signals)
        else {
            return;
        };
        let idle_timeout_secs = self
            .config
            .as_ref()
            .map_or(config::DEFAULT_PHASE_TIMEOUT_SECS, |c| {
                c.config.host.phase_timeout_secs
            });
        let metrics = self.config.as_ref().map(|c| {
            (
                crate::metrics::metrics_path(c.config.host.metrics_file.as_path(), &env.run_dir),
                self.report(env.placement),
            )
        });
        let setup = SupervisorSetup {
            metrics,
            program: env.worker_program.clone(),
            start,
            listener: self.listener.take(),
            facts: self.facts.clone(),
            idle_timeout_secs,
            backoff: RestartBackoff::new(
                DEFAULT_INITIAL_DELAY,
                DEFAULT_MAX_DELAY,
                DEFAULT_MAX_DELAY,
            ),
            signals,
            loop_reaps_all,
            control: match crate::control::ControlListener::bind(
                &env.run_dir.join(crate::control::CONTROL_SOCKET_FILE),
            ) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!("no nodeinit status/reload: {e}");
                    None
                }
            },
        };
        self.supervisor = Some(WorkerSupervisor::start(worker, setup));
    }

    fn required_kind(&self, kind: BackendKind) -> bool {
        self.config
            .as_ref()
            .and_then(|c| c.config.plugins.get(kind))
            .is_some_and(|s| s.required)
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        self.release();
    }
}

/// Runs the phases up to (and including) readiness.
pub fn prepare(env: &BootEnv) -> Prepared {
    let mut p = Prepared {
        config: None,
        node_id: None,
        phases: PhaseRunner::new(false),
        facts: WorkerFacts::default(),
        worker: None,
        exiting: None,
        listener: None,
        signals: None,
        shutdown_requested: None,
        excluded: Vec::new(),
        worker_start: None,
        supervisor: None,
    };
    // First, while the keeper is its only thread and has no signal
    // handler: the worker's process start then overlaps all that follows.
    // Not when the node's PID 1 has modules to load: their thread must
    // start first (they are the boot's critical path, and a fork after it
    // would copy a multi-threaded process), and a worker re-executed
    // after the config starts beside them anyway.
    let mut early_worker = if ModulesInBackground::will_load(env) {
        None
    } else {
        WorkerProcess::fork_for_boot(env.placement)
    };
    match SignalPipe::install() {
        Ok(s) => p.signals = Some(s),
        Err(e) => tracing::error!("signal handlers not installed: {e}"),
    }

    // Runs while the early mounts are made, the config is read and the
    // worker loads its plugins (table.rs: it needs none of them).
    let modules = ModulesInBackground::start(env, &mut p.phases);
    p.phases.run("early_mounts", || early_mounts(env));
    let mut loaded = None;
    p.phases.run("config", || match load_config(env) {
        Ok((cfg, id)) => {
            loaded = Some((cfg, id));
            PhaseResult::Ok
        }
        Err(e) => PhaseResult::Failed {
            reason: e,
            required: true,
        },
    });
    if let Some((cfg, id)) = loaded {
        p.phases
            .set_continue_after_failure(cfg.config.host.on_failure == config::OnFailure::Continue);
        super::set_on_failure(cfg.config.host.on_failure);
        p.config = Some(cfg);
        p.node_id = Some(id);
    }
    if p.config.is_some() && p.signals.is_some() {
        run_worker_phases(env, &mut p, modules.fd_for_worker(), early_worker.take());
    } else {
        for phase in worker_phases() {
            if !p.phases.skip_if_broken(phase.name) {
                p.phases.finish(
                    phase.name,
                    PhaseResult::Failed {
                        reason: "no signal handling: the keeper cannot watch a worker".into(),
                        required: true,
                    },
                    0.0,
                );
            }
        }
    }
    if let Some(unused) = early_worker {
        // No config: it never gets a start message.
        unused.dismiss();
    }
    // The handoff needs every module (the agent's mounts, the virtio disk).
    modules.finish(&mut p.phases);
    // The metrics file is written once, with boot.json, by every path that
    // follows ([`Prepared::write_report`]): nothing scrapes it before.
    p
}

/// The worker phases: one worker, and one more per optional backend that
/// killed one.
/// `early`: the boot's worker, forked ahead ([`WorkerProcess::fork_for_boot`]).
fn run_worker_phases(
    env: &BootEnv,
    p: &mut Prepared,
    modules: Option<std::os::fd::BorrowedFd<'_>>,
    mut early: Option<WorkerProcess>,
) {
    let (Some(cfg), Some(signals)) = (p.config.clone(), p.signals) else {
        return;
    };
    let config = &cfg.config;
    let supervised = config
        .handoff
        .as_ref()
        .is_some_and(|h| h.mode == HandoffMode::Supervise);
    let serve = config
        .handoff
        .as_ref()
        .is_none_or(|h| h.mode == HandoffMode::Supervise);
    let mut listener_error = None;
    if supervised && config.plugins.namespace.is_some() {
        match HandoffListener::bind(&server_config(config, &env.handoff_socket)) {
            Ok(l) => p.listener = Some(l),
            Err(e) => {
                listener_error = Some(format!(
                    "handoff socket {}: {e}",
                    env.handoff_socket.display()
                ))
            }
        }
    }
    let mut pending: Vec<String> = worker_phases().map(|s| s.name.to_owned()).collect();
    loop {
        let start = WorkerStart {
            task: WorkerTask::Boot,
            config_file: cfg.origin.path().map(Path::to_path_buf),
            plugin_dir: config.host.plugin_dir.as_path().to_path_buf(),
            node_id: p
                .node_id
                .as_ref()
                .map(|n| n.as_str().to_owned())
                .unwrap_or_default(),
            phases: pending.clone(),
            excluded: p.excluded.clone(),
            handoff_socket: env.handoff_socket.clone(),
            listener_passed: p.listener.is_some(),
            listener_error: listener_error.clone(),
            serve,
            boot_mounts: p.facts.boot_mounts.clone(),
            live_allocations: Vec::new(),
            modules_passed: false,
        };
        // The template of later workers (restarts, reloads): they resume,
        // and get no modules pipe.
        p.worker_start = Some(start.clone());
        let worker = match early
            .take()
            .map_or_else(|| WorkerProcess::launch(&env.worker_program), Ok)
        {
            Ok(w) => w,
            Err(e) => {
                fail_pending(p, &pending, &e.to_string());
                return;
            }
        };
        if let Err(e) = worker.start(&start, p.listener.as_ref(), modules) {
            worker.kill_and_reap(signals.fd());
            fail_pending(p, &pending, &e.to_string());
            return;
        }
        let mut phase_began = Instant::now();
        let end = {
            let (phases, facts, pending) = (&mut p.phases, &mut p.facts, &mut pending);
            watch(
                &worker,
                signals,
                env.placement,
                config.host.phase_timeout_secs,
                &mut |message| {
                    facts.absorb(message);
                    if let FromWorker::PhaseDone {
                        name,
                        result,
                        elapsed_ms,
                    } = message
                    {
                        phases.finish(name, result.clone(), *elapsed_ms);
                        pending.retain(|n| n != name);
                        phase_began = Instant::now();
                        // The metrics file is written with boot.json,
                        // not after each phase.
                    }
                },
            )
        };
        let (reason, step) = match end {
            WatchEnd::Serving => {
                p.worker = Some(worker);
                return;
            }
            WatchEnd::Finished => {
                p.exiting = Some(worker);
                skip_pending(p, &pending);
                return;
            }
            WatchEnd::Shutdown(action) => {
                p.shutdown_requested = Some(action);
                fail_pending(
                    p,
                    &pending,
                    &format!("shutdown requested ({})", action.as_str()),
                );
                return;
            }
            WatchEnd::Died { status, step } => (death_reason(&status, step.as_ref()), step),
            WatchEnd::Overran { step, timeout_secs } => {
                (overrun_reason(step.as_ref(), timeout_secs), step)
            }
        };
        tracing::error!(%reason, "worker lost");
        let phase = step
            .as_ref()
            .map(|s| s.phase.clone())
            .filter(|name| pending.contains(name))
            .or_else(|| pending.first().cloned());
        let Some(phase) = phase else {
            return;
        };
        let elapsed_ms = phase_began.elapsed().as_secs_f64() * 1e3;
        let optional = step
            .as_ref()
            .and_then(|s| s.kind.as_deref())
            .and_then(|k| BackendKind::ALL.into_iter().find(|kind| kind.name() == k))
            .filter(|kind| {
                !p.required_kind(*kind) && !p.excluded.iter().any(|(e, _)| e == kind.name())
            });
        match optional {
            Some(kind) => {
                p.phases.finish(
                    &phase,
                    PhaseResult::Failed {
                        reason: format!(
                            "{reason}; going on without the optional {} backend",
                            kind.name()
                        ),
                        required: false,
                    },
                    elapsed_ms,
                );
                p.excluded
                    .push((kind.name().to_owned(), format!("not loaded: {reason}")));
                pending.retain(|n| *n != phase);
            }
            None => {
                p.phases.finish(
                    &phase,
                    PhaseResult::Failed {
                        reason,
                        required: true,
                    },
                    elapsed_ms,
                );
                pending.retain(|n| *n != phase);
                skip_pending(p, &pending);
                if !p.phases.is_healthy() {
                    return;
                }
                // on_failure = continue: the rest still deserves a worker.
            }
        }
    }
}

fn skip_pending(p: &mut Prepared, pending: &[String]) {
    for name in pending {
        if !p.phases.skip_if_broken(name) {
            p.phases.finish(
                name,
                PhaseResult::NotApplicable("not run: the worker ended before it".into()),
                0.0,
            );
        }
    }
}

fn fail_pending(p: &mut Prepared, pending: &[String], reason: &str) {
    if let Some((first, rest)) = pending.split_first() {
        p.phases.finish(
            first,
            PhaseResult::Failed {
                reason: reason.to_owned(),
                required: true,
            },
            0.0,
        );
        skip_pending(p, rest);
    }
}

fn early_mounts(env: &BootEnv) -> PhaseResult {
    if !env.placement.is_pid1() {
        return PhaseResult::NotApplicable("not PID 1".into());
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let steps = pid1::plan_early_mounts(&pid1::mount_points(&mountinfo), Path::new("/"));
    if let Err(e) = pid1::apply_early_mounts(&steps, &pid1::CGROUP2_OPTION_ATTEMPTS) {
        return PhaseResult::Failed {
            reason: e.to_string(),
            required: true,
        };
    }
    if env.placement.is_node() {
        if let Err(e) = pid1::attach_stdio_to_console(Path::new("/dev/console")) {
            tracing::warn!("stdio not attached to /dev/console: {e}");
        }
        // PID 1 is the last process the OOM killer may take.
        if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "-1000") {
            tracing::warn!("oom_score_adj of PID 1 not set: {e}");
        }
        // Workers, holders and the handoff server's connections inherit it.
        if let Err(e) = nodeinit_handoff::raise_nofile_limit() {
            tracing::warn!("RLIMIT_NOFILE not raised: {e}");
        }
    }
    PhaseResult::Ok
}

fn load_config(env: &BootEnv) -> Result<(LoadedConfig, NodeId), String> {
    let cmdline = env.cmdline.clone().unwrap_or_else(KernelCmdline::from_proc);
    let mut loaded = config::load(
        env.config_arg.as_deref(),
        &cmdline,
        env.default_config.as_deref(),
    )
    .map_err(|e| e.to_string())?;
    if let Some(dir) = &env.fallback_plugin_dir {
        let plugin_dir = &mut loaded.config.host.plugin_dir;
        if plugin_dir.as_path() == Path::new(config::DEFAULT_PLUGIN_DIR)
            && !plugin_dir.as_path().exists()
        {
            *plugin_dir = config::AbsolutePath::try_from(dir.display().to_string())
                .map_err(|e| format!("plugin directory {}: {e}", dir.display()))?;
        }
    }
    let id = config::resolve_node_id(&cmdline, &loaded.config, &env.hostname_file)
        .map_err(|e| e.to_string())?;
    tracing::info!(config = ?loaded.origin, node_id = id.id.as_str(), node_id_source = ?id.source, "config loaded");
    Ok((loaded, id.id))
}
