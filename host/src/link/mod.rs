//! The link between the keeper (PID 1) and its worker: one `SOCK_SEQPACKET`
//! socketpair, one JSON message per packet.
//!
//! Owns the message types and their framing. The worker reports each plugin
//! call it is about to make ([`FromWorker::Step`], with its deadline) and
//! each phase result; the keeper starts, stops and drains the worker. A
//! dead worker shows as end-of-file here and as `SIGCHLD` in the keeper.
//! Nothing here interprets the messages.

mod channel;
mod messages;

pub use channel::{Channel, Receive, MAX_FDS};
pub use messages::{
    AllocationEvent, FromWorker, StartDescriptors, StepReport, ToWorker, WorkerStart, WorkerTask,
};

/// Set by the keeper in its worker's environment to the keeper's pid. A
/// namespace backend that sees it (and that it names the worker's parent)
/// may leave holder processes for the next worker (the unshare backend
/// clones them with `CLONE_PARENT`, so they are the keeper's children).
pub const KEEPER_PID_ENV: &str = "NODEINIT_KEEPER_PID";

/// The descriptor number of the link in the worker (the keeper `dup2`s it
/// there); the worker starts with nothing else open above stdio.
pub const WORKER_LINK_FD: i32 = 3;
