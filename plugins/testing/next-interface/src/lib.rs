//! Fixture plugin `next-interface`: a readiness backend built against a
//! future interface version (see the features), to test the compatibility
//! rule from both sides.

use std::time::Duration;

use hpc_node::{ReadinessError, ReadinessGate};
use nodeinit_plugin_api::{HostServices, ReadinessProvider};

/// Always ready.
pub struct AlwaysReady;

/// No options.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoOptions {}

impl AlwaysReady {
    /// Constructor.
    pub fn from_plugin(_host: &HostServices, _o: NoOptions) -> Result<Self, String> {
        Ok(Self)
    }
}

impl ReadinessGate for AlwaysReady {
    fn is_ready(&self) -> bool {
        true
    }
    fn wait_ready(&self) -> Result<(), ReadinessError> {
        Ok(())
    }
}

impl ReadinessProvider for AlwaysReady {
    fn signal_ready(&self, _node_id: &str) -> Result<(), ReadinessError> {
        Ok(())
    }
    fn signal_failed(&self, _reason: &str) -> Result<(), ReadinessError> {
        Ok(())
    }
    fn wait_ready_timeout(&self, _t: Option<Duration>) -> Result<(), ReadinessError> {
        Ok(())
    }
}

nodeinit_plugin_api::export_plugin! {
    name: "next-interface",
    version: env!("CARGO_PKG_VERSION"),
    readiness: AlwaysReady::from_plugin,
}
