//! The keeper: what PID 1 does that involves a worker. The keeper never
//! loads a plugin (after boot `/proc/1/maps` holds no `libnodeinit_*.so`);
//! plugin code runs only in the worker it starts, watches with deadlines,
//! and — after boot, in supervise mode — restarts.
//!
//! Owns the keeper's one wait loop ([`KeeperLoop`]) and two of the state
//! machines it drives — the boot phases' ([`watch`]) and the worker's after
//! boot ([`WorkerSupervisor`]); the agent's is
//! [`crate::agent::AgentSupervision`]. Also the worker's process (start,
//! deadlines, death, kill) and the facts a new worker needs to take over
//! (boot mounts, live allocations). The boot orchestration in
//! [`crate::boot`] decides what a death or overrun means.

mod facts;
mod in_process;
mod supervisor;
mod wait_loop;
mod watch;
mod worker_process;

pub use facts::{death_reason, overrun_reason, WorkerFacts};
pub use in_process::run_workers_in_process_for_bench;
pub use supervisor::{SupervisorSetup, WorkerFd, WorkerStatus, WorkerSupervisor};
pub use wait_loop::{KeeperLoop, LoopEnd};
pub use watch::{watch, WatchEnd};
pub use worker_process::{describe_status, WorkerProcess};
