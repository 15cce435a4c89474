//! The built `libnodeinit_squashfs.so` loads through the plugin ABI, rejects
//! unknown options by name, and mounts across the boundary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::{path_str, Fixture, DEADLINE};
use hpc_node::MountError;
use nodeinit_plugin_api::{AllocationMounts, BackendKind, ErrorKind, HostServices, PluginLibrary};

fn plugin_path() -> PathBuf {
    nodeinit_tests::cdylib_beside_test_binary("libnodeinit_squashfs.so")
}

fn open_plugin() -> PluginLibrary {
    // SAFETY: the file is this crate's own freshly built cdylib, which nobody
    // else writes while the test runs; it stays loaded for the process.
    unsafe { PluginLibrary::open(&plugin_path()) }.unwrap()
}

#[test]
fn so_exports_a_mount_backend_named_squashfs() {
    let library = open_plugin();
    assert_eq!(library.name(), "squashfs");
    assert_eq!(library.version(), env!("CARGO_PKG_VERSION"));
    assert_eq!(library.backends(), vec![BackendKind::Mount]);
}

#[test]
fn unknown_option_names_plugin_and_key() {
    let library = open_plugin();
    let err = library
        .mount(
            HostServices::new("squashfs", None),
            r#"{"image_dir": ["/images"]}"#,
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::INVALID_OPTIONS);
    assert!(
        err.message.contains("plugin squashfs")
            && err.message.contains("unknown field `image_dir`"),
        "{err}"
    );
    let err = library
        .mount(
            HostServices::new("squashfs", None),
            r#"{"state_dir": "run"}"#,
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::CONSTRUCTION_FAILED);
    assert!(
        err.message
            .contains("squashfs option `state_dir`: run is relative"),
        "{err}"
    );
}

#[test]
fn mounts_and_counts_across_the_abi() {
    let fx = Fixture::new();
    let image = fx.make_image("abi.sqfs", &[("f", b"across")]);
    let library = open_plugin();
    let options = serde_json::json!({
        "image_dirs": [fx.images],
        "mount_base": fx.mount_base,
        "state_dir": fx.state.path(),
        "hold_time_secs": 0,
    });
    let backend = library
        .mount(HostServices::new("squashfs", None), &options.to_string())
        .unwrap();
    let handle = backend.acquire_for("job-1", "abi.sqfs").unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("{}/f", handle.mount_point)).unwrap(),
        "across"
    );
    assert_eq!(fx.mounts_at(&handle.mount_point).len(), 1);
    match backend.release_for("job-2", &handle) {
        Err(MountError::RefcountInconsistency { image_path, detail }) => {
            assert_eq!(image_path, path_str(&image));
            assert!(
                detail.contains("allocation job-2 holds no reference"),
                "{detail}"
            );
        }
        other => panic!("expected RefcountInconsistency across the ABI, got {other:?}"),
    }
    backend.release_for("job-1", &handle).unwrap();
    // hold_time_secs = 0: the plugin's own hold timer unmounts at once.
    common::wait_for(DEADLINE, || fx.mounts().is_empty()).expect("not unmounted after a zero hold");
    fx.wait_clean().unwrap();
}
