//! Where the sandbox's cgroup goes, decided from mountinfo and
//! `/proc/self/cgroup` (pure, so it is tested without a kernel).

use std::path::{Path, PathBuf};

use crate::pid1::MountPoint;

/// The sandbox's cgroup placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPlan {
    /// The host's cgroup2 mount point (e.g. `/sys/fs/cgroup` or, on hybrid
    /// hosts, `/sys/fs/cgroup/unified`).
    pub cgroup2_mount: PathBuf,
    /// The fresh child cgroup, bind-mounted at `/sys/fs/cgroup` inside.
    pub sandbox_cgroup: PathBuf,
}

/// Why no plan can be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SandboxPlanError {
    /// No cgroup2 filesystem is mounted.
    #[error("no cgroup2 mount on this machine; mount one (`mount -t cgroup2 none /sys/fs/cgroup/unified`) to run the sandbox")]
    NoCgroup2,
    /// `/proc/self/cgroup` has no `0::` line.
    #[error("/proc/self/cgroup has no cgroup v2 entry (`0::/...`); the sandbox needs the unified hierarchy")]
    NoUnifiedEntry,
}

/// Plan the sandbox cgroup for process `pid`: `<cgroup2 mount><own cgroup>/nodeinit-sandbox-<pid>`.
///
/// # Errors
///
/// [`SandboxPlanError`] explaining what is missing.
pub fn plan_sandbox(
    mounted: &[MountPoint],
    proc_self_cgroup: &str,
    pid: u32,
) -> Result<SandboxPlan, SandboxPlanError> {
    let cgroup2 = mounted
        .iter()
        .filter(|m| m.fstype == "cgroup2")
        // Prefer the canonical place when several exist.
        .min_by_key(|m| m.target != Path::new("/sys/fs/cgroup"))
        .ok_or(SandboxPlanError::NoCgroup2)?;
    let own = proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or(SandboxPlanError::NoUnifiedEntry)?;
    let sandbox_cgroup = cgroup2
        .target
        .join(own.trim().trim_start_matches('/'))
        .join(format!("nodeinit-sandbox-{pid}"));
    Ok(SandboxPlan {
        cgroup2_mount: cgroup2.target.clone(),
        sandbox_cgroup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pid1::mount_points;

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                          41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";

    #[test]
    fn hybrid_host_uses_the_unified_mount() {
        let plan = plan_sandbox(
            &mount_points(HYBRID),
            "4:memory:/x\n0::/user.slice/s.scope\n",
            42,
        )
        .unwrap();
        assert_eq!(plan.cgroup2_mount, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(
            plan.sandbox_cgroup,
            PathBuf::from("/sys/fs/cgroup/unified/user.slice/s.scope/nodeinit-sandbox-42")
        );
    }

    #[test]
    fn pure_v2_host_and_root_cgroup() {
        let mounted = mount_points("1 0 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let plan = plan_sandbox(&mounted, "0::/\n", 7).unwrap();
        assert_eq!(
            plan.sandbox_cgroup,
            PathBuf::from("/sys/fs/cgroup/nodeinit-sandbox-7")
        );
    }

    #[test]
    fn missing_pieces_are_explained() {
        let v1_only = mount_points("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n");
        assert_eq!(
            plan_sandbox(&v1_only, "0::/\n", 1),
            Err(SandboxPlanError::NoCgroup2)
        );
        assert_eq!(
            plan_sandbox(&mount_points(HYBRID), "4:memory:/\n", 1),
            Err(SandboxPlanError::NoUnifiedEntry)
        );
        assert!(SandboxPlanError::NoCgroup2
            .to_string()
            .contains("mount -t cgroup2"));
    }
}
