//! The exported `.so`: it opens as a nodeinit plugin, reports option typos by
//! key, refuses a non-cgroup2 root, and runs a real scope lifecycle through
//! the ABI with errors keeping their variant and fields.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::sync::OnceLock;

use common::{Sleeper, TestRoot};
use hpc_node::cgroup::slices;
use hpc_node::{CgroupError, CgroupManager, ResourceLimits, SliceOwner};
use nodeinit_plugin_api::{BackendKind, CgroupAdapter, ErrorKind, HostServices, PluginLibrary};

fn library() -> &'static PluginLibrary {
    static LIBRARY: OnceLock<PluginLibrary> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        let path = common::plugin_so_path();
        // SAFETY: the file is the cdylib cargo built from this crate in the
        // same invocation as this test, in its own target directory.
        unsafe { PluginLibrary::open(&path) }
            .unwrap_or_else(|err| panic!("opening {}: {err}", path.display()))
    })
}

fn construct(
    options: &serde_json::Value,
) -> Result<CgroupAdapter, nodeinit_plugin_api::PluginError> {
    library().cgroup(HostServices::new("cgroupfs", None), &options.to_string())
}

#[test]
fn identifies_itself_as_the_cgroupfs_plugin() {
    let library = library();
    assert_eq!(library.name(), "cgroupfs");
    assert_eq!(library.version(), env!("CARGO_PKG_VERSION"));
    assert_eq!(library.backends(), vec![BackendKind::Cgroup]);
}

#[test]
fn option_typo_names_plugin_and_key() {
    let err = construct(&serde_json::json!({"controlers": ["cpu"]})).unwrap_err();
    assert_eq!(err.kind, ErrorKind::INVALID_OPTIONS);
    assert!(err.message.contains("cgroupfs"), "{}", err.message);
    assert!(err.message.contains("controlers"), "{}", err.message);
}

#[test]
fn non_cgroup2_root_fails_construction_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let err = construct(&serde_json::json!({"root": dir.path(), "io_devices": []})).unwrap_err();
    assert_eq!(err.kind, ErrorKind::CONSTRUCTION_FAILED);
    assert!(err.message.contains("option `root`"), "{}", err.message);
    assert!(
        err.message.contains("is not a cgroup v2 filesystem"),
        "{}",
        err.message
    );
}

#[test]
fn scope_lifecycle_through_the_abi() {
    let root = TestRoot::new("so");
    let manager =
        construct(&serde_json::json!({"root": root.path(), "owner": "workload", "io_devices": []}))
            .unwrap();
    manager.create_hierarchy().unwrap();
    let handle = manager
        .create_scope(slices::WORKLOAD_ROOT, "job-7", &ResourceLimits::default())
        .unwrap();
    assert_eq!(
        handle.path,
        root.path()
            .join("workload.slice/job-7.scope")
            .display()
            .to_string()
    );
    let mut child = Sleeper::spawn_into(std::path::Path::new(&handle.path));
    assert!(!manager.is_scope_empty(&handle).unwrap());
    assert_eq!(manager.read_metrics(&handle.path).unwrap().nr_processes, 1);
    manager.destroy_scope(&handle).unwrap();
    assert_eq!(child.wait().signal(), Some(9));
    assert!(!std::path::Path::new(&handle.path).exists());

    match manager.create_scope(slices::PACT_GPU, "x", &ResourceLimits::default()) {
        Err(CgroupError::PermissionDenied { path, owner }) => {
            assert_eq!(path, "pact.slice/gpu.slice");
            assert_eq!(owner, SliceOwner::Pact);
        }
        other => panic!("expected PermissionDenied across the ABI, got {other:?}"),
    }
    match manager.is_scope_empty(&handle) {
        Err(CgroupError::NotFound { path }) => assert_eq!(path, handle.path),
        other => panic!("expected NotFound across the ABI, got {other:?}"),
    }
}
