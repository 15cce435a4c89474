//! Boot orchestration (DESIGN.md §5): the phase table, the keeper's side of
//! the sequence, `boot.json`, and the handoff to the agent.
//!
//! Owns sequencing and the failure policy's *trigger*. The phases that call
//! plugins run in the worker ([`crate::worker`]), watched by the keeper
//! ([`crate::keeper`]); PID 1 duties belong to [`crate::pid1`], the agent to
//! [`crate::agent`].

mod backends;
mod modules;
mod phases;
mod report;
mod run;
mod sequence;
mod table;

use std::sync::OnceLock;

pub use backends::{
    file_label, load_backends, load_backends_observed, Backends, Excluded, LoadedBackends,
    PluginRecord,
};
pub use modules::{MODULES_INCOMPLETE, MODULES_OK};
pub use phases::{PhaseRecord, PhaseResult, PhaseRunner, PhaseSpan, PhaseStatus};
pub use report::{write_atomic, BootReport, BOOT_REPORT_FILE};
pub use run::{boot, failure_context, idle_as_pid1};
pub use sequence::{prepare, server_config, BootEnv, Prepared, BOOT_ALLOCATION, WORKER_STOP_GRACE};
pub use table::{
    waits_for, worker_phases, worker_phases_from, PhaseSpec, Side, KERNEL_MODULES, PHASES,
};

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
