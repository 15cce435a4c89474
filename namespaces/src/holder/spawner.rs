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
//! Owns `clone(2)` and the code the holder runs. The holder runs in a copy of
//! a multi-threaded process: it must only make raw syscalls (no allocation,
//! no locks) — see [`holder_main`].

use std::io;
use std::os::fd::OwnedFd;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};

use nix::sched::CloneFlags;
use nix::unistd::Pid;

use super::pidfd;

/// Stack for the holder's first frame; it makes a handful of syscalls.
const HOLDER_STACK_BYTES: usize = 64 * 1024;

type Reply = io::Result<(Pid, OwnedFd)>;
type Job = (CloneFlags, Sender<Reply>);

static SPAWNER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();

/// Holder-forking threads per process.
pub(crate) const SPAWNER_THREADS: usize = 2;

/// Fork a holder in new namespaces `flags` and return its pid and pidfd.
pub(crate) fn spawn_holder(flags: CloneFlags) -> io::Result<(Pid, OwnedFd)> {
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
                    let Ok((flags, reply)) = job else {
                        return;
                    };
                    // The requester may have given up; nothing to do then.
                    let _ = reply.send(clone_holder(flags));
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
        jobs.send((flags, reply))
            .map_err(|_| io::Error::other("holder spawner thread is not running"))?;
    }
    answer
        .recv()
        .map_err(|_| io::Error::other("holder spawner thread stopped before answering"))?
}

fn clone_holder(flags: CloneFlags) -> Reply {
    let mut stack = vec![0u8; HOLDER_STACK_BYTES];
    // SAFETY: the child gets its own copy of the address space (no CLONE_VM)
    // and runs holder_main, which only makes async-signal-safe raw syscalls
    // and never returns, so the copied state of other threads (locks held,
    // allocator) is never touched.
    let pid = unsafe {
        nix::sched::clone(
            Box::new(holder_main),
            &mut stack,
            flags,
            Some(libc::SIGCHLD),
        )
    }
    .map_err(|e| io::Error::other(format!("clone({flags:?}) failed: {e}")))?;
    match pidfd::open(pid) {
        Ok(fd) => Ok((pid, fd)),
        Err(e) => {
            // Without a pidfd we could not safely kill it later: do it now.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            Err(io::Error::other(format!("pidfd_open({pid}) failed: {e}")))
        }
    }
}

/// What a holder does for its whole life: die with its creator, hold no FD
/// of its creator (a copied client socket would keep connections open), and
/// reap whatever is orphaned into its PID namespace, where it is PID 1.
fn holder_main() -> isize {
    // SAFETY: plain syscalls with integer arguments; no memory is shared with
    // the parent and nothing here allocates or locks.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        loop {
            if libc::waitpid(-1, std::ptr::null_mut(), 0) < 0
                && *libc::__errno_location() == libc::ECHILD
            {
                libc::pause();
            }
        }
    }
}
