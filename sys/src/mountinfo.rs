//! The mount table of a mount namespace (`/proc/<pid>/mountinfo`, proc(5)),
//! read through `procfs`.
//!
//! Where `procfs`'s parsing is not enough, this adds it: it does not undo
//! the kernel's octal escapes (`\040` for a space, `\011`, `\012`, `\134`)
//! in paths and sources, it fails the whole table on one malformed line (a
//! truncated read must not stop a boot: such a line is skipped here), and it
//! keeps the superblock options only as a map (the raw field is kept here,
//! in the kernel's order). Only reads; never mounts.

use std::io;
use std::path::{Path, PathBuf};

use procfs::process::MountInfo;

/// The mount table of this process.
pub const SELF_MOUNTINFO: &str = "/proc/self/mountinfo";

/// One mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Mount id (field 1).
    pub mount_id: i32,
    /// Parent mount id (field 2).
    pub parent_id: i32,
    /// The root of the mount inside its filesystem (field 4), unescaped.
    pub root: PathBuf,
    /// Where it is mounted (field 5), unescaped.
    pub mount_point: PathBuf,
    /// Filesystem type (`squashfs`, `cgroup2`, ...).
    pub fs_type: String,
    /// Mount source (`/dev/loop3`; `None` for `none`), unescaped.
    pub source: Option<String>,
    /// The superblock options, as the kernel wrote them (`rw,nsdelegate`).
    pub super_options: String,
}

/// Parses a whole mountinfo text; malformed lines are skipped.
///
/// ```
/// let t = "22 1 254:0 / / rw - ext4 /dev/vda rw\n99 22 7:4 / /run/my\\040env ro - squashfs /dev/loop4 ro\n";
/// let mounts = nodeinit_sys::mountinfo::parse(t);
/// assert_eq!(mounts[1].mount_point, std::path::Path::new("/run/my env"));
/// assert_eq!(mounts[1].source.as_deref(), Some("/dev/loop4"));
/// ```
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

/// Parses one mountinfo line; `None` when it is malformed.
pub fn parse_line(line: &str) -> Option<Mount> {
    let info = MountInfo::from_line(line).ok()?;
    Some(Mount {
        mount_id: info.mnt_id,
        parent_id: info.pid,
        root: PathBuf::from(unescape(&info.root)),
        mount_point: PathBuf::from(unescape(&info.mount_point.to_string_lossy())),
        fs_type: info.fs_type,
        source: info.mount_source.as_deref().map(unescape),
        super_options: line.rsplit(' ').next().unwrap_or_default().to_owned(),
    })
}

/// Reads this process's mount table.
///
/// # Errors
///
/// `/proc/self/mountinfo` cannot be read (is `/proc` mounted?).
pub fn read_self() -> io::Result<Vec<Mount>> {
    read(Path::new(SELF_MOUNTINFO))
}

/// Reads the mount table at `path` (a `/proc/<pid>/mountinfo`).
///
/// # Errors
///
/// The file cannot be read; the error names it.
pub fn read(path: &Path) -> io::Result<Vec<Mount>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("reading {} failed: {e}; is /proc mounted?", path.display()),
        )
    })?;
    Ok(parse(&text))
}

/// Undoes the kernel's `\ooo` escaping; a truncated or non-octal escape is
/// kept as it is.
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| {
                u8::try_from(d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'))).ok()
            });
        match (b, octal) {
            (b'\\', Some(value)) => {
                out.push(value);
                i += 4;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SAMPLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
99 22 7:4 /sub /run/pact/uenv/my\\040env ro master:2 - squashfs /dev/loop4 ro
garbage
100 22 0:5 / /run/x rw - tmpfs none rw
";

    #[test]
    fn parses_fields_escapes_and_skips_garbage() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].mount_point, Path::new("/"));
        assert_eq!((m[1].mount_id, m[1].parent_id), (41, 31));
        assert_eq!(m[1].fs_type, "cgroup2");
        assert_eq!(m[1].super_options, "rw,nsdelegate");
        assert_eq!(m[2].mount_point, Path::new("/run/pact/uenv/my env"));
        assert_eq!(m[2].root, Path::new("/sub"));
        assert_eq!(m[2].source.as_deref(), Some("/dev/loop4"));
        assert_eq!(m[3].source, None);
    }

    #[test]
    fn unescapes_only_whole_octal_escapes() {
        assert_eq!(unescape("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape("/a\\04"), "/a\\04");
        assert_eq!(unescape("/a\\"), "/a\\");
        assert_eq!(unescape("/a\\999"), "/a\\999");
    }

    #[test]
    fn reads_this_process_table() {
        let mounts = read_self().unwrap();
        assert!(mounts.iter().any(|m| m.fs_type == "proc"), "{mounts:?}");
        let err = read(Path::new("/proc/self/no-such-file")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("reading /proc/self/no-such-file failed"),
            "{err}"
        );
    }
}
