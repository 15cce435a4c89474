//! The pseudo-filesystems PID 1 mounts before anything else: proc, sysfs,
//! devtmpfs, devpts, /dev/shm, /run and cgroup2 (pact-agent does not mount
//! cgroup2 itself). What is already mounted is skipped — the initramfs or a
//! container may have done it — and nothing is ever mounted over it.
//! This module never unmounts.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;

use crate::pid1::mountinfo::MountPoint;

/// One early mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlyMount {
    /// Mount point, absolute (relative to the root given to the plan).
    pub target: &'static str,
    /// Filesystem type.
    pub fstype: &'static str,
    /// Mount flags.
    pub flags: MsFlags,
    /// Filesystem options.
    pub data: &'static str,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// The early mounts, parents before children.
pub const EARLY_MOUNTS: [EarlyMount; 7] = [
    EarlyMount {
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    EarlyMount {
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    EarlyMount {
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: "mode=0755",
    },
    EarlyMount {
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: "mode=0620,ptmxmode=0666",
    },
    EarlyMount {
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=1777",
    },
    EarlyMount {
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=0755",
    },
    EarlyMount {
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
];

/// cgroup2 options tried in order: a kernel that does not know one rejects
/// the whole mount with EINVAL, so fall back to fewer.
pub const CGROUP2_OPTION_ATTEMPTS: [&str; 3] =
    ["nsdelegate,memory_recursiveprot", "nsdelegate", ""];

/// What the plan says to do for one early mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountStep {
    /// Mount it at this path.
    Mount {
        /// The mount.
        mount: EarlyMount,
        /// Absolute target under the chosen root.
        target: PathBuf,
    },
    /// Something is mounted there already.
    Skip {
        /// The mount.
        mount: EarlyMount,
        /// Absolute target under the chosen root.
        target: PathBuf,
        /// The filesystem found there.
        existing_fstype: String,
    },
}

/// Decide, from the current mount table, which early mounts to do under `root`
/// (`/` for a real boot).
pub fn plan_early_mounts(mounted: &[MountPoint], root: &Path) -> Vec<MountStep> {
    EARLY_MOUNTS
        .iter()
        .map(|mount| {
            let target = root.join(mount.target.trim_start_matches('/'));
            // The last entry for a path is the one visible there.
            match mounted.iter().rev().find(|m| m.target == target) {
                Some(existing) => MountStep::Skip {
                    mount: *mount,
                    target,
                    existing_fstype: existing.fstype.clone(),
                },
                None => MountStep::Mount {
                    mount: *mount,
                    target,
                },
            }
        })
        .collect()
}

/// An early mount that failed.
#[derive(Debug, thiserror::Error)]
#[error("mount {fstype} on {}: {source} ({hint})", target.display())]
pub struct EarlyMountError {
    /// Filesystem type.
    pub fstype: &'static str,
    /// Mount point.
    pub target: PathBuf,
    /// The OS error.
    pub source: std::io::Error,
    /// What to check.
    pub hint: &'static str,
}

/// Carry out the `Mount` steps, creating mount points as needed. cgroup2 is
/// tried with each of `cgroup2_options` in turn. Returns the mounts done
/// (with the options used, for the boot report).
///
/// # Errors
///
/// The first mount that failed; the ones before it stay mounted (they are
/// needed by whatever runs next, including the rescue shell).
pub fn apply_early_mounts(
    steps: &[MountStep],
    cgroup2_options: &[&str],
) -> Result<Vec<(PathBuf, String)>, EarlyMountError> {
    let mut done = Vec::new();
    for step in steps {
        let MountStep::Mount { mount, target } = step else {
            continue;
        };
        // The plan may predate /proc: a first stage that unmounts its /proc
        // before switch_root leaves /proc/self/mountinfo unreadable, so every
        // target looked free. /proc is the first early mount; look again
        // before each one, so that what the first stage moved into the new
        // root (its /dev, /run) is kept and never mounted over (devtmpfs
        // fails with EBUSY, a tmpfs would hide the first stage's /run).
        if mounted_now(target) {
            continue;
        }
        let fail = |source: std::io::Error, hint| EarlyMountError {
            fstype: mount.fstype,
            target: target.clone(),
            source,
            hint,
        };
        std::fs::create_dir_all(target).map_err(|e| {
            fail(
                e,
                "the root filesystem must be writable or have the directory",
            )
        })?;
        let attempts: &[&str] = if mount.fstype == "cgroup2" {
            cgroup2_options
        } else {
            std::slice::from_ref(&mount.data)
        };
        let mut last = Errno::EINVAL;
        let mut used = None;
        for data in attempts {
            match nix::mount::mount(
                Some(mount.fstype),
                target.as_path(),
                Some(mount.fstype),
                mount.flags,
                (!data.is_empty()).then_some(*data),
            ) {
                Ok(()) => {
                    used = Some((*data).to_owned());
                    break;
                }
                // EINVAL: an option this kernel lacks; try the next set.
                Err(Errno::EINVAL) => last = Errno::EINVAL,
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        match used {
            Some(data) => done.push((target.clone(), data)),
            None => {
                return Err(fail(
                    std::io::Error::from(last),
                    "check the kernel has this filesystem built in (CONFIG_DEVTMPFS, CONFIG_CGROUPS, ...)",
                ))
            }
        }
    }
    Ok(done)
}

/// Whether `target` is a mount point now, by a fresh read of
/// `/proc/self/mountinfo`; false when it cannot be read (no /proc yet).
fn mounted_now(target: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|text| {
            crate::pid1::mountinfo::mount_points(&text)
                .iter()
                .any(|m| m.target == target)
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pid1::mountinfo::mount_points;

    #[test]
    fn nothing_mounted_plans_everything_in_order() {
        let steps = plan_early_mounts(&[], Path::new("/"));
        let targets: Vec<_> = steps
            .iter()
            .map(|s| match s {
                MountStep::Mount { target, .. } => target.display().to_string(),
                MountStep::Skip { .. } => panic!("nothing is mounted: {s:?}"),
            })
            .collect();
        assert_eq!(
            targets,
            [
                "/proc",
                "/sys",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/run",
                "/sys/fs/cgroup"
            ]
        );
    }

    #[test]
    fn mounted_targets_are_skipped_with_what_is_there() {
        // A hybrid host: /sys/fs/cgroup is a tmpfs holding v1 hierarchies.
        let mounted = mount_points(
            "1 0 0:1 / /proc rw - proc proc rw\n\
             2 0 0:2 / /sys rw - sysfs sysfs rw\n\
             3 0 0:3 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n",
        );
        let steps = plan_early_mounts(&mounted, Path::new("/"));
        let skipped: Vec<_> = steps
            .iter()
            .filter_map(|s| match s {
                MountStep::Skip {
                    target,
                    existing_fstype,
                    ..
                } => Some((target.display().to_string(), existing_fstype.as_str())),
                MountStep::Mount { .. } => None,
            })
            .collect();
        assert_eq!(
            skipped,
            [
                ("/proc".into(), "proc"),
                ("/sys".into(), "sysfs"),
                ("/sys/fs/cgroup".to_string(), "tmpfs")
            ]
        );
        assert_eq!(steps.len(), 7);
    }

    #[test]
    fn plan_under_another_root() {
        let steps = plan_early_mounts(&[], Path::new("/sysroot"));
        assert!(
            matches!(&steps[0], MountStep::Mount { target, .. } if target == Path::new("/sysroot/proc"))
        );
    }
}

#[cfg(test)]
mod kernel_tests {
    //! Real mounts in a private mount namespace (`unshare -m`), under a
    //! temporary root: nothing is visible outside and everything goes away
    //! with the namespace.
    use super::*;
    use crate::pid1::mountinfo::mount_points;
    use crate::pid1::test_process::{helper_command, runs_as_helper};

    const HELPER: &str = "pid1::early_mounts::kernel_tests::helper_mount_under_root";

    const TEST: &str = "pid1::early_mounts::kernel_tests::early_mounts_are_real_and_idempotent";

    fn helper_mount_under_root() {
        let root = tempfile::tempdir().unwrap();
        let mountinfo = || mount_points(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
        // Remounting cgroup2 re-applies its root flags system-wide: keep the host's.
        let host_cgroup2 = mountinfo()
            .into_iter()
            .find(|m| m.fstype == "cgroup2")
            .expect("this test needs a cgroup2 mount on the host");
        let keep: Vec<&str> = host_cgroup2
            .super_options
            .split(',')
            .filter(|o| matches!(*o, "nsdelegate" | "memory_recursiveprot"))
            .collect();
        let keep = keep.join(",");
        let steps = plan_early_mounts(&mountinfo(), root.path());
        let done = apply_early_mounts(&steps, &[keep.as_str()]).unwrap();
        assert_eq!(done.len(), 7, "{done:?}");
        let after = mountinfo();
        for m in EARLY_MOUNTS {
            let target = root.path().join(m.target.trim_start_matches('/'));
            let found = after.iter().rev().find(|p| p.target == target);
            assert_eq!(
                found.map(|p| p.fstype.as_str()),
                Some(m.fstype),
                "{}",
                target.display()
            );
        }
        assert!(root.path().join("proc/self/status").exists());
        assert!(root
            .path()
            .join("sys/fs/cgroup/cgroup.controllers")
            .exists());
        // A second plan skips everything: already-mounted filesystems are never stacked.
        let again = plan_early_mounts(&after, root.path());
        assert!(
            again.iter().all(|s| matches!(s, MountStep::Skip { .. })),
            "{again:?}"
        );
        assert!(apply_early_mounts(&again, &[""]).unwrap().is_empty());
        println!("EARLY_MOUNTS_OK");
    }

    const STALE_HELPER: &str = "pid1::early_mounts::kernel_tests::helper_stale_plan";
    const STALE_TEST: &str =
        "pid1::early_mounts::kernel_tests::a_plan_made_without_proc_keeps_what_a_first_stage_mounted";

    /// What a first stage leaves: its devtmpfs moved to /dev and a tmpfs
    /// /run with its files, but no /proc — the plan, made from an unreadable
    /// mountinfo, sees nothing mounted.
    fn helper_stale_plan() {
        let root = tempfile::tempdir().unwrap();
        let mountinfo = || mount_points(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
        let keep = mountinfo()
            .into_iter()
            .find(|m| m.fstype == "cgroup2")
            .map(|m| {
                m.super_options
                    .split(',')
                    .filter(|o| matches!(*o, "nsdelegate" | "memory_recursiveprot"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .expect("this test needs a cgroup2 mount on the host");
        let (dev, run) = (root.path().join("dev"), root.path().join("run"));
        for (fstype, dir) in [("devtmpfs", &dev), ("tmpfs", &run)] {
            std::fs::create_dir_all(dir).unwrap();
            nix::mount::mount(
                Some(fstype),
                dir,
                Some(fstype),
                MsFlags::empty(),
                None::<&str>,
            )
            .unwrap();
        }
        std::fs::write(run.join("first-stage-was-here"), "x").unwrap();
        let stale = plan_early_mounts(&[], root.path());
        assert!(stale.iter().all(|s| matches!(s, MountStep::Mount { .. })));
        let done = apply_early_mounts(&stale, &[keep.as_str()]).unwrap();
        let done: Vec<_> = done.into_iter().map(|(t, _)| t).collect();
        assert!(!done.contains(&dev) && !done.contains(&run), "{done:?}");
        assert_eq!(done.len(), 5, "{done:?}");
        let after = mountinfo();
        for dir in [&dev, &run] {
            let stacked = after.iter().filter(|m| &m.target == dir).count();
            assert_eq!(stacked, 1, "{} mounted {stacked} times", dir.display());
        }
        assert!(run.join("first-stage-was-here").exists(), "/run was hidden");
        assert!(root.path().join("proc/self/status").exists());
        println!("STALE_PLAN_OK");
    }

    #[test]
    fn a_plan_made_without_proc_keeps_what_a_first_stage_mounted() {
        if runs_as_helper(STALE_HELPER, helper_stale_plan) {
            return;
        }
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts filesystems and must run as root"
        );
        let output = helper_command(
            STALE_TEST,
            STALE_HELPER,
            &["unshare", "--mount", "--propagation", "private"],
        )
        .output()
        .expect("run unshare (util-linux) — install it if missing");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("STALE_PLAN_OK"),
            "helper failed: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    fn early_mounts_are_real_and_idempotent() {
        if runs_as_helper(HELPER, helper_mount_under_root) {
            return;
        }
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts filesystems and must run as root"
        );
        let output = helper_command(
            TEST,
            HELPER,
            &["unshare", "--mount", "--propagation", "private"],
        )
        .output()
        .expect("run unshare (util-linux) — install it if missing");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("EARLY_MOUNTS_OK"),
            "helper failed: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
