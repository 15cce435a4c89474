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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hpc_node::NamespaceType;
    use rustix::net::{socketpair, AddressFamily as Af, SocketFlags, SocketType};

    /// A connected pair: the client's end, and a "server" thread that reads
    /// one message and answers with `replies` (bytes, number of FDs).
    fn server(replies: Vec<(Vec<u8>, usize)>) -> (OwnedFd, std::thread::JoinHandle<()>) {
        let (client, server) =
            socketpair(Af::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).unwrap();
        let t = std::thread::spawn(move || {
            let _ = receive_message(&server).unwrap();
            for (bytes, n) in replies {
                let fds: Vec<std::fs::File> =
                    (0..n).map(|_| tempfile::tempfile().unwrap()).collect();
                send_message(&server, &bytes, &fds).unwrap();
            }
        });
        (client, t)
    }

    fn req(id: &str) -> NamespaceRequest {
        NamespaceRequest {
            allocation_id: id.into(),
            namespaces: vec![NamespaceType::Net, NamespaceType::Pid],
            uenv_image: None,
        }
    }

    fn response(id: &str) -> Vec<u8> {
        encode(&Message::NamespaceResponse(NamespaceResponse {
            allocation_id: id.into(),
            fd_types: vec![NamespaceType::Net, NamespaceType::Pid],
            uenv_mount_path: None,
        }))
    }

    #[test]
    fn a_reply_with_its_fds_is_returned_and_an_unsolicited_end_is_skipped() {
        let ended = encode(&Message::AllocationEnded {
            allocation_id: "other".into(),
        });
        let (conn, t) = server(vec![(ended, 0), (response("job-1"), 2)]);
        let (r, fds) = request(&conn, &req("job-1")).unwrap();
        assert_eq!(r.allocation_id, "job-1");
        assert_eq!(fds.len(), 2);
        t.join().unwrap();
    }

    #[test]
    fn a_reply_that_does_not_match_the_request_is_refused_by_name() {
        let (conn, t) = server(vec![(response("job-2"), 2)]);
        let err = request(&conn, &req("job-1")).unwrap_err().to_string();
        assert!(
            err.contains("reply is for allocation \"job-2\", asked for \"job-1\""),
            "{err}"
        );
        t.join().unwrap();
        let (conn, t) = server(vec![(response("job-1"), 1)]);
        let err = request(&conn, &req("job-1")).unwrap_err().to_string();
        assert!(
            err.contains("reply lists 2 fd_types but carries 1 FDs"),
            "{err}"
        );
        t.join().unwrap();
    }

    #[test]
    fn error_replies_map_to_the_namespace_error_a_consumer_expects() {
        let busy = encode(&Message::error(
            ErrorKind::Busy,
            "too many connections",
            None,
        ));
        let (conn, t) = server(vec![(busy, 0)]);
        let err = request(&conn, &req("job-1")).unwrap_err();
        assert!(
            matches!(&err, NamespaceError::SocketUnavailable { reason } if reason == "[busy] too many connections"),
            "{err}"
        );
        t.join().unwrap();
        let gone = encode(&Message::error(
            ErrorKind::AllocationNotFound,
            "not live",
            Some("job-9"),
        ));
        let (conn, t) = server(vec![(gone, 0)]);
        let err = end(&conn, "job-9").unwrap_err();
        assert!(
            matches!(&err, NamespaceError::AllocationNotFound { allocation_id } if allocation_id == "job-9"),
            "{err}"
        );
        t.join().unwrap();
    }

    #[test]
    fn a_server_that_closes_without_a_reply_says_so() {
        // The "server" reads the request, then closes without answering.
        let (conn, t) = server(vec![]);
        let err = end(&conn, "job-1").unwrap_err().to_string();
        t.join().unwrap();
        assert!(
            err.contains("the handoff server closed the connection without a reply"),
            "{err}"
        );
    }

    #[test]
    fn connecting_to_no_server_is_an_error_naming_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let config = ClientConfig {
            socket_path: dir.path().join("handoff.sock"),
            ..ClientConfig::default()
        };
        assert_eq!(
            connect(&config).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            timeval(std::time::Duration::from_millis(1500)).tv_usec(),
            500_000
        );
    }
}
