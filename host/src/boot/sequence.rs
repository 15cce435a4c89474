//! The boot sequence up to the handoff (DESIGN.md §5 "Phases"): early
//! mounts (PID 1 only) → config → plugins → cgroup hierarchy → boot mounts →
//! handoff socket (supervise mode) → readiness. Each phase is timed and
//! logged; a failed required phase stops the later ones.
//!
//! Never applies `on_failure` and never hands off: the caller decides what
//! a failure means (exit, shell, reboot) and runs the agent.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hpc_node::MountHandle;
use nodeinit_handoff::{AccessPolicy, HandoffServer, ReadyGate, ServerConfig};

use super::backends::{load_backends, Backends, PluginRecord};
use super::phases::{PhaseResult, PhaseRunner, PhaseStatus};
use super::report::{uptime_secs, BootReport};
use crate::config::{
    self, AgentKind, BackendKind, HandoffMode, KernelCmdline, LoadedConfig, NodeId,
};
use crate::pid1;

/// The allocation id under which boot mounts are held.
pub const BOOT_ALLOCATION: &str = "nodeinit-boot";

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
    /// nodeinit is PID 1 (of its PID namespace).
    pub is_pid1: bool,
    /// Running as `nodeinit --sandbox`.
    pub sandbox: bool,
    /// Used instead of the default plugin directory when that does not exist
    /// and the config did not name another (the sandbox: the build directory).
    pub fallback_plugin_dir: Option<PathBuf>,
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
            is_pid1: pid1::is_pid1(),
            sandbox: false,
            fallback_plugin_dir: None,
        }
    }
}

impl BootEnv {
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
            default_config: None,
            cmdline: Some(KernelCmdline::default()),
            hostname_file: PathBuf::from("/etc/hostname"),
            run_dir: PathBuf::from("/run/nodeinit"),
            handoff_socket: PathBuf::from(hpc_node::namespace::HANDOFF_SOCKET_PATH),
            is_pid1: true,
            sandbox: true,
            fallback_plugin_dir: exe_dir,
        }
    }
}

/// Everything the boot prepared, for the handoff and for shutdown.
pub struct Prepared {
    /// The config, once read.
    pub config: Option<LoadedConfig>,
    /// The node id, once resolved.
    pub node_id: Option<NodeId>,
    /// The constructed backends.
    pub backends: Backends,
    /// Plugin records.
    pub plugins: Vec<PluginRecord>,
    /// The handoff server (supervise mode).
    pub server: Option<HandoffServer>,
    /// Opened at readiness; failed on boot failure.
    pub gate: ReadyGate,
    /// Images acquired in the boot-mounts phase (released at shutdown).
    pub boot_mounts: Vec<MountHandle>,
    /// The phases so far.
    pub phases: PhaseRunner,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("node_id", &self.node_id)
            .field("backends", &self.backends)
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// The report of what was done so far.
    pub fn report(&self, is_pid1: bool) -> BootReport {
        let phases = self.phases.records().to_vec();
        BootReport {
            nodeinit_version: env!("CARGO_PKG_VERSION").to_owned(),
            node_id: self.node_id.as_ref().map(|n| n.as_str().to_owned()),
            config: self.config.as_ref().map(|c| match c.origin.path() {
                Some(p) => p.display().to_string(),
                None => "<built-in>".to_owned(),
            }),
            pid1: is_pid1,
            total_ms: phases.iter().map(|p| p.elapsed_ms).sum(),
            phases,
            plugins: self.plugins.clone(),
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

/// Runs the phases up to (and including) readiness.
pub fn prepare(env: &BootEnv) -> Prepared {
    let mut p = Prepared {
        config: None,
        node_id: None,
        backends: Backends::default(),
        plugins: Vec::new(),
        server: None,
        gate: ReadyGate::new(),
        boot_mounts: Vec::new(),
        phases: PhaseRunner::new(false),
    };

    p.phases.run("early_mounts", || early_mounts(env));
    p.phases.run("kernel_modules", || kernel_modules(env));

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
    let Some(cfg) = p.config.clone() else {
        skip_rest(&mut p.phases);
        return p;
    };
    let config = &cfg.config;

    let mut loaded = None;
    p.phases.run("plugins", || {
        let l = load_backends(config);
        let errs = l.errors();
        let result = if errs.is_empty() {
            PhaseResult::Ok
        } else {
            PhaseResult::Failed {
                reason: errs.join("; "),
                required: l.required_failed(),
            }
        };
        loaded = Some(l);
        result
    });
    let required = |kind: BackendKind| config.plugins.get(kind).is_some_and(|s| s.required);
    if let Some(l) = loaded {
        p.backends = l.backends;
        p.plugins = l.records;
    }

    let backends = p.backends.clone();
    p.phases.run("cgroup_hierarchy", || match &backends.cgroup {
        None => PhaseResult::NotApplicable("no cgroup backend".into()),
        Some(cg) => match cg.create_hierarchy() {
            Ok(()) => PhaseResult::Ok,
            Err(e) => PhaseResult::Failed {
                reason: e.to_string(),
                required: required(BackendKind::Cgroup),
            },
        },
    });

    let mut acquired = Vec::new();
    p.phases.run("boot_mounts", || {
        if config.boot.mounts.is_empty() {
            return PhaseResult::NotApplicable("no [boot].mounts".into());
        }
        let Some(mount) = &backends.mount else {
            return PhaseResult::Failed { reason: "[boot].mounts is set but no mount backend is loaded".into(), required: true };
        };
        for image in &config.boot.mounts {
            match mount.acquire_for(BOOT_ALLOCATION, image.as_str()) {
                Ok(h) => {
                    tracing::info!(image = image.as_str(), mount_point = %h.mount_point, "boot mount");
                    acquired.push(h);
                }
                Err(e) => return PhaseResult::Failed { reason: e.to_string(), required: required(BackendKind::Mount) },
            }
        }
        PhaseResult::Ok
    });
    p.boot_mounts = acquired;

    let supervised = config
        .handoff
        .as_ref()
        .filter(|h| h.mode == HandoffMode::Supervise);
    let mut server = None;
    p.phases.run("handoff_socket", || {
        let Some(handoff) = supervised else {
            return PhaseResult::NotApplicable("handoff mode is not supervise".into());
        };
        let Some(ns) = &backends.namespace else {
            return PhaseResult::NotApplicable("no namespace backend".into());
        };
        let access = &handoff.socket;
        let server_config = ServerConfig {
            socket_path: env.handoff_socket.clone(),
            socket_mode: if access.group.is_some() { 0o660 } else { 0o600 },
            socket_group: access.group,
            access: AccessPolicy {
                uids: access.uids.clone(),
                gids: access.gids.clone(),
            },
            ..ServerConfig::default()
        };
        match HandoffServer::start(Arc::clone(ns), server_config, p.gate.clone()) {
            Ok(s) => {
                server = Some(s);
                PhaseResult::Ok
            }
            Err(e) => PhaseResult::Failed {
                reason: format!("handoff socket {}: {e}", env.handoff_socket.display()),
                required: required(BackendKind::Namespace),
            },
        }
    });
    p.server = server;

    let node_id = p.node_id.clone();
    let agent_is_pact = config
        .handoff
        .as_ref()
        .is_some_and(|h| h.agent == AgentKind::Pact);
    let gate = p.gate.clone();
    p.phases.run("readiness", || {
        if agent_is_pact {
            gate.open();
            return PhaseResult::NotApplicable(
                "pact-agent signals readiness itself (/run/pact/ready)".into(),
            );
        }
        let Some(rd) = &backends.readiness else {
            gate.open();
            return PhaseResult::NotApplicable("no readiness backend".into());
        };
        let id = node_id.as_ref().map(NodeId::as_str).unwrap_or_default();
        match rd.signal_ready(id) {
            Ok(()) => {
                gate.open();
                PhaseResult::Ok
            }
            Err(e) => PhaseResult::Failed {
                reason: e.to_string(),
                required: required(BackendKind::Readiness),
            },
        }
    });
    p
}

fn skip_rest(phases: &mut PhaseRunner) {
    for name in [
        "plugins",
        "cgroup_hierarchy",
        "boot_mounts",
        "handoff_socket",
        "readiness",
    ] {
        phases.run(name, || PhaseResult::NotApplicable("no config".into()));
    }
}

fn early_mounts(env: &BootEnv) -> PhaseResult {
    if !env.is_pid1 {
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
    if !env.sandbox {
        if let Err(e) = pid1::attach_stdio_to_console(Path::new("/dev/console")) {
            tracing::warn!("stdio not attached to /dev/console: {e}");
        }
    }
    PhaseResult::Ok
}

fn kernel_modules(env: &BootEnv) -> PhaseResult {
    if !env.is_pid1 || env.sandbox {
        return PhaseResult::NotApplicable("not the node's PID 1".into());
    }
    let Some(list) = crate::kernel_modules::list_path(Path::new("/")) else {
        return PhaseResult::NotApplicable("uname failed".into());
    };
    match crate::kernel_modules::load_listed(&list) {
        Ok(None) => PhaseResult::NotApplicable(format!("no {}", list.display())),
        Ok(Some(done)) if done.failed.is_empty() => {
            tracing::info!(loaded = ?done.loaded, already = ?done.present, "kernel modules");
            PhaseResult::Ok
        }
        // Not fatal by itself: what needs the module fails later, with its own message.
        Ok(Some(done)) => PhaseResult::Failed {
            reason: done.failed.join("; "),
            required: false,
        },
        Err(e) => PhaseResult::Failed {
            reason: e,
            required: false,
        },
    }
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
