//! `acme`: an example vendor plugin providing a readiness backend that
//! keeps its state in memory and logs through nodeinit.
//!
//! Everything here is ordinary Rust against `hpc_node`'s traits; the one
//! ABI-touching line is `export_plugin!` at the bottom.
//!
//! It resembles the in-memory readiness of the `null` fixture on purpose and
//! shares no code with it: a vendor builds this crate outside the workspace,
//! against the published `nodeinit-plugin-api` alone, and reads it top to
//! bottom.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hpc_node::{ReadinessError, ReadinessGate};
use nodeinit_plugin_api::{HostServices, ReadinessProvider};

/// The plugin's options: the `[plugins.readiness.options]` table of the
/// site's nodeinit.toml. Unknown keys are refused, naming the key.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeOptions {
    /// Shown in the log when the node becomes ready.
    #[serde(default = "default_banner")]
    pub banner: String,
}

fn default_banner() -> String {
    "ACME node ready".to_owned()
}

/// Readiness kept in memory.
pub struct AcmeReadiness {
    banner: String,
    state: Mutex<Option<Result<(), String>>>,
    changed: Condvar,
}

impl AcmeReadiness {
    /// Called by nodeinit with the parsed options.
    pub fn from_plugin(_host: &HostServices, options: AcmeOptions) -> Result<Self, String> {
        if options.banner.is_empty() {
            return Err("option banner must not be empty".to_owned());
        }
        Ok(Self {
            banner: options.banner,
            state: Mutex::new(None),
            changed: Condvar::new(),
        })
    }
}

impl ReadinessGate for AcmeReadiness {
    fn is_ready(&self) -> bool {
        matches!(
            *self.state.lock().unwrap_or_else(PoisonError::into_inner),
            Some(Ok(()))
        )
    }
    fn wait_ready(&self) -> Result<(), ReadinessError> {
        self.wait_ready_timeout(None)
    }
}

impl ReadinessProvider for AcmeReadiness {
    fn signal_ready(&self, node_id: &str) -> Result<(), ReadinessError> {
        tracing::info!(node_id, "{}", self.banner);
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = Some(Ok(()));
        self.changed.notify_all();
        Ok(())
    }
    fn signal_failed(&self, reason: &str) -> Result<(), ReadinessError> {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = Some(Err(reason.to_owned()));
        self.changed.notify_all();
        Ok(())
    }
    fn wait_ready_timeout(&self, timeout: Option<Duration>) -> Result<(), ReadinessError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match &*state {
                Some(Ok(())) => return Ok(()),
                Some(Err(reason)) => {
                    return Err(ReadinessError::BootFailed {
                        reason: reason.clone(),
                    })
                }
                None => {}
            }
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return Err(ReadinessError::Timeout),
                },
                None => Duration::from_secs(3600),
            };
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

nodeinit_plugin_api::export_plugin! {
    name: "acme",
    version: env!("CARGO_PKG_VERSION"),
    readiness: AcmeReadiness::from_plugin,
}
