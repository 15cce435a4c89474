//! The keeper's view of `/proc/self/mountinfo` (proc(5)): which paths are
//! mount points and with which filesystem type, read by
//! `nodeinit_sys::mountinfo`. Only reads; never mounts.

use std::path::PathBuf;

/// One mount as mountinfo describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPoint {
    /// Field 5, unescaped.
    pub target: PathBuf,
    /// The filesystem type after the ` - ` separator.
    pub fstype: String,
    /// The superblock options (last field).
    pub super_options: String,
}

/// SquashFS mounts other than `/` in this mount namespace right now: the
/// uenv images (a squashfs root, as dracut's or a first stage's, is not one).
/// `None` when `/proc/self/mountinfo` cannot be read.
pub fn mounted_squashfs_images() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    Some(count_squashfs_images(&text))
}

fn count_squashfs_images(mountinfo: &str) -> u64 {
    mount_points(mountinfo)
        .iter()
        .filter(|m| m.fstype == "squashfs" && m.target != std::path::Path::new("/"))
        .count() as u64
}

/// Parse mountinfo text (through `nodeinit_sys::mountinfo`, the one
/// reader); malformed lines are skipped (the kernel writes the file, but a
/// truncated read must not stop boot).
pub fn mount_points(mountinfo: &str) -> Vec<MountPoint> {
    nodeinit_sys::mountinfo::parse(mountinfo)
        .into_iter()
        .map(|m| MountPoint {
            target: m.mount_point,
            fstype: m.fs_type,
            super_options: m.super_options,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squashfs_images_but_not_a_squashfs_root() {
        let text = "22 1 7:0 / / ro,relatime - squashfs /dev/vda ro\n\
                    30 22 7:1 / /run/pact/uenv/base ro,nosuid,nodev - squashfs /dev/loop0 ro\n\
                    31 22 0:5 / /run rw - tmpfs tmpfs rw\n\
                    32 22 7:2 / /run/pact/uenv/tools-1a2b3c4d ro - squashfs /dev/loop1 ro\n";
        assert_eq!(count_squashfs_images(text), 2);
    }

    #[test]
    fn parses_targets_types_and_escapes() {
        let text = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n\
                    50 27 0:40 / /mnt/a\\040b rw shared:1 - tmpfs tmpfs rw\n\
                    garbage\n";
        let points = mount_points(text);
        assert_eq!(points.len(), 3);
        assert_eq!(points[0].target, PathBuf::from("/proc"));
        assert_eq!(points[1].fstype, "cgroup2");
        assert_eq!(points[1].super_options, "rw,nsdelegate");
        assert_eq!(points[2].target, PathBuf::from("/mnt/a b"));
    }

    #[test]
    fn truncated_escape_is_kept_verbatim() {
        let text = "50 27 0:40 / /a\\04 rw - tmpfs tmpfs rw\n";
        assert_eq!(mount_points(text)[0].target, PathBuf::from("/a\\04"));
    }
}
