//! After the phases (supervise mode, or no agent): the handoff server's and
//! the plugins' threads serve; the worker's main thread waits for the
//! keeper's word — stop, drain (hand the open connections to the keeper
//! for the next worker), or adopt (take the connections a previous worker
//! handed over).

use nodeinit_handoff::server::handover::Handover;

use super::{Reporter, WorkerState};
use crate::link::{FromWorker, Receive, ToWorker, MAX_FDS};

/// Serve until the keeper says stop (release and exit 0) or drain (another
/// worker takes over: finish in-flight requests, hand over the open
/// connections, release nothing), or goes away. Returns the exit code.
pub fn serve_until_told(mut state: WorkerState, reporter: &Reporter) -> i32 {
    reporter.send(&FromWorker::Serving);
    // For `nodeinit status`: off the boot's critical path, once serving.
    reporter.send(&FromWorker::Plugins(state.plugins_with_sha256()));
    loop {
        match reporter.channel().receive_with_fds::<ToWorker>() {
            Ok((Receive::Message(ToWorker::Stop), _)) => {
                tracing::info!("worker: stopping (node shutdown)");
                state.release();
                return 0;
            }
            Ok((Receive::Message(ToWorker::Drain), _)) => {
                tracing::info!("worker: draining for the next worker");
                if let Some(server) = state.server.take() {
                    // In-flight requests finish; new clients wait in the
                    // keeper's backlog; what open connections wrote and we
                    // did not read yet stays in their sockets.
                    hand_over(server.hand_over(), reporter);
                }
                // The live state (holders, mounts) belongs to the next worker:
                // exit without running any destructor that would release it.
                std::process::exit(0);
            }
            Ok((Receive::Message(ToWorker::Adopt(record)), fds)) => {
                match (Handover::from_parts(record, fds), state.server.as_ref()) {
                    (Ok(handover), Some(server)) => server.adopt(handover),
                    (Ok(handover), None) => tracing::error!(
                        connections = handover.connection_count(),
                        "worker: handed-over connections closed: this worker serves no handoff socket"
                    ),
                    (Err(e), _) => tracing::error!("worker: {e}"),
                }
            }
            Ok((Receive::Message(other), _)) => {
                tracing::warn!("worker: unexpected message from the keeper: {other:?}");
            }
            Ok((Receive::Closed, _)) | Err(_) => {
                tracing::error!("worker: the keeper is gone; exiting");
                std::process::exit(70);
            }
        }
    }
}

/// Send the handover to the keeper, [`MAX_FDS`] sockets a message.
fn hand_over(handover: Handover, reporter: &Reporter) {
    for part in handover.split(MAX_FDS) {
        let (record, fds) = part.into_parts();
        if let Err(e) = reporter
            .channel()
            .send_with_fds(&FromWorker::HandedOver(record), &fds)
        {
            tracing::error!(
                connections = fds.len(),
                "worker: handing connections to the keeper failed ({e}); they close"
            );
        }
    }
}
