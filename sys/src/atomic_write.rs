//! Writing a file so that a reader sees the old content or the new one,
//! never a part, and an attacker who can write the directory cannot make the
//! writer follow a link, truncate another file or block.
//!
//! The one recipe: a temp file next to the target, created
//! `O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK` with the final mode (a link,
//! FIFO or stale file planted at its name is unlinked — never followed — and
//! the create retried once); write; `fsync`; `renameat` over the target;
//! `fsync` of the directory. On any error the temp file is removed and the
//! target is untouched. Every step goes through one directory descriptor.
//!
//! Never creates a directory other than the one asked for, and never
//! follows a symlink at the final name (rename replaces the link itself).

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags};

/// Makes each temp name of this process unique.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// `write_atomically_at` for `path`: opens its parent directory (creating it
/// with mode 0755 if `create_dir`), then writes there.
///
/// # Errors
///
/// The step that failed, with the path, as an `io::Error` of the kernel's
/// kind.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("boot.json");
/// nodeinit_sys::write_atomically(&path, b"{}", 0o644, false).unwrap();
/// assert_eq!(std::fs::read(&path).unwrap(), b"{}");
/// ```
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32, create_dir: bool) -> io::Result<()> {
    let name = path.file_name().unwrap_or_default();
    write_atomically_with_temp(path, &unique_temp_name(name), bytes, mode, create_dir)
}

/// A temp name for `name` no other writer of this process uses:
/// `.<name>.tmp.<pid>.<n>`.
pub fn unique_temp_name(name: &std::ffi::OsStr) -> String {
    format!(
        ".{}.tmp.{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// [`write_atomically`] through the caller's temp name `temp` (a single
/// name in the same directory): for a writer that always uses one, so a
/// file left by a crash is reused rather than accumulating.
///
/// # Errors
///
/// As [`write_atomically`].
pub fn write_atomically_with_temp(
    path: &Path,
    temp: &str,
    bytes: &[u8],
    mode: u32,
    create_dir: bool,
) -> io::Result<()> {
    let dir_path = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        )
    })?;
    if create_dir {
        // 0755 (less the umask): a state directory others may read.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o755)
            .create(dir_path)
            .map_err(|e| context(e, "creating directory", dir_path))?;
    }
    let dir = rustix::fs::open(
        dir_path,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| context(e.into(), "opening directory", dir_path))?;
    write_atomically_at(dir.as_fd(), dir_path, name, temp, bytes, mode)
}

/// Writes `bytes` as `name` inside the open directory `dir` (`dir_path`
/// only names it in errors) through the temp file `temp`, by the recipe in
/// the module docs.
///
/// # Errors
///
/// As [`write_atomically`].
pub fn write_atomically_at(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &std::ffi::OsStr,
    temp: &str,
    bytes: &[u8],
    mode: u32,
) -> io::Result<()> {
    if temp.is_empty() || temp.contains('/') || temp == "." || temp == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("temp name {temp:?} is not a single file name"),
        ));
    }
    let temp_path = dir_path.join(temp);
    let mut file = create_temp(dir, temp, mode).map_err(|e| context(e, "creating", &temp_path))?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| context(e, "writing", &temp_path))
        .and_then(|()| {
            rustix::fs::renameat(dir, temp, dir, name).map_err(|e| {
                context(
                    e.into(),
                    &format!("renaming {} over", temp_path.display()),
                    &dir_path.join(name),
                )
            })
        });
    drop(file);
    if let Err(e) = written {
        let _ = rustix::fs::unlinkat(dir, temp, AtFlags::empty());
        return Err(e);
    }
    rustix::fs::fsync(dir).map_err(|e| context(e.into(), "syncing directory", dir_path))
}

fn create_temp(dir: BorrowedFd<'_>, temp: &str, mode: u32) -> io::Result<std::fs::File> {
    let flags = OFlags::CREATE
        | OFlags::EXCL
        | OFlags::NOFOLLOW
        | OFlags::NONBLOCK
        | OFlags::WRONLY
        | OFlags::CLOEXEC;
    // Created owner-only, then given its mode exactly (whatever the umask).
    let open = || rustix::fs::openat(dir, temp, flags, Mode::from_bits_truncate(0o600));
    let fd = match open() {
        Err(rustix::io::Errno::EXIST) => {
            // Planted (or left by a writer that died with this pid): unlink
            // the entry itself, never what it points to, and try once more.
            rustix::fs::unlinkat(dir, temp, AtFlags::empty())?;
            open()?
        }
        other => other?,
    };
    if let Err(e) = rustix::fs::fchmod(&fd, Mode::from_bits_truncate(mode)) {
        let _ = rustix::fs::unlinkat(dir, temp, AtFlags::empty());
        return Err(e.into());
    }
    Ok(std::fs::File::from(fd))
}

fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_the_content_with_the_mode_and_leaves_no_temp_file() {
        let _serial = SERIAL.lock().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "old").unwrap();
        write_atomically(&path, b"new", 0o640, false).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(names(dir.path()), ["state.json"]);
    }

    #[test]
    fn creates_the_directory_only_when_asked() {
        let _serial = SERIAL.lock().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/nodeinit/boot.json");
        let err = write_atomically(&path, b"{}", 0o644, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().starts_with("opening directory "), "{err}");
        write_atomically(&path, b"{}", 0o644, true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
    }

    #[test]
    fn a_planted_symlink_or_fifo_at_the_temp_name_is_never_followed_or_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let _serial = SERIAL.lock().unwrap();
        // The next temp name this process will use.
        std::os::unix::fs::symlink(&victim, next_temp(dir.path(), "ready")).unwrap();
        write_atomically(&dir.path().join("ready"), b"nid1", 0o644, false).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ready")).unwrap(),
            "nid1"
        );
        assert_eq!(names(dir.path()), ["ready", "victim"]);

        rustix::fs::mknodat(
            rustix::fs::CWD,
            next_temp(dir.path(), "ready"),
            rustix::fs::FileType::Fifo,
            Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
        write_atomically(&dir.path().join("ready"), b"nid2", 0o644, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ready")).unwrap(),
            "nid2"
        );
        assert_eq!(names(dir.path()), ["ready", "victim"]);
    }

    #[test]
    fn a_symlink_at_the_final_name_is_replaced_not_followed() {
        let _serial = SERIAL.lock().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let path = dir.path().join("boot.json");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write_atomically(&path, b"{}", 0o644, false).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert!(!path.symlink_metadata().unwrap().file_type().is_symlink());
    }

    #[test]
    fn a_failed_rename_leaves_the_target_and_no_temp_file() {
        let _serial = SERIAL.lock().unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty directory fails.
        let path = dir.path().join("boot.json");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("x"), "").unwrap();
        let err = write_atomically(&path, b"{}", 0o644, false).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("renaming ")
                && (text.contains("Is a directory") || text.contains("Directory not empty")),
            "{err}"
        );
        assert_eq!(names(dir.path()), ["boot.json"]);
    }

    /// The tests that predict the next temp name hold this.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn next_temp(dir: &Path, name: &str) -> std::path::PathBuf {
        let next = TEMP_COUNTER.load(Ordering::Relaxed);
        dir.join(format!(".{name}.tmp.{}.{next}", std::process::id()))
    }
}
