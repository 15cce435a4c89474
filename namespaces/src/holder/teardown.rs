//! Closing a dead holder's namespace descriptors off the caller's path.
//!
//! Owns one thread (`nodeinit-ns-teardown`) and its bounded queue. When a
//! holder was killed and has exited, its processes are gone, but the last
//! close of its namespace FDs still tears the namespaces down: the mount
//! namespace's mounts are unmounted and freed after an expedited RCU grace
//! period (IPIs to every CPU), 0.3–0.6 ms beside a new namespace being made.
//! Done here, that work no longer delays whoever ended the allocation
//! (the handoff client's `ack` waits for the processes, not for this).
//!
//! It must never hold a descriptor of a live holder (only a dead holder's
//! are queued), nor let the queue grow without bound: when it is full, or
//! the thread cannot run, the caller closes inline, as before.

use std::sync::mpsc::{self, Sender, SyncSender, TrySendError};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::HeldNamespaces;

/// Sets of descriptors queued at most; more are closed by their caller.
const QUEUE_LEN: usize = 256;

/// What the teardown thread is given, in order.
enum Job {
    Close(HeldNamespaces),
    /// Answered once every set queued before it is closed.
    Flush(Sender<()>),
}

static QUEUE: Mutex<Option<SyncSender<Job>>> = Mutex::new(None);

/// Waits (at most `limit`) until every set queued so far is closed; true
/// when they are (or none was queued). For FD accounting, e.g. a test that
/// counts this process's descriptors after an allocation ended.
pub fn wait_for_teardown(limit: Duration) -> bool {
    let (done, flushed) = mpsc::channel();
    // Cloned out of the lock: a full queue delays only this waiter, never
    // a closer (closers take the lock, then try_send).
    let sender = QUEUE.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let Some(sender) = sender else {
        return true;
    };
    let deadline = nodeinit_sys::Deadline::after(limit);
    let mut flush = Job::Flush(done);
    loop {
        match sender.try_send(flush) {
            Ok(()) => break,
            // The thread ended: what it had queued was closed as it went.
            Err(TrySendError::Disconnected(_)) => return true,
            Err(TrySendError::Full(back)) if !deadline.has_passed() => {
                flush = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(TrySendError::Full(_)) => return false,
        }
    }
    flushed.recv_timeout(deadline.remaining()).is_ok()
}

/// Close `held` on the teardown thread, or here when it cannot take them.
/// Only for a holder that has exited.
pub(crate) fn close_after_exit(held: HeldNamespaces) {
    if held.is_empty() {
        return;
    }
    let mut queue = QUEUE.lock().unwrap_or_else(PoisonError::into_inner);
    let job = match queue.as_ref() {
        Some(sender) => match sender.try_send(Job::Close(held)) {
            Ok(()) => return,
            // Full: back-pressure, close here.
            Err(TrySendError::Full(job)) => return drop(job),
            Err(TrySendError::Disconnected(job)) => job,
        },
        None => Job::Close(held),
    };
    let (sender, closing) = mpsc::sync_channel::<Job>(QUEUE_LEN);
    let started = std::thread::Builder::new()
        .name("nodeinit-ns-teardown".into())
        .spawn(move || {
            for job in closing {
                match job {
                    Job::Close(held) => drop(held),
                    Job::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
    match started {
        Ok(_) => {
            // A fresh queue has room.
            let _ = sender.try_send(job);
            *queue = Some(sender);
        }
        Err(e) => {
            tracing::warn!(error = %e, "namespace teardown thread not started; namespaces are closed inline");
            drop(job);
        }
    }
}
