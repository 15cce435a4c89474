//! The worker: the only nodeinit process that loads plugin code.
//!
//! The keeper (PID 1) starts it by re-executing its own binary
//! (`/proc/self/exe __worker`) with the link on descriptor 3 and, in
//! supervise mode, the listening handoff socket on descriptor 4. A re-exec
//! rather than a bare `fork`: the worker gets a fresh address space (the
//! keeper's `/proc/1/maps` never sees a plugin, and the worker inherits no
//! lock or allocator state of a multi-threaded parent), default signal
//! dispositions, and its own `oom_score_adj` (0; the keeper's is -1000), so
//! the OOM killer may take a leaking plugin instead of anything else.
//!
//! It reads the config the keeper names, loads and constructs the plugins,
//! runs the worker phases of [`crate::boot::PHASES`] and reports, over the
//! link, each plugin call before it makes it ([`FromWorker::Step`]) and each
//! phase result. In supervise mode (and with no agent) it then serves the
//! handoff socket, readiness and the mount hold timers until the keeper says
//! stop or drain. If the keeper goes away the worker exits.
//!
//! It never applies `on_failure`, never hands off, never writes `boot.json`
//! and never reaps anything but its own children: those are the keeper's.

mod phases;
mod serve;
mod tracked;

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use crate::config::{self, AbsolutePath, LoadedConfig, NodeConfig};
use crate::link::{
    Channel, FromWorker, Receive, StepReport, ToWorker, WorkerStart, WORKER_LINK_FD,
};

pub use phases::WorkerState;

/// Reports to the keeper; a failed send means the keeper is gone.
pub struct Reporter {
    channel: Arc<Channel>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter").finish_non_exhaustive()
    }
}

impl Reporter {
    /// Wrap the link.
    pub fn new(channel: Channel) -> Self {
        Self {
            channel: Arc::new(channel),
        }
    }

    /// Send `message`; the keeper being gone ends this worker (nothing
    /// would be left to serve for).
    pub fn send(&self, message: &FromWorker) {
        if let Err(e) = self.channel.send(message) {
            tracing::error!("worker: the keeper is gone ({e}); exiting");
            std::process::exit(70);
        }
    }

    /// Announce a plugin call.
    pub fn step(&self, step: StepReport) {
        self.send(&FromWorker::Step(step));
    }

    /// The link, to wait on.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The link, for threads that report (the handoff server's).
    pub fn channel_clone(&self) -> Arc<Channel> {
        Arc::clone(&self.channel)
    }
}

/// The config the keeper read, with the plugin directory it decided.
///
/// # Errors
///
/// The config no longer parses (it changed since the keeper read it).
pub fn load_config(start: &WorkerStart) -> Result<LoadedConfig, String> {
    let (mut config, origin): (NodeConfig, _) = match &start.config_file {
        None => (
            config::load_from_str(config::BUILTIN_CONFIG, Path::new("<built-in config>"))
                .map_err(|e| e.to_string())?,
            config::ConfigOrigin::BuiltIn,
        ),
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("worker: cannot read config {}: {e}", path.display()))?;
            (
                config::load_from_bytes(&bytes, path).map_err(|e| e.to_string())?,
                config::ConfigOrigin::Argument(path.clone()),
            )
        }
    };
    config.host.plugin_dir = AbsolutePath::try_from(start.plugin_dir.display().to_string())
        .map_err(|e| format!("plugin directory {}: {e}", start.plugin_dir.display()))?;
    Ok(LoadedConfig { config, origin })
}

/// A fault signal kills the worker at once, whoever sends it: Rust's own
/// SIGSEGV/SIGBUS handler (stack-overflow reporting) would swallow the first
/// `kill -SEGV`. The keeper reports the signal either way.
fn default_fault_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in [Signal::SIGSEGV, Signal::SIGBUS] {
        // SAFETY: installing SIG_DFL has no handler safety requirements.
        if let Err(e) = unsafe { sigaction(signal, &default) } {
            tracing::warn!("worker: cannot reset {signal}: {e}");
        }
    }
}

/// `nodeinit __worker`: the worker's whole life. Returns the exit code.
pub fn run() -> i32 {
    default_fault_signals();
    // SAFETY: the keeper dup2()ed the link onto this descriptor before exec
    // and nothing else in this fresh process owns it.
    let channel = Channel::from_fd(unsafe { OwnedFd::from_raw_fd(WORKER_LINK_FD) });
    let start = match channel.receive::<ToWorker>() {
        Ok(Receive::Message(ToWorker::Start(start))) => *start,
        Ok(other) => {
            tracing::error!("worker: expected a start message from the keeper, got {other:?}");
            return 64;
        }
        Err(e) => {
            tracing::error!("worker: reading the start message: {e}");
            return 64;
        }
    };
    let reporter = Reporter::new(channel);
    let loaded = match load_config(&start) {
        Ok(l) => l,
        Err(e) => {
            reporter.send(&FromWorker::PhaseDone {
                name: "plugins".into(),
                result: crate::boot::PhaseResult::Failed {
                    reason: e,
                    required: true,
                },
                elapsed_ms: 0.0,
            });
            return 1;
        }
    };
    let mut state = WorkerState::new(&start, loaded);
    let healthy = state.run(&start, &reporter);
    if !start.serve || !healthy {
        reporter.send(&FromWorker::Finished);
        if !healthy {
            state.release();
        }
        return i32::from(!healthy);
    }
    serve::serve_until_told(state, &reporter)
}
