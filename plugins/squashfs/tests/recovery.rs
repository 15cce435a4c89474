//! WI6: a process holding mounts dies; a new manager recounts from the kernel
//! and the state file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{path_str, Fixture, DEADLINE, LONG_HOLD, SHORT_HOLD};
use hpc_node::{MountHandle, MountManager};
use nodeinit_plugin_api::AllocationMounts;
use nodeinit_squashfs::{ManagerConfig, SquashfsManager};

const CHILD_ENV: &str = "NODEINIT_SQUASHFS_CRASH_CHILD";
const CHILD_READY: &str = "CHILD-ACQUIRED";

/// The child role of `child_dies_holding_mounts_and_reconstruct_recounts`
/// (the same test re-run in a child process with `CHILD_ENV` set).
fn crash_child_acquires_then_waits_to_be_killed(spec: &str) {
    let parts: Vec<&str> = spec.split('\n').collect();
    let [images, mount_base, state_dir, first, second] = parts[..] else {
        panic!("bad child spec {spec:?}");
    };
    let manager = SquashfsManager::new(ManagerConfig {
        image_dirs: vec![PathBuf::from(images)],
        mount_base: PathBuf::from(mount_base),
        hold_time: LONG_HOLD,
        state_dir: PathBuf::from(state_dir),
    })
    .unwrap();
    manager.acquire_for("a", first).unwrap();
    manager.acquire_for("b", second).unwrap();
    manager.acquire_for("c", first).unwrap();
    println!("{CHILD_READY}");
    // Block until killed: stdin is a pipe the parent never writes to.
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    panic!("the parent closed stdin instead of killing the child");
}

fn state_holders(manager: &SquashfsManager) -> serde_json::Value {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(manager.state_file_path()).unwrap()).unwrap();
    state["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["image"].as_str().unwrap().to_owned(),
                m["holders"].clone(),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[test]
fn child_dies_holding_mounts_and_reconstruct_recounts() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        crash_child_acquires_then_waits_to_be_killed(&spec);
        return;
    }
    let fx = Fixture::new();
    let first = fx.make_image("first.sqfs", &[("f", b"1")]);
    let second = fx.make_image("second.sqfs", &[("f", b"2")]);
    let spec = [
        path_str(&fx.images),
        path_str(&fx.mount_base),
        path_str(fx.state.path()),
        path_str(&first),
        path_str(&second),
    ]
    .join("\n");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_dies_holding_mounts_and_reconstruct_recounts",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD_ENV, spec)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        if line == CHILD_READY {
            break;
        }
        seen.push(line);
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "child exited before acquiring; its output: {seen:?}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );

    // The kernel keeps both mounts after the crash.
    assert_eq!(fx.mounts().len(), 2, "{:?}", fx.mounts());

    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    assert_eq!(
        manager.refcount(path_str(&first)),
        None,
        "a new manager starts empty"
    );
    manager
        .reconstruct_state(&["a".to_owned(), "c".to_owned()])
        .unwrap();
    assert_eq!(manager.refcount(path_str(&first)), Some(2));
    assert!(!manager.hold_pending(path_str(&first)));
    assert_eq!(manager.refcount(path_str(&second)), Some(0));
    assert!(
        manager.hold_pending(path_str(&second)),
        "an unheld mount must get a hold timer"
    );
    assert_eq!(
        state_holders(&manager),
        serde_json::json!({ path_str(&first): {"a": 1, "c": 1}, path_str(&second): {} })
    );

    // Recovered references behave like fresh ones.
    let handle = MountHandle {
        image_path: path_str(&first).to_owned(),
        mount_point: path_str(&fx.mount_base.join("first")).to_owned(),
    };
    manager.release_for("a", &handle).unwrap();
    manager.release_for("c", &handle).unwrap();
    // b is not active any more: it holds nothing on the first image.
    match manager.release_for("b", &handle) {
        Err(hpc_node::MountError::RefcountInconsistency { image_path, .. }) => {
            assert_eq!(image_path, path_str(&first));
        }
        other => panic!("expected RefcountInconsistency for b, got {other:?}"),
    }
    assert_eq!(manager.refcount(path_str(&first)), Some(0));
    manager.force_unmount(path_str(&first)).unwrap();
    manager.force_unmount(path_str(&second)).unwrap();
    fx.wait_clean().unwrap();
}

#[test]
fn reconstruct_without_state_file_gives_zero_and_hold_that_expires() {
    let fx = Fixture::new();
    let image = fx.make_image("orphan.sqfs", &[("f", b"x")]);
    {
        let before = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
        before.acquire_for("gone", path_str(&image)).unwrap();
    }
    std::fs::remove_file(fx.state.path().join("squashfs-mounts.json")).unwrap();
    let manager = SquashfsManager::new(fx.config(SHORT_HOLD)).unwrap();
    manager.reconstruct_state(&["gone".to_owned()]).unwrap();
    assert_eq!(manager.refcount(path_str(&image)), Some(0));
    assert!(
        manager.wait_unmounted(path_str(&image), DEADLINE),
        "hold timer after reconstruct did not fire"
    );
    fx.wait_clean().unwrap();
}

#[test]
fn reconstruct_drops_recorded_mounts_the_kernel_lost() {
    let fx = Fixture::new();
    let image = fx.make_image("lost.sqfs", &[("f", b"x")]);
    let mount_point = {
        let before = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
        before
            .acquire_for("a", path_str(&image))
            .unwrap()
            .mount_point
    };
    // Someone else unmounted it behind our back.
    nix::mount::umount2(Path::new(&mount_point), nix::mount::MntFlags::MNT_DETACH).unwrap();
    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    manager.reconstruct_state(&["a".to_owned()]).unwrap();
    assert_eq!(manager.refcount(path_str(&image)), None);
    assert_eq!(state_holders(&manager), serde_json::json!({}));
    fx.wait_clean().unwrap();
}

#[test]
fn corrupt_state_file_fails_reconstruct_with_path_and_remedy() {
    let fx = Fixture::new();
    std::fs::write(fx.state.path().join("squashfs-mounts.json"), "not json").unwrap();
    let manager = SquashfsManager::new(fx.config(Duration::from_secs(1))).unwrap();
    match manager.reconstruct_state(&[]) {
        Err(hpc_node::MountError::Io(e)) => {
            let text = e.to_string();
            assert!(
                text.contains("squashfs-mounts.json is not valid") && text.contains("move it away"),
                "{text}"
            );
        }
        other => panic!("expected Io error, got {other:?}"),
    }
}
