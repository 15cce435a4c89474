//! [`FileReadiness`]: the backend object. It ties the verdict, the ready file,
//! the socket and sd_notify together; it owns the socket it serves and never
//! removes a ready file (an agent such as pact may have written it).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hpc_node::{ReadinessError, ReadinessGate};
use nodeinit_plugin_api::ReadinessProvider;

use crate::escape;
use crate::socket::SocketServer;
use crate::verdict::{Verdict, VerdictCell};
use crate::watch::{wait_until, FileWatcher, WaitOutcome};
use crate::{ready_file, ReadinessOptions, ReadinessSetupError, ReadyNodeId};

/// Readiness through the ready file, the readiness socket and sd_notify.
pub struct FileReadiness {
    options: ReadinessOptions,
    verdict: Arc<VerdictCell>,
    socket: Mutex<Option<SocketServer>>,
    watcher: Mutex<Option<FileWatcher>>,
}

impl std::fmt::Debug for FileReadiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReadiness")
            .field("options", &self.options)
            .field("verdict", &self.verdict.get())
            .finish_non_exhaustive()
    }
}

impl FileReadiness {
    /// Build the backend. Touches nothing on the machine.
    ///
    /// # Errors
    ///
    /// [`ReadinessSetupError::InvalidOption`] for an unusable option,
    /// [`ReadinessSetupError::Io`] when the wake-up pipe cannot be created.
    pub fn new(options: ReadinessOptions) -> Result<Self, ReadinessSetupError> {
        options.validate()?;
        Ok(Self {
            options,
            verdict: Arc::new(VerdictCell::new()?),
            socket: Mutex::new(None),
            watcher: Mutex::new(None),
        })
    }

    /// The constructor the plugin export uses.
    ///
    /// # Errors
    ///
    /// As [`FileReadiness::new`].
    pub fn from_plugin(
        _host: &nodeinit_plugin_api::HostServices,
        options: ReadinessOptions,
    ) -> Result<Self, ReadinessSetupError> {
        Self::new(options)
    }

    /// The options in force.
    pub fn options(&self) -> &ReadinessOptions {
        &self.options
    }

    /// Start the socket server once; later verdicts are read live by it.
    fn serve_socket(&self) -> Result<(), ReadinessSetupError> {
        if !self.options.socket {
            return Ok(());
        }
        let mut slot = self.socket.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(SocketServer::start(
                &self.options.socket_path,
                Arc::clone(&self.verdict),
            )?);
        }
        Ok(())
    }

    fn notify(&self, message: &str) -> Result<(), ReadinessSetupError> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(target) if self.options.sd_notify && !target.is_empty() => {
                crate::notify::send(&target, message)
            }
            _ => Ok(()),
        }
    }

    fn file_present(&self) -> bool {
        self.verdict.file_seen() || ready_file::exists(&self.options.file)
    }

    /// Start the inotify watcher once (lazily: construction touches nothing).
    fn ensure_watching(&self) -> Result<(), ReadinessSetupError> {
        let mut slot = self.watcher.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() && !self.file_present() {
            *slot = Some(FileWatcher::start(
                &self.options.file,
                Arc::clone(&self.verdict),
            )?);
        }
        Ok(())
    }

    /// Stop serving the readiness socket and remove its file. Also done on drop.
    pub fn stop_socket(&self) {
        let server = self
            .socket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(server);
    }
}

impl ReadinessGate for FileReadiness {
    fn is_ready(&self) -> bool {
        match self.verdict.get() {
            Verdict::Ready => true,
            Verdict::Failed(_) => false,
            Verdict::Pending => self.file_present(),
        }
    }

    fn wait_ready(&self) -> Result<(), ReadinessError> {
        self.wait_ready_timeout(None)
    }
}

impl ReadinessProvider for FileReadiness {
    fn signal_ready(&self, node_id: &str) -> Result<(), ReadinessError> {
        let node_id = ReadyNodeId::parse(node_id)?;
        if self.options.write_file {
            ready_file::write_atomically(&self.options.file, &node_id)?;
        }
        self.verdict.set(Verdict::Ready);
        self.serve_socket()?;
        self.notify(&format!("READY=1\nSTATUS=node {} ready", node_id.as_str()))?;
        tracing::info!(node_id = node_id.as_str(), file = %self.options.file.display(), "node ready");
        Ok(())
    }

    fn signal_failed(&self, reason: &str) -> Result<(), ReadinessError> {
        // Escaped once here: the reason reaches socket clients, sd_notify,
        // waiters and the log, and may quote file or peer text (issue 12, item 11).
        let reason = escape::one_line(reason);
        self.verdict.set(Verdict::Failed(reason.clone()));
        tracing::error!(reason = %reason, "boot failed; readiness waiters released");
        self.serve_socket()?;
        self.notify(&format!("STATUS=boot failed: {reason}"))?;
        Ok(())
    }

    fn wait_ready_timeout(&self, timeout: Option<Duration>) -> Result<(), ReadinessError> {
        self.ensure_watching()?;
        let outcome = wait_until(self.verdict.wake_fd(), timeout, || {
            self.verdict.get() != Verdict::Pending || self.file_present()
        })?;
        match (outcome, self.verdict.get()) {
            (_, Verdict::Failed(reason)) => Err(ReadinessError::BootFailed { reason }),
            (WaitOutcome::Done, _) => Ok(()),
            (WaitOutcome::TimedOut, _) => Err(ReadinessError::Timeout),
        }
    }
}
