//! The kernel side of one image: loop device + squashfs mount, and lazy unmount.
//!
//! Owns creating the mount point, attaching the validated descriptor and
//! mounting it `ro,nosuid,nodev`, and undoing that with `MNT_DETACH`. It must
//! never count references or decide *when* to unmount; the manager does.

use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use crate::image::ValidatedImage;
use crate::loop_device::{self, AttachMethod};
use crate::mountinfo::{self, MountEntry};

/// Flags every image is mounted with.
pub const MOUNT_FLAGS: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV);

/// Mount `image` at `mount_point` through a fresh read-only, autoclear loop
/// device. On failure nothing is left: the loop device is freed by autoclear
/// when its descriptor closes, and a mount point created here is removed.
///
/// # Errors
///
/// A reason text naming the failed step, the device or path, and a remedy.
pub fn mount_image(
    image: &ValidatedImage,
    mount_point: &Path,
    method: AttachMethod,
) -> Result<PathBuf, String> {
    let created = create_mount_point(mount_point)?;
    let result = attach_and_mount(image, mount_point, method);
    if result.is_err() && created {
        let _ = std::fs::remove_dir(mount_point);
    }
    result
}

fn attach_and_mount(
    image: &ValidatedImage,
    mount_point: &Path,
    method: AttachMethod,
) -> Result<PathBuf, String> {
    let device =
        loop_device::attach(&image.file, &image.path, method).map_err(|e| e.to_string())?;
    nix::mount::mount(
        Some(device.path()),
        mount_point,
        Some("squashfs"),
        MOUNT_FLAGS,
        None::<&str>,
    )
    .map_err(|errno| {
        format!(
            "mounting {} (from {}) on {} failed: {errno}{}",
            device.path().display(),
            image.path.display(),
            mount_point.display(),
            mount_hint(errno)
        )
    })?;
    // Dropping `device` closes our descriptor: from now on the mount alone
    // keeps the loop device, and autoclear frees it when the mount goes.
    Ok(device.path().to_path_buf())
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

/// Create `mount_point` (and its parents); `Ok(true)` when it was created here.
fn create_mount_point(mount_point: &Path) -> Result<bool, String> {
    if let Some(base) = mount_point.parent() {
        std::fs::create_dir_all(base)
            .map_err(|e| format!("creating mount base {} failed: {e}", base.display()))?;
    }
    match std::fs::create_dir(mount_point) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && mount_point.is_dir() => Ok(false),
        Err(e) => Err(format!(
            "creating mount point {} failed: {e}",
            mount_point.display()
        )),
    }
}

/// Detach the mount at `mount_point` now (`MNT_DETACH`: busy files keep the
/// filesystem alive until closed; the loop device goes with the last user),
/// then remove the empty directory. A mount point with nothing mounted is `Ok`.
///
/// # Errors
///
/// The errno of `umount2` with a reason text.
pub fn unmount_detached(mount_point: &Path) -> Result<(), String> {
    match nix::mount::umount2(
        mount_point,
        MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW,
    ) {
        // EINVAL: not a mount point (someone unmounted it already); ENOENT: gone.
        Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
        Err(errno) => {
            return Err(format!(
                "umount2({}, MNT_DETACH) failed: {errno}",
                mount_point.display()
            ));
        }
    }
    if let Err(e) = std::fs::remove_dir(mount_point) {
        tracing::debug!(mount_point = %mount_point.display(), error = %e, "mount point directory not removed");
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
