//! The ready file: written atomically so that its appearance (a rename into
//! the directory) is the signal, and its content is complete when seen.
//! This module never deletes a ready file it did not write.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use crate::{ReadinessSetupError, ReadyNodeId};

/// Write `node_id` (no newline) to `path` by `nodeinit_sys`'s atomic write
/// (temp file in the same directory, fsync, rename, fsync of the
/// directory). Creates the directory (mode 0755) when missing.
///
/// # Errors
///
/// [`ReadinessSetupError::Io`] naming the path that failed.
pub(crate) fn write_atomically(
    path: &Path,
    node_id: &ReadyNodeId,
) -> Result<(), ReadinessSetupError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| {
            ReadinessSetupError::io(
                "create directory",
                dir,
                e,
                "check that /run is a writable tmpfs",
            )
        })?;
    // The one atomic write: a planted link, hard link or FIFO at the temp
    // name is never written through, truncated or waited on (issue 12,
    // item 10).
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = format!(".{file_name}.tmp.{}", std::process::id());
    nodeinit_sys::write_atomically_with_temp(path, &temp, node_id.as_str().as_bytes(), 0o644, false)
        .map_err(|e| {
            ReadinessSetupError::io(
                "write ready file",
                path,
                e,
                "check free space and permissions of the ready file's directory",
            )
        })
}

/// Whether the ready file exists (whoever wrote it: nodeinit or the agent).
pub(crate) fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_the_node_id_without_newline_and_no_temp_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/ready");
        write_atomically(&path, &ReadyNodeId::parse("nid0042").unwrap()).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"nid0042");
        let names: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ready")]);
    }

    #[test]
    fn fifo_or_link_at_the_temp_path_is_replaced_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready");
        let temp = dir
            .path()
            .join(format!(".ready.tmp.{}", std::process::id()));
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        fs::hard_link(&victim, &temp).unwrap();
        write_atomically(&path, &ReadyNodeId::parse("n1").unwrap()).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        nix::unistd::mkfifo(&temp, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(write_atomically(&p, &ReadyNodeId::parse("n2").unwrap()).is_ok());
        });
        let done = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("blocked on the FIFO at the temp path");
        assert!(done);
        assert_eq!(fs::read_to_string(&path).unwrap(), "n2");
        assert!(!temp.exists());
    }

    #[test]
    fn overwrites_an_older_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready");
        fs::write(&path, "old-node\n").unwrap();
        write_atomically(&path, &ReadyNodeId::parse("new").unwrap()).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
    }

    #[test]
    fn unwritable_directory_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, "").unwrap();
        let err = write_atomically(&blocker.join("ready"), &ReadyNodeId::parse("n").unwrap())
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("create directory") && text.contains(&blocker.display().to_string()),
            "{text}"
        );
    }
}
