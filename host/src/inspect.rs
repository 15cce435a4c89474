//! `nodeinit plugin inspect PATH...`: what each plugin file is and whether
//! this nodeinit can load it. Loads (dlopen) but constructs nothing — in a
//! probe child per file (`nodeinit __inspect PATH`, see [`crate::probe`]),
//! so a library whose initialiser crashes is reported, not suffered.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use nodeinit_plugin_api::InterfaceVersion;

use crate::boot::file_label;
use crate::config::DEFAULT_PHASE_TIMEOUT_SECS;
use crate::link::StepReport;
use crate::loader::load_plugin;
use crate::probe::{self, ProbeEnd};

/// The report for `paths`, and whether every one of them is loadable.
pub fn inspect(paths: &[&Path]) -> (String, bool) {
    let program = probe::this_program();
    let mut out = String::new();
    let mut all_ok = true;
    for path in paths {
        let args = [OsStr::new("__inspect"), path.as_os_str()];
        match probe::probe(&program, &args) {
            Ok(outcome) => match outcome.end {
                ProbeEnd::Done(code) => {
                    out.push_str(&outcome.stdout);
                    all_ok &= code == 0;
                }
                ProbeEnd::Lost { what, .. } => {
                    all_ok = false;
                    let _ = writeln!(out, "{}", path.display());
                    let _ = writeln!(out, "  loadable:   no: {what} while loading");
                }
            },
            Err(e) => {
                all_ok = false;
                let _ = writeln!(out, "{}\n  loadable:   not checked: {e}", path.display());
            }
        }
    }
    (out, all_ok)
}

/// `nodeinit __inspect PATH`: one file, in the probe child. Returns the exit code.
pub fn inspect_here(path: &Path) -> i32 {
    let link = probe::parent_link();
    probe::announce(
        link.as_ref(),
        StepReport {
            phase: "inspect".into(),
            kind: None,
            plugin: Some(file_label(path)),
            method: "load".into(),
            timeout_secs: DEFAULT_PHASE_TIMEOUT_SECS,
        },
    );
    let (report, ok) = describe(path);
    print!("{report}");
    let _ = std::io::stdout().flush();
    probe::finished(link.as_ref());
    i32::from(!ok)
}

fn describe(path: &Path) -> (String, bool) {
    let mut out = String::new();
    let _ = writeln!(out, "{}", path.display());
    match load_plugin(path, None) {
        Ok(loaded) => {
            let lib = &loaded.library;
            let backends: Vec<&str> = lib.backends().iter().map(|k| k.name()).collect();
            let _ = writeln!(out, "  plugin:     {} {}", lib.name(), lib.version());
            let _ = writeln!(
                out,
                "  interface:  {} (this nodeinit: {})",
                lib.interface(),
                InterfaceVersion::CURRENT
            );
            let _ = writeln!(
                out,
                "  backends:   {}",
                if backends.is_empty() {
                    "none".to_owned()
                } else {
                    backends.join(", ")
                }
            );
            let _ = writeln!(out, "  loadable:   yes");
            (out, true)
        }
        Err(e) => {
            let _ = writeln!(out, "  loadable:   no: {}", e.failure);
            (out, false)
        }
    }
}
