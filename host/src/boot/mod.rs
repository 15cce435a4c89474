//! Boot orchestration (DESIGN.md §5): the phases in order, the loaded
//! backends, `boot.json`, and the handoff to the agent.
//!
//! Owns sequencing and the failure policy's *trigger*; the work of each
//! phase belongs to the backends (through `hpc_node` traits), PID 1 duties
//! to [`crate::pid1`], the agent to [`crate::agent`].

mod backends;
mod phases;
mod report;
mod run;
mod sequence;

use std::sync::OnceLock;

pub use backends::{load_backends, Backends, LoadedBackends, PluginRecord};
pub use phases::{PhaseRecord, PhaseResult, PhaseRunner, PhaseStatus};
pub use report::{write_atomic, BootReport, BOOT_REPORT_FILE};
pub use run::{boot, idle_as_pid1};
pub use sequence::{prepare, BootEnv, Prepared, BOOT_ALLOCATION};

use crate::config::OnFailure;

static ON_FAILURE: OnceLock<OnFailure> = OnceLock::new();

/// Records the config's `on_failure`, for a panic caught in `main` after
/// the config was read.
pub(crate) fn set_on_failure(on_failure: OnFailure) {
    let _ = ON_FAILURE.set(on_failure);
}

/// The `on_failure` in force: the config's once read, else the default.
pub fn on_failure() -> OnFailure {
    ON_FAILURE.get().copied().unwrap_or_default()
}
