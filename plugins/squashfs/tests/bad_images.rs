//! Every refused image gets its own error, and nothing is mounted or attached.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::symlink;

use common::{path_str, Fixture, LONG_HOLD};
use hpc_node::{MountError, MountManager};
use nodeinit_squashfs::SquashfsManager;

/// Acquire `requested`, expect `MountFailed` whose reason contains every
/// `needle`, and check nothing was mounted or attached.
fn refused(fx: &Fixture, manager: &SquashfsManager, requested: &str, needles: &[&str]) {
    match manager.acquire_mount(requested) {
        Err(MountError::MountFailed { image_path, reason }) => {
            assert_eq!(image_path, requested);
            for needle in needles {
                assert!(
                    reason.contains(needle),
                    "reason for {requested} lacks {needle:?}: {reason}"
                );
            }
        }
        other => panic!("{requested}: expected MountFailed, got {other:?}"),
    }
    assert!(
        fx.mounts().is_empty(),
        "{requested}: mounted {:?}",
        fx.mounts()
    );
    assert!(
        fx.loop_devices().is_empty(),
        "{requested}: attached {:?}",
        fx.loop_devices()
    );
    assert_eq!(manager.refcount(requested), None);
}

#[test]
fn missing_image() {
    let fx = Fixture::new();
    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    let missing = fx.images.join("missing.sqfs");
    refused(
        &fx,
        &manager,
        path_str(&missing),
        &["missing.sqfs does not exist", "image_dirs"],
    );
    refused(
        &fx,
        &manager,
        "missing.sqfs",
        &["missing.sqfs does not exist"],
    );
    let missing_dir = fx.images.join("nodir/missing.sqfs");
    refused(&fx, &manager, path_str(&missing_dir), &["does not exist"]);
}

#[test]
fn directory() {
    let fx = Fixture::new();
    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    let dir = fx.images.join("dir.sqfs");
    std::fs::create_dir(&dir).unwrap();
    refused(
        &fx,
        &manager,
        path_str(&dir),
        &["is a directory, not a squashfs image file"],
    );
}

#[test]
fn symlink_even_to_a_valid_image_inside_image_dirs() {
    let fx = Fixture::new();
    let real = fx.make_image("real.sqfs", &[("f", b"x")]);
    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    let link = fx.images.join("link.sqfs");
    symlink(&real, &link).unwrap();
    refused(
        &fx,
        &manager,
        path_str(&link),
        &["link.sqfs is a symbolic link", "configure the real file"],
    );
    refused(&fx, &manager, "link.sqfs", &["is a symbolic link"]);
}

#[test]
fn outside_image_dirs_including_dot_dot_tricks() {
    let fx = Fixture::new();
    let elsewhere = fx.root().join("elsewhere");
    let outside = fx.make_image_in(&elsewhere, "outside.sqfs", &[("f", b"x")]);
    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    let why = [
        "is outside the configured image_dirs",
        "add its directory to image_dirs",
    ];
    refused(&fx, &manager, path_str(&outside), &why);
    let dotdot = format!("{}/../elsewhere/outside.sqfs", fx.images.display());
    refused(&fx, &manager, &dotdot, &why);
    let deeper = format!("{}/sub/../../elsewhere/outside.sqfs", fx.images.display());
    std::fs::create_dir(fx.images.join("sub")).unwrap();
    refused(&fx, &manager, &deeper, &why);
    // A symlinked directory inside image_dirs is never followed (issue 12, item 8).
    symlink(&elsewhere, fx.images.join("door")).unwrap();
    let through_link = fx.images.join("door/outside.sqfs");
    refused(
        &fx,
        &manager,
        path_str(&through_link),
        &[
            "passes through a symbolic link below image dir",
            "links are not followed below an image dir",
            "add the link's target directory to image_dirs",
        ],
    );
    refused(
        &fx,
        &manager,
        "../elsewhere/outside.sqfs",
        &["neither an absolute path nor a bare file name"],
    );
    refused(&fx, &manager, "/etc/passwd", &why);
}

#[test]
fn not_a_squashfs_file() {
    let fx = Fixture::new();
    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    let text = fx.images.join("notes.sqfs");
    std::fs::write(
        &text,
        "this is plain text, long enough to hold a superblock ....................................",
    )
    .unwrap();
    refused(
        &fx,
        &manager,
        path_str(&text),
        &["not a squashfs image", "expected the magic \"hsqs\""],
    );
}

#[test]
fn truncated_squashfs() {
    let fx = Fixture::new();
    // Incompressible content so the image is far larger than its superblock.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let noise: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    let image = fx.make_image("cut.sqfs", &[("noise.bin", &noise)]);
    let full = std::fs::metadata(&image).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    file.set_len(full / 2).unwrap();
    drop(file);
    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    let expected_size = format!("the file has {}", full / 2);
    refused(
        &fx,
        &manager,
        path_str(&image),
        &["truncated squashfs image", &expected_size],
    );

    let tiny = fx.images.join("tiny.sqfs");
    std::fs::write(&tiny, b"hsqs\x02\x00").unwrap();
    refused(
        &fx,
        &manager,
        path_str(&tiny),
        &[
            "truncated squashfs image",
            "the superblock says 96 bytes, the file has 6",
        ],
    );
}

#[test]
fn empty_file() {
    let fx = Fixture::new();
    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    let empty = fx.images.join("empty.sqfs");
    std::fs::write(&empty, b"").unwrap();
    refused(
        &fx,
        &manager,
        path_str(&empty),
        &["the file is empty (0 bytes)"],
    );
}

#[test]
fn fifo_does_not_hang() {
    let fx = Fixture::new();
    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    let fifo = fx.images.join("pipe.sqfs");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    refused(
        &fx,
        &manager,
        path_str(&fifo),
        &["is a FIFO, not a regular squashfs image file"],
    );
}

#[test]
fn unusable_mount_name() {
    let fx = Fixture::new();
    let odd = fx.make_image("my env.sqfs", &[("f", b"x")]);
    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    refused(
        &fx,
        &manager,
        path_str(&odd),
        &[
            "does not give a usable mount point name",
            "rename the image",
        ],
    );
}

#[test]
fn invalid_allocation_id_is_refused_before_anything_happens() {
    use nodeinit_plugin_api::AllocationMounts;
    let fx = Fixture::new();
    let image = fx.make_image("ok.sqfs", &[("f", b"x")]);
    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    match manager.acquire_for("a/b", path_str(&image)) {
        Err(MountError::MountFailed { reason, .. }) => {
            assert!(reason.contains("\"a/b\" must match"), "{reason}");
        }
        other => panic!("expected MountFailed, got {other:?}"),
    }
    assert!(fx.mounts().is_empty());
}
