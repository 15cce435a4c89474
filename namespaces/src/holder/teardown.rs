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

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Mutex, PoisonError};

use super::HeldNamespaces;

/// Sets of descriptors queued at most; more are closed by their caller.
const QUEUE_LEN: usize = 256;

static QUEUE: Mutex<Option<SyncSender<HeldNamespaces>>> = Mutex::new(None);

/// Close `held` on the teardown thread, or here when it cannot take them.
/// Only for a holder that has exited.
pub(crate) fn close_after_exit(held: HeldNamespaces) {
    if held.is_empty() {
        return;
    }
    let mut queue = QUEUE.lock().unwrap_or_else(PoisonError::into_inner);
    let held = match queue.as_ref() {
        Some(sender) => match sender.try_send(held) {
            Ok(()) => return,
            // Full: back-pressure, close here.
            Err(TrySendError::Full(held)) => return drop(held),
            Err(TrySendError::Disconnected(held)) => held,
        },
        None => held,
    };
    let (sender, closing) = mpsc::sync_channel::<HeldNamespaces>(QUEUE_LEN);
    let started = std::thread::Builder::new()
        .name("nodeinit-ns-teardown".into())
        .spawn(move || closing.iter().for_each(drop));
    match started {
        Ok(_) => {
            // A fresh queue has room.
            let _ = sender.try_send(held);
            *queue = Some(sender);
        }
        Err(e) => {
            tracing::warn!(error = %e, "namespace teardown thread not started; namespaces are closed inline");
            drop(held);
        }
    }
}
