//! The one table of boot phases: their order, which process runs each (the
//! keeper, which never runs plugin code, or the worker, which does), the
//! backend each one calls, and what each one needs done before it starts.
//! It drives running, waiting, skipping after a failure and the report;
//! nothing else lists the phases or their dependencies.
//!
//! The boot is a dependency graph, not a line: a phase starts when the
//! phases in its `after` list are done, so `kernel_modules` (a keeper
//! thread) runs while the early mounts are made, `config` is read and the
//! worker loads its plugins, and
//! only what needs `loop`/`squashfs` (the boot mounts, and through them
//! readiness and the handoff) waits for it. The table order is one valid
//! sequential order (every dependency comes earlier); the worker runs its
//! phases in that order.

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
    /// The phases that must be done before it starts (direct ones; see
    /// [`waits_for`] for the closure).
    pub after: &'static [&'static str],
}

const fn phase(
    name: &'static str,
    side: Side,
    backend: Option<BackendKind>,
    after: &'static [&'static str],
) -> PhaseSpec {
    PhaseSpec {
        name,
        side,
        backend,
        after,
    }
}

/// The phase that loads the kernel modules (a keeper thread; the worker
/// waits for it through an inherited pipe before the first phase that
/// needs it).
pub const KERNEL_MODULES: &str = "kernel_modules";

/// Every phase, in a valid sequential order.
pub const PHASES: [PhaseSpec; 9] = [
    // /proc, /sys, /dev, /run, cgroup2: everything else reads them.
    phase("early_mounts", Side::Keeper, None, &[]),
    // finit_module of files in the initramfs: needs no mount (devtmpfs
    // keeps the nodes the drivers make whether mounted yet or not), nothing
    // from the config or the plugins. First on the critical path.
    phase(KERNEL_MODULES, Side::Keeper, None, &[]),
    // /proc/cmdline (node id, config path) comes from early_mounts.
    phase("config", Side::Keeper, None, &["early_mounts"]),
    phase("plugins", Side::Worker, None, &["config"]),
    // cgroupfs needs cgroup2 (early_mounts), not a mount or a module.
    phase(
        "cgroup_hierarchy",
        Side::Worker,
        Some(BackendKind::Cgroup),
        &["plugins"],
    ),
    // losetup + mount -t squashfs: needs loop and squashfs.
    phase(
        "boot_mounts",
        Side::Worker,
        Some(BackendKind::Mount),
        &["plugins", KERNEL_MODULES],
    ),
    // Listening only: requests wait at the handoff gate, which readiness
    // opens, after the boot mounts (so after the modules).
    phase(
        "handoff_socket",
        Side::Worker,
        Some(BackendKind::Namespace),
        &["plugins"],
    ),
    // "Ready" means everything before it is done.
    phase(
        "readiness",
        Side::Worker,
        Some(BackendKind::Readiness),
        &["cgroup_hierarchy", "boot_mounts", "handoff_socket"],
    ),
    // The agent may mount (namespace requests) and use the virtio disk.
    phase(
        "handoff",
        Side::Keeper,
        None,
        &["readiness", KERNEL_MODULES],
    ),
];

/// The phase named `name`.
pub fn spec(name: &str) -> Option<&'static PhaseSpec> {
    PHASES.iter().find(|p| p.name == name)
}

/// Its position in [`PHASES`] (unknown names sort last).
pub fn position(name: &str) -> usize {
    PHASES
        .iter()
        .position(|p| p.name == name)
        .unwrap_or(PHASES.len())
}

/// Whether `phase` (directly or through its dependencies) needs `dependency`
/// done before it starts.
pub fn waits_for(phase: &str, dependency: &str) -> bool {
    let Some(spec) = spec(phase) else {
        return false;
    };
    spec.after
        .iter()
        .any(|d| *d == dependency || waits_for(d, dependency))
}

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

    #[test]
    fn the_table_order_is_a_topological_order() {
        for (i, p) in PHASES.iter().enumerate() {
            for dep in p.after {
                let at = PHASES.iter().position(|q| q.name == *dep);
                assert!(
                    at.is_some_and(|at| at < i),
                    "{} depends on {dep}, which is not an earlier phase",
                    p.name
                );
            }
        }
    }

    #[test]
    fn modules_config_and_plugins_do_not_wait_for_each_other() {
        assert!(!waits_for("config", KERNEL_MODULES));
        assert!(!waits_for("plugins", KERNEL_MODULES));
        assert!(!waits_for(KERNEL_MODULES, "config"));
        assert!(!waits_for(KERNEL_MODULES, "plugins"));
        // The cgroup hierarchy waits neither for mounts nor for modules.
        assert!(!waits_for("cgroup_hierarchy", "boot_mounts"));
        assert!(!waits_for("cgroup_hierarchy", KERNEL_MODULES));
        // What needs loop/squashfs does, and so does everything after it.
        assert!(waits_for("boot_mounts", KERNEL_MODULES));
        assert!(waits_for("readiness", KERNEL_MODULES));
        assert!(waits_for("handoff", KERNEL_MODULES));
        assert!(waits_for("handoff", "early_mounts"));
        assert!(!waits_for(KERNEL_MODULES, "early_mounts"));
        // The first worker phase needing the modules is the boot mounts.
        assert_eq!(
            worker_phases()
                .find(|p| waits_for(p.name, KERNEL_MODULES))
                .map(|p| p.name),
            Some("boot_mounts")
        );
        assert_eq!(position("config"), 2);
        assert_eq!(position("nosuch"), PHASES.len());
    }
}
