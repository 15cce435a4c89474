//! pact in supervise mode: the handoff gate opens when pact-agent signals
//! readiness by writing `/run/pact/ready` at the end of its own boot
//! (DESIGN.md §6), not as soon as the handoff socket is bound.
//!
//! Watched with inotify, never polled: on the file's directory, or, while
//! that does not exist yet, on its deepest existing ancestor, moving down as
//! directories appear. After each new watch the file is looked for again,
//! so what appeared before the watch was armed is not missed.
//!
//! This module only reads: it must never create the ready file (pact
//! writes it; a file created by nodeinit would announce a node pact has not
//! finished booting).

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use nodeinit_handoff::ReadyGate;

/// The file pact-agent writes when its boot is complete (hpc-node's constant).
pub const PACT_READY_FILE: &str = hpc_node::readiness::READINESS_FILE_PATH;

/// The watch could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum PactReadyError {
    /// An inotify call failed.
    #[error("watching for pact's ready file {}: {what} failed: {source}; the handoff gate cannot follow pact's readiness", ready_file.display())]
    Inotify {
        /// The ready file watched for.
        ready_file: PathBuf,
        /// Which call, on which path.
        what: String,
        /// The OS error.
        source: nix::Error,
    },
}

/// What the watch is armed on.
struct Armed {
    dir: PathBuf,
    wd: WatchDescriptor,
}

/// The deepest existing directory among the ancestors of `file`.
fn deepest_existing_dir(file: &Path) -> PathBuf {
    file.ancestors()
        .skip(1)
        .find(|dir| dir.is_dir())
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

/// Block until `ready_file` exists, then open `gate`. Returns at once when
/// it already exists; its directory (and its parents) may not exist yet.
///
/// # Errors
///
/// [`PactReadyError`] when inotify fails; the gate is left as it was.
pub fn open_gate_when_pact_ready(
    ready_file: &Path,
    gate: &ReadyGate,
) -> Result<(), PactReadyError> {
    let failed = |what: String, source| PactReadyError::Inotify {
        ready_file: ready_file.to_path_buf(),
        what,
        source,
    };
    let inotify =
        Inotify::init(InitFlags::IN_CLOEXEC).map_err(|e| failed("inotify_init1".to_owned(), e))?;
    let mut armed: Option<Armed> = None;
    loop {
        // symlink_metadata: a dangling symlink pact left is still "written".
        if ready_file.symlink_metadata().is_ok() {
            gate.open();
            return Ok(());
        }
        let dir = deepest_existing_dir(ready_file);
        if armed.as_ref().map(|a| &a.dir) != Some(&dir) {
            if let Some(old) = armed.take() {
                // EINVAL when the kernel dropped it already (directory gone).
                let _ = inotify.rm_watch(old.wd);
            }
            let flags = AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF
                | AddWatchFlags::IN_ONLYDIR;
            match inotify.add_watch(&dir, flags) {
                Ok(wd) => armed = Some(Armed { dir, wd }),
                // Removed between the check and the watch: look again.
                Err(Errno::ENOENT | Errno::ENOTDIR) => {}
                Err(e) => return Err(failed(format!("inotify_add_watch({})", dir.display()), e)),
            }
            // Look again before blocking: what appeared meanwhile has no event.
            continue;
        }
        let events = match inotify.read_events() {
            Ok(events) => events,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(failed("read(inotify)".to_owned(), e)),
        };
        // Any event means "look again"; one that ends the current watch
        // (its directory deleted or moved) also means "re-arm".
        let dead =
            AddWatchFlags::IN_IGNORED | AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF;
        if let Some(current) = &armed {
            if events
                .iter()
                .any(|e| e.wd == current.wd && e.mask.intersects(dead))
            {
                if let Some(old) = armed.take() {
                    let _ = inotify.rm_watch(old.wd);
                }
            }
        }
    }
}

/// [`open_gate_when_pact_ready`] in a thread named `pact-ready`; when the
/// watch fails, the gate is failed with the reason (requests then get
/// `not_ready` instead of waiting forever).
///
/// # Errors
///
/// The thread could not be spawned.
pub fn spawn_pact_ready_watch(
    ready_file: PathBuf,
    gate: ReadyGate,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("pact-ready".to_owned())
        .spawn(
            move || match open_gate_when_pact_ready(&ready_file, &gate) {
                Ok(()) => tracing::info!(
                    file = %ready_file.display(),
                    "pact-agent is ready; handoff gate open"
                ),
                Err(e) => {
                    tracing::error!("{e}");
                    gate.fail(e.to_string());
                }
            },
        )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use super::*;

    /// Bound on each wait so a broken watch fails the test instead of hanging it.
    const DEADLINE: Duration = Duration::from_secs(60);

    /// Whether the gate opened within [`DEADLINE`] (`GateOutcome` is not exported).
    fn opens(gate: &ReadyGate) -> bool {
        let _ = gate.wait(DEADLINE, &AtomicBool::new(false));
        gate.is_open()
    }

    #[test]
    fn constant_is_pacts_ready_file() {
        assert_eq!(PACT_READY_FILE, "/run/pact/ready");
    }

    #[test]
    fn existing_file_opens_the_gate_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        std::fs::write(&ready, "nid1").unwrap();
        let gate = ReadyGate::new();
        open_gate_when_pact_ready(&ready, &gate).unwrap();
        assert!(gate.is_open());
        assert_eq!(std::fs::read_to_string(&ready).unwrap(), "nid1");
    }

    /// The directories do not exist when the watch starts; they and the
    /// file appear one by one, at whatever moment relative to the watcher
    /// thread arming its watches (repeated to hit the window between a
    /// check and its watch).
    #[test]
    fn gate_opens_when_the_file_appears_under_directories_that_did_not_exist() {
        for round in 0..200 {
            let dir = tempfile::tempdir().unwrap();
            let run = dir.path().join("run");
            let ready = run.join("pact/ready");
            let gate = ReadyGate::new();
            let watcher = spawn_pact_ready_watch(ready.clone(), gate.clone()).unwrap();
            std::fs::create_dir(&run).unwrap();
            std::fs::create_dir(run.join("pact")).unwrap();
            // An unrelated file in the directory is not readiness.
            std::fs::write(run.join("pact/handoff.sock"), "").unwrap();
            assert!(
                !gate.is_open(),
                "round {round}: opened before pact was ready"
            );
            assert!(
                !ready.exists(),
                "the watcher must never create the ready file"
            );
            std::fs::write(&ready, "nid000042").unwrap();
            assert!(opens(&gate), "round {round}: the gate did not open");
            watcher.join().unwrap();
        }
    }

    #[test]
    fn a_directory_replaced_meanwhile_is_watched_anew() {
        let dir = tempfile::tempdir().unwrap();
        let pact = dir.path().join("pact");
        std::fs::create_dir(&pact).unwrap();
        let ready = pact.join("ready");
        let gate = ReadyGate::new();
        let watcher = spawn_pact_ready_watch(ready.clone(), gate.clone()).unwrap();
        std::fs::remove_dir(&pact).unwrap();
        std::fs::create_dir(&pact).unwrap();
        // Written through a rename, as an atomic writer would.
        std::fs::write(pact.join(".ready.tmp"), "nid7").unwrap();
        std::fs::rename(pact.join(".ready.tmp"), &ready).unwrap();
        assert!(opens(&gate));
        watcher.join().unwrap();
    }
}
