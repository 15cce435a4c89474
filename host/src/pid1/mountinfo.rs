//! Reading `/proc/self/mountinfo` (proc(5)): which paths are mount points and
//! with which filesystem type. Only parses; never mounts.

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

/// Parse mountinfo text; malformed lines are skipped (the kernel writes the
/// file, but a truncated read must not stop boot).
pub fn mount_points(mountinfo: &str) -> Vec<MountPoint> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let target = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let _source = right.next();
            let super_options = right.next().unwrap_or("");
            Some(MountPoint {
                target: PathBuf::from(unescape(target)),
                fstype: fstype.to_owned(),
                super_options: super_options.to_owned(),
            })
        })
        .collect()
}

fn octal_escape(digits: Option<&[u8]>) -> Option<u8> {
    let digits = digits?;
    digits.iter().try_fold(0u8, |acc, &d| {
        (b'0'..=b'7')
            .contains(&d)
            .then(|| acc.checked_mul(8)?.checked_add(d - b'0'))
            .flatten()
    })
}

/// Undo the kernel's octal escapes (`\040` space, `\011` tab, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(value) = octal_escape(bytes.get(i + 1..i + 4)) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
        assert_eq!(unescape("/a\\04"), "/a\\04");
        assert_eq!(unescape("/a\\"), "/a\\");
    }
}
