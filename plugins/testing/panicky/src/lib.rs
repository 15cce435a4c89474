//! Fixture plugin `panicky`: a cgroup and a readiness backend that panic on
//! demand. Option `panic_in` lists `"constructor"` and/or method names.
//! Everything else succeeds trivially.

use std::time::Duration;

use hpc_node::{
    CgroupError, CgroupHandle, CgroupManager, CgroupMetrics, ReadinessError, ReadinessGate,
    ResourceLimits,
};
use nodeinit_plugin_api::{HostServices, ReadinessProvider};

/// Options.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PanickyOptions {
    /// Where to panic.
    #[serde(default)]
    pub panic_in: Vec<String>,
}

/// Panics where told.
#[derive(Debug)]
pub struct Panicky {
    panic_in: Vec<String>,
}

impl Panicky {
    fn maybe_panic(&self, method: &str) {
        if self.panic_in.iter().any(|m| m == method) {
            panic!("panicky was told to panic in {method}");
        }
    }

    /// Plugin constructor (both kinds).
    ///
    /// # Errors
    ///
    /// Never; it panics instead when told to.
    pub fn from_plugin(_host: &HostServices, options: PanickyOptions) -> Result<Self, String> {
        tracing::warn!(target: "nodeinit_panicky", panic_in = ?options.panic_in, "panicky backend constructed");
        let me = Self {
            panic_in: options.panic_in,
        };
        me.maybe_panic("constructor");
        Ok(me)
    }
}

impl CgroupManager for Panicky {
    fn create_hierarchy(&self) -> Result<(), CgroupError> {
        self.maybe_panic("create_hierarchy");
        Ok(())
    }
    fn create_scope(
        &self,
        parent: &str,
        name: &str,
        _l: &ResourceLimits,
    ) -> Result<CgroupHandle, CgroupError> {
        self.maybe_panic("create_scope");
        Ok(CgroupHandle {
            path: format!("{parent}/{name}.scope"),
        })
    }
    fn destroy_scope(&self, _h: &CgroupHandle) -> Result<(), CgroupError> {
        self.maybe_panic("destroy_scope");
        Ok(())
    }
    fn read_metrics(&self, _p: &str) -> Result<CgroupMetrics, CgroupError> {
        self.maybe_panic("read_metrics");
        Ok(CgroupMetrics::default())
    }
    fn is_scope_empty(&self, _h: &CgroupHandle) -> Result<bool, CgroupError> {
        self.maybe_panic("is_scope_empty");
        Ok(true)
    }
}

impl ReadinessGate for Panicky {
    fn is_ready(&self) -> bool {
        self.maybe_panic("is_ready");
        false
    }
    fn wait_ready(&self) -> Result<(), ReadinessError> {
        self.wait_ready_timeout(None)
    }
}

impl ReadinessProvider for Panicky {
    fn signal_ready(&self, _node_id: &str) -> Result<(), ReadinessError> {
        self.maybe_panic("signal_ready");
        Ok(())
    }
    fn signal_failed(&self, _reason: &str) -> Result<(), ReadinessError> {
        self.maybe_panic("signal_failed");
        Ok(())
    }
    fn wait_ready_timeout(&self, _t: Option<Duration>) -> Result<(), ReadinessError> {
        self.maybe_panic("wait_ready");
        Ok(())
    }
}

nodeinit_plugin_api::export_plugin! {
    name: "panicky",
    version: env!("CARGO_PKG_VERSION"),
    cgroup: Panicky::from_plugin,
    readiness: Panicky::from_plugin,
}
