//! The state file that lets references be recounted after a restart (WI6).
//!
//! Owns the on-disk format (versioned JSON: which image is mounted where and
//! which allocation holds how many references to it) and writing it
//! atomically: temp file in the same directory, `fsync`, `rename`, `fsync` of
//! the directory. Anonymous references (no allocation) are not recorded: after
//! a restart nobody could claim them. This module must never look at the
//! kernel; reconciling with it is the manager's job.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

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
    temp: PathBuf,
    /// The state directory, opened once it exists: every write fsyncs it, and
    /// reopening it (and re-checking it exists) each time doubled the cost of
    /// an attributed acquire.
    dir_handle: Mutex<Option<File>>,
}

impl StateFile {
    /// The state file inside `state_dir`.
    #[must_use]
    pub fn in_dir(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.to_path_buf(),
            path: state_dir.join(STATE_FILE_NAME),
            // The pid keeps two managers (say, a dying and a new process) from sharing a temp file.
            temp: state_dir.join(format!(".{STATE_FILE_NAME}.{}.tmp", std::process::id())),
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
    /// The file exists but cannot be read or is not a version-1 state; the
    /// message names the file and says to move it away to start from the
    /// kernel's view alone.
    pub fn load(&self) -> io::Result<PersistedState> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PersistedState::default()),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("reading state file {} failed: {e}", self.path.display()),
                ))
            }
        };
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
        let named = |step: &str, path: &Path, e: io::Error| {
            io::Error::new(e.kind(), format!("{step} {} failed: {e}", path.display()))
        };
        let mut dir_handle = self
            .dir_handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if dir_handle.is_none() {
            std::fs::create_dir_all(&self.dir)
                .map_err(|e| named("creating state directory", &self.dir, e))?;
            let dir = File::open(&self.dir)
                .map_err(|e| named("opening state directory", &self.dir, e))?;
            *dir_handle = Some(dir);
        }
        let temp = &self.temp;
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_NOFOLLOW)
                .open(temp)
                .map_err(|e| named("creating", temp, e))?;
            file.write_all(bytes)
                .map_err(|e| named("writing", temp, e))?;
            file.sync_all().map_err(|e| named("fsync of", temp, e))?;
            std::fs::rename(temp, &self.path).map_err(|e| named("renaming onto", &self.path, e))?;
            match dir_handle.as_ref() {
                Some(dir) => dir
                    .sync_all()
                    .map_err(|e| named("fsync of state directory", &self.dir, e)),
                None => Ok(()),
            }
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(temp);
            // The directory may have been removed or replaced: reopen next time.
            *dir_handle = None;
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
