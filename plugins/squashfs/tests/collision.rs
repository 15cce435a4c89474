//! Issue 11, item 7: two images with the same file name in different
//! image_dirs are both mounted at once, each at its own mount point with its
//! own content, survive a restart (reconstruct_state) under the same names,
//! and are both released cleanly. Before the fix the second acquire was
//! refused ("mount point .../tools already holds ..."): 1 of 1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{path_str, Fixture, DEADLINE};
use hpc_node::MountManager;
use nodeinit_plugin_api::AllocationMounts;
use nodeinit_squashfs::image::MountName;
use nodeinit_squashfs::{ManagerConfig, SquashfsManager};

/// Hold long enough for the restart in the middle, short enough to wait for.
const HOLD: Duration = Duration::from_millis(300);

#[test]
fn same_file_name_in_two_image_dirs_mounts_both() {
    let fx = Fixture::new();
    let staging = fx.root().join("staging");
    let first = fx.make_image("tools.sqfs", &[("who", b"first image dir")]);
    let second = fx.make_image_in(&staging, "tools.sqfs", &[("who", b"second image dir")]);
    let config = ManagerConfig {
        image_dirs: vec![fx.images.clone(), staging.clone()],
        ..fx.config(HOLD)
    };
    let manager = SquashfsManager::new(config.clone()).unwrap();

    let one = manager.acquire_for("job-1", path_str(&first)).unwrap();
    let two = manager.acquire_for("job-2", path_str(&second)).unwrap();
    let expected_second = MountName::for_image(&second, Some(&fx.images)).unwrap();
    assert_eq!(one.mount_point, path_str(&fx.mount_base.join("tools")));
    assert_eq!(
        two.mount_point,
        path_str(&fx.mount_base.join(expected_second.as_str()))
    );
    assert!(
        expected_second.as_str().starts_with("tools-") && expected_second.as_str().len() == 14,
        "{expected_second}"
    );
    for (handle, who) in [(&one, "first image dir"), (&two, "second image dir")] {
        assert_eq!(
            std::fs::read_to_string(format!("{}/who", handle.mount_point)).unwrap(),
            who
        );
        assert_eq!(fx.mounts_at(&handle.mount_point).len(), 1);
    }
    assert_eq!(fx.loop_devices().len(), 2, "{:?}", fx.loop_devices());
    // A bare name is the one in the first image dir.
    let bare = manager.acquire_mount("tools.sqfs").unwrap();
    assert_eq!(bare.mount_point, one.mount_point);
    manager.release_mount(&bare).unwrap();

    // Restart: the new manager recounts both under the same names.
    drop(manager);
    let manager = SquashfsManager::new(config).unwrap();
    manager
        .reconstruct_state(&["job-1".to_owned(), "job-2".to_owned()])
        .unwrap();
    assert_eq!(manager.refcount(path_str(&first)), Some(1));
    assert_eq!(manager.refcount(path_str(&second)), Some(1));

    manager.release_for("job-1", &one).unwrap();
    manager.release_for("job-2", &two).unwrap();
    assert!(manager.wait_unmounted(path_str(&first), DEADLINE));
    assert!(manager.wait_unmounted(path_str(&second), DEADLINE));
    assert!(!fx.mount_base.join("tools").exists());
    assert!(!fx.mount_base.join(expected_second.as_str()).exists());
    fx.wait_clean().unwrap();
}
