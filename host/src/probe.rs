//! Plugin code run on behalf of a command that is not the boot — `nodeinit
//! check`, `nodeinit plugin inspect`, the probe before a reload — runs in a
//! child (`nodeinit __check` / `__inspect`), which announces each plugin
//! call over the same link a worker uses. A plugin that segfaults, aborts,
//! exits or hangs while loading is then reported (`crashed with SIGSEGV
//! while loading`), never suffered by the command.
//!
//! Owns starting such a child, its deadline, and the words for how it ended.
//! Never loads a plugin itself.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::wait::WaitStatus;

use crate::config::DEFAULT_PHASE_TIMEOUT_SECS;
use crate::keeper::{watch, WatchEnd, WorkerProcess};
use crate::link::{Channel, FromWorker, StepReport, WORKER_LINK_FD};
use crate::pid1::SignalPipe;
use crate::placement::Placement;

/// How a probe child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEnd {
    /// It finished and exited with this code.
    Done(i32),
    /// It died or hung in `step`: `what` is `crashed with SIGSEGV`,
    /// `exited with status 3`, `did not return within 60 s`.
    Lost {
        /// How.
        what: String,
        /// The plugin call in progress.
        step: Option<StepReport>,
    },
}

/// A probe child's stdout and end.
#[derive(Debug, Clone)]
pub struct ProbeOutcome {
    /// What it printed.
    pub stdout: String,
    /// How it ended.
    pub end: ProbeEnd,
}

/// `crashed with SIGSEGV` / `exited with status 3`.
pub fn crash_words(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Signaled(_, signal, _) => format!("crashed with {}", signal.as_str()),
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        other => format!("ended ({other:?})"),
    }
}

fn exit_code(status: &WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => *code,
        WaitStatus::Signaled(_, signal, _) => 128 + *signal as i32,
        _ => 1,
    }
}

/// This binary, to re-run as a probe child.
pub fn this_program() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
}

/// Run `program args...` as a probe child and wait for it.
///
/// # Errors
///
/// The child cannot be started or the signal pipe installed.
pub fn probe(program: &Path, args: &[&OsStr]) -> io::Result<ProbeOutcome> {
    let signals = SignalPipe::install().map_err(io::Error::from)?;
    let (child, stdout) = WorkerProcess::spawn_child(program, args, true, false)?;
    let reader = stdout.map(|mut out| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        })
    });
    let end = watch(
        &child,
        signals,
        Placement::Process,
        DEFAULT_PHASE_TIMEOUT_SECS,
        &mut |_| {},
    );
    let stdout = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    let end = match end {
        WatchEnd::Finished => ProbeEnd::Done(exit_code(
            &child
                .await_exit(signals.fd())
                .unwrap_or(WaitStatus::StillAlive),
        )),
        WatchEnd::Died {
            status: status @ WaitStatus::Exited(..),
            step: None,
        } => ProbeEnd::Done(exit_code(&status)),
        WatchEnd::Died { status, step } => ProbeEnd::Lost {
            what: crash_words(&status),
            step,
        },
        WatchEnd::Overran { step, timeout_secs } => ProbeEnd::Lost {
            what: format!("did not return within {timeout_secs} s"),
            step,
        },
        WatchEnd::Shutdown(_) => ProbeEnd::Lost {
            what: "was interrupted".to_owned(),
            step: None,
        },
        WatchEnd::Serving => ProbeEnd::Done(0),
    };
    Ok(ProbeOutcome { stdout, end })
}

/// In a probe child: the link to the parent, when there is one (run by
/// hand, `nodeinit __check` has none and reports nothing).
pub fn parent_link() -> Option<Channel> {
    nix::fcntl::fcntl(WORKER_LINK_FD, nix::fcntl::FcntlArg::F_GETFD).ok()?;
    // SAFETY: descriptor 3 is open (F_GETFD succeeded) and was dup2()ed
    // there by the parent before exec; nothing else in this process owns it.
    Some(Channel::from_fd(unsafe {
        OwnedFd::from_raw_fd(WORKER_LINK_FD)
    }))
}

/// Tell the parent about a plugin call (nothing when run by hand).
pub fn announce(link: Option<&Channel>, step: StepReport) {
    if let Some(link) = link {
        let _ = link.send(&FromWorker::Step(step));
    }
}

/// Tell the parent the child is done (its stdout is complete).
pub fn finished(link: Option<&Channel>) {
    if let Some(link) = link {
        let _ = link.send(&FromWorker::Finished);
    }
}
