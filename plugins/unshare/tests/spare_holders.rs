//! Spare holders (`spare_holders`): a request takes one made ahead of time,
//! on the real kernel, and never one that differs from a holder made at
//! request time — not one made for other namespaces, not one made before a
//! mount-table change (its mount namespace would lack the new mount), not
//! one whose uenv shadow misses a change of the shadowed directory, and
//! with the uenv image bound after the take.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use nodeinit_tests::wait_until;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use hpc_node::{NamespaceProvider, NamespaceRequest, NamespaceType};
use nodeinit_handoff::NamespaceFdProvider;
use nodeinit_namespaces::mount_namespace::Propagation;
use nodeinit_unshare::{UnshareBackend, UnshareConfig, UnshareOptions};

const ALL: [NamespaceType; 3] = [NamespaceType::Pid, NamespaceType::Net, NamespaceType::Mount];

/// One test at a time: one of them changes this process's mount table,
/// which discards every other test's spares.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A backend keeping two spares. Private propagation: no host mount reaches
/// a holder's namespace after it was made, so only a mount-table check can
/// keep a spare from missing one.
fn backend(tmp: &Path) -> (UnshareBackend, Arc<common::TestMounts>) {
    std::fs::create_dir_all(tmp.join("ue")).unwrap();
    backend_binding_at(tmp, &tmp.join("ue"))
}

/// [`backend`], binding images at `mount_path` (which may be missing).
fn backend_binding_at(tmp: &Path, mount_path: &Path) -> (UnshareBackend, Arc<common::TestMounts>) {
    std::fs::create_dir_all(tmp.join("images")).unwrap();
    common::make_image(&tmp.join("images"), "hello.sqfs");
    let mounts = Arc::new(common::TestMounts::new(
        &tmp.join("images"),
        &tmp.join("uenv"),
    ));
    let options = UnshareOptions {
        spare_holders: 2,
        propagation: Propagation::Private,
        uenv_mount_path: mount_path.to_str().unwrap().into(),
        ..UnshareOptions::default()
    };
    let backend = UnshareBackend::new(
        UnshareConfig::try_from(options).unwrap(),
        Some(mounts.clone()),
    );
    (backend, mounts)
}

fn request(id: &str, namespaces: &[NamespaceType], image: Option<&str>) -> NamespaceRequest {
    NamespaceRequest {
        allocation_id: id.into(),
        namespaces: namespaces.to_vec(),
        uenv_image: image.map(Into::into),
    }
}

/// The spares, once there are `count`.
fn spares_when(backend: &UnshareBackend, count: usize) -> Vec<i32> {
    let mut pids = Vec::new();
    wait_until(&format!("{count} spares are kept"), || {
        pids = backend.spare_holder_pids();
        pids.len() == count
    });
    pids
}

/// The spares, once both are new (none of `old`): the pool moved to `what`.
fn pool_moved(backend: &UnshareBackend, old: &[i32], what: &str) -> Vec<i32> {
    let mut now = Vec::new();
    wait_until(&format!("the pool moved to {what}"), || {
        now = backend.spare_holder_pids();
        now.len() == 2 && now.iter().all(|p| !old.contains(p))
    });
    now
}

/// The namespace `ns` of process `pid` (`"self"`: this one).
fn ns_link(pid: impl std::fmt::Display, ns: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .unwrap()
        .display()
        .to_string()
}

fn own_ns(ns: &str) -> String {
    ns_link("self", ns)
}

fn mount_points(pid: i32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap()
        .lines()
        .map(|l| l.split(' ').nth(4).unwrap().to_owned())
        .collect()
}

/// Gone: no such process, or (a persistent holder, not ours) a zombie.
fn gone(pid: i32) -> bool {
    common::process_state(pid).is_none_or(|s| s.starts_with('Z'))
}

#[test]
fn a_request_takes_a_ready_spare_with_its_image_bound_after() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (backend, mounts) = backend(tmp.path());
    assert!(
        backend.spare_holder_pids().is_empty(),
        "none before a request"
    );
    // The first request is served fresh and starts the refill.
    backend
        .create_namespaces(&request("first", &ALL, Some("hello.sqfs")))
        .unwrap();
    let first = backend.holder_pid("first").unwrap();
    let spares = spares_when(&backend, 2);
    assert!(!spares.contains(&first));
    for pid in &spares {
        assert_ne!(ns_link(*pid, "net"), ns_link(first, "net"));
        assert_ne!(ns_link(*pid, "mnt"), ns_link(first, "mnt"));
        assert_ne!(ns_link(*pid, "pid"), own_ns("pid"));
        // No image in a spare.
        assert!(!mount_points(*pid).contains(&tmp.path().join("ue").display().to_string()));
    }
    backend
        .create_namespaces(&request("second", &ALL, Some("hello.sqfs")))
        .unwrap();
    let second = backend.holder_pid("second").unwrap();
    assert_eq!(second, spares[0], "the oldest spare is taken");
    let fds = backend.namespace_fds("second").unwrap();
    let out = nodeinit_tests::run_in_namespaces(
        &fds,
        &format!("cat {}/hello.txt", tmp.path().join("ue").display()),
    );
    assert_eq!(out, common::IMAGE_FILE_CONTENT);
    drop(fds);
    // The pool refills to two, with a new holder.
    let refilled = spares_when(&backend, 2);
    assert_eq!(refilled[0], spares[1]);
    assert!(!spares.contains(&refilled[1]));
    backend.release_namespaces("first").unwrap();
    backend.release_namespaces("second").unwrap();
    assert!(gone(first) && gone(second));
    drop(backend);
    for pid in refilled {
        assert!(gone(pid), "spare {pid} outlived its backend");
    }
    assert!(mounts.mounted().is_empty());
}

#[test]
fn a_mount_made_after_the_spares_is_in_the_next_allocation() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (backend, _mounts) = backend(tmp.path());
    backend
        .create_namespaces(&request("before", &ALL, None))
        .unwrap();
    let spares = spares_when(&backend, 2);
    let late = tmp.path().join("late");
    std::fs::create_dir(&late).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &late,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=64k"),
    )
    .unwrap();
    let late_name = late.display().to_string();
    for pid in &spares {
        assert!(
            !mount_points(*pid).contains(&late_name),
            "private propagation: a spare never sees it"
        );
    }
    let result = backend.create_namespaces(&request("after", &ALL, None));
    let after = backend.holder_pid("after");
    nix::mount::umount2(&late, nix::mount::MntFlags::MNT_DETACH).unwrap();
    result.unwrap();
    let after = after.unwrap();
    assert!(
        !spares.contains(&after),
        "a spare made before the mount was handed out"
    );
    assert!(mount_points(after).contains(&late_name));
    // The discarded spares are killed off the request path.
    wait_until("the discarded spares are killed", || {
        spares.iter().all(|p| gone(*p))
    });
    backend.release_namespaces("before").unwrap();
    backend.release_namespaces("after").unwrap();
}

#[test]
fn a_request_for_other_namespaces_gets_a_fresh_holder_and_moves_the_pool() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (backend, _mounts) = backend(tmp.path());
    backend
        .create_namespaces(&request("all", &ALL, None))
        .unwrap();
    let spares = spares_when(&backend, 2);
    backend
        .create_namespaces(&request("net-only", &[NamespaceType::Net], None))
        .unwrap();
    let net_only = backend.holder_pid("net-only").unwrap();
    assert!(!spares.contains(&net_only));
    assert_eq!(
        ns_link(net_only, "pid"),
        own_ns("pid"),
        "no PID namespace was asked for"
    );
    assert_eq!(
        backend.namespace_fds("net-only").unwrap().len(),
        1,
        "one namespace FD"
    );
    // Now the pool keeps Net-only spares.
    let now = pool_moved(&backend, &spares, "Net-only spares");
    for pid in &now {
        assert_eq!(ns_link(*pid, "pid"), own_ns("pid"));
        assert_eq!(ns_link(*pid, "mnt"), own_ns("mnt"));
        assert_ne!(ns_link(*pid, "net"), own_ns("net"));
    }
    assert!(spares.iter().all(|p| gone(*p)));
    backend.release_namespaces("all").unwrap();
    backend.release_namespaces("net-only").unwrap();
}

/// Whether `path` is a mount point in process `pid`'s mount namespace.
fn is_mount_point(pid: i32, path: &Path) -> bool {
    mount_points(pid).contains(&path.display().to_string())
}

#[test]
fn a_spare_for_a_missing_mount_path_carries_its_shadow_and_the_image_is_bound_after() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let shadowed = tmp.path().join("shadowed");
    std::fs::create_dir(&shadowed).unwrap();
    std::fs::write(shadowed.join("kept.txt"), "kept\n").unwrap();
    std::os::unix::fs::symlink("kept.txt", shadowed.join("link")).unwrap();
    let mount_path = shadowed.join("ue");
    let (backend, mounts) = backend_binding_at(tmp.path(), &mount_path);
    backend
        .create_namespaces(&request("first", &ALL, Some("hello.sqfs")))
        .unwrap();
    let spares = spares_when(&backend, 2);
    for pid in &spares {
        assert!(is_mount_point(*pid, &shadowed), "spare {pid} has no shadow");
        assert!(is_mount_point(*pid, &shadowed.join("kept.txt")));
        assert!(
            !is_mount_point(*pid, &mount_path),
            "an image in spare {pid}"
        );
    }
    backend
        .create_namespaces(&request("second", &ALL, Some("hello.sqfs")))
        .unwrap();
    assert_eq!(backend.holder_pid("second").unwrap(), spares[0]);
    let fds = backend.namespace_fds("second").unwrap();
    let dir = shadowed.display();
    let out = nodeinit_tests::run_in_namespaces(
        &fds,
        &format!(
            "cat {dir}/ue/hello.txt {dir}/link; ls -A {dir}; touch {dir}/new 2>/dev/null || echo read-only"
        ),
    );
    assert_eq!(
        out,
        format!(
            "{}kept\nkept.txt\nlink\nue\nread-only\n",
            common::IMAGE_FILE_CONTENT
        ),
        "the image, the entries of the directory, a read-only shadow"
    );
    drop(fds);
    // A request without an image gets a plain holder, and the pool moves
    // to plain spares.
    backend
        .create_namespaces(&request("plain", &ALL, None))
        .unwrap();
    let plain = backend.holder_pid("plain").unwrap();
    assert!(!spares.contains(&plain));
    assert!(
        !is_mount_point(plain, &shadowed),
        "a shadow without an image"
    );
    let now = pool_moved(&backend, &spares, "plain spares");
    for pid in &now {
        assert!(!is_mount_point(*pid, &shadowed));
    }
    for id in ["first", "second", "plain"] {
        backend.release_namespaces(id).unwrap();
    }
    drop(backend);
    assert!(mounts.mounted().is_empty());
    assert!(!mount_path.exists(), "the host's directory was written to");
}

#[test]
fn a_change_of_the_shadowed_directory_after_the_spares_is_in_the_next_allocation() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let shadowed = tmp.path().join("shadowed");
    std::fs::create_dir(&shadowed).unwrap();
    std::fs::write(shadowed.join("gone.txt"), "gone\n").unwrap();
    let mount_path = shadowed.join("ue");
    let (backend, _mounts) = backend_binding_at(tmp.path(), &mount_path);
    backend
        .create_namespaces(&request("before", &ALL, Some("hello.sqfs")))
        .unwrap();
    let spares = spares_when(&backend, 2);
    std::fs::write(shadowed.join("late.txt"), "late\n").unwrap();
    std::fs::remove_file(shadowed.join("gone.txt")).unwrap();
    backend
        .create_namespaces(&request("after", &ALL, Some("hello.sqfs")))
        .unwrap();
    let after = backend.holder_pid("after").unwrap();
    assert!(
        !spares.contains(&after),
        "a spare whose shadow predates the change was handed out"
    );
    let fds = backend.namespace_fds("after").unwrap();
    let out = nodeinit_tests::run_in_namespaces(
        &fds,
        &format!(
            "ls -A {}; cat {}/late.txt",
            shadowed.display(),
            shadowed.display()
        ),
    );
    assert_eq!(out, "late.txt\nue\nlate\n");
    drop(fds);
    wait_until("the discarded spares are killed", || {
        spares.iter().all(|p| gone(*p))
    });
    // The pool refills, watching the directory again: a second change is
    // seen as well.
    let refilled = spares_when(&backend, 2);
    std::fs::write(shadowed.join("later.txt"), "later\n").unwrap();
    backend
        .create_namespaces(&request("later", &ALL, Some("hello.sqfs")))
        .unwrap();
    assert!(!refilled.contains(&backend.holder_pid("later").unwrap()));
    for id in ["before", "after", "later"] {
        backend.release_namespaces(id).unwrap();
    }
}
