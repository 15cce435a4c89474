//! What the keeper and the worker say to each other.

use std::path::PathBuf;

use hpc_node::MountHandle;
use serde::{Deserialize, Serialize};

use crate::boot::{PhaseResult, PluginRecord};

/// What a worker is started for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerTask {
    /// Run the boot phases named in [`WorkerStart::phases`], then serve
    /// (supervise mode, no agent) or exit (exec mode, failure).
    Boot,
    /// Take over a running node: load the plugins, rebuild state from the
    /// kernel and the live allocations, serve. Nothing of the boot runs again.
    Resume,
}

/// The keeper's first message to a new worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStart {
    /// Boot or resume.
    pub task: WorkerTask,
    /// The config file the keeper read (`None`: the built-in config).
    pub config_file: Option<PathBuf>,
    /// The plugin directory in force (the keeper may have replaced the default).
    pub plugin_dir: PathBuf,
    /// The node id the keeper resolved.
    pub node_id: String,
    /// Worker phases to run, in order (only with [`WorkerTask::Boot`]).
    pub phases: Vec<String>,
    /// Backend kinds not to load, with the reason: optional backends that
    /// killed an earlier worker.
    pub excluded: Vec<(String, String)>,
    /// The handoff socket path (the listener itself is descriptor 4 when passed).
    pub handoff_socket: PathBuf,
    /// Whether the listener is passed.
    pub listener_passed: bool,
    /// Why the keeper could not bind the handoff socket, when it could not.
    pub listener_error: Option<String>,
    /// Whether to serve the handoff socket and readiness after the phases.
    pub serve: bool,
    /// Boot mounts acquired by an earlier worker (released at shutdown).
    pub boot_mounts: Vec<MountHandle>,
    /// Allocations that may be live (an earlier worker reported them).
    pub live_allocations: Vec<String>,
    /// The inherited read end of the keeper's kernel-modules pipe (boot
    /// only): EOF, after one result byte, means the modules are in. The
    /// worker's first phase that needs them waits for it.
    #[serde(default)]
    pub modules_fd: Option<i32>,
}

/// A plugin call the worker is about to make: the keeper's deadline runs
/// from this message until the next one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    /// The phase (`readiness`, ...).
    pub phase: String,
    /// The backend kind (`readiness`, ...), when a backend is called.
    pub kind: Option<String>,
    /// The plugin's name (its file name before it loaded).
    pub plugin: Option<String>,
    /// The method (`signal_ready`, `constructor`, `load`, ...).
    pub method: String,
    /// The deadline, in seconds.
    pub timeout_secs: u64,
}

/// An allocation the worker's namespace backend is creating or has ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocationEvent {
    /// May be live from now on (reported before the backend creates it).
    Live(String),
    /// Released.
    Ended(String),
}

/// Worker → keeper.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromWorker {
    /// A plugin call starts.
    Step(StepReport),
    /// A phase ended.
    PhaseDone {
        /// The phase.
        name: String,
        /// Its result.
        result: PhaseResult,
        /// Wall time in milliseconds.
        elapsed_ms: f64,
    },
    /// The configured plugins, once loaded.
    Plugins(Vec<PluginRecord>),
    /// Boot mounts acquired.
    BootMounts(Vec<MountHandle>),
    /// Phases done; serving (the worker stays).
    Serving,
    /// Phases done; the worker exits (exec mode, or nothing to serve).
    Finished,
    /// The namespace backend's allocations.
    Allocation(AllocationEvent),
    /// Draining for a reload: open handoff connections and their state,
    /// the sockets attached (`SCM_RIGHTS`, in record order; one message per
    /// [`crate::link::MAX_FDS`] sockets). The keeper holds them for the next worker.
    HandedOver(nodeinit_handoff::server::handover::HandoverRecord),
}

/// Keeper → worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToWorker {
    /// Start (first message).
    Start(Box<WorkerStart>),
    /// The node shuts down: stop serving, release the boot mounts, exit.
    Stop,
    /// Another worker takes over: stop accepting, finish in-flight requests,
    /// hand the open connections over ([`FromWorker::HandedOver`]), exit
    /// without releasing anything.
    Drain,
    /// Serving: adopt these handed-over connections (sockets attached, in
    /// record order).
    Adopt(nodeinit_handoff::server::handover::HandoverRecord),
}
