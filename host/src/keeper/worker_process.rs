//! Starting, watching and ending the worker process.
//!
//! The worker is `/proc/self/exe __worker` (see [`crate::worker`] for why a
//! re-exec): its link lands on descriptor 3 and the handoff listener on 4;
//! it dies with the keeper (`PR_SET_PDEATHSIG`, so a keeper that is only a
//! test process leaves nothing behind) and its `oom_score_adj` is 0 whatever
//! the keeper's. This module never interprets what the worker says.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::link::{
    Channel, ToWorker, WorkerStart, KEEPER_PID_ENV, WORKER_LINK_FD, WORKER_LISTENER_FD,
};
use crate::pid1::reset_signals_for_child;

/// Descriptors handed to the worker are first moved at or above this, so
/// that `dup2` onto 3 and 4 in the child never overwrites one with the other.
const HANDOVER_FD_FLOOR: RawFd = 10;

/// A running worker.
#[derive(Debug)]
pub struct WorkerProcess {
    pid: Pid,
    channel: Channel,
    started: Instant,
    /// Its status, when a reaper loop (PID 1's `waitpid(-1)`) collected it.
    reaped: std::cell::Cell<Option<WaitStatus>>,
    /// Benchmarks only: the worker is this thread of the keeper, not a process.
    in_process: std::cell::RefCell<Option<std::thread::JoinHandle<i32>>>,
}

/// How a worker ended, in words: `killed by SIGSEGV`, `exited with status 3`.
pub fn describe_status(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, signal, _) => format!("killed by {}", signal.as_str()),
        other => format!("ended ({other:?})"),
    }
}

fn dup_high(fd: RawFd) -> io::Result<OwnedFd> {
    let new = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(HANDOVER_FD_FLOOR))
        .map_err(|e| io::Error::other(format!("dup of a worker descriptor: {e}")))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(new) })
}

/// Runs in the child between fork and exec: only async-signal-safe calls.
fn prepare_child(link: RawFd, listener: Option<RawFd>) -> io::Result<()> {
    nix::unistd::dup2(link, WORKER_LINK_FD)?;
    if let Some(listener) = listener {
        nix::unistd::dup2(listener, WORKER_LISTENER_FD)?;
    }
    // SAFETY: prctl with integer arguments is async-signal-safe.
    unsafe {
        nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL, 0, 0, 0);
    }
    crate::pid1::reset_oom_score_adj_for_child();
    reset_signals_for_child().map_err(io::Error::from)
}

impl WorkerProcess {
    /// Start `program __worker` and send it `start`.
    ///
    /// # Errors
    ///
    /// The socketpair, a dup, the spawn or the first send failing; the
    /// message names what.
    pub fn spawn(
        program: &Path,
        start: &WorkerStart,
        listener: Option<&nodeinit_handoff::HandoffListener>,
    ) -> io::Result<Self> {
        let worker = if super::in_process::enabled() {
            Self::start_in_process()?
        } else {
            Self::spawn_child(program, &["__worker".as_ref()], listener, false, true)?.0
        };
        worker
            .channel
            .send(&ToWorker::Start(Box::new(start.clone())))
            .map_err(|e| {
                io::Error::other(format!(
                    "worker {} did not take its start message: {e}",
                    worker.pid
                ))
            })?;
        Ok(worker)
    }

    /// Benchmarks only ([`super::in_process`]): the worker as a thread of
    /// this process; its "pid" is ours and it cannot be killed.
    fn start_in_process() -> io::Result<Self> {
        let (channel, worker_end) = Channel::pair()?;
        let thread = super::in_process::start(worker_end)?;
        Ok(Self {
            pid: nix::unistd::getpid(),
            channel,
            started: Instant::now(),
            reaped: std::cell::Cell::new(None),
            in_process: std::cell::RefCell::new(Some(thread)),
        })
    }

    /// Start `program args...` as a child that reports over the link on
    /// descriptor 3 (a worker, or a probe of `nodeinit check`), with its
    /// stdout captured when asked.
    ///
    /// # Errors
    ///
    /// The socketpair, a dup or the spawn failing; the message names what.
    pub fn spawn_child(
        program: &Path,
        args: &[&std::ffi::OsStr],
        listener: Option<&nodeinit_handoff::HandoffListener>,
        capture_stdout: bool,
        is_worker: bool,
    ) -> io::Result<(Self, Option<std::process::ChildStdout>)> {
        let (channel, worker_end) = Channel::pair()?;
        let link = dup_high(worker_end.as_raw_fd())?;
        drop(worker_end);
        let listener = match listener {
            Some(l) => Some(dup_high(l.try_clone_fd()?.as_raw_fd())?),
            None => None,
        };
        let link_raw = link.as_raw_fd();
        let listener_raw = listener.as_ref().map(AsRawFd::as_raw_fd);
        let mut command = Command::new(program);
        // A pipe whose write end is closed at once, not /dev/null: the
        // child reads EOF even where no /dev exists yet (a chroot, a first
        // stage that has not mounted devtmpfs).
        command.args(args).stdin(Stdio::piped());
        if capture_stdout {
            command.stdout(Stdio::piped());
        }
        if is_worker {
            command.env(KEEPER_PID_ENV, std::process::id().to_string());
        } else {
            command.env_remove(KEEPER_PID_ENV);
        }
        // SAFETY: `prepare_child` makes only async-signal-safe calls (dup2,
        // prctl, open/write/close, sigaction, sigprocmask).
        unsafe {
            command.pre_exec(move || prepare_child(link_raw, listener_raw));
        }
        let mut child = command.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start {} {args:?}: {e}", program.display()),
            )
        })?;
        let stdout = child.stdout.take();
        drop(child.stdin.take());
        // Our copies close here; the child holds its own.
        drop(link);
        drop(listener);
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        // Reaped through waitpid on the pid, never through `child`.
        drop(child);
        let worker = Self {
            pid,
            channel,
            started: Instant::now(),
            reaped: std::cell::Cell::new(None),
            in_process: std::cell::RefCell::new(None),
        };
        Ok((worker, stdout))
    }

    /// Its pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The link.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// How long it has run.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Its status, if a reaper loop collected it (never waits itself).
    pub fn reaped_status(&self) -> Option<WaitStatus> {
        self.reaped.get()
    }

    /// Records its status, collected by a reaper loop.
    pub fn note_reaped(&self, status: WaitStatus) {
        self.reaped.set(Some(status));
    }

    /// Its status if it has ended (reaps it), without blocking.
    pub fn try_reap(&self) -> Option<WaitStatus> {
        if let Some(status) = self.reaped.get() {
            return Some(status);
        }
        if let Some(status) = self.join_in_process() {
            return status;
        }
        match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => None,
            Ok(status) => {
                self.reaped.set(Some(status));
                Some(status)
            }
            Err(Errno::ECHILD) => {
                tracing::debug!(
                    pid = self.pid.as_raw(),
                    "worker reaped elsewhere; status unknown"
                );
                Some(WaitStatus::Exited(self.pid, 0))
            }
            Err(_) => None,
        }
    }

    /// For an in-process worker (benchmarks): `Some(None)` while its thread
    /// runs, `Some(status)` once it returned; `None` for a real process.
    fn join_in_process(&self) -> Option<Option<WaitStatus>> {
        let mut slot = self.in_process.borrow_mut();
        let thread = slot.as_ref()?;
        if !thread.is_finished() {
            return Some(None);
        }
        let code = slot.take().map_or(70, |t| t.join().unwrap_or(70));
        let status = WaitStatus::Exited(self.pid, code);
        self.reaped.set(Some(status));
        Some(Some(status))
    }

    /// Wait for it to end, at most `within`, polling `wake` (the signal
    /// pipe: SIGCHLD makes it readable); `None` when it is still running.
    pub fn wait_exit(
        &self,
        within: Duration,
        wake: std::os::fd::BorrowedFd<'_>,
    ) -> Option<WaitStatus> {
        /// Upper bound of one poll: a SIGCHLD drained by another waiter in
        /// the same process must not make us miss the exit.
        const SLICE: Duration = Duration::from_millis(20);
        let deadline = Instant::now() + within;
        // An in-process worker (benchmarks) sends no SIGCHLD to wake us: its
        // thread is joined (it returns right after its last message).
        let thread = self.in_process.borrow_mut().take();
        if let Some(thread) = thread {
            let status = WaitStatus::Exited(self.pid, thread.join().unwrap_or(70));
            self.reaped.set(Some(status));
            return Some(status);
        }
        loop {
            if let Some(status) = self.try_reap() {
                return Some(status);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let timeout = nix::poll::PollTimeout::try_from(
                nodeinit_sys::deadline::duration_to_poll_ms(left.min(SLICE)),
            )
            .unwrap_or(nix::poll::PollTimeout::MAX);
            let mut fds = [nix::poll::PollFd::new(wake, nix::poll::PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, timeout);
        }
    }

    /// SIGKILL and reap.
    pub fn kill_and_reap(&self, wake: std::os::fd::BorrowedFd<'_>) -> Option<WaitStatus> {
        if self.in_process.borrow().is_some() {
            tracing::error!("an in-process worker (benchmark mode) cannot be killed");
            return self.wait_exit(Duration::from_secs(10), wake);
        }
        if kill(self.pid, Signal::SIGKILL) == Err(Errno::ESRCH) {
            tracing::debug!(pid = self.pid.as_raw(), "worker already gone");
        }
        self.wait_exit(Duration::from_secs(10), wake)
    }

    /// Ask it to stop (node shutdown) and wait up to `grace`; then SIGKILL.
    pub fn stop(&self, grace: Duration, wake: std::os::fd::BorrowedFd<'_>) -> Option<WaitStatus> {
        if self.channel.send(&ToWorker::Stop).is_ok() {
            if let Some(status) = self.wait_exit(grace, wake) {
                return Some(status);
            }
            tracing::warn!(
                pid = self.pid.as_raw(),
                "worker did not stop within {} s; killing it",
                grace.as_secs()
            );
        }
        self.kill_and_reap(wake)
    }
}
