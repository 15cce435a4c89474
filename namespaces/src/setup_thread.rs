//! The threads that enter allocations' mount namespaces to set them up.
//!
//! Owns [`SETUP_THREADS`] long-lived threads, each with a filesystem context of its own
//! (`unshare(CLONE_FS)`, which `setns(CLONE_NEWNS)` requires): for each job
//! it joins the allocation's mount namespace, runs the job, and goes back
//! to this process's namespace. A thread per job cost more than the mounts
//! it made (0.25–0.35 ms of start, stack faults and glibc's `MADV_DONTNEED`
//! of the stack at exit, against 0.05 ms of a bind's syscalls). They take
//! jobs from one queue, so two shadows (0.3–0.4 ms each) are built at once,
//! as with a thread per job on two CPUs.
//!
//! The threads start at the first bind in the process: in nodeinit's
//! worker, or in a handoff client that falls back to making its own
//! namespaces. A bind that hangs in the kernel (a shadow walking an entry
//! on a dead NFS server) holds one of them: with an existing
//! `uenv_mount_path` no bind walks anything.
//!
//! It must never keep a job's namespace after the job (the namespace, and
//! every image mounted in it, would outlive its allocation): if it cannot
//! return to its own namespace, it reports that and ends; when none is
//! left, the next job starts them anew.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};

use nix::sched::{setns, unshare, CloneFlags};

/// A job's work, run inside the namespace.
type Work = Box<dyn FnOnce() -> io::Result<()> + Send>;

struct Job {
    namespace: OwnedFd,
    work: Work,
    done: SyncSender<io::Result<()>>,
}

/// How many setup threads serve the queue.
pub(crate) const SETUP_THREADS: usize = 2;

/// The running threads' queue (none yet, or they all ended).
static QUEUE: Mutex<Option<Sender<Job>>> = Mutex::new(None);

/// Run `work` inside the mount namespace `mnt_ns`, on a setup thread;
/// wait for it.
///
/// # Errors
///
/// The thread cannot start, the namespace cannot be joined (the kernel's
/// reason), or `work`'s own error.
pub(crate) fn run_in(
    mnt_ns: BorrowedFd<'_>,
    work: impl FnOnce() -> io::Result<()> + Send + 'static,
) -> io::Result<()> {
    let namespace = mnt_ns
        .try_clone_to_owned()
        .map_err(|e| io::Error::new(e.kind(), format!("dup of the mount namespace FD: {e}")))?;
    let (done, result) = mpsc::sync_channel(1);
    let mut job = Job {
        namespace,
        work: Box::new(work),
        done,
    };
    {
        let mut queue = QUEUE.lock().unwrap_or_else(PoisonError::into_inner);
        // When the last thread ends the receiver drops: the send hands the job back.
        if let Some(sender) = queue.as_ref() {
            match sender.send(job) {
                Ok(()) => return wait(&result),
                Err(mpsc::SendError(back)) => job = back,
            }
        }
        let sender = start()?;
        let sent = sender.send(job).map_err(|_| {
            io::Error::other("the mount-namespace setup thread ended before its first job")
        });
        *queue = Some(sender);
        sent?;
    }
    wait(&result)
}

fn wait(result: &Receiver<io::Result<()>>) -> io::Result<()> {
    result.recv().unwrap_or_else(|_| {
        Err(io::Error::other(
            "the mount-namespace setup thread ended during the job",
        ))
    })
}

fn start() -> io::Result<Sender<Job>> {
    let (sender, jobs) = mpsc::channel();
    let jobs = Arc::new(Mutex::new(jobs));
    let mut started = 0;
    let mut failure = None;
    for _ in 0..SETUP_THREADS {
        let jobs = Arc::clone(&jobs);
        match std::thread::Builder::new()
            .name("nodeinit-mntns-setup".into())
            .spawn(move || serve(&jobs))
        {
            Ok(_) => started += 1,
            Err(e) => failure = Some(e),
        }
    }
    match (started, failure) {
        (0, Some(e)) => Err(io::Error::other(format!(
            "cannot start mount-namespace setup thread: {e}"
        ))),
        (_, Some(e)) => {
            // Fewer threads only queue the binds longer; say so once per start.
            tracing::warn!(started, wanted = SETUP_THREADS, error = %e, "not every mount-namespace setup thread started; uenv binds queue on the others");
            Ok(sender)
        }
        _ => Ok(sender),
    }
}

/// The next job, or none when every sender is gone.
fn next(jobs: &Mutex<Receiver<Job>>) -> Option<Job> {
    jobs.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .recv()
        .ok()
}

/// A thread: each job inside its namespace, then home again.
fn serve(jobs: &Mutex<Receiver<Job>>) {
    let home = unshare(CloneFlags::CLONE_FS)
        .map_err(|e| io::Error::other(format!("unshare(CLONE_FS): {e}")))
        .and_then(|()| {
            std::fs::File::open("/proc/thread-self/ns/mnt")
                .map(OwnedFd::from)
                .map_err(|e| io::Error::new(e.kind(), format!("/proc/thread-self/ns/mnt: {e}")))
        });
    let home = match home {
        Ok(home) => home,
        Err(e) => {
            // Every queued job gets the reason; the next call starts anew.
            let reason = e.to_string();
            let queue = jobs.lock().unwrap_or_else(PoisonError::into_inner);
            for job in queue.try_iter() {
                let _ = job.done.send(Err(io::Error::other(reason.clone())));
            }
            return;
        }
    };
    while let Some(job) = next(jobs) {
        let result = setns(job.namespace.as_fd(), CloneFlags::CLONE_NEWNS)
            .map_err(|e| {
                io::Error::other(format!("setns into the allocation's mount namespace: {e}"))
            })
            .and_then(|()| {
                catch_unwind(AssertUnwindSafe(job.work))
                    .unwrap_or_else(|_| Err(io::Error::other("mount-namespace setup panicked")))
            });
        let back = setns(home.as_fd(), CloneFlags::CLONE_NEWNS);
        drop(job.namespace);
        let _ = job.done.send(result);
        if let Err(e) = back {
            tracing::error!(error = %e, "the mount-namespace setup thread cannot return to its own namespace; it ends (the next job starts a new one)");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hpc_node::NamespaceType;

    fn mnt_of(task: &str) -> std::path::PathBuf {
        std::fs::read_link(format!("/proc/{task}/ns/mnt")).unwrap()
    }

    /// The job's own mount namespace and the setup thread's tid.
    fn where_it_ran(
        mnt: BorrowedFd<'_>,
        fail: Option<&'static str>,
    ) -> (io::Result<()>, std::path::PathBuf, i32) {
        let (seen, seen_rx) = mpsc::channel();
        let result = run_in(mnt, move || {
            seen.send((mnt_of("thread-self"), nix::unistd::gettid().as_raw()))
                .unwrap();
            match fail {
                Some("panic") => panic!("a job that panics"),
                Some(reason) => Err(io::Error::other(reason)),
                None => Ok(()),
            }
        });
        let (inside, tid) = seen_rx.recv().unwrap();
        (result, inside, tid)
    }

    #[test]
    fn jobs_run_in_their_namespace_and_the_thread_returns_home_after_each() {
        // Its holder's stack would show in the holder tests' mapping counts.
        let _serial = crate::holder::tests::SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let holder = crate::holder::NamespaceHolder::spawn(&[NamespaceType::Mount]).unwrap();
        let mnt = holder.fd(NamespaceType::Mount).unwrap();
        let theirs = mnt_of(&holder.pid().to_string());
        let ours = mnt_of("self");
        assert_ne!(theirs, ours);
        let (result, inside, tid) = where_it_ran(mnt, None);
        result.unwrap();
        assert_eq!(inside, theirs);
        // Back home before the caller hears of the result: the thread keeps
        // no allocation's namespace alive.
        assert_eq!(mnt_of(&format!("self/task/{tid}")), ours);
        // A job's error and a job's panic reach the caller; the threads
        // serve on, each back home after its job.
        let (result, inside, tid) = where_it_ran(mnt, Some("the job's own error"));
        assert_eq!(result.unwrap_err().to_string(), "the job's own error");
        assert_eq!(inside, theirs);
        assert_eq!(mnt_of(&format!("self/task/{tid}")), ours);
        let (result, _, tid) = where_it_ran(mnt, Some("panic"));
        assert_eq!(
            result.unwrap_err().to_string(),
            "mount-namespace setup panicked"
        );
        assert_eq!(mnt_of(&format!("self/task/{tid}")), ours);
        let (result, inside, _) = where_it_ran(mnt, None);
        result.unwrap();
        assert_eq!(inside, theirs);
    }
}
