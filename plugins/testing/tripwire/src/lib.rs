//! The one backend the fault fixtures (`faulty`, `panicky`) share: a cgroup
//! and a readiness backend whose every method succeeds trivially, after
//! asking its [`Tripwire`] whether this method is where the fixture was told
//! to misbehave.
//!
//! Owns the trait impls only; what "misbehave" means (a panic, a segfault, a
//! hang) is the fixture's own. Test use only: never install a fixture on a
//! node.

use std::time::Duration;

use hpc_node::{
    CgroupError, CgroupHandle, CgroupManager, CgroupMetrics, ReadinessError, ReadinessGate,
    ResourceLimits,
};
use nodeinit_plugin_api::ReadinessProvider;

/// What a fixture does at each method call.
pub trait Tripwire: std::fmt::Debug + Send + Sync + 'static {
    /// Called first in every method (and by the fixture's constructor with
    /// `"constructor"`); misbehaves if `method` is where it was told to.
    fn trip(&self, method: &str);

    /// What `is_ready` answers when it does not trip.
    fn ready(&self) -> bool;
}

/// A backend of both kinds that calls its wire first in every method.
#[derive(Debug)]
pub struct Tripped<T: Tripwire>(pub T);

impl<T: Tripwire> CgroupManager for Tripped<T> {
    fn create_hierarchy(&self) -> Result<(), CgroupError> {
        self.0.trip("create_hierarchy");
        Ok(())
    }
    fn create_scope(
        &self,
        parent: &str,
        name: &str,
        _l: &ResourceLimits,
    ) -> Result<CgroupHandle, CgroupError> {
        self.0.trip("create_scope");
        Ok(CgroupHandle {
            path: format!("{parent}/{name}.scope"),
        })
    }
    fn destroy_scope(&self, _h: &CgroupHandle) -> Result<(), CgroupError> {
        self.0.trip("destroy_scope");
        Ok(())
    }
    fn read_metrics(&self, _p: &str) -> Result<CgroupMetrics, CgroupError> {
        self.0.trip("read_metrics");
        Ok(CgroupMetrics::default())
    }
    fn is_scope_empty(&self, _h: &CgroupHandle) -> Result<bool, CgroupError> {
        self.0.trip("is_scope_empty");
        Ok(true)
    }
}

impl<T: Tripwire> ReadinessGate for Tripped<T> {
    fn is_ready(&self) -> bool {
        self.0.trip("is_ready");
        self.0.ready()
    }
    fn wait_ready(&self) -> Result<(), ReadinessError> {
        self.wait_ready_timeout(None)
    }
}

impl<T: Tripwire> ReadinessProvider for Tripped<T> {
    fn signal_ready(&self, _node_id: &str) -> Result<(), ReadinessError> {
        self.0.trip("signal_ready");
        Ok(())
    }
    fn signal_failed(&self, _reason: &str) -> Result<(), ReadinessError> {
        self.0.trip("signal_failed");
        Ok(())
    }
    fn wait_ready_timeout(&self, _t: Option<Duration>) -> Result<(), ReadinessError> {
        self.0.trip("wait_ready");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Record(Mutex<Vec<String>>);

    impl Tripwire for Record {
        fn trip(&self, method: &str) {
            if let Ok(mut calls) = self.0.lock() {
                calls.push(method.to_owned());
            }
        }
        fn ready(&self) -> bool {
            false
        }
    }

    #[test]
    fn every_method_asks_the_wire_under_its_own_name() {
        let b = Tripped(Record::default());
        let h = b
            .create_scope("p", "s", &ResourceLimits::default())
            .unwrap();
        assert_eq!(h.path, "p/s.scope");
        b.create_hierarchy().unwrap();
        b.destroy_scope(&h).unwrap();
        b.read_metrics("p").unwrap();
        assert!(b.is_scope_empty(&h).unwrap());
        assert!(!b.is_ready());
        b.signal_ready("n").unwrap();
        b.signal_failed("r").unwrap();
        b.wait_ready().unwrap();
        let calls = b.0 .0.lock().unwrap().clone();
        assert_eq!(
            calls,
            [
                "create_scope",
                "create_hierarchy",
                "destroy_scope",
                "read_metrics",
                "is_scope_empty",
                "is_ready",
                "signal_ready",
                "signal_failed",
                "wait_ready"
            ]
        );
    }
}
