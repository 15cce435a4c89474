//! `nodeinit plugin inspect PATH...`: what each plugin file is and whether
//! this nodeinit can load it. Loads (dlopen) but constructs nothing.

use std::fmt::Write as _;
use std::path::Path;

use nodeinit_plugin_api::InterfaceVersion;

use crate::loader::load_plugin;

/// The report for `paths`, and whether every one of them is loadable.
pub fn inspect(paths: &[&Path]) -> (String, bool) {
    let mut out = String::new();
    let mut all_ok = true;
    for path in paths {
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
            }
            Err(e) => {
                all_ok = false;
                let _ = writeln!(out, "  loadable:   no: {}", e.failure);
            }
        }
    }
    (out, all_ok)
}
