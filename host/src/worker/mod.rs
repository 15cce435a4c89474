//! The worker: the only nodeinit process that loads plugin code.
//!
//! The boot's worker is forked from the keeper as the keeper's very first
//! act, while the keeper is single-threaded and has installed no signal
//! handler ([`crate::keeper::WorkerProcess::fork_for_boot`]): its process
//! start (page tables, runtime, nothing to link) then runs beside the
//! keeper's early mounts and config instead of after them, and it waits
//! for its start message (unless the node's PID 1 has kernel modules to
//! load: their thread starts first, and the worker is re-executed after
//! the config, beside it). Every later worker (a retry without an optional
//! backend, a restart, a reload) is re-executed (`/proc/self/exe
//! __worker`): the keeper may have threads by then, and a fork of a
//! multi-threaded process inherits other threads' locks. Either way the
//! worker's address space holds nothing of a plugin before it starts (the
//! keeper's `/proc/1/maps` never sees one); it gets default signal
//! dispositions, stdio and the link on descriptor 3 and nothing else (the
//! handoff listener and the modules pipe come with its start message),
//! its own `oom_score_adj` (0; the keeper's is -1000), so the OOM killer
//! may take a leaking plugin instead of anything else, and its own name,
//! `nodeinit-worker`.
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

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use crate::config::{self, AbsolutePath, LoadedConfig, NodeConfig};
use crate::link::{
    Channel, FromWorker, Receive, StartDescriptors, StepReport, ToWorker, WorkerStart,
    KEEPER_PID_ENV, WORKER_LINK_FD,
};

/// The worker's process name (`/proc/<pid>/comm`, at most 15 bytes): how
/// `ps`, the demo agent and the tests tell it from the keeper and the holders.
pub const WORKER_COMM: &std::ffi::CStr = c"nodeinit-worker";

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
    // SAFETY: the keeper dup2()ed the link onto this descriptor before exec
    // and nothing else in this fresh process owns it.
    let channel = Channel::from_fd(unsafe { OwnedFd::from_raw_fd(WORKER_LINK_FD) });
    let code = run_on(channel);
    crate::logging::flush(LOG_FLUSH_AT_EXIT);
    code
}

/// The boot worker the keeper forked ([`crate::keeper::WorkerProcess::fork_for_boot`]):
/// the same life as [`run`], on `link`; never returns.
pub fn run_forked(link: Channel, keeper: nix::unistd::Pid) -> ! {
    // The environment a re-executed worker gets from the keeper's command.
    std::env::set_var(KEEPER_PID_ENV, keeper.as_raw().to_string());
    let code = run_on(link);
    crate::logging::flush(LOG_FLUSH_AT_EXIT);
    std::process::exit(code)
}

/// How long an exiting worker waits for log lines its console was slow to
/// take (the keeper kills a worker that takes 5 s to exit).
const LOG_FLUSH_AT_EXIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Names this process for `ps` and `/proc/<pid>/comm`, re-executed or
/// forked alike (a forked worker keeps the keeper's command line).
fn name_this_process() {
    if let Err(e) = nix::sys::prctl::set_name(WORKER_COMM) {
        tracing::debug!("worker: cannot set its name: {e}");
    }
}

/// The keeper's start message and the descriptors it carried; `None` when
/// the keeper said stop (or went away) instead.
///
/// # Errors
///
/// Another message, an unreadable one, or descriptors that do not match it.
pub fn receive_start(channel: &Channel) -> Result<Option<(WorkerStart, StartDescriptors)>, String> {
    match channel.receive_with_fds::<ToWorker>() {
        Ok((Receive::Message(ToWorker::Start(start)), fds)) => {
            let passed = start.take_descriptors(fds)?;
            Ok(Some((*start, passed)))
        }
        Ok((Receive::Message(ToWorker::Stop) | Receive::Closed, _)) => Ok(None),
        Ok((other, _)) => Err(format!(
            "expected a start message from the keeper, got {other:?}"
        )),
        Err(e) => Err(format!("reading the start message: {e}")),
    }
}

fn run_on(channel: Channel) -> i32 {
    // Children a plugin starts must not hold the link: the keeper would
    // never see its end-of-file.
    if let Err(e) = nix::fcntl::fcntl(
        channel.fd().as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    ) {
        tracing::warn!("worker: close-on-exec on the link: {e}");
    }
    default_fault_signals();
    name_this_process();
    let (start, passed) = match receive_start(&channel) {
        Ok(Some(started)) => started,
        // Started ahead and not needed after all (the config did not load).
        Ok(None) => return 0,
        Err(e) => {
            tracing::error!("worker: {e}");
            return 64;
        }
    };
    // A forked worker could not do this before /proc was mounted; a
    // re-executed one has it done already (writing 0 again is harmless).
    crate::pid1::reset_oom_score_adj_for_child();
    // From here on a slow console never paces the worker (its handoff
    // server above all); /proc is mounted by now.
    if let Err(e) = crate::logging::never_block() {
        tracing::warn!("worker: log lines are written blocking: {e}");
    }
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
    let mut state = WorkerState::new(&start, loaded, passed);
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
