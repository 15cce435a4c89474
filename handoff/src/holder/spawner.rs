//! The few long-lived threads that fork holders.
//!
//! Why dedicated threads: a holder asks the kernel to SIGKILL it when its
//! parent dies (`PR_SET_PDEATHSIG`), and "parent" means the *thread* that
//! forked it. Forking from a connection thread would kill the holder when
//! that connection ends. These threads live as long as the process. There
//! are [`SPAWNER_THREADS`] of them so that clones of different allocations
//! run in parallel (a new network namespace costs milliseconds of kernel
//! time); the number is fixed, whatever the number of requests.
//!
//! Owns `clone(2)` and the code the holder runs (also for the unshare
//! backend's persistent holders, through [`clone_holder_process`]). The holder runs in a copy of
//! a multi-threaded process: it must only make raw syscalls (no allocation,
//! no locks) — see [`holder_main`].

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
use crate::mount_namespace::Propagation;

/// Stack for the holder's first frame; it makes a handful of syscalls.
const HOLDER_STACK_BYTES: usize = 64 * 1024;

/// How long a new holder may take to report ready (it makes four syscalls;
/// only a kernel stuck on the mount table would take longer).
const READY_TIMEOUT_MS: u16 = 10_000;

type Reply = io::Result<(Pid, OwnedFd)>;
type Job = (CloneFlags, Option<Propagation>, Sender<Reply>);

static SPAWNER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();

/// Holder-forking threads per process.
pub(crate) const SPAWNER_THREADS: usize = 2;

/// Fork a holder in new namespaces `flags` (its mount namespace given
/// `propagation` first, when set) and return its pid and pidfd.
pub(crate) fn spawn_holder(
    flags: CloneFlags,
    propagation: Option<Propagation>,
) -> io::Result<(Pid, OwnedFd)> {
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
                    // The requester may have given up; nothing to do then.
                    let _ = reply.send(clone_holder_process(flags, propagation));
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
fn propagation_flags(propagation: Propagation) -> libc::c_ulong {
    (MsFlags::MS_REC
        | match propagation {
            Propagation::Slave => MsFlags::MS_SLAVE,
            Propagation::Private => MsFlags::MS_PRIVATE,
        })
    .bits()
}

/// Clone a holder process in new namespaces `flags` and return its pid and
/// pidfd once it is ready: when `propagation` is set, the holder has made
/// `/` of its (new) mount namespace `rslave`/`rprivate` itself before it
/// reports ready, so nobody ever sees the namespace still shared with the
/// host — and no setup thread has to `setns` into it.
///
/// The clone shares the caller's FD table (`CLONE_FILES`) until the holder
/// drops it (`close_range(CLOSE_RANGE_UNSHARE)` with an empty range to
/// keep), so its cost does not grow with the caller's open FDs (4 per live
/// allocation in the handoff server), and the holder never holds a copy of
/// any of them. The caller's thread is the holder's parent for
/// `PR_SET_PDEATHSIG` (with `CLONE_PARENT` in `flags`, the caller's parent).
///
/// # Errors
///
/// `pipe2`, `clone`, `pidfd_open` failing, the remount failing in the
/// holder (with the kernel's reason), or the holder not reporting ready
/// within 10 s; the holder is gone then.
pub fn clone_holder_process(
    flags: CloneFlags,
    propagation: Option<Propagation>,
) -> io::Result<(Pid, OwnedFd)> {
    let (ready_read, ready_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| io::Error::other(format!("pipe2 for a new holder: {e}")))?;
    let ready_fd = ready_write.as_raw_fd();
    let remount = propagation.map(propagation_flags);
    let mut stack = vec![0u8; HOLDER_STACK_BYTES];
    // SAFETY: the child gets its own copy of the address space (no CLONE_VM)
    // and runs holder_main, which only makes async-signal-safe raw syscalls
    // on values copied into the closure before the clone, and never
    // returns, so the copied state of other threads (locks held, allocator)
    // is never touched. The shared FD table is only written to (one pipe
    // FD) and then given up by the child.
    let pid = unsafe {
        nix::sched::clone(
            Box::new(move || holder_main(ready_fd, remount)),
            &mut stack,
            flags | CloneFlags::CLONE_FILES,
            Some(libc::SIGCHLD),
        )
    }
    .map_err(|e| io::Error::other(format!("clone({flags:?}) failed: {e}")))?;
    let pidfd = match pidfd::open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            // Without a pidfd we could not safely kill it later: do it now.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            return Err(io::Error::other(format!("pidfd_open({pid}) failed: {e}")));
        }
    };
    match wait_ready(ready_read.as_fd(), pidfd.as_fd()) {
        Ok(0) => Ok((pid, pidfd)),
        outcome => {
            let _ = pidfd::kill(pidfd.as_fd());
            let _ = pidfd::reap(pidfd.as_fd());
            Err(match outcome {
                Ok(errno) => io::Error::other(format!(
                    "making / {:?} in the new mount namespace: {}",
                    propagation.unwrap_or_default(),
                    nix::errno::Errno::from_raw(errno)
                )),
                Err(e) => io::Error::other(format!("holder {pid} did not start: {e}")),
            })
        }
    }
    // `ready_write` closes here, after the holder wrote to it.
}

/// The holder's status word (0 or an errno), read from `ready`; an error
/// when the holder exits or takes too long instead.
fn wait_ready(
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

/// What a holder does for its whole life: die with its creator, prepare its
/// mount namespace's propagation (`remount`: `mount(2)` flags for `/`),
/// report ready (0 or the errno) on `ready_fd`, give up its creator's FD
/// table (a copied client socket would keep connections open), and reap
/// whatever is orphaned into its PID namespace, where it is PID 1.
fn holder_main(ready_fd: RawFd, remount: Option<libc::c_ulong>) -> isize {
    // SAFETY: plain syscalls with integer arguments and static C strings; no
    // memory is shared with the parent and nothing here allocates or locks.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        // `ps` tells it from the process it was cloned from.
        libc::prctl(libc::PR_SET_NAME, c"nodeinit-holder".as_ptr(), 0, 0, 0);
        let mut status: i32 = 0;
        if let Some(flags) = remount {
            if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            ) != 0
            {
                status = *libc::__errno_location();
            }
        }
        libc::write(ready_fd, (&raw const status).cast::<libc::c_void>(), 4);
        // An empty private table; kernels before 5.9 lack CLOSE_RANGE_UNSHARE:
        // copy the table, then close every FD of the copy.
        if libc::syscall(
            libc::SYS_close_range,
            0u32,
            u32::MAX,
            libc::CLOSE_RANGE_UNSHARE,
        ) != 0
        {
            libc::unshare(libc::CLONE_FILES);
            libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        }
        loop {
            if libc::waitpid(-1, std::ptr::null_mut(), 0) < 0
                && *libc::__errno_location() == libc::ECHILD
            {
                libc::pause();
            }
        }
    }
}
