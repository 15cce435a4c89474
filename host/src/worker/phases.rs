//! The worker's phases: load the plugins, then each worker phase of
//! [`crate::boot::PHASES`] the keeper asked for, every plugin call announced
//! to the keeper first (so a call that never returns, or kills the process,
//! is attributed to its phase, plugin and method). Before the first phase
//! that the table says needs the kernel modules, it waits for the keeper's
//! kernel-modules pipe to close (announced too: a keeper thread that hangs
//! is a deadline like any other).

use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;

use hpc_node::MountHandle;
use nodeinit_handoff::{HandoffListener, HandoffServer, ReadyGate};

use super::tracked::TrackedNamespaces;
use super::Reporter;
use crate::boot::{
    load_backends_observed, Backends, Excluded, PhaseResult, PluginRecord, BOOT_ALLOCATION,
};
use crate::config::{AgentKind, BackendKind, HandoffMode, LoadedConfig, OnFailure};
use crate::link::{FromWorker, StartDescriptors, StepReport, WorkerStart, WorkerTask};

/// What the worker holds.
pub struct WorkerState {
    config: LoadedConfig,
    node_id: String,
    backends: Backends,
    plugins: Vec<PluginRecord>,
    loaded: bool,
    pub(super) server: Option<HandoffServer>,
    gate: ReadyGate,
    pub(super) boot_mounts: Vec<MountHandle>,
    listener: Option<HandoffListener>,
    /// The keeper's kernel-modules pipe, until its EOF was read.
    modules_pipe: Option<OwnedFd>,
}

impl std::fmt::Debug for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerState")
            .field("node_id", &self.node_id)
            .field("backends", &self.backends)
            .finish_non_exhaustive()
    }
}

fn kind_by_name(name: &str) -> Option<BackendKind> {
    BackendKind::ALL.into_iter().find(|k| k.name() == name)
}

impl WorkerState {
    /// The state before any phase.
    /// `passed`: the descriptors that came with the start message.
    pub fn new(start: &WorkerStart, config: LoadedConfig, passed: StartDescriptors) -> Self {
        let listener = passed
            .listener
            .map(|fd| HandoffListener::inherited(fd, start.handoff_socket.clone()));
        // Only a boot waits for the modules.
        let modules_pipe = passed.modules.filter(|_| start.task == WorkerTask::Boot);
        crate::boot::set_on_failure(config.config.host.on_failure);
        Self {
            config,
            node_id: start.node_id.clone(),
            backends: Backends::default(),
            plugins: Vec::new(),
            loaded: false,
            server: None,
            gate: ReadyGate::new(),
            boot_mounts: start.boot_mounts.clone(),
            listener,
            modules_pipe,
        }
    }

    /// Blocks until the keeper's kernel-modules thread is done (EOF on the
    /// pipe), once; announced as a step of `phase`. Modules that failed do
    /// not stop the phase: what needs them fails with its own message.
    fn wait_for_modules(&mut self, reporter: &Reporter, phase: &str) {
        let Some(pipe) = self.modules_pipe.take() else {
            return;
        };
        self.step(reporter, phase, None, "wait for kernel_modules");
        let mut bytes = Vec::new();
        match std::fs::File::from(pipe).read_to_end(&mut bytes) {
            Ok(_) if bytes.first() == Some(&crate::boot::MODULES_OK) => {
                tracing::debug!("worker: kernel modules are in");
            }
            // An earlier worker of this boot (one an optional plugin killed) took the byte.
            Ok(_) if bytes.is_empty() => {
                tracing::debug!("worker: kernel modules done (result read by an earlier worker)");
            }
            Ok(_) => tracing::info!(
                "worker: the kernel_modules phase did not load every module; going on"
            ),
            Err(e) => tracing::warn!("worker: reading the kernel-modules pipe: {e}; going on"),
        }
    }

    fn required(&self, kind: BackendKind) -> bool {
        self.config
            .config
            .plugins
            .get(kind)
            .is_some_and(|s| s.required)
    }

    fn step(&self, reporter: &Reporter, phase: &str, kind: Option<BackendKind>, method: &str) {
        let host = &self.config.config.host;
        let spec = kind.and_then(|k| self.config.config.plugins.get(k));
        let plugin = kind.and_then(|k| {
            self.plugins
                .iter()
                .find(|r| r.kind == k.name())
                .and_then(|r| r.name.clone())
        });
        reporter.step(StepReport {
            phase: phase.to_owned(),
            kind: kind.map(|k| k.name().to_owned()),
            plugin,
            method: method.to_owned(),
            timeout_secs: spec.map_or(host.phase_timeout_secs, |s| s.timeout_secs(host)),
        });
    }

    /// Loads and constructs the plugins (once), announcing each call.
    fn load(&mut self, start: &WorkerStart, reporter: &Reporter, phase: &str) -> PhaseResult {
        let excluded: Vec<Excluded> = start
            .excluded
            .iter()
            .filter_map(|(kind, reason)| {
                kind_by_name(kind).map(|kind| Excluded {
                    kind,
                    reason: reason.clone(),
                })
            })
            .collect();
        let config = self.config.config.clone();
        let host = config.host.clone();
        let loaded = load_backends_observed(&config, &excluded, &mut |kind, plugin, method| {
            let timeout_secs = config
                .plugins
                .get(kind)
                .map_or(host.phase_timeout_secs, |s| s.timeout_secs(&host));
            reporter.step(StepReport {
                phase: phase.to_owned(),
                kind: Some(kind.name().to_owned()),
                plugin: Some(plugin.to_owned()),
                method: method.to_owned(),
                timeout_secs,
            });
        });
        self.loaded = true;
        let errors = loaded.errors();
        let required_failed = loaded.required_failed();
        self.backends = loaded.backends;
        self.plugins = loaded.records;
        reporter.send(&FromWorker::Plugins(self.plugins.clone()));
        if errors.is_empty() {
            PhaseResult::Ok
        } else {
            PhaseResult::Failed {
                reason: errors.join("; "),
                required: required_failed,
            }
        }
    }

    /// Runs what `start` asks; returns whether the node is healthy (no
    /// required failure, or `on_failure = continue`).
    pub fn run(&mut self, start: &WorkerStart, reporter: &Reporter) -> bool {
        let continue_after_failure = self.config.config.host.on_failure == OnFailure::Continue;
        let phases = match start.task {
            WorkerTask::Boot => start.phases.clone(),
            WorkerTask::Resume => Vec::new(),
        };
        for name in &phases {
            if crate::boot::waits_for(name, crate::boot::KERNEL_MODULES) {
                self.wait_for_modules(reporter, name);
            }
            let begun = Instant::now();
            let result = if name == "plugins" {
                self.load(start, reporter, name)
            } else {
                if !self.loaded {
                    // A retry that resumes after the plugins phase still needs them.
                    let _ = self.load(start, reporter, name);
                }
                self.run_phase(name, start, reporter)
            };
            let failed_required = matches!(result, PhaseResult::Failed { required: true, .. });
            let reason = match &result {
                PhaseResult::Failed { reason, .. } => format!("phase {name} failed: {reason}"),
                _ => String::new(),
            };
            reporter.send(&FromWorker::PhaseDone {
                name: name.clone(),
                result,
                elapsed_ms: begun.elapsed().as_secs_f64() * 1e3,
            });
            if failed_required && !continue_after_failure {
                self.fail(reporter, &reason);
                return false;
            }
        }
        if !self.loaded {
            let _ = self.load(start, reporter, "restart");
        }
        if start.task == WorkerTask::Resume {
            self.resume(start, reporter);
        }
        true
    }

    fn run_phase(&mut self, name: &str, start: &WorkerStart, reporter: &Reporter) -> PhaseResult {
        match name {
            "cgroup_hierarchy" => self.cgroup_hierarchy(reporter),
            "boot_mounts" => self.boot_mounts(reporter),
            "handoff_socket" => self.handoff_socket(start, reporter),
            "readiness" => self.readiness(reporter),
            other => PhaseResult::Failed {
                reason: format!(
                    "the worker has no phase {other:?} (keeper and worker of different versions?)"
                ),
                required: true,
            },
        }
    }

    fn cgroup_hierarchy(&self, reporter: &Reporter) -> PhaseResult {
        let Some(cg) = &self.backends.cgroup else {
            return PhaseResult::NotApplicable("no cgroup backend".into());
        };
        self.step(
            reporter,
            "cgroup_hierarchy",
            Some(BackendKind::Cgroup),
            "create_hierarchy",
        );
        match cg.create_hierarchy() {
            Ok(()) => PhaseResult::Ok,
            Err(e) => PhaseResult::Failed {
                reason: e.to_string(),
                required: self.required(BackendKind::Cgroup),
            },
        }
    }

    fn boot_mounts(&mut self, reporter: &Reporter) -> PhaseResult {
        let images = self.config.config.boot.mounts.clone();
        if images.is_empty() {
            return PhaseResult::NotApplicable("no [boot].mounts".into());
        }
        let Some(mount) = self.backends.mount.clone() else {
            return PhaseResult::Failed {
                reason: "[boot].mounts is set but no mount backend is loaded".into(),
                required: true,
            };
        };
        for image in &images {
            self.step(
                reporter,
                "boot_mounts",
                Some(BackendKind::Mount),
                "acquire_for",
            );
            match mount.acquire_for(BOOT_ALLOCATION, image.as_str()) {
                Ok(h) => {
                    tracing::info!(image = image.as_str(), mount_point = %h.mount_point, "boot mount");
                    self.boot_mounts.push(h);
                }
                Err(e) => {
                    reporter.send(&FromWorker::BootMounts(self.boot_mounts.clone()));
                    return PhaseResult::Failed {
                        reason: e.to_string(),
                        required: self.required(BackendKind::Mount),
                    };
                }
            }
        }
        reporter.send(&FromWorker::BootMounts(self.boot_mounts.clone()));
        PhaseResult::Ok
    }

    /// Serves the inherited listener against the namespace backend.
    fn start_server(&mut self, start: &WorkerStart, reporter: &Reporter) -> Result<(), String> {
        let Some(ns) = self.backends.namespace.clone() else {
            return Ok(());
        };
        let Some(listener) = self.listener.take() else {
            return Err(start
                .listener_error
                .clone()
                .unwrap_or_else(|| "the keeper passed no handoff listener".to_owned()));
        };
        let tracked = Arc::new(TrackedNamespaces::new(ns, reporter.channel_clone()));
        let server_config = crate::boot::server_config(&self.config.config, &start.handoff_socket);
        match HandoffServer::serve(tracked, listener, server_config, self.gate.clone()) {
            Ok(s) => {
                self.server = Some(s);
                Ok(())
            }
            Err(e) => Err(format!(
                "handoff socket {}: {e}",
                start.handoff_socket.display()
            )),
        }
    }

    fn handoff_socket(&mut self, start: &WorkerStart, reporter: &Reporter) -> PhaseResult {
        let supervised = self
            .config
            .config
            .handoff
            .as_ref()
            .is_some_and(|h| h.mode == HandoffMode::Supervise);
        if !supervised {
            return PhaseResult::NotApplicable("handoff mode is not supervise".into());
        }
        if self.backends.namespace.is_none() {
            return PhaseResult::NotApplicable("no namespace backend".into());
        }
        self.step(
            reporter,
            "handoff_socket",
            Some(BackendKind::Namespace),
            "serve",
        );
        match self.start_server(start, reporter) {
            Ok(()) => PhaseResult::Ok,
            Err(reason) => PhaseResult::Failed {
                reason,
                required: self.required(BackendKind::Namespace),
            },
        }
    }

    fn agent_is_pact(&self) -> bool {
        self.config
            .config
            .handoff
            .as_ref()
            .is_some_and(|h| h.agent == AgentKind::Pact)
    }

    /// pact-agent writes its ready file itself at the end of its own boot:
    /// nodeinit never writes it. In supervise mode the handoff gate opens
    /// when the file appears (inotify, no polling); queued requests wait
    /// until then.
    fn open_gate_for_pact(&self) -> PhaseResult {
        if self.server.is_none() {
            self.gate.open();
            return PhaseResult::NotApplicable(
                "pact-agent signals readiness itself (/run/pact/ready)".into(),
            );
        }
        match crate::agent::spawn_pact_ready_watch(
            std::path::PathBuf::from(crate::agent::PACT_READY_FILE),
            self.gate.clone(),
        ) {
            Ok(_watch) => PhaseResult::NotApplicable(format!(
                "pact-agent signals readiness itself ({}); the handoff gate opens when it appears",
                crate::agent::PACT_READY_FILE
            )),
            Err(e) => {
                self.gate.open();
                PhaseResult::Failed {
                    reason: format!(
                        "cannot watch {}: {e}; handoff gate opened now",
                        crate::agent::PACT_READY_FILE
                    ),
                    required: false,
                }
            }
        }
    }

    fn readiness(&self, reporter: &Reporter) -> PhaseResult {
        if self.agent_is_pact() {
            return self.open_gate_for_pact();
        }
        let Some(rd) = &self.backends.readiness else {
            self.gate.open();
            return PhaseResult::NotApplicable("no readiness backend".into());
        };
        self.step(
            reporter,
            "readiness",
            Some(BackendKind::Readiness),
            "signal_ready",
        );
        match rd.signal_ready(&self.node_id) {
            Ok(()) => {
                self.gate.open();
                PhaseResult::Ok
            }
            Err(e) => PhaseResult::Failed {
                reason: e.to_string(),
                required: self.required(BackendKind::Readiness),
            },
        }
    }

    /// A required phase failed: waiters learn why.
    fn fail(&self, reporter: &Reporter, reason: &str) {
        if let Some(rd) = &self.backends.readiness {
            self.step(
                reporter,
                "readiness",
                Some(BackendKind::Readiness),
                "signal_failed",
            );
            if let Err(e) = rd.signal_failed(reason) {
                tracing::warn!("signal_failed: {e}");
            }
        }
        self.gate.fail(reason.to_owned());
    }

    /// Take over a running node: rebuild the mount references from the
    /// kernel and the allocations that are still live, serve again, and
    /// serve readiness again (the node was ready).
    fn resume(&mut self, start: &WorkerStart, reporter: &Reporter) {
        let mut live = Vec::new();
        if let Some(ns) = &self.backends.namespace {
            for id in &start.live_allocations {
                self.step(
                    reporter,
                    "restart",
                    Some(BackendKind::Namespace),
                    "namespace_fds",
                );
                match ns.namespace_fds(id) {
                    Ok(_fds) => live.push(id.clone()),
                    Err(e) => {
                        tracing::info!(allocation = %id, "not live after the restart: {e}");
                        reporter.send(&FromWorker::Allocation(
                            crate::link::AllocationEvent::Ended(id.clone()),
                        ));
                    }
                }
            }
        }
        if let Some(mount) = &self.backends.mount {
            let mut active = live.clone();
            if !self.boot_mounts.is_empty() {
                active.push(BOOT_ALLOCATION.to_owned());
            }
            self.step(
                reporter,
                "restart",
                Some(BackendKind::Mount),
                "reconstruct_state",
            );
            if let Err(e) = mount.reconstruct_state(&active) {
                tracing::error!("mount state not rebuilt: {e}");
            }
        }
        if start.serve && self.backends.namespace.is_some() {
            self.step(reporter, "restart", Some(BackendKind::Namespace), "serve");
            if let Err(e) = self.start_server(start, reporter) {
                tracing::error!("handoff server not restarted: {e}");
            }
        }
        // The node was ready (or, for pact, becomes ready when its file
        // appears: a worker that died before pact finished must not open early).
        if self.agent_is_pact() {
            let _ = self.open_gate_for_pact();
        } else {
            self.gate.open();
        }
        if !self.agent_is_pact() {
            if let Some(rd) = &self.backends.readiness {
                self.step(
                    reporter,
                    "restart",
                    Some(BackendKind::Readiness),
                    "signal_ready",
                );
                if let Err(e) = rd.signal_ready(&self.node_id) {
                    tracing::error!("readiness not signalled again: {e}");
                }
            }
        }
        tracing::info!(live = ?live, "worker resumed");
    }

    /// The plugin records, each with the sha256 of its file.
    pub fn plugins_with_sha256(&self) -> Vec<PluginRecord> {
        let mut records = self.plugins.clone();
        for r in records
            .iter_mut()
            .filter(|r| r.sha256.is_none() && r.error.is_none())
        {
            r.sha256 = crate::loader::loaded_sha256(std::path::Path::new(&r.path));
        }
        records
    }

    /// Releases what boot acquired (boot mounts, the server). Idempotent.
    pub fn release(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        if let Some(mount) = &self.backends.mount {
            for handle in self.boot_mounts.drain(..) {
                if let Err(e) = mount.release_for(BOOT_ALLOCATION, &handle) {
                    tracing::warn!(image = %handle.image_path, "release of boot mount failed: {e}");
                }
            }
        }
    }
}
