//! The config schema: what each table and key means and its default. Every
//! table rejects unknown keys so that a typo is an error, not a silent default.

use std::collections::BTreeMap;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;

use nodeinit_plugin_api::BackendKind;
use serde::Deserialize;

use crate::config::defaults::{DEFAULT_GRACE_SECS, DEFAULT_PHASE_TIMEOUT_SECS, DEFAULT_PLUGIN_DIR};
use crate::config::{
    AbsolutePath, EnvName, ImageRef, NodeId, PluginPath, Sha256Pin, StopSignal, Template,
};

/// The whole config file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// `[host]`: nodeinit itself.
    #[serde(default)]
    pub host: HostSection,
    /// `[plugins.<kind>]`: the backends.
    #[serde(default)]
    pub plugins: PluginsSection,
    /// `[boot]`: what to prepare during boot.
    #[serde(default)]
    pub boot: BootSection,
    /// `[handoff]`: the agent to hand the node to. Absent: no agent; nodeinit
    /// stays PID 1, serves its sockets and waits for a shutdown signal.
    pub handoff: Option<HandoffSection>,
    /// The file and text it was parsed from (not a key: set by the loader),
    /// so a plugin's option error can name the line it came from.
    #[serde(skip)]
    pub source: Option<ConfigSource>,
}

/// Where a config's text came from.
///
/// Provenance, not content: two configs that say the same are equal
/// whatever file they were read from, so every `ConfigSource` compares equal.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The file (as given; for messages).
    pub path: PathBuf,
    /// Its text.
    pub text: String,
}

impl PartialEq for ConfigSource {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl NodeConfig {
    /// A plugin's option error, at the file and line of the key it names:
    /// `file:line: plugins.<kind>.options.<key>: <message>`; the message alone
    /// when the config has no source text.
    pub fn option_error(&self, kind: BackendKind, key: &str, message: &str) -> String {
        match &self.source {
            Some(src) => {
                crate::config::option_error(&src.path, &src.text, kind.name(), key, message)
            }
            None => message.to_owned(),
        }
    }
}

/// `[host]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSection {
    /// Directory of bare-named plugins (default `/usr/lib/nodeinit/plugins`).
    #[serde(default = "default_plugin_dir")]
    pub plugin_dir: AbsolutePath,
    /// What to do when a required phase fails (default `shell`).
    #[serde(default)]
    pub on_failure: OnFailure,
    /// The node id, when neither the kernel command line nor `/etc/hostname` should give it.
    #[serde(default)]
    pub node_id: Option<NodeId>,
    /// Seconds a plugin call may take before the keeper kills the worker
    /// and fails the phase (default 60; a plugin's `timeout_secs` overrides it).
    #[serde(default = "default_phase_timeout_secs")]
    pub phase_timeout_secs: u64,
    /// Prometheus text file written after each boot phase and worker restart
    /// (default `/run/nodeinit/metrics.prom`; point node_exporter's textfile
    /// collector at its directory).
    #[serde(default = "default_metrics_file")]
    pub metrics_file: AbsolutePath,
}

impl Default for HostSection {
    fn default() -> Self {
        Self {
            plugin_dir: default_plugin_dir(),
            on_failure: OnFailure::default(),
            node_id: None,
            phase_timeout_secs: DEFAULT_PHASE_TIMEOUT_SECS,
            metrics_file: default_metrics_file(),
        }
    }
}

fn default_phase_timeout_secs() -> u64 {
    DEFAULT_PHASE_TIMEOUT_SECS
}

fn default_metrics_file() -> AbsolutePath {
    // The constant is a valid absolute path; `try_from` cannot fail on it.
    AbsolutePath::try_from(crate::metrics::DEFAULT_METRICS_FILE.to_owned())
        .unwrap_or_else(|_| unreachable!("DEFAULT_METRICS_FILE is absolute"))
}

fn default_plugin_dir() -> AbsolutePath {
    // The constant is a valid absolute path; `try_from` cannot fail on it.
    AbsolutePath::try_from(DEFAULT_PLUGIN_DIR.to_owned())
        .unwrap_or_else(|_| unreachable!("DEFAULT_PLUGIN_DIR is absolute"))
}

/// The action taken when a required phase fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// A shell on the console for the administrator (reboot when there is no `/bin/sh`).
    #[default]
    Shell,
    /// Reboot the node.
    Reboot,
    /// Power the node off.
    Poweroff,
    /// Halt the node.
    Halt,
    /// Log the failure and carry on with the next phases.
    Continue,
}

impl OnFailure {
    /// The spelling used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shell => "shell",
            Self::Reboot => "reboot",
            Self::Poweroff => "poweroff",
            Self::Halt => "halt",
            Self::Continue => "continue",
        }
    }
}

/// `[plugins]`: one optional table per backend kind.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsSection {
    /// `[plugins.cgroup]`.
    pub cgroup: Option<PluginSpec>,
    /// `[plugins.mount]`.
    pub mount: Option<PluginSpec>,
    /// `[plugins.namespace]`.
    pub namespace: Option<PluginSpec>,
    /// `[plugins.readiness]`.
    pub readiness: Option<PluginSpec>,
}

impl PluginsSection {
    /// The configured plugin of `kind`.
    pub fn get(&self, kind: BackendKind) -> Option<&PluginSpec> {
        match kind {
            BackendKind::Cgroup => self.cgroup.as_ref(),
            BackendKind::Mount => self.mount.as_ref(),
            BackendKind::Namespace => self.namespace.as_ref(),
            BackendKind::Readiness => self.readiness.as_ref(),
        }
    }

    /// Configured plugins with their kind, in [`BackendKind::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (BackendKind, &PluginSpec)> {
        BackendKind::ALL
            .into_iter()
            .filter_map(|kind| self.get(kind).map(|spec| (kind, spec)))
    }
}

/// `[plugins.<kind>]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// Bare name (resolved in `plugin_dir`) or absolute path of the `.so`.
    pub path: PluginPath,
    /// Whether failing to load or construct this backend stops the boot (default true).
    #[serde(default = "default_true")]
    pub required: bool,
    /// Optional SHA-256 pin of the `.so` file.
    #[serde(default)]
    pub sha256: Option<Sha256Pin>,
    /// Seconds each call into this plugin may take (default `[host].phase_timeout_secs`).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// `[plugins.<kind>.options]`: handed to the plugin as JSON; the plugin
    /// rejects keys it does not know.
    #[serde(default)]
    pub options: toml::Table,
}

fn default_true() -> bool {
    true
}

impl PluginSpec {
    /// The `.so` to load.
    pub fn resolved_path(&self, plugin_dir: &AbsolutePath) -> PathBuf {
        self.path.resolve(plugin_dir.as_path())
    }

    /// The deadline of one call into this plugin.
    pub fn timeout_secs(&self, host: &HostSection) -> u64 {
        self.timeout_secs.unwrap_or(host.phase_timeout_secs)
    }

    /// The options re-encoded as JSON, as the plugin ABI takes them.
    ///
    /// # Errors
    ///
    /// A message when a value has no JSON form (none of TOML's do today).
    pub fn options_json(&self) -> Result<String, String> {
        serde_json::to_string(&self.options)
            .map_err(|e| format!("options cannot be encoded as JSON: {e}"))
    }
}

/// `[boot]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSection {
    /// Images the mount backend acquires during boot (default none).
    #[serde(default)]
    pub mounts: Vec<ImageRef>,
}

/// `[handoff]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoffSection {
    /// Which agent this is; decides the preflight checks.
    pub agent: AgentKind,
    /// Absolute path of the agent binary.
    pub exec: AbsolutePath,
    /// Its arguments (default none); `{node_id}` is replaced by the
    /// resolved node id (see `agent::AgentCommand::for_node`).
    #[serde(default)]
    pub args: Vec<Template>,
    /// `[handoff.env]`: variables set in the agent's environment on top of
    /// nodeinit's own; values may use `{node_id}` too.
    #[serde(default)]
    pub env: BTreeMap<EnvName, Template>,
    /// `exec` (the agent replaces nodeinit) or `supervise` (default `exec`).
    #[serde(default)]
    pub mode: HandoffMode,
    /// Seconds between the stop signal and SIGKILL when stopping a supervised agent (default 10).
    #[serde(default = "default_grace_secs")]
    pub grace_secs: u64,
    /// The signal a supervised agent gets at shutdown; default
    /// [`AgentKind::default_stop_signal`]. Read it through
    /// [`HandoffSection::effective_stop_signal`].
    #[serde(default)]
    pub stop_signal: Option<StopSignal>,
    /// `[handoff.socket]`: who may use the namespace handoff socket.
    #[serde(default)]
    pub socket: HandoffSocketSection,
}

impl HandoffSection {
    /// The signal that stops the supervised agent: `handoff.stop_signal`,
    /// else the agent's default.
    pub fn effective_stop_signal(&self) -> nix::sys::signal::Signal {
        self.stop_signal
            .map_or_else(|| self.agent.default_stop_signal(), StopSignal::signal)
    }
}

/// `[handoff.socket]`: access to the namespace handoff socket (served in
/// supervise mode). Root may always connect.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoffSocketSection {
    /// Group owning the socket file; when set, the socket is mode 0660 so
    /// that the group's members can connect (default: root only, 0600).
    #[serde(default)]
    pub group: Option<u32>,
    /// Further uids allowed to make requests (checked with `SO_PEERCRED`).
    #[serde(default)]
    pub uids: Vec<u32>,
    /// Further gids allowed to make requests: a peer's primary or any
    /// supplementary group (`SO_PEERGROUPS`, else `/proc/<pid>/status`).
    #[serde(default)]
    pub gids: Vec<u32>,
    /// Authorised connections served at once (default 256); beyond: `busy`.
    #[serde(default)]
    pub max_connections: Option<NonZeroUsize>,
    /// Requests that may wait for readiness at once (default 64); beyond: `busy`.
    #[serde(default)]
    pub max_queued_requests: Option<NonZeroUsize>,
    /// Seconds a request waits for readiness before `not_ready` (default 120).
    #[serde(default)]
    pub ready_wait_secs: Option<u64>,
    /// Live allocations in total (default 4096); beyond: `busy`.
    #[serde(default)]
    pub max_allocations: Option<NonZeroUsize>,
    /// Live allocations one peer uid may own (default 1024); beyond: `busy`.
    #[serde(default)]
    pub max_allocations_per_peer: Option<NonZeroUsize>,
    /// Seconds an idle connection that owns no live allocation is kept (default 60).
    #[serde(default)]
    pub idle_timeout_secs: Option<NonZeroU64>,
    /// Threads that create and release namespaces (default 4).
    #[serde(default)]
    pub worker_threads: Option<WorkerThreads>,
    /// The cgroup2 root a request's `cgroup_scope` is relative to (WI5,
    /// default `/sys/fs/cgroup`).
    #[serde(default)]
    pub cgroup_root: Option<AbsolutePath>,
    /// Release an allocation when its cgroup scope empties (WI5; default true).
    #[serde(default = "default_true")]
    pub watch_cgroup_scopes: bool,
}

impl Default for HandoffSocketSection {
    fn default() -> Self {
        Self {
            group: None,
            uids: Vec::new(),
            gids: Vec::new(),
            max_connections: None,
            max_queued_requests: None,
            ready_wait_secs: None,
            max_allocations: None,
            max_allocations_per_peer: None,
            idle_timeout_secs: None,
            worker_threads: None,
            cgroup_root: None,
            watch_cgroup_scopes: true,
        }
    }
}

/// `[handoff.socket].worker_threads`: 1 to the handoff server's maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u64")]
pub struct WorkerThreads(usize);

impl WorkerThreads {
    /// The count.
    pub fn get(self) -> usize {
        self.0
    }
}

impl TryFrom<u64> for WorkerThreads {
    type Error = String;
    fn try_from(n: u64) -> Result<Self, String> {
        let max = nodeinit_handoff::server::config::MAX_WORKER_THREADS;
        match usize::try_from(n) {
            Ok(n) if (1..=max).contains(&n) => Ok(Self(n)),
            _ => Err(format!("{n} is out of range: give 1 to {max} threads")),
        }
    }
}

fn default_grace_secs() -> u64 {
    DEFAULT_GRACE_SECS
}

/// The agent nodeinit hands the node to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    /// `pact-agent`: reads its TOML, may be PID 1, writes the ready file itself.
    Pact,
    /// `lattice-agent`: needs `--node-id`, cannot be PID 1.
    Lattice,
    /// Any other command; only existence and executability are checked.
    Command,
}

impl AgentKind {
    /// pact-agent and lattice-agent stop gracefully only on SIGINT (their
    /// ctrl-c handler; SIGTERM kills them without their shutdown, lattice
    /// then loses its `--state-file`); any other command gets SIGTERM.
    pub fn default_stop_signal(self) -> nix::sys::signal::Signal {
        match self {
            Self::Pact | Self::Lattice => nix::sys::signal::Signal::SIGINT,
            Self::Command => nix::sys::signal::Signal::SIGTERM,
        }
    }
}

/// How the agent is started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandoffMode {
    /// `execve` the agent: it replaces nodeinit (and becomes PID 1 when nodeinit was).
    #[default]
    Exec,
    /// Start the agent as a child and restart it with backoff.
    Supervise,
}
