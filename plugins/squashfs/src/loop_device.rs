//! Attaching an image descriptor to a read-only, autoclear loop device.
//!
//! Owns the loop ioctls and the sysfs view of loop devices
//! (`/sys/block/loopN/loop/backing_file`). It must never mount, and never
//! detach a device explicitly once a filesystem uses it: autoclear makes the
//! kernel free the device when the last user (the squashfs mount) goes.
//!
//! # Why a few `nix` ioctls and not `loopdev-3`
//!
//! `loopdev-3` (0.5) only knows `LOOP_SET_FD` + `LOOP_SET_STATUS64`, not
//! `LOOP_CONFIGURE` (Linux 5.8+, which attaches and sets flags in one step, so
//! no other process can see the device half-configured); it attaches by *path*,
//! which would reopen the image we validated through an `O_NOFOLLOW` descriptor
//! (a time-of-check/time-of-use gap); and its build runs `bindgen`, which needs
//! libclang on every build machine. The five ioctls needed here are a few lines
//! with `nix`'s `ioctl_*_bad!` macros and two `#[repr(C)]` structs copied from
//! `<linux/loop.h>`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// The loop control device.
pub const LOOP_CONTROL_PATH: &str = "/dev/loop-control";
/// `LO_FLAGS_READ_ONLY` from `<linux/loop.h>`.
const LO_FLAGS_READ_ONLY: u32 = 1;
/// `LO_FLAGS_AUTOCLEAR` from `<linux/loop.h>`.
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// `LO_NAME_SIZE` from `<linux/loop.h>`.
const LO_NAME_SIZE: usize = 64;
/// How often a free device may be taken by another process before giving up.
const MAX_ATTACH_RACES: usize = 16;

/// `struct loop_info64` from `<linux/loop.h>`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` from `<linux/loop.h>`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
nix::ioctl_write_int_bad!(loop_set_fd, 0x4C00);
nix::ioctl_none_bad!(loop_clr_fd, 0x4C01);
nix::ioctl_write_ptr_bad!(loop_set_status64, 0x4C04, LoopInfo64);
nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);

impl LoopInfo64 {
    fn read_only_autoclear(backing: &Path) -> Self {
        let mut lo_file_name = [0u8; LO_NAME_SIZE];
        let name = backing.as_os_str().as_encoded_bytes();
        // Informational only (the kernel keeps the real backing file); leave a NUL.
        let len = name.len().min(LO_NAME_SIZE - 1);
        if let (Some(dst), Some(src)) = (lo_file_name.get_mut(..len), name.get(..len)) {
            dst.copy_from_slice(src);
        }
        Self {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
            lo_file_name,
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        }
    }
}

/// How a device gets bound to its backing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMethod {
    /// `LOOP_CONFIGURE` (Linux 5.8+), falling back to [`AttachMethod::SetFdThenStatus`]
    /// when the kernel does not know it.
    Configure,
    /// `LOOP_SET_FD` + `LOOP_SET_STATUS64`; read-only because the backing
    /// descriptor is read-only.
    SetFdThenStatus,
}

/// Why no loop device could be attached.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// `/dev/loop-control` or `/dev/loopN` could not be opened.
    #[error("opening {path} failed: {source}; is the loop driver loaded (modprobe loop) and /dev populated (devtmpfs)?")]
    Open {
        /// The device path.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// An ioctl failed.
    #[error("{ioctl} on {path} failed: {errno}")]
    Ioctl {
        /// Which ioctl.
        ioctl: &'static str,
        /// The device path.
        path: String,
        /// The errno.
        errno: Errno,
    },
    /// Every free device was taken by someone else before we could bind it.
    #[error("{MAX_ATTACH_RACES} free loop devices were taken by other processes before they could be configured; retry")]
    Contended,
}

/// A loop device bound to an image. Dropping it closes the device; with
/// autoclear the kernel then frees it unless a mount still uses it.
#[derive(Debug)]
pub struct LoopDevice {
    number: u32,
    path: PathBuf,
    device: File,
}

impl LoopDevice {
    /// `/dev/loopN`.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open device.
    #[must_use]
    pub fn file(&self) -> &File {
        &self.device
    }

    /// N of `/dev/loopN`.
    #[must_use]
    pub fn number(&self) -> u32 {
        self.number
    }
}

/// Bind `image` (opened read-only) to a free loop device, read-only and autoclear.
///
/// # Errors
///
/// [`LoopError`] naming the device and the failed step.
pub fn attach(
    image: &File,
    image_path: &Path,
    method: AttachMethod,
) -> Result<LoopDevice, LoopError> {
    let control = open_device(Path::new(LOOP_CONTROL_PATH))?;
    for _ in 0..MAX_ATTACH_RACES {
        let number = get_free(&control)?;
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let device = open_device(&path)?;
        let info = LoopInfo64::read_only_autoclear(image_path);
        let bound = match method {
            AttachMethod::Configure => match configure(&device, image, info) {
                Err(Errno::EINVAL | Errno::ENOTTY) => set_fd_then_status(&device, image, info),
                other => other,
            },
            AttachMethod::SetFdThenStatus => set_fd_then_status(&device, image, info),
        };
        match bound {
            Ok(()) => {
                return Ok(LoopDevice {
                    number,
                    path,
                    device,
                })
            }
            // Another process bound the device between GET_FREE and our ioctl.
            Err(Errno::EBUSY) => continue,
            Err(errno) => {
                return Err(LoopError::Ioctl {
                    ioctl: "binding the image (LOOP_CONFIGURE / LOOP_SET_FD)",
                    path: path.display().to_string(),
                    errno,
                })
            }
        }
    }
    Err(LoopError::Contended)
}

fn open_device(path: &Path) -> Result<File, LoopError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| LoopError::Open {
            path: path.display().to_string(),
            source,
        })
}

fn get_free(control: &File) -> Result<u32, LoopError> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument; the descriptor is open for
    // the whole call.
    let number =
        unsafe { loop_ctl_get_free(control.as_raw_fd()) }.map_err(|errno| LoopError::Ioctl {
            ioctl: "LOOP_CTL_GET_FREE",
            path: LOOP_CONTROL_PATH.to_owned(),
            errno,
        })?;
    u32::try_from(number).map_err(|_| LoopError::Ioctl {
        ioctl: "LOOP_CTL_GET_FREE",
        path: LOOP_CONTROL_PATH.to_owned(),
        errno: Errno::ERANGE,
    })
}

fn configure(device: &File, image: &File, info: LoopInfo64) -> Result<(), Errno> {
    let fd = u32::try_from(image.as_raw_fd()).map_err(|_| Errno::EBADF)?;
    let config = LoopConfig {
        fd,
        block_size: 0,
        info,
        reserved: [0; 8],
    };
    // SAFETY: `config` is a valid `struct loop_config` living across the call;
    // the kernel only reads it.
    unsafe { loop_configure(device.as_raw_fd(), &config) }.map(drop)
}

fn set_fd_then_status(device: &File, image: &File, info: LoopInfo64) -> Result<(), Errno> {
    // SAFETY: LOOP_SET_FD takes the backing descriptor by value; it stays open
    // for the call (the kernel takes its own reference).
    unsafe { loop_set_fd(device.as_raw_fd(), image.as_fd().as_raw_fd()) }?;
    // SAFETY: `info` is a valid `struct loop_info64` living across the call.
    if let Err(errno) = unsafe { loop_set_status64(device.as_raw_fd(), &info) } {
        // Do not leave a bound device without autoclear behind.
        // SAFETY: LOOP_CLR_FD takes no argument.
        let _ = unsafe { loop_clr_fd(device.as_raw_fd()) };
        return Err(errno);
    }
    Ok(())
}

/// The backing file of `/dev/loopN` according to sysfs, or `None` when the
/// device is unbound. A deleted backing file reads as `<path> (deleted)`.
///
/// # Errors
///
/// I/O errors other than "not found" reading the sysfs attribute.
pub fn backing_file(number: u32) -> io::Result<Option<PathBuf>> {
    match std::fs::read_to_string(format!("/sys/block/loop{number}/loop/backing_file")) {
        Ok(text) => Ok(Some(PathBuf::from(text.trim_end_matches('\n')))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// N of a `/dev/loopN` path, or `None` for anything else.
#[must_use]
pub fn loop_number(device_path: &str) -> Option<u32> {
    device_path.strip_prefix("/dev/loop")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_linux_uapi() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn loop_number_parses_only_loop_devices() {
        assert_eq!(loop_number("/dev/loop12"), Some(12));
        assert_eq!(loop_number("/dev/sda1"), None);
        assert_eq!(loop_number("/dev/loop"), None);
    }

    #[test]
    fn file_name_is_truncated_with_nul() {
        let long = PathBuf::from(format!("/{}", "x".repeat(100)));
        let info = LoopInfo64::read_only_autoclear(&long);
        assert_eq!(info.lo_file_name[LO_NAME_SIZE - 1], 0);
        assert_eq!(info.lo_flags, LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR);
    }
}
