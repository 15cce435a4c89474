//! This backend's view of the kernel's mount table (`/proc/self/mountinfo`),
//! read by `nodeinit_sys::mountinfo` (procfs plus the unescaping it lacks).
//!
//! Owns picking the squashfs mounts directly below the mount base and the
//! fields this backend needs. It must never change a mount: it only reports
//! what the kernel says.

use std::io;
use std::path::{Path, PathBuf};

pub use nodeinit_sys::mountinfo::{unescape, SELF_MOUNTINFO as MOUNTINFO_PATH};

/// One line of mountinfo, the fields this backend needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted (unescaped).
    pub mount_point: PathBuf,
    /// Filesystem type, e.g. `squashfs`.
    pub fs_type: String,
    /// Mount source, e.g. `/dev/loop3` (unescaped; `none` as the kernel writes it).
    pub source: String,
}

impl From<nodeinit_sys::mountinfo::Mount> for MountEntry {
    fn from(m: nodeinit_sys::mountinfo::Mount) -> Self {
        Self {
            mount_point: m.mount_point,
            fs_type: m.fs_type,
            source: m.source.unwrap_or_else(|| "none".to_owned()),
        }
    }
}

/// Parse one mountinfo line; `None` for a malformed line.
#[must_use]
pub fn parse_line(line: &str) -> Option<MountEntry> {
    nodeinit_sys::mountinfo::parse_line(line).map(MountEntry::from)
}

/// Every entry of `text` (a whole mountinfo file); malformed lines skipped.
#[must_use]
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

/// Read and parse this process' mount table.
///
/// # Errors
///
/// Reading [`MOUNTINFO_PATH`] failed (is `/proc` mounted?).
pub fn read() -> io::Result<Vec<MountEntry>> {
    Ok(nodeinit_sys::mountinfo::read_self()?
        .into_iter()
        .map(MountEntry::from)
        .collect())
}

/// The squashfs mounts whose mount point is a direct child of `mount_base`.
#[must_use]
pub fn squashfs_mounts_below(entries: &[MountEntry], mount_base: &Path) -> Vec<MountEntry> {
    entries
        .iter()
        .filter(|e| e.fs_type == "squashfs" && e.mount_point.parent() == Some(mount_base))
        .cloned()
        .collect()
}

/// Every entry mounted exactly at `mount_point`, in mount order.
#[must_use]
pub fn mounted_at<'a>(entries: &'a [MountEntry], mount_point: &Path) -> Vec<&'a MountEntry> {
    entries
        .iter()
        .filter(|e| e.mount_point == mount_point)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
98 22 7:3 / /run/pact/uenv/base rw,nosuid,nodev shared:50 - squashfs /dev/loop3 ro,errors=continue
99 22 7:4 / /run/pact/uenv/my\\040env ro master:2 - squashfs /dev/loop4 ro
100 22 0:5 / /run/pact/uenv/tmp rw - tmpfs tmpfs rw
101 22 7:5 / /other/base ro - squashfs /dev/loop5 ro
";

    #[test]
    fn parses_fields_and_optional_tags() {
        let entries = parse(SAMPLE);
        assert_eq!(entries.len(), 5);
        assert_eq!(
            entries[1],
            MountEntry {
                mount_point: PathBuf::from("/run/pact/uenv/base"),
                fs_type: "squashfs".to_owned(),
                source: "/dev/loop3".to_owned(),
            }
        );
    }

    #[test]
    fn unescapes_octal_sequences() {
        assert_eq!(unescape("a\\040b\\134c\\011"), "a b\\c\t");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn selects_squashfs_children_of_base() {
        let entries = parse(SAMPLE);
        let ours = squashfs_mounts_below(&entries, Path::new("/run/pact/uenv"));
        let points: Vec<_> = ours
            .iter()
            .map(|e| e.mount_point.display().to_string())
            .collect();
        assert_eq!(points, ["/run/pact/uenv/base", "/run/pact/uenv/my env"]);
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert_eq!(parse("garbage\n1 2 3\n"), vec![]);
    }
}
