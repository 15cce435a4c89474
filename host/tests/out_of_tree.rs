//! Plugins built outside the workspace: a vendor's plugin loads; plugins
//! built against another interface version load or are refused as the
//! compatibility rule says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use hpc_node::ReadinessGate;
use nodeinit::loader::{load_plugin, LoadFailure};
use nodeinit_plugin_api::{HostServices, InterfaceVersion, OpenError, ReadinessProvider};
use nodeinit_tests::{build_cdylibs, workspace_root, Profile};

/// Builds the out-of-tree crate at `dir` with `features`, copies the `.so`
/// to a fresh private dir (builds share a target dir and overwrite it).
fn build_out_of_tree(dir: &str, package: &str, features: &str) -> (tempfile::TempDir, PathBuf) {
    let root = workspace_root();
    let manifest = root.join(dir).join("Cargo.toml");
    let target = root.join("target").join("out-of-tree");
    let mut args = vec![
        "--manifest-path",
        manifest.to_str().unwrap(),
        "--target-dir",
        target.to_str().unwrap(),
    ];
    if !features.is_empty() {
        args.extend(["--features", features]);
    }
    let built = build_cdylibs(&[package], Profile::Debug, &args).unwrap_or_else(|e| panic!("{e}"));
    let src = &built[package];
    let stage = tempfile::tempdir().unwrap();
    let dst = stage.path().join(src.file_name().unwrap());
    std::fs::copy(src, &dst).unwrap();
    (stage, dst)
}

fn refused(path: &Path) -> LoadFailure {
    match load_plugin(path, None) {
        Ok(p) => panic!("loaded {}", p.library.name()),
        Err(e) => e.failure,
    }
}

#[test]
fn vendor_plugin_builds_and_loads() {
    let (_d, so) = build_out_of_tree("examples/vendor-plugin", "acme-nodeinit-readiness", "");
    assert_eq!(so.file_name().unwrap(), "libnodeinit_acme.so");
    let plugin = load_plugin(&so, None).unwrap();
    assert_eq!(
        (plugin.library.name(), plugin.library.version()),
        ("acme", "0.3.1")
    );
    let gate = plugin
        .library
        .readiness(HostServices::new("acme", None), r#"{"banner":"up"}"#)
        .unwrap();
    assert!(!gate.is_ready());
    gate.signal_ready("n1").unwrap();
    assert!(gate.is_ready());
    let err = plugin
        .library
        .readiness(HostServices::new("acme", None), r#"{"banner":""}"#)
        .unwrap_err();
    assert_eq!(
        err.message.as_str(),
        "plugin acme: readiness backend failed to start: option banner must not be empty"
    );
}

#[test]
fn plugin_from_the_next_minor_interface_loads() {
    let (_d, so) = build_out_of_tree(
        "plugins/testing/next-interface",
        "nodeinit-next-interface",
        "next-minor",
    );
    let plugin = load_plugin(&so, None).unwrap();
    assert_eq!(
        plugin.library.interface(),
        InterfaceVersion {
            major: InterfaceVersion::CURRENT.major,
            minor: InterfaceVersion::CURRENT.minor + 1
        }
    );
    let gate = plugin
        .library
        .readiness(HostServices::new("next", None), "{}")
        .unwrap();
    assert!(gate.is_ready());
    gate.signal_ready("n").unwrap();
}

#[test]
fn plugin_from_the_next_major_interface_is_refused_asking_to_upgrade_nodeinit() {
    let (_d, so) = build_out_of_tree(
        "plugins/testing/next-interface",
        "nodeinit-next-interface",
        "next-major",
    );
    let f = refused(&so);
    let LoadFailure::Library(OpenError::Incompatible(i)) = &f else {
        panic!("{f:?}")
    };
    assert_eq!(i.plugin.major, InterfaceVersion::CURRENT.major + 1);
    assert!(
        f.to_string().starts_with(&format!(
            "plugin interface {}.0 is newer than this nodeinit's {}: upgrade nodeinit",
            InterfaceVersion::CURRENT.major + 1,
            InterfaceVersion::CURRENT
        )),
        "{f}"
    );
}
