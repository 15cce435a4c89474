//! The few long-lived threads that fork holders, and the clone itself.
//!
//! Why dedicated threads: a holder asks the kernel to SIGKILL it when its
//! parent dies (`PR_SET_PDEATHSIG`), and "parent" means the *thread* that
//! forked it. Forking from a short-lived thread would kill the holder when
//! that thread ends. These threads live as long as the process. There
//! are [`SPAWNER_THREADS`] of them so that clones of different allocations
//! run in parallel (a new network namespace costs most of a millisecond of
//! kernel time); the number is fixed, whatever the number of requests.
//!
//! Owns the holder's start-up handshake (a pipe on which the holder
//! reports that its mount propagation is cut) for holders tied to this
//! process, which share its memory ([`super::shared_memory`]). Holders that
//! outlive it (the unshare backend's persistent ones) are cloned by a
//! single-threaded spawner process instead
//! ([`super::clone_persistent_holder`]).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};

use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::unistd::Pid;

use super::pidfd;
use super::shared_memory::HolderStack;
use crate::mount_namespace::Propagation;

/// How long a new holder may take to report ready (it makes four syscalls;
/// only a kernel stuck on the mount table would take longer).
const READY_TIMEOUT_MS: u16 = 10_000;

type Reply = io::Result<(Pid, OwnedFd, HolderStack)>;
type Job = (CloneFlags, Option<Propagation>, Sender<Reply>);

static SPAWNER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();

/// Holder-forking threads per process.
pub(crate) const SPAWNER_THREADS: usize = 2;

/// Fork a holder tied to this process (sharing its memory:
/// [`super::shared_memory`]) in new namespaces `flags`, its mount namespace
/// given `propagation` first when set, and return its pid, pidfd and stack.
pub(crate) fn spawn_holder(
    flags: CloneFlags,
    propagation: Option<Propagation>,
) -> io::Result<(Pid, OwnedFd, HolderStack)> {
    let spawner = SPAWNER.get_or_init(|| {
        let (jobs, queue) = channel::<Job>();
        let queue = std::sync::Arc::new(Mutex::new(queue));
        for i in 0..SPAWNER_THREADS {
            let queue = queue.clone();
            let started = std::thread::Builder::new()
                .name(format!("nodeinit-holder-spawner-{i}"))
                .spawn(move || loop {
                    let job = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    let Ok((flags, propagation, reply)) = job else {
                        return;
                    };
                    // The requester may have given up (it panicked): then
                    // the holder must go, and only then its stack.
                    if let Err(unsent) = reply.send(clone_tied_holder(flags, propagation)) {
                        if let Ok((_, pidfd, stack)) = unsent.0 {
                            let dead = pidfd::kill(pidfd.as_fd()).is_ok() && exited(pidfd.as_fd());
                            if !dead {
                                stack.leak();
                            }
                        }
                    }
                });
            if let Err(e) = started {
                tracing::error!(error = %e, "cannot start a holder spawner thread");
            }
        }
        Mutex::new(jobs)
    });
    let (reply, answer) = channel();
    {
        let jobs = spawner
            .lock()
            .map_err(|_| io::Error::other("holder spawner lock poisoned"))?;
        jobs.send((flags, propagation, reply))
            .map_err(|_| io::Error::other("holder spawner thread is not running"))?;
    }
    answer
        .recv()
        .map_err(|_| io::Error::other("holder spawner thread stopped before answering"))?
}

/// `mount(2)` flags that give a mount namespace `propagation` recursively.
pub(crate) fn propagation_flags(propagation: Propagation) -> libc::c_ulong {
    (MsFlags::MS_REC
        | match propagation {
            Propagation::Slave => MsFlags::MS_SLAVE,
            Propagation::Private => MsFlags::MS_PRIVATE,
        })
    .bits()
}

/// A holder tied to this process, sharing its memory, on a stack of its own.
fn clone_tied_holder(flags: CloneFlags, propagation: Option<Propagation>) -> Reply {
    let stack = HolderStack::map()?;
    let started = start_holder(flags, propagation, |ready_fd| {
        // SAFETY: `stack` is returned with the holder and unmapped only once
        // it is dead (or leaked); `ready_fd` stays open until the report
        // was read (start_holder's contract).
        unsafe { super::shared_memory::clone_sharing_memory(flags, propagation, ready_fd, &stack) }
    });
    match started {
        Ok((pid, pidfd)) => Ok((pid, pidfd, stack)),
        Err(Failed { error, dead }) => {
            if !dead {
                stack.leak();
            }
            Err(error)
        }
    }
}

/// A holder that did not start; `dead`: it is known to be gone.
struct Failed {
    error: io::Error,
    dead: bool,
}

/// The ready pipe, `clone` (given the pipe's write end), the pidfd, and the
/// holder's report; on failure the holder is killed and reaped.
fn start_holder(
    flags: CloneFlags,
    propagation: Option<Propagation>,
    clone: impl FnOnce(RawFd) -> io::Result<Pid>,
) -> Result<(Pid, OwnedFd), Failed> {
    let failed = |error, dead| Failed { error, dead };
    let (ready_read, ready_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| {
        failed(
            io::Error::other(format!("pipe2 for a new holder: {e}")),
            true,
        )
    })?;
    let pid = clone(ready_write.as_raw_fd()).map_err(|e| failed(e, true))?;
    let pidfd = match pidfd::open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            // Without a pidfd we could not safely kill it later: do it now.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let reaped = nix::sys::wait::waitpid(pid, None).is_ok();
            let error = io::Error::other(format!("pidfd_open({pid}) failed: {e}"));
            return Err(failed(
                error,
                reaped && !flags.contains(CloneFlags::CLONE_PARENT),
            ));
        }
    };
    let outcome = wait_ready(ready_read.as_fd(), pidfd.as_fd());
    // The holder has written its report (or is gone): the pipe may close.
    drop(ready_write);
    match outcome {
        Ok(0) => Ok((pid, pidfd)),
        outcome => {
            let dead = pidfd::kill(pidfd.as_fd()).is_ok() && exited(pidfd.as_fd());
            let error = match outcome {
                Ok(errno) => io::Error::other(format!(
                    "making / {:?} in the new mount namespace: {}",
                    propagation.unwrap_or_default(),
                    nix::errno::Errno::from_raw(errno)
                )),
                Err(e) => io::Error::other(format!("holder {pid} did not start: {e}")),
            };
            Err(failed(error, dead))
        }
    }
}

/// Reap a killed holder (or, not our child, wait for its exit): whether it is gone.
fn exited(pidfd: std::os::fd::BorrowedFd<'_>) -> bool {
    if pidfd::reap(pidfd).is_err() {
        return false;
    }
    let mut fds = [PollFd::new(pidfd, PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::from(READY_TIMEOUT_MS)), Ok(1))
}

/// The holder's status word (0 or an errno), read from `ready`; an error
/// when the holder exits or takes too long instead.
pub(crate) fn wait_ready(
    ready: std::os::fd::BorrowedFd<'_>,
    pidfd: std::os::fd::BorrowedFd<'_>,
) -> io::Result<i32> {
    loop {
        let mut fds = [
            PollFd::new(ready, PollFlags::POLLIN),
            PollFd::new(pidfd, PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::from(READY_TIMEOUT_MS)) {
            Ok(0) => return Err(io::Error::other("no ready report within 10 s")),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::other(format!("poll: {e}"))),
        }
        let readable = fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN));
        if !readable {
            return Err(io::Error::other("it exited before reporting ready"));
        }
        let mut word = [0u8; 4];
        return match nix::unistd::read(ready.as_raw_fd(), &mut word) {
            Ok(4) => Ok(i32::from_ne_bytes(word)),
            Ok(n) => Err(io::Error::other(format!("short ready report ({n} bytes)"))),
            Err(e) => Err(io::Error::other(format!("reading its ready report: {e}"))),
        };
    }
}
