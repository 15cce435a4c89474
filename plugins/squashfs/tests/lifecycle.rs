//! Acquire, count, hold, release and force-unmount against the real kernel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Barrier};

use common::{loop_attr, path_str, Fixture, DEADLINE, LONG_HOLD, SHORT_HOLD};
use hpc_node::{MountError, MountManager};
use nodeinit_plugin_api::AllocationMounts;
use nodeinit_squashfs::image::MountName;
use nodeinit_squashfs::{AttachMethod, SquashfsManager};

#[test]
fn first_acquire_mounts_second_counts_release_unmounts_after_hold() {
    let fx = Fixture::new();
    let image = fx.make_image("base-1.0.sqfs", &[("hello.txt", b"hello uenv")]);
    let manager = SquashfsManager::new(fx.config(SHORT_HOLD)).unwrap();

    let first = manager.acquire_mount(path_str(&image)).unwrap();
    assert_eq!(first.image_path, path_str(&image));
    assert_eq!(
        first.mount_point,
        fx.mount_base.join("base-1.0").display().to_string()
    );
    let content = std::fs::read_to_string(format!("{}/hello.txt", first.mount_point)).unwrap();
    assert_eq!(content, "hello uenv");

    let mounts = fx.mounts_at(&first.mount_point);
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0].fs_type, "squashfs");
    assert_eq!(loop_attr(&mounts[0], "autoclear"), "1");
    assert_eq!(loop_attr(&mounts[0], "ro"), "1");
    assert_eq!(loop_attr(&mounts[0], "backing_file"), path_str(&image));
    let opts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = opts
        .lines()
        .find(|l| l.contains(&format!(" {} ", first.mount_point)))
        .unwrap();
    assert!(line.contains(" ro,nosuid,nodev"), "{line}");

    // A bare name resolves to the same image: counted, not mounted again.
    let second = manager.acquire_mount("base-1.0.sqfs").unwrap();
    assert_eq!(second.mount_point, first.mount_point);
    assert_eq!(fx.mounts_at(&first.mount_point).len(), 1);
    assert_eq!(manager.refcount(path_str(&image)), Some(2));

    manager.release_mount(&first).unwrap();
    assert_eq!(manager.refcount(path_str(&image)), Some(1));
    assert!(!manager.hold_pending(path_str(&image)));
    manager.release_mount(&second).unwrap();
    assert_eq!(manager.refcount(path_str(&image)), Some(0));
    assert!(manager.hold_pending(path_str(&image)));

    assert!(
        manager.wait_unmounted(path_str(&image), DEADLINE),
        "not unmounted after the hold"
    );
    assert!(fx.mounts_at(&first.mount_point).is_empty());
    assert!(
        !fx.mount_base.join("base-1.0").exists(),
        "mount point directory left behind"
    );
    fx.wait_clean().unwrap();
}

#[test]
fn acquire_during_hold_cancels_the_timer_and_keeps_the_same_mount() {
    let fx = Fixture::new();
    let image = fx.make_image("keep.sqfs", &[("f", b"x")]);
    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    let handle = manager.acquire_mount(path_str(&image)).unwrap();
    let device_before = fx.mounts_at(&handle.mount_point)[0].source.clone();

    manager.release_mount(&handle).unwrap();
    assert!(manager.hold_pending(path_str(&image)));
    assert_eq!(
        fx.mounts_at(&handle.mount_point).len(),
        1,
        "unmounted before the hold expired"
    );

    let again = manager.acquire_mount(path_str(&image)).unwrap();
    assert!(
        !manager.hold_pending(path_str(&image)),
        "acquire did not cancel the hold timer"
    );
    assert_eq!(manager.refcount(path_str(&image)), Some(1));
    let mounts = fx.mounts_at(&again.mount_point);
    assert_eq!(mounts.len(), 1);
    assert_eq!(
        mounts[0].source, device_before,
        "the image was remounted instead of kept"
    );

    manager.force_unmount(path_str(&image)).unwrap();
    fx.wait_clean().unwrap();
}

#[test]
fn hold_expiry_after_reacquire_and_release_still_unmounts() {
    let fx = Fixture::new();
    let image = fx.make_image("cycle.sqfs", &[("f", b"x")]);
    let manager = SquashfsManager::new(fx.config(SHORT_HOLD)).unwrap();
    for _ in 0..3 {
        let h = manager.acquire_mount(path_str(&image)).unwrap();
        assert_eq!(
            std::fs::read_to_string(format!("{}/f", h.mount_point)).unwrap(),
            "x"
        );
        manager.release_mount(&h).unwrap();
        assert!(manager.wait_unmounted(path_str(&image), DEADLINE));
        fx.wait_clean().unwrap();
    }
}

#[test]
fn force_unmount_is_immediate_and_drops_the_count() {
    let fx = Fixture::new();
    let image = fx.make_image("forced.sqfs", &[("f", b"x")]);
    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    let handle = manager.acquire_mount(path_str(&image)).unwrap();
    manager.acquire_for("job-1", path_str(&image)).unwrap();
    assert_eq!(manager.refcount(path_str(&image)), Some(2));

    manager.force_unmount(path_str(&image)).unwrap();
    assert_eq!(manager.refcount(path_str(&image)), None);
    assert!(
        fx.mounts_at(&handle.mount_point).is_empty(),
        "MNT_DETACH must remove it at once"
    );
    let state = std::fs::read_to_string(manager.state_file_path()).unwrap();
    assert!(
        !state.contains("forced.sqfs"),
        "state still lists the image: {state}"
    );

    match manager.release_mount(&handle) {
        Err(MountError::RefcountInconsistency { image_path, detail }) => {
            assert_eq!(image_path, path_str(&image));
            assert!(detail.contains("has not mounted"), "{detail}");
        }
        other => panic!("expected RefcountInconsistency, got {other:?}"),
    }
    // Forcing what is not mounted is a no-op (emergency commands are idempotent).
    manager.force_unmount(path_str(&image)).unwrap();
    fx.wait_clean().unwrap();
}

#[test]
fn release_below_zero_is_an_inconsistency_and_count_stays_zero() {
    let fx = Fixture::new();
    let image = fx.make_image("zero.sqfs", &[("f", b"x")]);
    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    let handle = manager.acquire_mount(path_str(&image)).unwrap();
    manager.release_mount(&handle).unwrap();

    match manager.release_mount(&handle) {
        Err(MountError::RefcountInconsistency { image_path, detail }) => {
            assert_eq!(image_path, path_str(&image));
            assert!(detail.contains("refcount 0, unchanged"), "{detail}");
        }
        other => panic!("expected RefcountInconsistency, got {other:?}"),
    }
    assert_eq!(manager.refcount(path_str(&image)), Some(0));
    assert!(
        manager.hold_pending(path_str(&image)),
        "the failed release stopped the hold timer"
    );

    match manager.release_for("job-9", &handle) {
        Err(MountError::RefcountInconsistency { detail, .. }) => {
            assert!(
                detail.contains("allocation job-9 holds no reference"),
                "{detail}"
            );
        }
        other => panic!("expected RefcountInconsistency, got {other:?}"),
    }
    match manager.release_for("../etc", &handle) {
        Err(MountError::RefcountInconsistency { detail, .. }) => {
            assert!(
                detail.contains("must match [A-Za-z0-9][A-Za-z0-9._-]*"),
                "{detail}"
            );
        }
        other => panic!("expected RefcountInconsistency, got {other:?}"),
    }
    assert_eq!(manager.refcount(path_str(&image)), Some(0));

    let unknown = hpc_node::MountHandle {
        image_path: fx.images.join("never.sqfs").display().to_string(),
        mount_point: String::new(),
    };
    match manager.release_mount(&unknown) {
        Err(MountError::RefcountInconsistency { detail, .. }) => {
            assert!(detail.contains("has not mounted"), "{detail}");
        }
        other => panic!("expected RefcountInconsistency, got {other:?}"),
    }
    manager.force_unmount(path_str(&image)).unwrap();
    fx.wait_clean().unwrap();
}

#[test]
fn concurrent_first_acquires_mount_once() {
    let fx = Fixture::new();
    let image = fx.make_image("race.sqfs", &[("f", b"x")]);
    let manager = Arc::new(SquashfsManager::new(fx.config(LONG_HOLD)).unwrap());
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (manager, barrier, image) =
                (Arc::clone(&manager), Arc::clone(&barrier), image.clone());
            std::thread::spawn(move || {
                barrier.wait();
                manager.acquire_mount(path_str(&image)).unwrap()
            })
        })
        .collect();
    let handles: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(manager.refcount(path_str(&image)), Some(8));
    assert_eq!(
        fx.mounts_at(&handles[0].mount_point).len(),
        1,
        "{:?}",
        fx.mounts()
    );
    assert_eq!(fx.loop_devices().len(), 1, "{:?}", fx.loop_devices());
    manager.force_unmount(path_str(&image)).unwrap();
    fx.wait_clean().unwrap();
}

#[test]
fn set_fd_fallback_attaches_read_only_autoclear() {
    let fx = Fixture::new();
    let image = fx.make_image("legacy.sqfs", &[("f", b"legacy")]);
    let manager =
        SquashfsManager::with_attach_method(fx.config(SHORT_HOLD), AttachMethod::SetFdThenStatus)
            .unwrap();
    let handle = manager.acquire_mount(path_str(&image)).unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("{}/f", handle.mount_point)).unwrap(),
        "legacy"
    );
    let mounts = fx.mounts_at(&handle.mount_point);
    assert_eq!(loop_attr(&mounts[0], "autoclear"), "1");
    assert_eq!(loop_attr(&mounts[0], "ro"), "1");
    manager.release_mount(&handle).unwrap();
    assert!(manager.wait_unmounted(path_str(&image), DEADLINE));
    fx.wait_clean().unwrap();
}

/// Images named alike in two directories get distinct mount points
/// (tests/collision.rs); what can still clash is an image in the first dir
/// literally named like the disambiguated name of another: refused.
#[test]
fn mount_name_clash_is_refused_not_stacked() {
    let fx = Fixture::new();
    let one = fx.make_image_in(&fx.images.join("a"), "tools.sqfs", &[("f", b"a")]);
    let clash = MountName::for_image(&one, Some(&fx.images)).unwrap();
    let two = fx.make_image(&format!("{clash}.sqfs"), &[("f", b"b")]);
    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    let handle = manager.acquire_mount(path_str(&one)).unwrap();
    match manager.acquire_mount(path_str(&two)) {
        Err(MountError::MountFailed { image_path, reason }) => {
            assert_eq!(image_path, path_str(&two));
            assert!(
                reason.contains("already holds") && reason.contains("rename one of the images"),
                "{reason}"
            );
        }
        other => panic!("expected MountFailed, got {other:?}"),
    }
    assert_eq!(fx.mounts().len(), 1);
    assert_eq!(
        std::fs::read_to_string(format!("{}/f", handle.mount_point)).unwrap(),
        "a"
    );
    manager.force_unmount(path_str(&one)).unwrap();
    fx.wait_clean().unwrap();
}

#[test]
fn state_file_records_allocation_holders_not_anonymous_ones() {
    let fx = Fixture::new();
    let image = fx.make_image("rec.sqfs", &[("f", b"x")]);
    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    let anon = manager.acquire_mount(path_str(&image)).unwrap();
    let held = manager.acquire_for("job-7", "rec.sqfs").unwrap();
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(manager.state_file_path()).unwrap()).unwrap();
    assert_eq!(
        state,
        serde_json::json!({"version": 1, "mounts": [{
            "image": path_str(&image), "mount_point": held.mount_point, "holders": {"job-7": 1}
        }]})
    );
    manager.release_for("job-7", &held).unwrap();
    manager.release_mount(&anon).unwrap();
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(manager.state_file_path()).unwrap()).unwrap();
    assert_eq!(state["mounts"][0]["holders"], serde_json::json!({}));
    manager.force_unmount(path_str(&image)).unwrap();
    fx.wait_clean().unwrap();
}

#[test]
fn existing_mount_of_the_same_image_is_adopted_not_stacked() {
    let fx = Fixture::new();
    let image = fx.make_image("adopt.sqfs", &[("f", b"x")]);
    let first = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    let handle = first.acquire_mount(path_str(&image)).unwrap();
    drop(first); // a restart without reconstruct_state: the mount stays
    let second = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    let again = second.acquire_mount(path_str(&image)).unwrap();
    assert_eq!(again.mount_point, handle.mount_point);
    assert_eq!(fx.mounts_at(&handle.mount_point).len(), 1);
    second.force_unmount(path_str(&image)).unwrap();
    fx.wait_clean().unwrap();
}
