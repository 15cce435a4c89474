//! What the server does with one decoded message: the request rules of
//! `PROTOCOL.md`, as pure decisions (in the event loop) and provider calls
//! (in a worker).
//!
//! Owns one reply per message (an `error` reply never ends an authorised
//! connection), ownership and caps through the [`Registry`], and turning
//! provider errors and panics into `error` replies. Every peer-supplied
//! string is escaped before it reaches a log line or a reply. It never
//! touches a socket: the event loop sends what it returns.

use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use hpc_node::NamespaceError;

use super::access::Peer;
use super::registry::{ConnId, Op};
use super::Shared;
use crate::allocation_id::AllocationId;
use crate::escape::{escape, Escaped};
use crate::protocol::{
    allocation_id_hint, decode, CgroupScope, DecodeError, ErrorKind, Message, WireRequest,
};

/// What the event loop does with a received message.
pub(super) enum Action {
    /// Reply at once (server-only types).
    Reply(Message),
    /// Reply at once to a message that did not decode; `reason` is for the
    /// log (rate-limited there: a client can send these as fast as it likes).
    Invalid { reply: Message, reason: String },
    /// A valid `namespace_request`: run it (after readiness) in a worker.
    Request(WireRequest),
    /// A valid `allocation_ended`: run it in a worker.
    End(AllocationId),
}

/// A finished provider call, for the event loop.
pub(super) struct Outcome {
    /// The reply to send on the connection that asked.
    pub(super) reply: Message,
    /// FDs riding on the reply.
    pub(super) fds: Vec<OwnedFd>,
    /// A `cgroup.events` file to watch for this (newly live) allocation.
    pub(super) watch: Option<(AllocationId, PathBuf)>,
    /// An allocation that ended: stop watching its scope.
    pub(super) unwatch: Option<AllocationId>,
}

impl Outcome {
    fn plain(reply: Message) -> Self {
        Self {
            reply,
            fds: Vec::new(),
            watch: None,
            unwatch: None,
        }
    }
}

/// An `error` message with its text escaped for whoever prints it.
pub(super) fn error(kind: ErrorKind, message: &str, allocation_id: Option<&str>) -> Message {
    Message::error(kind, escape(message), allocation_id)
}

/// Decide what to do with `bytes`. Cheap: runs in the event loop.
pub(super) fn classify(bytes: &[u8]) -> Action {
    match decode(bytes) {
        Err(e) => {
            let reason = e.to_string();
            Action::Invalid {
                reply: error(
                    ErrorKind::InvalidRequest,
                    &reason,
                    allocation_id_hint(bytes).as_deref(),
                ),
                reason,
            }
        }
        Ok(Message::NamespaceRequest(request)) => {
            match AllocationId::parse(&request.request.allocation_id) {
                Ok(_) => Action::Request(request),
                // The decoder validated it; this is unreachable in practice.
                Err(e) => Action::Reply(error(ErrorKind::InvalidRequest, &e.to_string(), None)),
            }
        }
        Ok(Message::AllocationEnded { allocation_id }) => match AllocationId::parse(&allocation_id) {
            Ok(id) => Action::End(id),
            Err(e) => Action::Reply(error(ErrorKind::InvalidRequest, &e.to_string(), None)),
        },
        Ok(other) => Action::Reply(error(
            ErrorKind::InvalidRequest,
            &format!(
                "message type {} is sent by servers only; clients send namespace_request or allocation_ended",
                other.type_name()
            ),
            None,
        )),
    }
}

/// The `invalid_request` reply to a message over the size limit.
pub(super) fn too_large(len: usize) -> Message {
    error(
        ErrorKind::InvalidRequest,
        &DecodeError::TooLarge { len }.to_string(),
        None,
    )
}

/// Serve a `namespace_request` (readiness already checked). Runs in a worker.
pub(super) fn serve_request(
    shared: &Shared,
    conn: ConnId,
    peer: &Peer,
    wire: &WireRequest,
) -> Outcome {
    let request = &wire.request;
    let Ok(id) = AllocationId::parse(&request.allocation_id) else {
        return Outcome::plain(error(
            ErrorKind::InvalidRequest,
            "invalid allocation_id",
            None,
        ));
    };
    adopt_owner(shared, &id);
    let ticket = match shared.registry.begin(&id, peer.uid, Op::Request) {
        Ok(ticket) => ticket,
        Err((kind, message)) => {
            if shared.log_refusal() {
                tracing::warn!(allocation = %id, peer.pid = peer.pid, peer.uid = peer.uid, kind = %kind, error = %Escaped(&message), "namespace request refused");
            }
            return Outcome::plain(error(kind, &message, Some(id.as_str())));
        }
    };
    let was_live = ticket.was_live();
    let events = if was_live {
        None
    } else {
        match scope_events(shared, &id, wire.cgroup_scope.as_ref()) {
            Ok(events) => events,
            Err(message) => {
                return Outcome::plain(error(
                    ErrorKind::CreationFailed,
                    &message,
                    Some(id.as_str()),
                ))
            }
        }
    };
    let created = guarded(|| {
        let response = shared.provider.create_namespaces_owned(request, peer.uid)?;
        let fds = shared.provider.namespace_fds(id.as_str())?;
        Ok((response, fds))
    });
    match created {
        Ok((response, fds)) if fds.len() == response.fd_types.len() => {
            tracing::info!(allocation = %id, peer.pid = peer.pid, peer.uid = peer.uid, fds = fds.len(), "namespaces handed off");
            ticket.created(conn, wire.cgroup_scope.clone());
            Outcome {
                reply: Message::NamespaceResponse(response),
                fds,
                watch: events.map(|path| (id, path)),
                unwatch: None,
            }
        }
        Ok((response, fds)) => {
            // The provider's allocation is live all the same.
            ticket.created(conn, None);
            Outcome::plain(error(
                ErrorKind::Internal,
                &format!(
                    "the namespace backend returned {} FDs for {} fd_types; this is a backend bug",
                    fds.len(),
                    response.fd_types.len()
                ),
                Some(id.as_str()),
            ))
        }
        Err((kind, message)) => {
            tracing::warn!(allocation = %id, peer.pid = peer.pid, error = %Escaped(&message), "namespace request failed");
            if was_live {
                ticket.created(conn, None);
            }
            Outcome::plain(error(kind, &message, Some(id.as_str())))
        }
    }
}

/// An id this server does not know may still be live in the provider
/// (created before a restart of the server, or by the host): ask the
/// provider who owns it, so the ownership rule holds for it too.
fn adopt_owner(shared: &Shared, id: &AllocationId) {
    if shared.registry.knows(id) {
        return;
    }
    match catch_unwind(AssertUnwindSafe(|| {
        shared.provider.allocation_owner(id.as_str())
    })) {
        Ok(Some(owner)) => {
            tracing::debug!(allocation = %id, owner, "allocation live in the provider adopted with its owner");
            shared.registry.adopt(id, owner);
        }
        Ok(None) => {}
        Err(_) => {
            tracing::error!(allocation = %id, "namespace backend panicked in allocation_owner");
        }
    }
}

/// The `cgroup.events` file to watch for a new allocation, if any.
///
/// # Errors
///
/// A `cgroup_scope` the request named that does not exist.
fn scope_events(
    shared: &Shared,
    id: &AllocationId,
    named: Option<&CgroupScope>,
) -> Result<Option<PathBuf>, String> {
    let Some(root) = &shared.config.cgroup_root else {
        return Ok(None);
    };
    let scope = named
        .cloned()
        .unwrap_or_else(|| CgroupScope::default_for(id));
    let events = scope.under(root).join("cgroup.events");
    match std::fs::symlink_metadata(&events) {
        Ok(meta) if meta.is_file() => Ok(Some(events)),
        _ if named.is_none() => Ok(None),
        _ => Err(format!(
            "cgroup_scope {:?} does not exist under {} (no {}); create the scope first or omit the field",
            scope.as_str(),
            root.display(),
            events.display()
        )),
    }
}

/// Serve an `allocation_ended` from a peer. Runs in a worker.
pub(super) fn serve_end(shared: &Shared, peer: &Peer, id: &AllocationId) -> Outcome {
    adopt_owner(shared, id);
    let ticket = match shared.registry.begin(id, peer.uid, Op::End) {
        Ok(ticket) => ticket,
        Err((kind, message)) => {
            if shared.log_refusal() {
                tracing::warn!(allocation = %id, peer.pid = peer.pid, peer.uid = peer.uid, kind = %kind, error = %Escaped(&message), "allocation_ended refused");
            }
            return Outcome::plain(error(kind, &message, Some(id.as_str())));
        }
    };
    let released = guarded(|| shared.provider.release_namespaces(id.as_str()));
    ticket.ended();
    let mut outcome = match released {
        Ok(()) => {
            tracing::info!(allocation = %id, peer.pid = peer.pid, "allocation released");
            Outcome::plain(Message::Ack {
                allocation_id: id.to_string(),
            })
        }
        Err((kind, message)) => Outcome::plain(error(kind, &message, Some(id.as_str()))),
    };
    outcome.unwatch = Some(id.clone());
    outcome
}

/// Release an allocation whose cgroup scope emptied (WI5). Runs in a
/// worker; returns the connection that created it, to be told.
pub(super) fn serve_scope_emptied(shared: &Shared, id: &AllocationId) -> Option<ConnId> {
    let ticket = shared.registry.begin(id, 0, Op::ServerEnd).ok()?;
    let released = guarded(|| shared.provider.release_namespaces(id.as_str()));
    let conn = ticket.ended();
    match released {
        Ok(()) => {
            tracing::info!(allocation = %id, "cgroup scope emptied; allocation released");
        }
        Err((_, message)) => {
            tracing::warn!(allocation = %id, error = %Escaped(&message), "cgroup scope emptied; releasing the allocation failed");
        }
    }
    conn
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
            tracing::error!(panic = %Escaped(&what), "namespace backend panicked");
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
