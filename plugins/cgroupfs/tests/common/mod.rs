//! Real-kernel fixtures: a fresh cgroup2 subtree per test and child processes
//! placed in it, all removed on drop — even when the test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nodeinit_cgroupfs::{events, kill, CgroupfsManager, CgroupfsOptions, OwnerPolicy};
use procfs::process::MountInfos;
use procfs::FromRead;

/// The cdylib cargo built with this crate, beside the test or bench binary.
pub fn plugin_so_path() -> PathBuf {
    nodeinit_tests::cdylib_beside_test_binary("libnodeinit_cgroupfs.so")
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The first cgroup2 mount of this mount namespace, found in mountinfo.
pub fn cgroup2_mount() -> PathBuf {
    let mounts =
        MountInfos::from_file("/proc/self/mountinfo").expect("reading /proc/self/mountinfo");
    nodeinit_cgroupfs::root::cgroup2_mount_points(&mounts)
        .into_iter()
        .next()
        .expect("CANNOT RUN: no cgroup2 mount in /proc/self/mountinfo; these tests need a real cgroup v2 hierarchy")
}

/// A uniquely named cgroup below the cgroup2 mount, used as a manager's root.
pub struct TestRoot {
    path: PathBuf,
}

impl TestRoot {
    pub fn new(label: &str) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "CANNOT RUN: real cgroup tests need root (they create cgroups and move processes)"
        );
        let name = format!(
            "nodeinit-cgroupfs-test-{}-{}-{label}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = cgroup2_mount().join(name);
        std::fs::create_dir(&path)
            .unwrap_or_else(|err| panic!("CANNOT RUN: mkdir {}: {err}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn options(&self, owner: OwnerPolicy) -> CgroupfsOptions {
        CgroupfsOptions {
            root: self.path.clone(),
            owner,
            io_devices: Some(Vec::new()),
            ..CgroupfsOptions::default()
        }
    }

    pub fn manager(&self, owner: OwnerPolicy) -> CgroupfsManager {
        CgroupfsManager::new(self.options(owner)).unwrap()
    }

    /// Every directory below the root, relative, sorted: "what exists on disk".
    pub fn tree(&self) -> Vec<String> {
        let mut dirs: Vec<String> = kill::subtree_dirs(&self.path)
            .unwrap()
            .into_iter()
            .map(|dir| dir.strip_prefix(&self.path).unwrap().display().to_string())
            .collect();
        dirs.sort();
        dirs
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        // cgroup.kill is recursive: one write empties the whole test subtree.
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        let _ = events::wait_until_empty(&self.path, Duration::from_secs(30));
        if let Ok(dirs) = kill::subtree_dirs(&self.path) {
            for dir in dirs.iter().rev() {
                if let Err(err) = std::fs::remove_dir(dir) {
                    eprintln!("test cleanup: rmdir {}: {err}", dir.display());
                }
            }
        }
    }
}

/// A `sleep` child moved into a cgroup; killed and reaped on drop.
pub struct Sleeper {
    child: Child,
    reaped: Option<ExitStatus>,
}

impl Sleeper {
    pub fn spawn_into(cgroup_dir: &Path) -> Self {
        let child = Command::new("sleep")
            .arg("100000")
            .spawn()
            .expect("CANNOT RUN: spawning sleep");
        let sleeper = Self {
            child,
            reaped: None,
        };
        std::fs::write(cgroup_dir.join("cgroup.procs"), sleeper.pid().to_string()).unwrap_or_else(
            |err| {
                panic!(
                    "moving pid {} into {}: {err}",
                    sleeper.pid(),
                    cgroup_dir.display()
                )
            },
        );
        sleeper
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reap the child (blocking) and return how it ended.
    pub fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.reaped {
            return status;
        }
        let status = self.child.wait().unwrap();
        self.reaped = Some(status);
        status
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
