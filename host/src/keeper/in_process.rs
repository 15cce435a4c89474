//! Benchmarks only: the worker's phases run in a thread of the keeper, as
//! nodeinit ran them before the keeper/worker split, so that
//! `host/benches/split_cost.rs` measures what the split costs a boot with
//! the same code on both sides: the same keeper phases, the same watch loop
//! and link messages, the same worker phase code ([`WorkerState::run`]) —
//! only the worker's process (spawn, exec, dynamic linking, runtime start)
//! is missing.
//!
//! Switched on only by the hidden `__bench-unsplit-sandbox` subcommand. The
//! PID 1 path never parses arguments and so can never reach it; it must
//! never be used to boot a node (a plugin fault here is the keeper's).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::link::{Channel, FromWorker};
use crate::worker::{load_config, receive_start, Reporter, WorkerState};

static IN_PROCESS: AtomicBool = AtomicBool::new(false);

/// Run every worker of this process in a thread of the keeper (benchmarks
/// only: see the module docs).
pub fn run_workers_in_process_for_bench() {
    tracing::warn!("benchmark mode: the worker's phases run inside the keeper (no split)");
    IN_PROCESS.store(true, Ordering::Release);
}

/// Whether workers run in a thread of the keeper.
pub(super) fn enabled() -> bool {
    IN_PROCESS.load(Ordering::Acquire)
}

/// Start the worker's life in a thread on `link` (its end of the link);
/// the thread's result is the exit code the worker process would have had.
///
/// # Errors
///
/// The thread cannot be started.
pub(super) fn start(link: OwnedFd) -> std::io::Result<JoinHandle<i32>> {
    std::thread::Builder::new()
        .name("nodeinit-inprocess-worker".into())
        .spawn(move || run(Channel::from_fd(link)))
}

/// What `nodeinit __worker` does, minus what only a process can do (its
/// fault signals, its exit): phases, then `Finished`. A worker that would
/// serve stops after its phases too (the bench boots in exec mode).
fn run(channel: Channel) -> i32 {
    let (start, passed) = match receive_start(&channel) {
        Ok(Some(started)) => started,
        Ok(None) => return 0,
        Err(e) => {
            tracing::error!("in-process worker: {e}");
            return 64;
        }
    };
    let reporter = Reporter::new(channel);
    let loaded = match load_config(&start) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("in-process worker: {e}");
            return 1;
        }
    };
    let mut state = WorkerState::new(&start, loaded, passed);
    let healthy = state.run(&start, &reporter);
    if start.serve && healthy {
        tracing::warn!("in-process worker: serving is not benchmarked; stopping after the phases");
    }
    reporter.send(&FromWorker::Finished);
    if !healthy {
        state.release();
    }
    i32::from(!healthy)
}
