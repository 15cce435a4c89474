//! The cgroup root this backend manages, verified to be cgroup v2.
//!
//! Owns the `statfs` magic check and, when it fails, the diagnosis: on a v1 or
//! hybrid host it names the cgroup2 mount found in `/proc/self/mountinfo`, so
//! the operator knows what to set `root` to. Must never mount anything (PID 1
//! setup in the host does that).

use std::path::{Path, PathBuf};

use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC, TMPFS_MAGIC};
use procfs::process::MountInfos;
use procfs::FromRead;

/// Where `mountinfo` is read from when diagnosing a non-v2 root.
pub const MOUNTINFO_PATH: &str = "/proc/self/mountinfo";

/// Why the configured root cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RootRefused(pub String);

/// A directory verified (at construction) to be on a cgroup2 filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRoot {
    path: PathBuf,
    text: String,
}

impl CgroupRoot {
    /// Verify `path`: absolute, UTF-8, no `.`/`..`, and `statfs` reports cgroup2.
    ///
    /// # Errors
    ///
    /// [`RootRefused`] explaining what is wrong and what to do; for a v1 or
    /// hybrid host it names the cgroup2 mount point, if there is one.
    pub fn open(path: &Path) -> Result<Self, RootRefused> {
        let text = normalize(path)?;
        let path = PathBuf::from(&text);
        let stat = statfs(&path).map_err(|errno| {
            RootRefused(format!(
                "cgroup root {text}: statfs failed: {errno}; mount cgroup2 there or set the `root` option"
            ))
        })?;
        let fs_type = stat.filesystem_type();
        if fs_type == CGROUP2_SUPER_MAGIC {
            return Ok(Self { path, text });
        }
        let what = if fs_type == TMPFS_MAGIC {
            "tmpfs: the layout of a cgroup v1 or hybrid host"
        } else if fs_type == CGROUP_SUPER_MAGIC {
            "a cgroup v1 hierarchy"
        } else {
            "not a cgroup filesystem"
        };
        let hint = match MountInfos::from_file(MOUNTINFO_PATH) {
            Ok(mounts) => cgroup2_hint(&mounts),
            Err(err) => {
                format!("could not read {MOUNTINFO_PATH} to look for a cgroup2 mount: {err}")
            }
        };
        Err(RootRefused(format!(
            "cgroup root {text} is not a cgroup v2 filesystem (statfs type {:#x}, {what}); {hint}",
            fs_type.0
        )))
    }

    /// The root as a path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root as text (no trailing slash), for building handles.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The cgroup2 mount points listed in `mounts`.
#[must_use]
pub fn cgroup2_mount_points(mounts: &MountInfos) -> Vec<PathBuf> {
    mounts
        .iter()
        .filter(|mount| mount.fs_type == "cgroup2")
        .map(|mount| mount.mount_point.clone())
        .collect()
}

fn cgroup2_hint(mounts: &MountInfos) -> String {
    let points = cgroup2_mount_points(mounts);
    match points.as_slice() {
        [] => "no cgroup2 mount found in /proc/self/mountinfo: mount one (`mount -t cgroup2 none /sys/fs/cgroup`) \
               or boot with systemd.unified_cgroup_hierarchy=1"
            .to_owned(),
        [only] => format!(
            "the cgroup2 mount is {}: set `root` to it (it only has the controllers v1 does not hold) \
             or boot with systemd.unified_cgroup_hierarchy=1 for a pure v2 host",
            only.display()
        ),
        several => format!(
            "cgroup2 is mounted at {}: set `root` to one of them",
            several.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn normalize(path: &Path) -> Result<String, RootRefused> {
    let Some(text) = path.to_str() else {
        return Err(RootRefused(format!(
            "cgroup root {} is not valid UTF-8",
            path.display()
        )));
    };
    if !text.starts_with('/') {
        return Err(RootRefused(format!(
            "cgroup root {text:?} must be an absolute path"
        )));
    }
    if text.split('/').any(|c| c == "." || c == "..") {
        return Err(RootRefused(format!(
            "cgroup root {text:?} must not contain '.' or '..'"
        )));
    }
    let trimmed = text.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    fn fixture(text: &str) -> MountInfos {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mountinfo");
        std::fs::write(&file, text).unwrap();
        MountInfos::from_file(&file).unwrap()
    }

    #[test]
    fn finds_the_cgroup2_mount_of_a_hybrid_host() {
        let mounts = fixture(HYBRID);
        assert_eq!(
            cgroup2_mount_points(&mounts),
            vec![PathBuf::from("/sys/fs/cgroup/unified")]
        );
        let hint = cgroup2_hint(&mounts);
        assert!(
            hint.contains("the cgroup2 mount is /sys/fs/cgroup/unified"),
            "{hint}"
        );
    }

    #[test]
    fn says_when_there_is_no_cgroup2_mount() {
        let mounts =
            fixture("32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n");
        assert!(cgroup2_mount_points(&mounts).is_empty());
        assert!(cgroup2_hint(&mounts).contains("no cgroup2 mount found"));
    }

    #[test]
    fn a_tmpfs_root_is_refused_naming_the_v2_mount() {
        // A tempdir is on tmpfs or ext4 here, never cgroup2.
        let dir = tempfile::tempdir().unwrap();
        let err = CgroupRoot::open(dir.path()).unwrap_err();
        assert!(err.0.contains("is not a cgroup v2 filesystem"), "{}", err.0);
        assert!(err.0.contains("cgroup2"), "{}", err.0);
    }

    #[test]
    fn relative_or_dotted_roots_are_refused() {
        let err = CgroupRoot::open(Path::new("sys/fs/cgroup")).unwrap_err();
        assert!(err.0.contains("must be an absolute path"), "{}", err.0);
        let err = CgroupRoot::open(Path::new("/sys/fs/cgroup/../cgroup")).unwrap_err();
        assert!(err.0.contains("must not contain"), "{}", err.0);
        let err = CgroupRoot::open(Path::new("/nonexistent-cgroup-root")).unwrap_err();
        assert!(err.0.contains("statfs failed"), "{}", err.0);
    }

    #[test]
    fn trailing_slashes_are_dropped() {
        assert_eq!(
            normalize(Path::new("/sys/fs/cgroup/")).unwrap(),
            "/sys/fs/cgroup"
        );
        assert_eq!(normalize(Path::new("/")).unwrap(), "/");
    }
}
