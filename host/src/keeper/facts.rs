//! What the keeper remembers of its workers' reports, so the next worker
//! can take over: the plugins, the boot mounts, the allocations that may be
//! live. And the words for a worker's death or overrun.

use std::collections::BTreeSet;

use hpc_node::MountHandle;
use nix::sys::wait::WaitStatus;

use super::describe_status;
use crate::boot::PluginRecord;
use crate::link::{AllocationEvent, FromWorker, StepReport};

/// The reports of the workers so far.
#[derive(Debug, Default, Clone)]
pub struct WorkerFacts {
    /// The plugins the current worker loaded.
    pub plugins: Vec<PluginRecord>,
    /// Boot mounts held under `nodeinit-boot`.
    pub boot_mounts: Vec<MountHandle>,
    /// Allocations that may be live.
    pub live_allocations: BTreeSet<String>,
}

impl WorkerFacts {
    /// Take in what a report says; phase results are the caller's.
    pub fn absorb(&mut self, message: &FromWorker) {
        match message {
            FromWorker::Plugins(records) => self.plugins = records.clone(),
            FromWorker::BootMounts(handles) => self.boot_mounts = handles.clone(),
            FromWorker::Allocation(AllocationEvent::Live(id)) => {
                self.live_allocations.insert(id.clone());
            }
            FromWorker::Allocation(AllocationEvent::Ended(id)) => {
                self.live_allocations.remove(id);
            }
            _ => {}
        }
    }
}

fn plugin_of(step: &StepReport) -> String {
    step.plugin
        .clone()
        .or_else(|| step.kind.clone().map(|k| format!("of the {k} backend")))
        .unwrap_or_else(|| "?".to_owned())
}

/// `plugin faulty: worker killed by SIGSEGV in signal_ready`.
pub fn death_reason(status: &WaitStatus, step: Option<&StepReport>) -> String {
    match step {
        Some(step) => format!(
            "plugin {}: worker {} in {}",
            plugin_of(step),
            describe_status(status),
            step.method
        ),
        None => format!("worker {} between plugin calls", describe_status(status)),
    }
}

/// `plugin faulty did not return from signal_ready within 60 s`.
pub fn overrun_reason(step: Option<&StepReport>, timeout_secs: u64) -> String {
    match step {
        Some(step) => format!(
            "plugin {} did not return from {} within {timeout_secs} s",
            plugin_of(step),
            step.method
        ),
        None => format!("the worker did not report within {timeout_secs} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;

    #[test]
    fn reasons_name_plugin_method_and_signal() {
        let step = StepReport {
            phase: "readiness".into(),
            kind: Some("readiness".into()),
            plugin: Some("faulty".into()),
            method: "signal_ready".into(),
            timeout_secs: 60,
        };
        let segv = WaitStatus::Signaled(Pid::from_raw(9), Signal::SIGSEGV, false);
        assert_eq!(
            death_reason(&segv, Some(&step)),
            "plugin faulty: worker killed by SIGSEGV in signal_ready"
        );
        assert_eq!(
            death_reason(&WaitStatus::Exited(Pid::from_raw(9), 3), Some(&step)),
            "plugin faulty: worker exited with status 3 in signal_ready"
        );
        assert_eq!(
            overrun_reason(Some(&step), 60),
            "plugin faulty did not return from signal_ready within 60 s"
        );
    }
}
