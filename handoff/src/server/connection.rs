//! Serving one client connection: receive, check, decode, dispatch, reply —
//! until the client hangs up or the server shuts down.
//!
//! Owns the request/reply rules of `PROTOCOL.md` (one reply per message, in
//! order; an `error` reply never ends an authorised connection). It must never
//! let a bad message, a provider panic or a vanished client affect other
//! connections, and never keep an FD a message carried.

use std::os::fd::{AsFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

use hpc_node::{NamespaceError, NamespaceRequest};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use super::access::Peer;
use super::gate::GateOutcome;
use super::Shared;
use crate::protocol::{allocation_id_hint, decode, encode, DecodeError, ErrorKind, Message};
use crate::transport::{receive_message, send_message, Received};

/// What to do after a reply.
#[derive(PartialEq, Eq)]
enum Next {
    Continue,
    Close,
}

/// Serve `conn` until it closes or the server stops.
pub(super) fn serve(conn: OwnedFd, shared: &Shared) {
    let peer = match getsockopt(&conn, PeerCredentials) {
        Ok(creds) => Peer::from(creds),
        Err(e) => {
            tracing::warn!(error = %e, "SO_PEERCRED failed; dropping connection");
            return;
        }
    };
    let authorized = shared.config.access.allows(&peer);
    loop {
        if !wait_readable(&conn, shared) {
            return;
        }
        let reply = match receive_message(&conn) {
            Err(e) => {
                tracing::debug!(peer.pid = peer.pid, error = %e, "receive failed; closing connection");
                return;
            }
            Ok(Received::Closed) => return,
            Ok(_) if !authorized => {
                tracing::warn!(
                    peer.pid = peer.pid,
                    peer.uid = peer.uid,
                    peer.gid = peer.gid,
                    "unauthorised peer refused"
                );
                let message = format!(
                    "peer uid {} gid {} is not allowed on this socket (root and the configured uids/gids are); closing the connection",
                    peer.uid, peer.gid
                );
                (
                    Message::error(ErrorKind::Unauthorized, message, None),
                    Vec::new(),
                    Next::Close,
                )
            }
            Ok(Received::TooLarge { len }) => {
                invalid(DecodeError::TooLarge { len }.to_string(), None)
            }
            // FDs a client sends are never used: `_fds` closes them here.
            Ok(Received::Message { bytes, fds: _fds }) => handle(&bytes, &peer, shared),
        };
        let (message, fds, next) = reply;
        if let Err(e) = send_message(&conn, &encode(&message), &fds) {
            tracing::info!(peer.pid = peer.pid, reply = message.type_name(), error = %e, "client went away before its reply");
            return;
        }
        if next == Next::Close {
            return;
        }
    }
}

type Reply = (Message, Vec<OwnedFd>, Next);

fn invalid(message: String, allocation_id: Option<&str>) -> Reply {
    (
        Message::error(ErrorKind::InvalidRequest, message, allocation_id),
        Vec::new(),
        Next::Continue,
    )
}

fn plain(message: Message) -> Reply {
    (message, Vec::new(), Next::Continue)
}

/// Block until `conn` is readable (or hung up); `false` when the server stops.
fn wait_readable(conn: &OwnedFd, shared: &Shared) -> bool {
    loop {
        let mut fds = [
            PollFd::new(conn.as_fd(), PollFlags::POLLIN),
            PollFd::new(shared.stop_signal.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {
                if fds[1].any().unwrap_or(true) {
                    return false;
                }
                if fds[0].any().unwrap_or(true) {
                    return true;
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "poll on a handoff connection failed");
                return false;
            }
        }
    }
}

fn handle(bytes: &[u8], peer: &Peer, shared: &Shared) -> Reply {
    match decode(bytes) {
        Err(e) => {
            tracing::info!(peer.pid = peer.pid, error = %e, "invalid handoff message");
            invalid(e.to_string(), allocation_id_hint(bytes).as_deref())
        }
        Ok(Message::NamespaceRequest(request)) => namespace_request(&request, peer, shared),
        Ok(Message::AllocationEnded { allocation_id }) => {
            match guarded(|| shared.provider.release_namespaces(&allocation_id)) {
                Ok(()) => {
                    tracing::info!(allocation = %allocation_id, peer.pid = peer.pid, "allocation released");
                    plain(Message::Ack { allocation_id })
                }
                Err((kind, message)) => plain(Message::error(kind, message, Some(&allocation_id))),
            }
        }
        Ok(other) => invalid(
            format!(
                "message type {} is sent by servers only; clients send namespace_request or allocation_ended",
                other.type_name()
            ),
            None,
        ),
    }
}

fn namespace_request(request: &NamespaceRequest, peer: &Peer, shared: &Shared) -> Reply {
    let id = request.allocation_id.as_str();
    if let Err(reply) = wait_for_readiness(id, shared) {
        return plain(reply);
    }
    let created = guarded(|| {
        let response = shared.provider.create_namespaces(request)?;
        let fds = shared.provider.namespace_fds(id)?;
        Ok((response, fds))
    });
    match created {
        Ok((response, fds)) if fds.len() == response.fd_types.len() => {
            tracing::info!(
                allocation = id,
                peer.pid = peer.pid,
                peer.uid = peer.uid,
                fds = fds.len(),
                "namespaces handed off"
            );
            (Message::NamespaceResponse(response), fds, Next::Continue)
        }
        Ok((response, fds)) => plain(Message::error(
            ErrorKind::Internal,
            format!(
                "the namespace backend returned {} FDs for {} fd_types; this is a backend bug",
                fds.len(),
                response.fd_types.len()
            ),
            Some(id),
        )),
        Err((kind, message)) => {
            tracing::warn!(allocation = id, peer.pid = peer.pid, error = %message, "namespace request failed");
            plain(Message::error(kind, message, Some(id)))
        }
    }
}

/// Queue (bounded) until the node is ready.
fn wait_for_readiness(id: &str, shared: &Shared) -> Result<(), Message> {
    if shared.gate.is_open() {
        return Ok(());
    }
    let limit = shared.config.max_queued_requests;
    let queued = shared.queued.fetch_add(1, Ordering::AcqRel);
    let outcome = if queued >= limit {
        None
    } else {
        tracing::info!(
            allocation = id,
            queued = queued + 1,
            "namespace request queued until the node is ready"
        );
        Some(shared.gate.wait(shared.config.ready_wait, &shared.stopping))
    };
    shared.queued.fetch_sub(1, Ordering::AcqRel);
    let (kind, message) = match outcome {
        Some(GateOutcome::Open) => return Ok(()),
        None => (
            ErrorKind::Busy,
            format!("{limit} requests are already queued waiting for node readiness; retry later"),
        ),
        Some(GateOutcome::Failed(reason)) => (
            ErrorKind::NotReady,
            format!("the node failed to boot: {reason}"),
        ),
        Some(GateOutcome::TimedOut) => (
            ErrorKind::NotReady,
            format!(
                "the node did not become ready within {} s; retry later",
                shared.config.ready_wait.as_secs()
            ),
        ),
        Some(GateOutcome::Interrupted) => (
            ErrorKind::NotReady,
            "the handoff server is shutting down".to_owned(),
        ),
    };
    Err(Message::error(kind, message, Some(id)))
}

/// Run a provider call; turn its errors and panics into an error kind and message.
fn guarded<T>(call: impl FnOnce() -> Result<T, NamespaceError>) -> Result<T, (ErrorKind, String)> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err((kind_of(&e), e.to_string())),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            tracing::error!(panic = %what, "namespace backend panicked");
            Err((
                ErrorKind::Internal,
                format!("the namespace backend panicked: {what}"),
            ))
        }
    }
}

/// The wire error kind of a provider error.
pub(crate) fn kind_of(error: &NamespaceError) -> ErrorKind {
    match error {
        NamespaceError::CreationFailed { .. } => ErrorKind::CreationFailed,
        NamespaceError::AllocationNotFound { .. } => ErrorKind::AllocationNotFound,
        NamespaceError::SocketUnavailable { .. } | NamespaceError::FdPassing(_) => {
            ErrorKind::Internal
        }
    }
}
