//! Fixture plugin `panicky`: a cgroup and a readiness backend that panic on
//! demand. Option `panic_in` lists `"constructor"` and/or method names.
//! Everything else succeeds trivially.

use nodeinit_plugin_api::HostServices;
use nodeinit_tripwire::{Tripped, Tripwire};

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

impl Tripwire for Panicky {
    fn trip(&self, method: &str) {
        if self.panic_in.iter().any(|m| m == method) {
            panic!("panicky was told to panic in {method}");
        }
    }
    fn ready(&self) -> bool {
        false
    }
}

impl Panicky {
    /// Plugin constructor (both kinds).
    ///
    /// # Errors
    ///
    /// Never; it panics instead when told to.
    pub fn from_plugin(
        _host: &HostServices,
        options: PanickyOptions,
    ) -> Result<Tripped<Self>, String> {
        tracing::warn!(target: "nodeinit_panicky", panic_in = ?options.panic_in, "panicky backend constructed");
        let me = Self {
            panic_in: options.panic_in,
        };
        me.trip("constructor");
        Ok(Tripped(me))
    }
}

nodeinit_plugin_api::export_plugin! {
    name: "panicky",
    version: env!("CARGO_PKG_VERSION"),
    cgroup: Panicky::from_plugin,
    readiness: Panicky::from_plugin,
}
