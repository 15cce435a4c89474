//! Readiness backend of nodeinit (`libnodeinit_readiness.so`).
//!
//! Implements [`hpc_node::ReadinessGate`] and
//! [`nodeinit_plugin_api::ReadinessProvider`] with the conventions pact uses:
//!
//! - a ready file at [`hpc_node::readiness::READINESS_FILE_PATH`] whose content
//!   is the node id without a newline, written atomically (temp file, fsync,
//!   rename), so a reader never sees a half-written file;
//! - optionally a readiness socket at
//!   [`hpc_node::readiness::READINESS_SOCKET_PATH`]: each client that connects
//!   after the verdict receives one line, `READY\n` or `FAILED <reason>\n`;
//! - optionally `READY=1` to `$NOTIFY_SOCKET` (sd_notify) when that is set.
//!
//! Waiting ([`ReadinessProvider::wait_ready_timeout`]) is driven by inotify
//! on the ready file's directory plus a wake-up pipe for in-process verdicts:
//! there is no polling loop.
//!
//! Constructing the backend touches nothing on the machine (`nodeinit check`
//! loads plugins without side effects): files and sockets are created only by
//! `signal_ready` / `signal_failed`.

mod error;
use nodeinit_plugin_api::escape;
mod gate;
mod node_id;
mod notify;
mod options;
mod ready_file;
mod socket;
mod verdict;
mod watch;

pub use error::ReadinessSetupError;
pub use gate::FileReadiness;
pub use node_id::ReadyNodeId;
pub use options::ReadinessOptions;

pub use nodeinit_plugin_api::ReadinessProvider;

nodeinit_plugin_api::export_plugin! {
    name: "readiness",
    version: env!("CARGO_PKG_VERSION"),
    readiness: FileReadiness::from_plugin,
}
