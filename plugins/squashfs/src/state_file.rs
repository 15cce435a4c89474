//! The state file that lets references be recounted after a restart (WI6).
//!
//! Owns the on-disk format (versioned JSON: which image is mounted where and
//! which allocation holds how many references to it) and writing it
//! atomically: temp file in the same directory, `fsync`, `rename`, `fsync` of
//! the directory. The directory is opened once as a checked descriptor
//! ([`crate::beneath::CheckedDir`]) and every step goes through it; the temp
//! file is created `O_EXCL | O_NOFOLLOW | O_NONBLOCK`, so a link, a FIFO or a
//! stale file planted at its name is never written through, never blocks
//! (issue 12, item 10): it is removed and the create retried once. Anonymous references (no allocation) are not recorded: after
//! a restart nobody could claim them. This module must never look at the
//! kernel; reconciling with it is the manager's job.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::beneath::CheckedDir;

/// File name of the state file inside `state_dir`.
pub const STATE_FILE_NAME: &str = "squashfs-mounts.json";
/// Format version written by this backend.
pub const STATE_VERSION: u32 = 1;

/// Everything persisted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedState {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// One entry per mounted image, sorted by image path.
    pub mounts: Vec<PersistedMount>,
}

/// One mounted image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedMount {
    /// Canonical image path.
    pub image: String,
    /// Where it is mounted.
    pub mount_point: String,
    /// Allocation id → number of references it holds.
    pub holders: BTreeMap<String, u32>,
}

/// Reads and writes `<state_dir>/squashfs-mounts.json`.
#[derive(Debug)]
pub struct StateFile {
    dir: PathBuf,
    path: PathBuf,
    temp_name: String,
    /// The state directory, opened and checked once it exists: every write
    /// goes through it and fsyncs it.
    dir_handle: Mutex<Option<CheckedDir>>,
}

impl StateFile {
    /// The state file inside `state_dir`.
    #[must_use]
    pub fn in_dir(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.to_path_buf(),
            path: state_dir.join(STATE_FILE_NAME),
            // The pid keeps two managers (say, a dying and a new process) from sharing a temp file.
            temp_name: format!(".{STATE_FILE_NAME}.{}.tmp", std::process::id()),
            dir_handle: Mutex::new(None),
        }
    }

    /// Path of the state file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read the state; a missing file is an empty state.
    ///
    /// # Errors
    ///
    /// The file exists but cannot be read, is not a regular file, or is not
    /// a version-1 state; the message names the file and says to move it
    /// away to start from the kernel's view alone.
    pub fn load(&self) -> io::Result<PersistedState> {
        let named = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("reading state file {} failed: {e}", self.path.display()),
            )
        };
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&self.path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PersistedState::default()),
            Err(e) => return Err(named(e)),
        };
        if !file.metadata().map_err(named)?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "state file {} is not a regular file; move it away to rebuild the mount state from the kernel alone",
                    self.path.display()
                ),
            ));
        }
        let mut text = String::new();
        (&file).read_to_string(&mut text).map_err(named)?;
        let state: PersistedState = serde_json::from_str(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "state file {} is not valid: {e}; move it away to rebuild the mount state from the kernel alone (allocation references are then lost)",
                    self.path.display()
                ),
            )
        })?;
        if state.version != STATE_VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "state file {} has version {}, this backend reads version {STATE_VERSION}",
                    self.path.display(),
                    state.version
                ),
            ));
        }
        Ok(state)
    }

    /// Serialise `state` as the bytes [`StateFile::write_bytes`] would store.
    ///
    /// # Errors
    ///
    /// Serialisation failed (not expected for this plain data).
    pub fn encode(state: &PersistedState) -> io::Result<Vec<u8>> {
        serde_json::to_vec_pretty(state).map_err(io::Error::other)
    }

    /// Replace the state file with `bytes`, atomically and durably.
    ///
    /// # Errors
    ///
    /// Any step failed; the message names the path. The previous state file
    /// is then left as it was.
    pub fn write_bytes(&self, bytes: &[u8]) -> io::Result<()> {
        let mut dir_handle = self
            .dir_handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let dir = match dir_handle.take() {
            Some(dir) => dir,
            None => CheckedDir::open("state_dir", &self.dir, true)
                .map_err(|e| io::Error::other(e.to_string()))?,
        };
        // The one atomic write, through the checked directory descriptor.
        let result = nodeinit_sys::write_atomically_at(
            dir.fd(),
            &self.dir,
            std::ffi::OsStr::new(STATE_FILE_NAME),
            &self.temp_name,
            bytes,
            0o600,
        );
        if result.is_err() {
            // The directory may have been removed or replaced: reopen next time.
        } else {
            *dir_handle = Some(dir);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PersistedState {
        PersistedState {
            version: STATE_VERSION,
            mounts: vec![PersistedMount {
                image: "/images/base.sqfs".to_owned(),
                mount_point: "/run/pact/uenv/base".to_owned(),
                holders: BTreeMap::from([("a".to_owned(), 1), ("c".to_owned(), 2)]),
            }],
        }
    }

    #[test]
    fn round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(&dir.path().join("nested"));
        file.write_bytes(&StateFile::encode(&sample()).unwrap())
            .unwrap();
        assert_eq!(file.load().unwrap(), sample());
        let names: Vec<_> = std::fs::read_dir(dir.path().join("nested"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [STATE_FILE_NAME]);
    }

    #[test]
    fn link_at_the_temp_path_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let state_dir = dir.path().join("state");
        std::fs::create_dir(&state_dir).unwrap();
        let file = StateFile::in_dir(&state_dir);
        std::os::unix::fs::symlink(&victim, state_dir.join(&file.temp_name)).unwrap();
        file.write_bytes(&StateFile::encode(&sample()).unwrap())
            .unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(file.load().unwrap(), sample());
        assert!(!state_dir.join(&file.temp_name).exists());
    }

    #[test]
    fn fifo_as_state_file_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        nix::unistd::mkfifo(file.path(), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = file.load().unwrap_err();
        assert!(
            err.to_string()
                .contains("is not a regular file; move it away"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_is_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            StateFile::in_dir(dir.path()).load().unwrap(),
            PersistedState::default()
        );
    }

    #[test]
    fn corrupt_file_names_path_and_remedy() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        std::fs::write(file.path(), "{\"version\":1,\"mounts\":[],\"extra\":0}").unwrap();
        let err = file.load().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let text = err.to_string();
        assert!(
            text.contains(STATE_FILE_NAME)
                && text.contains("unknown field `extra`")
                && text.contains("move it away"),
            "{text}"
        );
    }

    #[test]
    fn future_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        std::fs::write(file.path(), "{\"version\":2,\"mounts\":[]}").unwrap();
        assert!(file
            .load()
            .unwrap_err()
            .to_string()
            .contains("has version 2"));
    }

    #[test]
    fn unwritable_dir_reports_path_and_keeps_old_state() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, "x").unwrap();
        let err = StateFile::in_dir(&blocker).write_bytes(b"{}").unwrap_err();
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }
}
