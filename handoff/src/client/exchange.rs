//! One request/reply exchange with the handoff server.
//!
//! Owns the client side of the wire rules: connect with a timeout, send,
//! read the reply (including a reply the server queued before closing),
//! check that the FDs match `fd_types`. It must never keep an FD that does
//! not belong to the reply it returns.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use hpc_node::{NamespaceError, NamespaceRequest, NamespaceResponse};
use nix::sys::socket::{
    connect as sys_connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType,
    UnixAddr,
};
use nix::sys::time::TimeVal;

use super::ClientConfig;
use crate::protocol::{decode, encode, ErrorKind, ErrorReply, Message};
use crate::transport::{receive_message, send_message, Received};

fn timeval(d: std::time::Duration) -> TimeVal {
    TimeVal::new(
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        i64::from(d.subsec_micros()),
    )
}

/// Connect to the server. For `AF_UNIX` the kernel bounds a blocking
/// `connect` (full backlog) by `SO_SNDTIMEO`, which carries the connect timeout.
pub(super) fn connect(config: &ClientConfig) -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::SendTimeout, &timeval(config.connect_timeout))?;
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeval(config.reply_timeout))?;
    let addr = UnixAddr::new(&config.socket_path)?;
    match sys_connect(fd.as_raw_fd(), &addr) {
        Ok(()) => Ok(fd),
        Err(nix::errno::Errno::EAGAIN) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "connect timed out after {:?} (server backlog full)",
                config.connect_timeout
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

fn broken(what: String) -> NamespaceError {
    NamespaceError::FdPassing(io::Error::other(what))
}

/// Send `message`; return the server's reply and its FDs.
fn round_trip(
    conn: &OwnedFd,
    message: &Message,
) -> Result<(Message, Vec<OwnedFd>), NamespaceError> {
    let no_fds: [OwnedFd; 0] = [];
    if let Err(e) = send_message(conn, &encode(message), &no_fds) {
        // A server that refused us (busy) queued its reason before closing: read it.
        if e.raw_os_error() != Some(libc::EPIPE) {
            return Err(NamespaceError::FdPassing(e));
        }
    }
    let mut resets = 0;
    loop {
        let (bytes, fds) = match receive_message(conn) {
            // A server that closed with our request unread reports the reset
            // first; the reason it queued before closing comes next.
            Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) && resets == 0 => {
                resets += 1;
                continue;
            }
            Ok(Received::Message { bytes, fds }) => (bytes, fds),
            Ok(Received::Closed) => {
                return Err(broken(
                    "the handoff server closed the connection without a reply".into(),
                ))
            }
            Ok(Received::TooLarge { len }) => {
                return Err(broken(format!(
                    "the handoff server sent an oversized reply ({len} bytes)"
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(broken(
                    "no reply from the handoff server within the reply timeout".into(),
                ))
            }
            Err(e) => return Err(NamespaceError::FdPassing(e)),
        };
        let reply = decode(&bytes)
            .map_err(|e| broken(format!("undecodable reply from the handoff server: {e}")))?;
        // The server tells us, unsolicited, when an allocation's cgroup scope
        // emptied (WI5). It is never a reply; the reply follows.
        if let Message::AllocationEnded { allocation_id } = &reply {
            tracing::info!(allocation = %crate::escape::Escaped(allocation_id), "the handoff server ended an allocation (its cgroup scope emptied)");
            continue;
        }
        return Ok((reply, fds));
    }
}

/// The `NamespaceError` for an `error` reply.
fn from_error_reply(reply: ErrorReply) -> NamespaceError {
    let reason = format!("[{}] {}", reply.kind, reply.message);
    match reply.kind {
        ErrorKind::AllocationNotFound => NamespaceError::AllocationNotFound {
            allocation_id: reply.allocation_id.unwrap_or_default(),
        },
        ErrorKind::NotReady | ErrorKind::Busy => NamespaceError::SocketUnavailable { reason },
        _ => NamespaceError::CreationFailed { reason },
    }
}

pub(super) fn request(
    conn: &OwnedFd,
    request: &NamespaceRequest,
) -> Result<(NamespaceResponse, Vec<OwnedFd>), NamespaceError> {
    match round_trip(conn, &Message::NamespaceRequest(request.clone().into()))? {
        (Message::NamespaceResponse(response), fds) => {
            if response.allocation_id != request.allocation_id {
                return Err(broken(format!(
                    "reply is for allocation {:?}, asked for {:?}",
                    response.allocation_id, request.allocation_id
                )));
            }
            if fds.len() != response.fd_types.len() {
                return Err(broken(format!(
                    "reply lists {} fd_types but carries {} FDs",
                    response.fd_types.len(),
                    fds.len()
                )));
            }
            Ok((response, fds))
        }
        (Message::Error(reply), _) => Err(from_error_reply(reply)),
        (other, _) => Err(broken(format!(
            "unexpected {} reply to namespace_request",
            other.type_name()
        ))),
    }
}

pub(super) fn end(conn: &OwnedFd, allocation_id: &str) -> Result<(), NamespaceError> {
    let message = Message::AllocationEnded {
        allocation_id: allocation_id.to_owned(),
    };
    match round_trip(conn, &message)? {
        (Message::Ack { .. }, _) => Ok(()),
        (Message::Error(reply), _) => Err(from_error_reply(reply)),
        (other, _) => Err(broken(format!(
            "unexpected {} reply to allocation_ended",
            other.type_name()
        ))),
    }
}
