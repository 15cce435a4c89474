//! The `kernel_modules` phase as a keeper thread: it starts right after the
//! early mounts and runs while the config is read and the worker loads its
//! plugins (DESIGN.md §5, the phase table's `after` lists). No plugin code
//! runs in it (only `finit_module(2)`), so it is fine in PID 1.
//!
//! The worker learns that the modules are in through a pipe: the read end
//! travels with its start message ([`crate::link::WorkerStart`]), the
//! write end belongs to the thread alone (close-on-exec, never in a child;
//! the boot's worker is forked before the pipe exists).
//! When the thread is done it writes one result byte and closes the write
//! end; the worker's first phase that needs the modules blocks until EOF.
//! A keeper that dies closes it too, so the worker never waits forever.
//!
//! Owns the thread, the pipe and the phase's record; never decides what a
//! failure means (a module that fails is reported, not fatal: what needs it
//! fails later with its own message).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use nix::fcntl::OFlag;

use super::phases::{PhaseResult, PhaseRunner};
use super::sequence::BootEnv;
use super::table::KERNEL_MODULES;

/// The result byte: every listed module is in (or there was nothing to do).
pub const MODULES_OK: u8 = b'0';
/// The result byte: some module failed or was not tried.
pub const MODULES_INCOMPLETE: u8 = b'1';

/// What the thread hands back.
struct Outcome {
    result: PhaseResult,
    started: Instant,
    ended: Instant,
    cut_short: bool,
}

/// The running phase.
pub struct ModulesInBackground {
    thread: Option<JoinHandle<Outcome>>,
    cancel: Arc<AtomicBool>,
    /// The read end, without close-on-exec: workers inherit it.
    read_end: Option<OwnedFd>,
}

impl std::fmt::Debug for ModulesInBackground {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModulesInBackground")
            .field("read_end", &self.read_end)
            .finish_non_exhaustive()
    }
}

impl ModulesInBackground {
    /// Starts the phase, unless the base is already broken or there is
    /// nothing to load here (not the node's PID 1): then it is recorded now
    /// and no pipe is made.
    pub fn start(env: &BootEnv, runner: &mut PhaseRunner) -> Self {
        let idle = Self {
            thread: None,
            cancel: Arc::new(AtomicBool::new(false)),
            read_end: None,
        };
        if runner.skip_if_broken(KERNEL_MODULES) {
            return idle;
        }
        if !env.placement.is_node() {
            runner.run(KERNEL_MODULES, || {
                PhaseResult::NotApplicable("not the node's PID 1".into())
            });
            return idle;
        }
        let Some(list) = crate::kernel_modules::list_path(Path::new("/")) else {
            runner.run(KERNEL_MODULES, || {
                PhaseResult::NotApplicable("uname failed".into())
            });
            return idle;
        };
        Self::spawn(list, runner)
    }

    /// Whether [`Self::start`] will start a thread: the node's PID 1 with
    /// a module list for the running kernel.
    pub fn will_load(env: &BootEnv) -> bool {
        env.placement.is_node()
            && crate::kernel_modules::list_path(Path::new("/")).is_some_and(|list| list.is_file())
    }

    /// Starts the thread loading `list`.
    fn spawn(list: std::path::PathBuf, runner: &mut PhaseRunner) -> Self {
        let idle = Self {
            thread: None,
            cancel: Arc::new(AtomicBool::new(false)),
            read_end: None,
        };
        let (read_end, write_end) =
            match nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}")) {
                Ok(p) => p,
                Err(e) => {
                    // No pipe: load here, in line, as before the graph.
                    tracing::warn!("kernel modules load in line: {e}");
                    runner.run(KERNEL_MODULES, || load(&list, &AtomicBool::new(false)).0);
                    return idle;
                }
            };
        let cancel = Arc::clone(&idle.cancel);
        let in_line = list.clone();
        let spawned = std::thread::Builder::new()
            .name("kernel-modules".into())
            .spawn(move || {
                let started = Instant::now();
                let (result, cut_short) = load(&list, &cancel);
                let byte = if matches!(result, PhaseResult::Failed { .. }) || cut_short {
                    MODULES_INCOMPLETE
                } else {
                    MODULES_OK
                };
                // A worker that is gone, or none started yet: nobody to tell.
                let _ = nix::unistd::write(&write_end, &[byte]);
                drop(write_end);
                Outcome {
                    result,
                    started,
                    ended: Instant::now(),
                    cut_short,
                }
            });
        match spawned {
            Ok(thread) => Self {
                thread: Some(thread),
                read_end: Some(read_end),
                ..idle
            },
            Err(e) => {
                tracing::warn!("no kernel-modules thread ({e}); loading in line");
                drop(read_end);
                runner.run(KERNEL_MODULES, || load(&in_line, &AtomicBool::new(false)).0);
                idle
            }
        }
    }

    /// The read end, for a worker's start message (each worker gets its own
    /// duplicate), to wait on.
    pub fn fd_for_worker(&self) -> Option<BorrowedFd<'_>> {
        self.read_end.as_ref().map(AsFd::as_fd)
    }

    /// Waits for the thread and records the phase. When the base is broken
    /// (a required phase failed) the thread tries no further module and
    /// the phase is recorded as cut short.
    pub fn finish(mut self, runner: &mut PhaseRunner) {
        // No later worker inherits it.
        self.read_end = None;
        let Some(thread) = self.thread.take() else {
            return;
        };
        if !runner.is_healthy() {
            self.cancel.store(true, Ordering::Release);
        }
        match thread.join() {
            Ok(o) => {
                let result = match (o.cut_short, runner.broken_by()) {
                    (true, Some(cause)) => PhaseResult::NotApplicable(format!(
                        "cut short: {cause}; {}",
                        describe_result(&o.result)
                    )),
                    _ => o.result,
                };
                runner.finish_span(KERNEL_MODULES, result, o.started, o.ended, o.cut_short);
            }
            Err(_) => runner.finish(
                KERNEL_MODULES,
                PhaseResult::Failed {
                    reason: "the kernel-modules thread panicked".into(),
                    required: false,
                },
                0.0,
            ),
        }
    }
}

fn describe_result(result: &PhaseResult) -> String {
    match result {
        PhaseResult::Ok => "every module tried was loaded".into(),
        PhaseResult::NotApplicable(why) => why.clone(),
        PhaseResult::Failed { reason, .. } => reason.clone(),
    }
}

/// Loads the list: the phase result, and whether it stopped early.
fn load(list: &Path, cancel: &AtomicBool) -> (PhaseResult, bool) {
    match crate::kernel_modules::load_listed_until(list, cancel) {
        Ok(None) => (
            PhaseResult::NotApplicable(format!("no {}", list.display())),
            false,
        ),
        Ok(Some(done)) => {
            let cut_short = !done.not_tried.is_empty();
            if done.failed.is_empty() && !cut_short {
                tracing::info!(loaded = ?done.loaded, already = ?done.present, "kernel modules");
                return (PhaseResult::Ok, false);
            }
            let mut reasons = done.failed.clone();
            if cut_short {
                reasons.push(format!("not tried: {}", done.not_tried.join(" ")));
            }
            // Not fatal by itself: what needs the module fails later, with its own message.
            (
                PhaseResult::Failed {
                    reason: reasons.join("; "),
                    required: false,
                },
                cut_short,
            )
        }
        Err(e) => (
            PhaseResult::Failed {
                reason: e,
                required: false,
            },
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a worker does with the descriptor: read to EOF.
    fn read_to_eof(fd: BorrowedFd<'_>) -> Vec<u8> {
        use std::io::Read;
        let mut file = std::fs::File::from(fd.try_clone_to_owned().unwrap());
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn the_pipe_ends_with_the_result_byte_and_the_phase_records_its_span() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("modules.load");
        std::fs::write(&list, "nosuch.ko\n").unwrap();
        let mut runner = PhaseRunner::new(false);
        let task = ModulesInBackground::spawn(list, &mut runner);
        let fd = task.fd_for_worker().unwrap();
        // EOF comes when the thread is done; the byte says "incomplete".
        assert_eq!(read_to_eof(fd), [MODULES_INCOMPLETE]);
        task.finish(&mut runner);
        let r = &runner.records()[0];
        assert_eq!(r.status, crate::boot::PhaseStatus::Degraded);
        assert!(
            r.detail.as_deref().unwrap_or("").ends_with(
                "nosuch.ko: ENOENT: No such file or directory (the file is not in the image)"
            ),
            "{r:?}"
        );
        let span = &runner.spans()[0];
        assert!(span.end_ms >= span.start_ms && !span.cut_short, "{span:?}");
    }

    #[test]
    fn an_empty_list_is_ok() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("modules.load");
        std::fs::write(&list, "# nothing\n").unwrap();
        let mut runner = PhaseRunner::new(false);
        let task = ModulesInBackground::spawn(list, &mut runner);
        assert_eq!(read_to_eof(task.fd_for_worker().unwrap()), [MODULES_OK]);
        task.finish(&mut runner);
        assert_eq!(runner.records()[0].status, crate::boot::PhaseStatus::Ok);
    }

    #[test]
    fn outside_a_node_nothing_is_started_and_the_phase_is_recorded() {
        let env = BootEnv::for_sandbox("/nonexistent.toml".into());
        let mut runner = PhaseRunner::new(false);
        let task = ModulesInBackground::start(&env, &mut runner);
        assert!(task.fd_for_worker().is_none());
        task.finish(&mut runner);
        let r = &runner.records()[0];
        assert_eq!(
            (r.name.as_str(), r.status, r.detail.as_deref()),
            (
                KERNEL_MODULES,
                crate::boot::PhaseStatus::Skipped,
                Some("not the node's PID 1")
            )
        );
    }
}
