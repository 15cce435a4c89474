//! `nodeinit check [--config F]`: validate a config and load its plugins
//! without changing anything on the machine (like `nginx -t`). Plugin
//! constructors run (they validate options); they must not act on the
//! machine — that is part of the plugin contract.
//!
//! The plugins are loaded in a probe child (`nodeinit __check`, see
//! [`crate::probe`]): a plugin that crashes or hangs while loading is
//! reported as that plugin's failure, and the check goes on with the others.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::agent::preflight;
use crate::boot::{load_backends_observed, Excluded};
use crate::config::{self, BackendKind, KernelCmdline};
use crate::link::StepReport;
use crate::probe::{self, ProbeEnd};

/// The report, and whether the config is good: the plugins loaded in a
/// child, one more child per plugin that killed one.
pub fn check(config_arg: Option<&Path>) -> (String, bool) {
    let program = probe::this_program();
    let mut excluded: Vec<(String, String)> = Vec::new();
    loop {
        let mut args: Vec<OsString> = vec!["__check".into()];
        if let Some(path) = config_arg {
            args.push("--config".into());
            args.push(path.into());
        }
        for (kind, reason) in &excluded {
            args.push("--exclude".into());
            args.push(format!("{kind}={reason}").into());
        }
        let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
        let outcome = match probe::probe(&program, &args) {
            Ok(o) => o,
            Err(e) => {
                return (
                    format!("check: cannot start the checking process: {e}\ncheck: FAILED\n"),
                    false,
                )
            }
        };
        match outcome.end {
            ProbeEnd::Done(code) => return (outcome.stdout, code == 0),
            ProbeEnd::Lost {
                what,
                step:
                    Some(StepReport {
                        kind: Some(kind),
                        method,
                        ..
                    }),
            } if !excluded.iter().any(|(k, _)| *k == kind) => {
                let while_ = if method == "load" || method == "constructor" {
                    "while loading"
                } else {
                    "in"
                };
                excluded.push((kind, format!("{what} {while_} ({method})")));
            }
            ProbeEnd::Lost { what, .. } => {
                let mut out = outcome.stdout;
                let _ = writeln!(out, "check: the checking process {what}\ncheck: FAILED");
                return (out, false);
            }
        }
    }
}

/// `nodeinit __check`: the check itself, in the probe child. `excluded`
/// are `kind=reason` pairs of plugins that killed an earlier child.
pub fn check_here(config_arg: Option<&Path>, excluded: &[String]) -> (String, bool) {
    let link = probe::parent_link();
    let excluded: Vec<Excluded> = excluded
        .iter()
        .filter_map(|pair| {
            let (kind, reason) = pair.split_once('=')?;
            let kind = BackendKind::ALL.into_iter().find(|k| k.name() == kind)?;
            Some(Excluded {
                kind,
                reason: reason.to_owned(),
            })
        })
        .collect();
    let result = check_loaded(config_arg, &excluded, link.as_ref());
    print!("{}", result.0);
    let _ = std::io::stdout().flush();
    probe::finished(link.as_ref());
    result
}

fn check_loaded(
    config_arg: Option<&Path>,
    excluded: &[Excluded],
    link: Option<&crate::link::Channel>,
) -> (String, bool) {
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
    let host = loaded.config.host.clone();
    let plugins = loaded.config.plugins.clone();
    let backends = load_backends_observed(&loaded.config, excluded, &mut |kind, plugin, method| {
        probe::announce(
            link,
            StepReport {
                phase: "check".into(),
                kind: Some(kind.name().to_owned()),
                plugin: Some(plugin.to_owned()),
                method: method.to_owned(),
                timeout_secs: plugins
                    .get(kind)
                    .map_or(host.phase_timeout_secs, |s| s.timeout_secs(&host)),
            },
        );
    });
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
