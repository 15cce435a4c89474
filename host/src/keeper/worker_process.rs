//! Starting, watching and ending the worker process.
//!
//! The boot's worker is forked from the keeper as the keeper's first act,
//! while it is the only thread ([`WorkerProcess::fork_for_boot`]): its
//! start then overlaps the keeper's early mounts and config instead of
//! following them (the boot decides when not to: a node's kernel-modules
//! thread goes first). Every other worker (a retry without an optional
//! backend, a restart, a reload) is `/proc/self/exe __worker`, re-executed
//! (see [`crate::worker`] for why), since by then the keeper may have
//! threads. Either way the worker starts with stdio and the link on
//! descriptor 3, nothing else; what else it needs (the handoff listener,
//! the modules pipe) comes with its start message. It dies with the keeper
//! (`PR_SET_PDEATHSIG`, so a keeper that is only a test process leaves
//! nothing behind) and its `oom_score_adj` is 0 whatever the keeper's.
//! This module never interprets what the worker says.

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
    Channel, StartDescriptors, ToWorker, WorkerStart, KEEPER_PID_ENV, WORKER_LINK_FD,
};
use crate::pid1::reset_signals_for_child;
use crate::placement::Placement;

/// The link is first moved at or above this, so that its `dup2` onto 3 in
/// the child always makes a new descriptor, one that survives the exec
/// (`dup2` of a descriptor onto itself keeps close-on-exec).
const HANDOVER_FD_FLOOR: RawFd = 10;

/// How long a worker that is done may take to exit before it is killed.
const EXIT_AFTER_CLOSE: Duration = Duration::from_secs(5);

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

/// `close_range(first, ~0, flags)`: with `CLOSE_RANGE_CLOEXEC` every
/// descriptor from `first` up closes at exec; with 0 it closes now.
/// Async-signal-safe. Kernels before 5.9 (5.11 for the flag) refuse it:
/// then inherited descriptors stay, as they did before this call existed.
fn close_from(first: u32, flags: i32) {
    // SAFETY: close_range takes integers only; closing descriptors from
    // `first` up is what both callers (a child after fork) ask for.
    let _ = unsafe { nix::libc::close_range(first, u32::MAX, flags) };
}

/// Runs in the child between fork and exec: only async-signal-safe calls.
fn prepare_child(link: RawFd) -> io::Result<()> {
    nix::unistd::dup2(link, WORKER_LINK_FD)?;
    close_from(
        WORKER_LINK_FD as u32 + 1,
        nix::libc::CLOSE_RANGE_CLOEXEC as i32,
    );
    die_with_the_keeper();
    crate::pid1::reset_oom_score_adj_for_child();
    reset_signals_for_child().map_err(io::Error::from)
}

/// `PR_SET_PDEATHSIG`: the child is killed when the keeper ends.
fn die_with_the_keeper() {
    // SAFETY: prctl with integer arguments is async-signal-safe.
    unsafe {
        nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL, 0, 0, 0);
    }
}

/// Whether this process has one thread, so that a fork without exec
/// inherits no other thread's lock. No `/proc` yet is the node's PID 1
/// before its early mounts: nothing has started a thread then.
fn single_threaded(placement: Placement) -> bool {
    match std::fs::read_dir("/proc/self/task") {
        Ok(tasks) => tasks.count() == 1,
        Err(_) => placement == Placement::NodePid1,
    }
}

/// In the forked boot worker, before anything else: descriptors and
/// signals as a re-executed worker has them.
fn become_worker(link: OwnedFd, keeper: Pid) -> io::Result<Channel> {
    die_with_the_keeper();
    if nix::unistd::getppid() != keeper {
        // The keeper ended before the line above took effect.
        return Err(io::Error::other("the keeper is gone"));
    }
    let link = if link.as_raw_fd() == WORKER_LINK_FD {
        link
    } else {
        nix::unistd::dup2(link.as_raw_fd(), WORKER_LINK_FD)?;
        drop(link);
        // SAFETY: descriptor 3 is the link, dup2()ed there just now;
        // nothing else owns it.
        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(WORKER_LINK_FD) }
    };
    close_from(WORKER_LINK_FD as u32 + 1, 0);
    // stdin: a pipe already closed at its other end, as a re-executed worker has.
    let (read, write) = nix::unistd::pipe()?;
    drop(write);
    nix::unistd::dup2(read.as_raw_fd(), 0)?;
    drop(read);
    reset_signals_for_child().map_err(io::Error::from)?;
    Ok(Channel::from_fd(link))
}

impl WorkerProcess {
    /// Fork the boot's worker now, ahead of its start message ([`Self::start`]),
    /// when the keeper is its only thread; `None` (the boot re-executes a
    /// worker later, [`Self::launch`]) otherwise, or when the fork fails.
    /// The child never returns from here.
    pub fn fork_for_boot(placement: Placement) -> Option<Self> {
        if super::in_process::enabled() || !single_threaded(placement) {
            return None;
        }
        let (channel, worker_end) = match Channel::pair() {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!("no early worker: {e}");
                return None;
            }
        };
        let keeper = nix::unistd::getpid();
        // SAFETY: this process has one thread (checked above), so the
        // child inherits no lock another thread held; it runs the worker
        // and exits, never returning into the keeper's code.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                drop(channel);
                match become_worker(worker_end, keeper) {
                    Ok(link) => crate::worker::run_forked(link, keeper),
                    Err(e) => {
                        tracing::error!("worker: setting up after fork: {e}");
                        std::process::exit(70)
                    }
                }
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => Some(Self {
                pid: child,
                channel,
                started: Instant::now(),
                reaped: std::cell::Cell::new(None),
                in_process: std::cell::RefCell::new(None),
            }),
            Err(e) => {
                tracing::warn!("no early worker: fork: {e}");
                None
            }
        }
    }

    /// Start `program __worker` and send it `start` with `listener`.
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
        let worker = Self::launch(program)?;
        worker.start(start, listener, None)?;
        Ok(worker)
    }

    /// Start `program __worker` (or, benchmarks only, a worker thread);
    /// it waits for [`Self::start`].
    ///
    /// # Errors
    ///
    /// The socketpair, a dup or the spawn failing; the message names what.
    pub fn launch(program: &Path) -> io::Result<Self> {
        if super::in_process::enabled() {
            Self::start_in_process()
        } else {
            Ok(Self::spawn_child(program, &["__worker".as_ref()], false, true)?.0)
        }
    }

    /// Send the start message, with the descriptors it names.
    ///
    /// # Errors
    ///
    /// A dup or the send failing (the worker is gone).
    pub fn start(
        &self,
        start: &WorkerStart,
        listener: Option<&nodeinit_handoff::HandoffListener>,
        modules: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> io::Result<()> {
        let fds = StartDescriptors {
            listener: listener.map(|l| l.try_clone_fd()).transpose()?,
            modules: modules.map(|m| m.try_clone_to_owned()).transpose()?,
        };
        let mut start = start.clone();
        start.describe(&fds);
        self.channel
            .send_with_fds(&ToWorker::Start(Box::new(start)), &fds.into_vec())
            .map_err(|e| {
                io::Error::other(format!(
                    "worker {} did not take its start message: {e}",
                    self.pid
                ))
            })
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
        capture_stdout: bool,
        is_worker: bool,
    ) -> io::Result<(Self, Option<std::process::ChildStdout>)> {
        let (channel, worker_end) = Channel::pair()?;
        let link = dup_high(worker_end.as_raw_fd())?;
        drop(worker_end);
        let link_raw = link.as_raw_fd();
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
        // close_range, prctl, open/write/close, sigaction, sigprocmask).
        unsafe {
            command.pre_exec(move || prepare_child(link_raw));
        }
        let mut child = command.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start {} {args:?}: {e}", program.display()),
            )
        })?;
        let stdout = child.stdout.take();
        drop(child.stdin.take());
        // Our copy closes here; the child holds its own.
        drop(link);
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

    /// Reap a worker that is done (it closed its link or said
    /// [`crate::link::FromWorker::Finished`]): it may take
    /// [`EXIT_AFTER_CLOSE`] to exit, then it is killed.
    pub fn await_exit(&self, wake: std::os::fd::BorrowedFd<'_>) -> Option<WaitStatus> {
        self.wait_exit(EXIT_AFTER_CLOSE, wake)
            .or_else(|| self.kill_and_reap(wake))
    }

    /// End a worker that never got its start message (it holds nothing):
    /// SIGKILL, and reap it.
    pub fn dismiss(self) {
        if self.in_process.borrow().is_some() {
            return;
        }
        let _ = kill(self.pid, Signal::SIGKILL);
        if self.reaped.get().is_none() {
            let _ = waitpid(self.pid, None);
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
