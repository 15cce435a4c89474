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

/// The keeper's first message to a new worker. The descriptors it names
/// travel with it (`SCM_RIGHTS`): a worker inherits nothing but stdio and
/// the link, whether it was re-executed or forked.
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
    /// The handoff socket path.
    pub handoff_socket: PathBuf,
    /// Whether the listening handoff socket is attached to this message
    /// (`SCM_RIGHTS`, first).
    pub listener_passed: bool,
    /// Why the keeper could not bind the handoff socket, when it could not.
    pub listener_error: Option<String>,
    /// Whether to serve the handoff socket and readiness after the phases.
    pub serve: bool,
    /// Boot mounts acquired by an earlier worker (released at shutdown).
    pub boot_mounts: Vec<MountHandle>,
    /// Allocations that may be live (an earlier worker reported them).
    pub live_allocations: Vec<String>,
    /// Whether the read end of the keeper's kernel-modules pipe is attached
    /// to this message (`SCM_RIGHTS`, after the listener; boot only):
    /// end-of-file, after one result byte, means the modules are in. The
    /// worker's first phase that needs them waits for it.
    #[serde(default)]
    pub modules_passed: bool,
}

/// The descriptors a [`WorkerStart`] carries, once received.
#[derive(Debug, Default)]
pub struct StartDescriptors {
    /// The listening handoff socket.
    pub listener: Option<std::os::fd::OwnedFd>,
    /// The read end of the kernel-modules pipe.
    pub modules: Option<std::os::fd::OwnedFd>,
}

impl StartDescriptors {
    /// In the order [`WorkerStart`]'s flags say they travel.
    pub fn into_vec(self) -> Vec<std::os::fd::OwnedFd> {
        self.listener.into_iter().chain(self.modules).collect()
    }
}

impl WorkerStart {
    /// Sets the flags for `fds` (what the keeper attaches).
    pub fn describe(&mut self, fds: &StartDescriptors) {
        self.listener_passed = fds.listener.is_some();
        self.modules_passed = fds.modules.is_some();
    }

    /// The received descriptors, by the flags.
    ///
    /// # Errors
    ///
    /// Not as many descriptors as the flags name (all of them are closed).
    pub fn take_descriptors(
        &self,
        fds: Vec<std::os::fd::OwnedFd>,
    ) -> Result<StartDescriptors, String> {
        let expected = usize::from(self.listener_passed) + usize::from(self.modules_passed);
        if fds.len() != expected {
            return Err(format!(
                "the start message carried {} descriptors, its flags name {expected} \
                 (listener {}, modules pipe {})",
                fds.len(),
                self.listener_passed,
                self.modules_passed
            ));
        }
        let mut fds = fds.into_iter();
        let listener = if self.listener_passed {
            fds.next()
        } else {
            None
        };
        let modules = if self.modules_passed {
            fds.next()
        } else {
            None
        };
        Ok(StartDescriptors { listener, modules })
    }
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

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::link::{Channel, Receive};

    fn start() -> WorkerStart {
        WorkerStart {
            task: WorkerTask::Boot,
            config_file: None,
            plugin_dir: "/nonexistent".into(),
            node_id: "n1".into(),
            phases: Vec::new(),
            excluded: Vec::new(),
            handoff_socket: "/nonexistent.sock".into(),
            listener_passed: false,
            listener_error: None,
            serve: false,
            boot_mounts: Vec::new(),
            live_allocations: Vec::new(),
            modules_passed: false,
        }
    }

    fn file_type(fd: &impl AsRawFd) -> u32 {
        nix::sys::stat::fstat(fd.as_raw_fd()).unwrap().st_mode & nix::libc::S_IFMT
    }

    #[test]
    fn the_start_message_carries_the_listener_then_the_modules_pipe() {
        let (keeper, worker_end) = Channel::pair().unwrap();
        let worker = Channel::from_fd(worker_end);
        let (listener, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let (read, write) = nix::unistd::pipe().unwrap();
        let fds = StartDescriptors {
            listener: Some(listener.into()),
            modules: Some(read),
        };
        let mut message = start();
        message.describe(&fds);
        assert!(message.listener_passed && message.modules_passed);
        keeper
            .send_with_fds(&ToWorker::Start(Box::new(message)), &fds.into_vec())
            .unwrap();
        let (Receive::Message(ToWorker::Start(got)), received) =
            worker.receive_with_fds::<ToWorker>().unwrap()
        else {
            panic!("no start message");
        };
        let passed = got.take_descriptors(received).unwrap();
        let (listener, modules) = (passed.listener.unwrap(), passed.modules.unwrap());
        assert_eq!(file_type(&listener), nix::libc::S_IFSOCK);
        assert_eq!(file_type(&modules), nix::libc::S_IFIFO);
        // The keeper's thread closing its end is end-of-file here, after the byte.
        nix::unistd::write(&write, &[crate::boot::MODULES_OK]).unwrap();
        drop(write);
        let mut bytes = Vec::new();
        std::fs::File::from(modules)
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(bytes, [crate::boot::MODULES_OK]);
    }

    #[test]
    fn descriptors_that_do_not_match_the_flags_are_refused() {
        let (read, _write) = nix::unistd::pipe().unwrap();
        let mut message = start();
        message.modules_passed = true;
        message.listener_passed = true;
        let err = message.take_descriptors(vec![read]).unwrap_err();
        assert_eq!(
            err,
            "the start message carried 1 descriptors, its flags name 2 \
             (listener true, modules pipe true)"
        );
        let (read, _write) = nix::unistd::pipe().unwrap();
        let none = start().take_descriptors(vec![read]).unwrap_err();
        assert!(none.starts_with("the start message carried 1 descriptors, its flags name 0"));
        let empty = start().take_descriptors(Vec::new()).unwrap();
        assert!(empty.listener.is_none() && empty.modules.is_none());
    }
}
