//! `nodeinit check [--config F]`: validate a config and load its plugins
//! without changing anything on the machine (like `nginx -t`). Plugin
//! constructors run (they validate options); they must not act on the
//! machine — that is part of the plugin contract.

use std::fmt::Write as _;
use std::path::Path;

use crate::agent::preflight;
use crate::boot::load_backends;
use crate::config::{self, KernelCmdline};

/// The report, and whether the config is good.
pub fn check(config_arg: Option<&Path>) -> (String, bool) {
    let mut out = String::new();
    let loaded = match config::load(config_arg, &KernelCmdline::default(), None) {
        Ok(l) => l,
        Err(e) => {
            let _ = writeln!(out, "config: {e}");
            return (out, false);
        }
    };
    let origin = loaded.origin.path().map_or_else(
        || "<built-in config>".to_owned(),
        |p| p.display().to_string(),
    );
    let _ = writeln!(out, "config {origin}: syntax and schema ok");
    let mut ok = true;
    let backends = load_backends(&loaded.config);
    for r in &backends.records {
        match &r.error {
            None => {
                let _ = writeln!(
                    out,
                    "plugin {:<9} ok       {} {} (interface {}) from {}",
                    r.kind,
                    r.name.as_deref().unwrap_or("?"),
                    r.version.as_deref().unwrap_or("?"),
                    r.interface.as_deref().unwrap_or("?"),
                    r.path
                );
            }
            Some(e) => {
                ok &= !r.required;
                let verdict = if r.required { "FAILED " } else { "missing" };
                let _ = writeln!(out, "plugin {:<9} {verdict}  {}: {e}", r.kind, r.path);
            }
        }
    }
    match &loaded.config.handoff {
        None => {
            let _ = writeln!(
                out,
                "handoff: none configured (nodeinit stays PID 1 and serves)"
            );
        }
        Some(h) => match preflight(h, check_node_id(&loaded.config).as_ref(), true) {
            Ok(ok) => {
                let _ = writeln!(out, "handoff: {} ok", h.exec.as_path().display());
                for warning in ok.warnings {
                    let _ = writeln!(out, "handoff: warning: {warning}");
                }
            }
            Err(e) => {
                ok = false;
                let _ = writeln!(out, "handoff: {e}");
            }
        },
    }
    let _ = writeln!(out, "{}", if ok { "check: ok" } else { "check: FAILED" });
    (out, ok)
}

/// The node id to check `{node_id}` with: the one this machine would
/// resolve, else a stand-in (the config is usually checked off the node).
fn check_node_id(config: &config::NodeConfig) -> Option<config::NodeId> {
    config::resolve_node_id(
        &KernelCmdline::default(),
        config,
        Path::new("/etc/hostname"),
    )
    .map(|resolved| resolved.id)
    .or_else(|_| config::NodeId::try_from("check-node".to_owned()))
    .ok()
}
