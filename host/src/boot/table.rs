//! The one table of boot phases: their order, which process runs each (the
//! keeper, which never runs plugin code, or the worker, which does), and
//! the backend each one calls. It drives running, skipping after a failure
//! and the report; nothing else lists the phases.

use nodeinit_plugin_api::BackendKind;

/// Which process runs a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// PID 1: no plugin code.
    Keeper,
    /// The worker child: loads and calls the plugins.
    Worker,
}

/// One phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseSpec {
    /// Its name in logs and `boot.json`.
    pub name: &'static str,
    /// Who runs it.
    pub side: Side,
    /// The backend it calls, if any.
    pub backend: Option<BackendKind>,
}

const fn phase(name: &'static str, side: Side, backend: Option<BackendKind>) -> PhaseSpec {
    PhaseSpec {
        name,
        side,
        backend,
    }
}

/// Every phase, in order.
pub const PHASES: [PhaseSpec; 9] = [
    phase("early_mounts", Side::Keeper, None),
    phase("kernel_modules", Side::Keeper, None),
    phase("config", Side::Keeper, None),
    phase("plugins", Side::Worker, None),
    phase("cgroup_hierarchy", Side::Worker, Some(BackendKind::Cgroup)),
    phase("boot_mounts", Side::Worker, Some(BackendKind::Mount)),
    phase("handoff_socket", Side::Worker, Some(BackendKind::Namespace)),
    phase("readiness", Side::Worker, Some(BackendKind::Readiness)),
    phase("handoff", Side::Keeper, None),
];

/// The worker's phases, in order.
pub fn worker_phases() -> impl Iterator<Item = &'static PhaseSpec> {
    PHASES.iter().filter(|p| p.side == Side::Worker)
}

/// The worker phases from `name` on (inclusive), in order.
pub fn worker_phases_from(name: &str) -> Vec<String> {
    worker_phases()
        .skip_while(|p| p.name != name)
        .map(|p| p.name.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keeper_brackets_the_worker() {
        let sides: Vec<Side> = PHASES.iter().map(|p| p.side).collect();
        let first_worker = sides.iter().position(|s| *s == Side::Worker).unwrap();
        let last_worker = sides.iter().rposition(|s| *s == Side::Worker).unwrap();
        // One contiguous run of worker phases: one worker per boot.
        assert!(sides[first_worker..=last_worker]
            .iter()
            .all(|s| *s == Side::Worker));
        assert_eq!(
            worker_phases_from("boot_mounts"),
            ["boot_mounts", "handoff_socket", "readiness"]
        );
        assert!(worker_phases_from("handoff").is_empty());
    }
}
