//! After the phases (supervise mode, or no agent): the handoff server's and
//! the plugins' threads serve; the worker's main thread waits for the
//! keeper's word.

use std::time::Duration;

use super::{Reporter, WorkerState};

/// How long a draining worker waits for its connections to end before it
/// closes the idle ones (a request being served is always answered).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
use crate::link::{FromWorker, Receive, ToWorker};

/// Serve until the keeper says stop (release and exit 0) or drain (another
/// worker takes over: finish in-flight requests, release nothing), or goes
/// away. Returns the exit code.
pub fn serve_until_told(mut state: WorkerState, reporter: &Reporter) -> i32 {
    reporter.send(&FromWorker::Serving);
    // For `nodeinit status`: off the boot's critical path, once serving.
    reporter.send(&FromWorker::Plugins(state.plugins_with_sha256()));
    loop {
        match reporter.channel().receive::<ToWorker>() {
            Ok(Receive::Message(ToWorker::Stop)) => {
                tracing::info!("worker: stopping (node shutdown)");
                state.release();
                return 0;
            }
            Ok(Receive::Message(ToWorker::Drain)) => {
                tracing::info!("worker: draining for the next worker");
                if let Some(server) = state.server.take() {
                    // In-flight requests finish; new ones wait in the keeper's backlog.
                    if !server.drain(DRAIN_TIMEOUT) {
                        tracing::warn!(
                            "worker: connections still open after {} s; closed",
                            DRAIN_TIMEOUT.as_secs()
                        );
                    }
                }
                // The live state (holders, mounts) belongs to the next worker:
                // exit without running any destructor that would release it.
                std::process::exit(0);
            }
            Ok(Receive::Message(other)) => {
                tracing::warn!("worker: unexpected message from the keeper: {other:?}");
            }
            Ok(Receive::Closed) | Err(_) => {
                tracing::error!("worker: the keeper is gone; exiting");
                std::process::exit(70);
            }
        }
    }
}
