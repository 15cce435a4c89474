//! The built `libnodeinit_unshare.so` loads through the plugin ABI, rejects
//! bad options by name, and serves a uenv request across the boundary —
//! with the mount backend handed over through `HostServices`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;

use hpc_node::{NamespaceProvider, NamespaceRequest, NamespaceType};
use nodeinit_handoff::NamespaceFdProvider;
use nodeinit_plugin_api::{BackendKind, ErrorKind, HostServices, PluginLibrary};

fn plugin_path() -> PathBuf {
    nodeinit_tests::cdylib_beside_test_binary("libnodeinit_unshare.so")
}

fn open_plugin() -> PluginLibrary {
    // SAFETY: the file is this crate's own freshly built cdylib, which nobody
    // else writes while the test runs; it stays loaded for the process.
    unsafe { PluginLibrary::open(&plugin_path()) }.unwrap()
}

#[test]
fn so_exports_a_namespace_backend_named_unshare() {
    let library = open_plugin();
    assert_eq!(library.name(), "unshare");
    assert_eq!(library.version(), env!("CARGO_PKG_VERSION"));
    assert_eq!(library.backends(), vec![BackendKind::Namespace]);
}

#[test]
fn bad_options_name_plugin_and_key() {
    let library = open_plugin();
    let err = library
        .namespace(HostServices::new("unshare", None), r#"{"uenv_path": "/x"}"#)
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::INVALID_OPTIONS);
    assert!(
        err.message.contains("unshare") && err.message.contains("unknown field `uenv_path`"),
        "{err}"
    );
    let err = library
        .namespace(
            HostServices::new("unshare", None),
            r#"{"uenv_mount_path": "relative"}"#,
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::CONSTRUCTION_FAILED);
    assert!(
        err.message.contains("option uenv_mount_path")
            && err.message.contains("\"relative\" must be absolute"),
        "{err}"
    );
}

#[test]
fn uenv_namespaces_across_the_abi() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("images")).unwrap();
    common::make_image(&tmp.path().join("images"), "hello.sqfs");
    let mounts = Arc::new(common::TestMounts::new(
        &tmp.path().join("images"),
        &tmp.path().join("uenv"),
    ));
    let library = open_plugin();
    let backend = library
        .namespace(HostServices::new("unshare", Some(mounts.clone())), "{}")
        .unwrap();
    let response = backend
        .create_namespaces(&NamespaceRequest {
            allocation_id: "abi-1".into(),
            namespaces: vec![NamespaceType::Net, NamespaceType::Mount],
            uenv_image: Some("hello.sqfs".into()),
        })
        .unwrap();
    assert_eq!(
        response.fd_types,
        vec![NamespaceType::Net, NamespaceType::Mount]
    );
    let fds = backend.namespace_fds("abi-1").unwrap();
    assert!(common::fd_link(fds[1].as_fd()).starts_with("mnt:["));
    let out = nodeinit_tests::run_in_namespaces(&fds, "cat /user-environment/hello.txt");
    assert_eq!(out, common::IMAGE_FILE_CONTENT);
    drop(fds);
    backend.release_namespaces("abi-1").unwrap();
    assert!(mounts.mounted().is_empty(), "{:?}", mounts.mounted());
    let err = backend.release_namespaces("abi-1").unwrap_err();
    assert!(
        matches!(err, hpc_node::NamespaceError::AllocationNotFound { ref allocation_id } if allocation_id == "abi-1"),
        "{err}"
    );
}

#[test]
fn the_owner_of_an_allocation_crosses_the_abi() {
    // Interface 1.1: the server's owner calls reach the loaded backend, so
    // the uid it records (and persists, under a keeper) is the requester's.
    let library = open_plugin();
    let backend = library
        .namespace(HostServices::new("unshare", None), "{}")
        .unwrap();
    let request = NamespaceRequest {
        allocation_id: "owned-1".into(),
        namespaces: vec![NamespaceType::Net],
        uenv_image: None,
    };
    backend.create_namespaces_owned(&request, 4321).unwrap();
    assert_eq!(backend.allocation_owner("owned-1"), Some(4321));
    assert_eq!(backend.allocation_owner("never-made"), None);
    backend.release_namespaces("owned-1").unwrap();
    assert_eq!(backend.allocation_owner("owned-1"), None);
}
