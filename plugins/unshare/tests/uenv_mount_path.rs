//! Where the uenv appears inside the allocation's mount namespace, and that
//! the host's filesystem is untouched: an existing directory is mounted
//! over; a missing path is created only inside the namespace, on a
//! read-only tmpfs that mirrors its parent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use hpc_node::{NamespaceProvider, NamespaceRequest, NamespaceType};
use nodeinit_handoff::NamespaceFdProvider;
use nodeinit_unshare::{UnshareBackend, UnshareConfig, UnshareOptions};

fn backend_with_path(
    tmp: &Path,
    uenv_mount_path: &Path,
) -> (UnshareBackend, Arc<common::TestMounts>) {
    let mounts = Arc::new(common::TestMounts::new(
        &tmp.join("images"),
        &tmp.join("uenv"),
    ));
    let options = UnshareOptions {
        uenv_mount_path: uenv_mount_path.to_str().unwrap().into(),
        ..UnshareOptions::default()
    };
    let backend = UnshareBackend::new(
        UnshareConfig::try_from(options).unwrap(),
        Some(mounts.clone()),
    );
    (backend, mounts)
}

fn request(id: &str) -> NamespaceRequest {
    NamespaceRequest {
        allocation_id: id.into(),
        namespaces: vec![NamespaceType::Mount],
        uenv_image: Some("hello.sqfs".into()),
    }
}

fn setup() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("images")).unwrap();
    common::make_image(&tmp.path().join("images"), "hello.sqfs");
    tmp
}

#[test]
fn an_existing_directory_is_mounted_over_inside_only() {
    let tmp = setup();
    let target = tmp.path().join("ue");
    std::fs::create_dir(&target).unwrap();
    let (backend, mounts) = backend_with_path(tmp.path(), &target);
    let response = backend.create_namespaces(&request("existing-1")).unwrap();
    assert_eq!(
        response.uenv_mount_path.as_deref(),
        Some(target.to_str().unwrap())
    );
    let fds = backend.namespace_fds("existing-1").unwrap();
    let script = format!("cat {0}/hello.txt; if touch {0}/x 2>/dev/null; then echo writable; else echo read-only; fi", target.display());
    let out = nodeinit_tests::run_in_namespaces(&fds, &script);
    assert_eq!(out, format!("{}read-only\n", common::IMAGE_FILE_CONTENT));
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        0,
        "the host's directory stays empty"
    );
    drop(fds);
    backend.release_namespaces("existing-1").unwrap();
    assert!(mounts.mounted().is_empty());
}

#[test]
fn a_missing_path_is_created_only_inside_the_namespace() {
    let tmp = setup();
    std::fs::write(tmp.path().join("sibling.txt"), "sibling\n").unwrap();
    let target = tmp.path().join("x/y/ue");
    let (backend, mounts) = backend_with_path(tmp.path(), &target);
    backend.create_namespaces(&request("missing-1")).unwrap();
    let fds = backend.namespace_fds("missing-1").unwrap();
    let base = tmp.path().display();
    let script = format!(
        "cat {0}/hello.txt; cat {base}/sibling.txt; ls {base}/images | grep -cx hello.sqfs; \
         if touch {base}/new 2>/dev/null; then echo writable; else echo read-only; fi",
        target.display()
    );
    let out = nodeinit_tests::run_in_namespaces(&fds, &script);
    assert_eq!(
        out,
        format!("{}sibling\n1\nread-only\n", common::IMAGE_FILE_CONTENT)
    );
    assert!(
        !tmp.path().join("x").exists(),
        "nothing is created on the host's filesystem"
    );
    assert!(!tmp.path().join("new").exists());
    drop(fds);
    backend.release_namespaces("missing-1").unwrap();
    assert!(mounts.mounted().is_empty());
}
