//! Opening a plugin file safely: `O_NOFOLLOW`, then `fstat` of what was
//! actually opened, then the directory holding it.
//!
//! Owns the ownership/mode policy. Must never `dlopen` or read contents.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::unistd::geteuid;

use super::LoadFailure;

/// Opens `path` for reading without following a final symlink, and checks
/// the file and its directory.
pub fn open_checked(path: &Path) -> Result<File, LoadFailure> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(code) if code == nix::errno::Errno::ELOOP as i32 => LoadFailure::Symlink,
            Some(code) if code == nix::errno::Errno::ENOENT as i32 => LoadFailure::Missing,
            _ => LoadFailure::Open(e.to_string()),
        })?;
    // fstat of the descriptor we hold, not a second lookup of the path.
    let st = file
        .metadata()
        .map_err(|e| LoadFailure::Open(format!("fstat: {e}")))?;
    if st.is_dir() {
        return Err(LoadFailure::NotRegular("a directory".to_owned()));
    }
    if !st.is_file() {
        return Err(LoadFailure::NotRegular(format!(
            "file type {:?}",
            st.file_type()
        )));
    }
    check_owner_and_mode("file", st.uid(), st.mode())?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dst = std::fs::metadata(dir)
        .map_err(|e| LoadFailure::Open(format!("stat of directory {}: {e}", dir.display())))?;
    check_owner_and_mode("directory", dst.uid(), dst.mode())?;
    Ok(file)
}

fn check_owner_and_mode(what: &'static str, uid: u32, mode: u32) -> Result<(), LoadFailure> {
    let euid = geteuid().as_raw();
    if uid != 0 && uid != euid {
        return Err(LoadFailure::Unsafe(format!(
            "{what} is owned by uid {uid}, not root or uid {euid}: chown it to root"
        )));
    }
    if mode & 0o002 != 0 {
        return Err(LoadFailure::Unsafe(format!(
            "{what} is world-writable (mode {:o}): chmod o-w it",
            mode & 0o7777
        )));
    }
    if mode & 0o020 != 0 {
        return Err(LoadFailure::Unsafe(format!(
            "{what} is group-writable (mode {:o}): chmod g-w it",
            mode & 0o7777
        )));
    }
    Ok(())
}
