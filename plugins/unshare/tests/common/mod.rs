//! Shared fixtures for the unshare tests: a real squashfs image, a test-only
//! mount backend that loop-mounts it (plugins/squashfs had no working rlib
//! when these tests were written), and probes that look at namespaces from
//! the outside and from a process that joined them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod peer;
pub mod wire;
pub mod worker_child;

use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use hpc_node::{MountError, MountHandle, MountManager};
use nodeinit_plugin_api::AllocationMounts;

/// Content of the file inside the test image.
pub const IMAGE_FILE_CONTENT: &str = "hello from the uenv image\n";

/// Build `<dir>/<name>` as a squashfs image holding `hello.txt`. Fails loudly
/// when mksquashfs is missing.
pub fn make_image(dir: &Path, name: &str) -> PathBuf {
    let src = dir.join(format!("{name}.src"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello.txt"), IMAGE_FILE_CONTENT).unwrap();
    let image = dir.join(name);
    let out = Command::new("mksquashfs")
        .args([src.as_os_str(), image.as_os_str()])
        .args(["-quiet", "-noappend", "-no-progress"])
        .output()
        .expect("mksquashfs is required for these tests: apt-get install -y squashfs-tools");
    assert!(
        out.status.success(),
        "mksquashfs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

/// Test-only mount backend: images must be inside `image_dir`; each image is
/// loop-mounted read-only (mount(8) sets up the loop device with autoclear)
/// under `mount_base` on first acquire and unmounted when the last
/// reference goes. Drop unmounts whatever is left.
pub struct TestMounts {
    pub image_dir: PathBuf,
    pub mount_base: PathBuf,
    refs: Mutex<HashMap<String, (usize, Vec<String>)>>,
}

impl TestMounts {
    pub fn new(image_dir: &Path, mount_base: &Path) -> Self {
        Self {
            image_dir: image_dir.canonicalize().unwrap(),
            mount_base: mount_base.to_path_buf(),
            refs: Mutex::new(HashMap::new()),
        }
    }

    fn mount_point(&self, image: &Path) -> PathBuf {
        self.mount_base.join(image.file_stem().unwrap())
    }

    fn resolve(&self, image_path: &str) -> Result<PathBuf, MountError> {
        let candidate = if Path::new(image_path).is_absolute() {
            PathBuf::from(image_path)
        } else {
            self.image_dir.join(image_path)
        };
        let resolved = candidate
            .canonicalize()
            .map_err(|e| MountError::MountFailed {
                image_path: image_path.into(),
                reason: format!("{e}"),
            })?;
        if resolved.parent() != Some(self.image_dir.as_path()) {
            return Err(MountError::MountFailed {
                image_path: image_path.into(),
                reason: format!(
                    "image is outside the image directories [{}]",
                    self.image_dir.display()
                ),
            });
        }
        Ok(resolved)
    }

    /// Mount points currently mounted (per /proc/self/mountinfo).
    pub fn mounted(&self) -> Vec<String> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let base = self.mount_base.to_str().unwrap().to_owned();
        info.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|mp| mp.starts_with(&base))
            .map(str::to_owned)
            .collect()
    }
}

impl MountManager for TestMounts {
    fn acquire_mount(&self, image_path: &str) -> Result<MountHandle, MountError> {
        self.acquire_for("-", image_path)
    }
    fn release_mount(&self, handle: &MountHandle) -> Result<(), MountError> {
        self.release_for("-", handle)
    }
    fn force_unmount(&self, _image_path: &str) -> Result<(), MountError> {
        Ok(())
    }
    fn reconstruct_state(&self, _active: &[String]) -> Result<(), MountError> {
        Ok(())
    }
}

impl AllocationMounts for TestMounts {
    fn acquire_for(
        &self,
        allocation_id: &str,
        image_path: &str,
    ) -> Result<MountHandle, MountError> {
        let image = self.resolve(image_path)?;
        let mount_point = self.mount_point(&image);
        let key = image.to_str().unwrap().to_owned();
        let mut refs = self.refs.lock().unwrap();
        let entry = refs.entry(key.clone()).or_insert((0, Vec::new()));
        if entry.0 == 0 {
            std::fs::create_dir_all(&mount_point)?;
            let out = Command::new("mount")
                .args(["-t", "squashfs", "-o", "loop,ro,nosuid,nodev"])
                .arg(&image)
                .arg(&mount_point)
                .output()?;
            if !out.status.success() {
                return Err(MountError::MountFailed {
                    image_path: key,
                    reason: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
        }
        entry.0 += 1;
        entry.1.push(allocation_id.to_owned());
        Ok(MountHandle {
            image_path: key,
            mount_point: mount_point.to_str().unwrap().to_owned(),
        })
    }

    fn release_for(&self, allocation_id: &str, handle: &MountHandle) -> Result<(), MountError> {
        let mut refs = self.refs.lock().unwrap();
        let entry =
            refs.get_mut(&handle.image_path)
                .ok_or_else(|| MountError::RefcountInconsistency {
                    image_path: handle.image_path.clone(),
                    detail: "not mounted".into(),
                })?;
        let pos = entry
            .1
            .iter()
            .position(|a| a == allocation_id)
            .ok_or_else(|| MountError::RefcountInconsistency {
                image_path: handle.image_path.clone(),
                detail: format!("{allocation_id} holds no reference"),
            })?;
        entry.1.remove(pos);
        entry.0 -= 1;
        if entry.0 == 0 {
            refs.remove(&handle.image_path);
            lazy_unmount(Path::new(&handle.mount_point));
        }
        Ok(())
    }
}

fn lazy_unmount(mount_point: &Path) {
    let _ = nix::mount::umount2(mount_point, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir(mount_point);
}

impl Drop for TestMounts {
    fn drop(&mut self) {
        for mp in self.mounted() {
            lazy_unmount(Path::new(&mp));
        }
    }
}

/// Reads a role child's stdout until a line contains `marker` (libtest
/// prints "test <name> ... " before the role's own output, on the same
/// line), then keeps draining it in a thread so the child never blocks on
/// a full pipe.
///
/// # Panics
///
/// The child's stdout ended first: `what` did not start.
pub fn await_ready_line(child: &mut std::process::Child, marker: &str, what: &str) {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let mut lines = std::io::BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(marker) => break,
            Some(Ok(_)) => continue,
            other => panic!("{what} did not start: {other:?}"),
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
}

/// A handoff server on the real unshare backend (no mount backend),
/// world-connectable (refusals must come from the credential check), in a
/// directory of its own.
pub struct Fixture {
    pub _tmp: tempfile::TempDir,
    pub path: PathBuf,
    pub backend: std::sync::Arc<nodeinit_unshare::UnshareBackend>,
    pub server: nodeinit_handoff::HandoffServer,
}

/// Start a [`Fixture`] with `config`, its socket path and mode set here.
pub fn serve(config: nodeinit_handoff::ServerConfig) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("handoff.sock");
    let backend = std::sync::Arc::new(nodeinit_unshare::UnshareBackend::new(
        nodeinit_unshare::UnshareConfig::default(),
        None,
    ));
    let config = nodeinit_handoff::ServerConfig {
        socket_path: path.clone(),
        socket_mode: 0o666,
        ..config
    };
    let server = nodeinit_handoff::HandoffServer::start(
        backend.clone(),
        config,
        nodeinit_handoff::ReadyGate::opened(),
    )
    .unwrap();
    Fixture {
        _tmp: tmp,
        path,
        backend,
        server,
    }
}

/// Target of a namespace FD's `/proc/self/fd/N` link (`pid:[4026…]`).
pub fn fd_link(fd: BorrowedFd<'_>) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Number of open FDs of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Waits (at most 20 s) for this process to have `expected` FDs open, else
/// fails with `what`: a dead holder's namespace FDs are closed just after
/// its allocation ended, off the reply path, so a count taken at once may
/// still include them.
pub fn assert_fd_count_settles(expected: usize, what: &str) {
    nodeinit_tests::wait_for(
        &format!("{expected} FDs are open ({what})"),
        || match fd_count() {
            now if now == expected => Ok(()),
            now => Err(format!("{now} FDs open")),
        },
    );
}

/// FDs open once the namespaces of every allocation ended so far are torn
/// down: the baseline for [`assert_fd_count_settles`].
pub fn settled_fd_count() -> usize {
    assert!(
        nodeinit_namespaces::holder::wait_for_teardown(std::time::Duration::from_secs(20)),
        "the namespace teardown thread did not close the queued namespaces in 20 s"
    );
    fd_count()
}

/// The host pid of PID 1 of the PID namespace `pid_ns_link` (`pid:[…]`), by
/// scanning /proc: the process whose ns/pid matches and whose NSpid ends in 1.
pub fn pid_namespace_init(pid_ns_link: &str) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(link) = std::fs::read_link(format!("/proc/{pid}/ns/pid")) else {
            continue;
        };
        if link.to_string_lossy() != pid_ns_link {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let nspid = status
            .lines()
            .find(|l| l.starts_with("NSpid:"))
            .unwrap_or("");
        if nspid.split_whitespace().last() == Some("1") {
            return Some(pid);
        }
    }
    None
}

/// `State:` letter of a process, or None when it no longer exists (reaped).
pub fn process_state(pid: i32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("State:"))
        .map(|l| l.trim_start_matches("State:").trim().to_owned())
}
