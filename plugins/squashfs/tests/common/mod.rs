//! Real-kernel fixture for the squashfs tests: images built with `mksquashfs`
//! in a tempdir, a mount base and a state dir of their own, and a leak check
//! on drop (mountinfo and `losetup -a` for everything under the tempdir).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nodeinit_squashfs::mountinfo::{self, MountEntry};
use nodeinit_squashfs::ManagerConfig;

/// Long enough that a hold never expires inside a test that does not wait for it.
pub const LONG_HOLD: Duration = Duration::from_secs(600);
/// The short hold the expiry tests use.
pub const SHORT_HOLD: Duration = Duration::from_millis(100);
/// Upper bound for waiting on a kernel-side effect (an unmount, a loop device freed).
pub const DEADLINE: Duration = Duration::from_secs(10);

pub struct Fixture {
    pub dir: tempfile::TempDir,
    /// The state dir lives on tmpfs (`/dev/shm`) like `/run/nodeinit` on a node.
    pub state: tempfile::TempDir,
    pub images: PathBuf,
    pub mount_base: PathBuf,
}

impl Fixture {
    /// Fails loudly (never skips) when the test cannot run here.
    pub fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests mount squashfs images through loop devices and must run as root"
        );
        let probe = Command::new("mksquashfs").arg("-version").output();
        assert!(
            probe.as_ref().is_ok_and(|o| o.status.success()),
            "mksquashfs is missing: apt-get install -y squashfs-tools ({probe:?})"
        );
        let dir = tempfile::Builder::new()
            .prefix("nodeinit-sqfs-")
            .tempdir()
            .unwrap();
        let dir_path = dir.path().canonicalize().unwrap();
        let state = tempfile::Builder::new()
            .prefix("nodeinit-sqfs-state-")
            .tempdir_in("/dev/shm")
            .expect("/dev/shm (tmpfs) is needed for the state dir");
        let images = dir_path.join("images");
        std::fs::create_dir(&images).unwrap();
        Self {
            mount_base: dir_path.join("uenv"),
            images,
            dir,
            state,
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().canonicalize().unwrap()
    }

    pub fn config(&self, hold_time: Duration) -> ManagerConfig {
        ManagerConfig {
            image_dirs: vec![self.images.clone()],
            mount_base: self.mount_base.clone(),
            hold_time,
            state_dir: self.state.path().to_path_buf(),
        }
    }

    /// Build `<dir>/<name>` with mksquashfs from `files` (name, content).
    pub fn make_image_in(&self, dir: &Path, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let src = tempfile::tempdir_in(self.dir.path()).unwrap();
        for (file, content) in files {
            std::fs::write(src.path().join(file), content).unwrap();
        }
        std::fs::create_dir_all(dir).unwrap();
        let image = dir.join(name);
        let out = Command::new("mksquashfs")
            .arg(src.path())
            .arg(&image)
            .args(["-noappend", "-quiet", "-no-progress"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mksquashfs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        image
    }

    pub fn make_image(&self, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
        self.make_image_in(&self.images, name, files)
    }

    /// Mount entries whose mount point is under this fixture's tempdir.
    pub fn mounts(&self) -> Vec<MountEntry> {
        let root = self.root();
        mountinfo::read()
            .unwrap()
            .into_iter()
            .filter(|e| e.mount_point.starts_with(&root))
            .collect()
    }

    pub fn mounts_at(&self, mount_point: &str) -> Vec<MountEntry> {
        self.mounts()
            .into_iter()
            .filter(|e| e.mount_point == Path::new(mount_point))
            .collect()
    }

    /// `losetup -a` lines naming a file under this fixture's tempdir.
    pub fn loop_devices(&self) -> Vec<String> {
        let root = self.root().display().to_string();
        let out = Command::new("losetup")
            .arg("-a")
            .output()
            .expect("losetup (util-linux) is needed");
        assert!(
            out.status.success(),
            "losetup -a failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&root))
            .map(str::to_owned)
            .collect()
    }

    /// Wait until nothing of this fixture is mounted or attached; the autoclear
    /// of a loop device runs when its last user goes, which may lag the unmount.
    pub fn wait_clean(&self) -> Result<(), String> {
        wait_for(DEADLINE, || {
            self.mounts().is_empty() && self.loop_devices().is_empty()
        })
        .map_err(|()| {
            format!(
                "left behind: mounts {:?}, loop devices {:?}",
                self.mounts(),
                self.loop_devices()
            )
        })
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let leaked = self.wait_clean();
        // Clean up whatever a failing test left, then report it.
        for entry in self.mounts().iter().rev() {
            let _ = nix::mount::umount2(&entry.mount_point, nix::mount::MntFlags::MNT_DETACH);
        }
        for line in self.loop_devices() {
            if let Some(dev) = line.split(':').next() {
                let _ = Command::new("losetup").args(["-d", dev]).status();
            }
        }
        if let Err(leak) = leaked {
            if !std::thread::panicking() {
                panic!("{leak}");
            }
        }
    }
}

/// Re-check `cond` until it holds or `timeout` passes (a wait with a deadline,
/// for kernel effects that have no notification).
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// sysfs attribute of the loop device a mount entry uses (`ro` is a block
/// device attribute, the others live under `loop/`).
pub fn loop_attr(entry: &MountEntry, attr: &str) -> String {
    let n = entry
        .source
        .strip_prefix("/dev/loop")
        .expect("a loop device source");
    let sub = if attr == "ro" { "" } else { "loop/" };
    std::fs::read_to_string(format!("/sys/block/loop{n}/{sub}{attr}"))
        .unwrap()
        .trim()
        .to_owned()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
