//! The kernel side of one image: loop device + squashfs mount, and lazy unmount.
//!
//! Owns creating the mount point, attaching the validated descriptor and
//! mounting it `ro,nosuid,nodev`, and undoing that with `MNT_DETACH`. It must
//! never count references or decide *when* to unmount; the manager does.
//!
//! The mount point is made with `mkdirat` in the checked `mount_base`
//! descriptor and opened beneath it without following links; the filesystem
//! is mounted onto that descriptor with the new mount API (`fsopen`,
//! `fsconfig`, `fsmount`, `move_mount`, Linux 5.2+), so no path lookup takes
//! place between the check and the mount (issue 12, item 7). Afterwards the
//! name in `mount_base` must show the new filesystem; if the directory was
//! swapped meanwhile, the mount is undone through its own descriptor. On a
//! kernel without `fsopen` the mount goes through `/proc/self/fd/N` of the
//! same descriptor with mount(2), which also mounts onto exactly that
//! directory.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};

use crate::beneath::{self, CheckedDir};
use crate::escape;
use crate::image::{MountName, ValidatedImage};
use crate::loop_device::{self, AttachMethod};
use crate::mountinfo::{self, MountEntry};

/// Flags every image is mounted with.
pub const MOUNT_FLAGS: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV);

/// The same flags for `fsmount`.
const MOUNT_ATTRS: MountAttrFlags = MountAttrFlags::MOUNT_ATTR_RDONLY
    .union(MountAttrFlags::MOUNT_ATTR_NOSUID)
    .union(MountAttrFlags::MOUNT_ATTR_NODEV);

/// A mount made by [`mount_image`].
#[derive(Debug)]
pub struct Mounted {
    /// The loop device.
    pub device: PathBuf,
    /// The mount's descriptor (new mount API), for [`unmount_detached`].
    pub mount_fd: Option<OwnedFd>,
}

/// Mount `image` at `<base>/<name>` through a fresh read-only, autoclear loop
/// device. On failure nothing is left: the loop device is freed by autoclear
/// when its descriptor closes, and a mount point created here is removed.
///
/// # Errors
///
/// A reason text naming the failed step, the device or path, and a remedy.
pub fn mount_image(
    image: &ValidatedImage,
    base: &CheckedDir,
    name: &MountName,
    method: AttachMethod,
) -> Result<Mounted, String> {
    let mount_point = base.canonical.join(name.as_str());
    let Some(rel) = beneath::single_name(name.as_str()) else {
        return Err(format!("{name} is not a single file name"));
    };
    let created = match rustix::fs::mkdirat(base.fd(), rel, Mode::from_raw_mode(0o755)) {
        Ok(()) => true,
        Err(rustix::io::Errno::EXIST) => false,
        Err(e) => {
            return Err(format!(
                "creating mount point {} failed: {e}",
                escape::path(&mount_point)
            ))
        }
    };
    let result = open_mount_point(base, rel, &mount_point)
        .and_then(|target| attach_and_mount(image, base, rel, &target, &mount_point, method));
    if result.is_err() && created {
        let _ = rustix::fs::unlinkat(base.fd(), rel, AtFlags::REMOVEDIR);
    }
    result
}

/// Open the mount point directory beneath `base`, refusing a link, a
/// non-directory, or a directory another user owns or may write.
fn open_mount_point(base: &CheckedDir, rel: &Path, mount_point: &Path) -> Result<OwnedFd, String> {
    let fd = beneath::open_beneath(base.fd(), rel, OFlags::RDONLY | OFlags::DIRECTORY).map_err(
        |e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => format!(
                "mount point {} is a symbolic link; it is never followed (a link there could put the image over any directory): remove it",
                escape::path(mount_point)
            ),
            Some(nix::libc::ENOTDIR) => format!(
                "mount point {} exists and is not a directory: remove it",
                escape::path(mount_point)
            ),
            _ => format!("opening mount point {} failed: {e}", escape::path(mount_point)),
        },
    )?;
    let st = rustix::fs::fstat(&fd).map_err(|e| {
        format!(
            "fstat of mount point {} failed: {e}",
            escape::path(mount_point)
        )
    })?;
    let euid = nix::unistd::geteuid().as_raw();
    if st.st_uid != 0 && st.st_uid != euid {
        return Err(format!(
            "mount point {} is owned by uid {}, not root: remove it",
            escape::path(mount_point),
            st.st_uid
        ));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(format!(
            "mount point {} is writable by others (mode {:o}): remove it",
            escape::path(mount_point),
            st.st_mode & 0o7777
        ));
    }
    Ok(fd)
}

fn attach_and_mount(
    image: &ValidatedImage,
    base: &CheckedDir,
    rel: &Path,
    target: &OwnedFd,
    mount_point: &Path,
    method: AttachMethod,
) -> Result<Mounted, String> {
    let device =
        loop_device::attach(&image.file, &image.path, method).map_err(|e| e.to_string())?;
    let failed = |step: &str, errno: Errno| {
        format!(
            "mounting {} (from {}) on {} failed at {step}: {errno}{}",
            device.path().display(),
            escape::path(&image.path),
            escape::path(mount_point),
            mount_hint(errno)
        )
    };
    let mounted = match mount_with_fsmount(device.path(), target) {
        Ok(mounted) => Some(mounted),
        Err(("fsopen", Errno::ENOSYS)) => {
            // Pre-5.2 kernel: mount(2) onto the very directory we opened.
            nix::mount::mount(
                Some(device.path()),
                Path::new(&format!("/proc/self/fd/{}", target.as_raw_fd())),
                Some("squashfs"),
                MOUNT_FLAGS,
                None::<&str>,
            )
            .map_err(|errno| failed("mount", errno))?;
            None
        }
        Err((step, errno)) => return Err(failed(step, errno)),
    };
    // The name must now show the new filesystem (its st_dev is the loop
    // device); otherwise the directory was swapped while we mounted.
    let device_id = rustix::fs::fstat(device.file())
        .map(|st| st.st_rdev)
        .map_err(|e| format!("fstat of {} failed: {e}", device.path().display()))?;
    let now_there =
        rustix::fs::statat(base.fd(), rel, AtFlags::SYMLINK_NOFOLLOW).map(|st| st.st_dev);
    if now_there != Ok(device_id) {
        let undone = match &mounted {
            Some(mnt) => nix::mount::umount2(
                Path::new(&format!("/proc/self/fd/{}", mnt.as_raw_fd())),
                MntFlags::MNT_DETACH,
            ),
            None => Err(Errno::ENOSYS),
        };
        if let Err(errno) = undone {
            tracing::error!(mount_point = %escape::path(mount_point), %errno,
                "a mount onto a swapped mount point could not be undone");
        }
        let undone = undone.is_ok();
        return Err(format!(
            "mount point {} was replaced while it was being mounted; the mount was {}: check who writes to mount_base",
            escape::path(mount_point),
            if undone { "undone" } else { "NOT undone (no mount descriptor on this kernel)" }
        ));
    }
    // Dropping `device` closes our descriptor: from now on the mount alone
    // keeps the loop device, and autoclear frees it when the mount goes.
    Ok(Mounted {
        device: device.path().to_path_buf(),
        mount_fd: mounted,
    })
}

/// `fsopen("squashfs")` → `source` → create → `fsmount` → `move_mount` onto
/// `target`. Returns the mount's descriptor, or the failed step and errno.
fn mount_with_fsmount(device: &Path, target: &OwnedFd) -> Result<OwnedFd, (&'static str, Errno)> {
    let errno = |e: rustix::io::Errno| Errno::from_raw(e.raw_os_error());
    let fs = rustix::mount::fsopen("squashfs", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| ("fsopen", errno(e)))?;
    rustix::mount::fsconfig_set_string(&fs, "source", device)
        .map_err(|e| ("fsconfig source", errno(e)))?;
    // A read-only superblock: the loop device is read-only, and without "ro"
    // the kernel opens it for writing and fails with EACCES.
    rustix::mount::fsconfig_set_flag(&fs, "ro").map_err(|e| ("fsconfig ro", errno(e)))?;
    rustix::mount::fsconfig_create(&fs).map_err(|e| ("fsconfig create", errno(e)))?;
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MOUNT_ATTRS)
        .map_err(|e| ("fsmount", errno(e)))?;
    rustix::mount::move_mount(
        mnt.as_fd(),
        "",
        target.as_fd(),
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| ("move_mount", errno(e)))?;
    Ok(mnt)
}

fn mount_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::ENODEV => " (this kernel has no squashfs support: modprobe squashfs)",
        Errno::EINVAL => {
            " (the image is corrupt or uses a compressor this kernel lacks: check dmesg)"
        }
        Errno::EPERM | Errno::EACCES => {
            " (mounting needs CAP_SYS_ADMIN in the initial user namespace)"
        }
        Errno::ENOENT | Errno::ENOTDIR => {
            " (the mount point vanished; is mount_base on a writable filesystem?)"
        }
        _ => "",
    }
}

/// Detach the mount at `mount_point` now (`MNT_DETACH`: busy files keep the
/// filesystem alive until closed; the loop device goes with the last user),
/// then remove the empty directory. With the mount's own descriptor the
/// detach goes through it (`/proc/self/fd/N` names that very mount even if
/// its directory was renamed); without one (a mount recovered after a
/// restart) through the path, never following a link. Nothing mounted is `Ok`.
///
/// # Errors
///
/// The errno of `umount2` with a reason text.
pub fn unmount_detached(mount_point: &Path, mount_fd: Option<&OwnedFd>) -> Result<(), String> {
    let (target, flags) = match mount_fd {
        Some(fd) => (
            PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
            MntFlags::MNT_DETACH,
        ),
        None => (
            mount_point.to_path_buf(),
            MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW,
        ),
    };
    match nix::mount::umount2(&target, flags) {
        // EINVAL: not a mount point (someone unmounted it already); ENOENT: gone.
        Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
        Err(errno) => {
            return Err(format!(
                "umount2({}, MNT_DETACH) failed: {errno}",
                escape::path(mount_point)
            ));
        }
    }
    if let Err(e) = std::fs::remove_dir(mount_point) {
        tracing::debug!(mount_point = %escape::path(mount_point), error = %e, "mount point directory not removed");
    }
    Ok(())
}

/// What the kernel has mounted at `mount_point`, with the loop backing file
/// when the source is a loop device.
///
/// # Errors
///
/// Reading mountinfo or sysfs failed.
pub fn kernel_mount_at(mount_point: &Path) -> io::Result<Option<(MountEntry, Option<PathBuf>)>> {
    let entries = mountinfo::read()?;
    let Some(top) = mountinfo::mounted_at(&entries, mount_point)
        .last()
        .copied()
        .cloned()
    else {
        return Ok(None);
    };
    let backing = backing_of(&top.source)?;
    Ok(Some((top, backing)))
}

/// The backing file of a mount source if it is a bound loop device.
///
/// # Errors
///
/// Reading sysfs failed.
pub fn backing_of(source: &str) -> io::Result<Option<PathBuf>> {
    match loop_device::loop_number(source) {
        Some(n) => loop_device::backing_file(n),
        None => Ok(None),
    }
}
