//! The handoff wire as a test client speaks it: connect, send a message,
//! read the reply, and assertions on replies.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use hpc_node::{NamespaceRequest, NamespaceType};
use nodeinit_handoff::protocol::{decode, encode, ErrorKind, ErrorReply, Message};
use nodeinit_handoff::transport::{receive_message, send_message, Received};

pub fn connect_to(path: &Path) -> OwnedFd {
    nodeinit_tests::connect_seqpacket(path, std::time::Duration::from_secs(120))
}

pub fn reply_on(conn: &OwnedFd, bytes: &[u8]) -> (Message, Vec<OwnedFd>) {
    let no_fds: [OwnedFd; 0] = [];
    send_message(conn, bytes, &no_fds).unwrap();
    match receive_message(conn).unwrap() {
        Received::Message { bytes, fds } => (decode(&bytes).unwrap(), fds),
        other => panic!("expected a reply, got {other:?}"),
    }
}

pub fn error_on(conn: &OwnedFd, bytes: &[u8]) -> ErrorReply {
    match reply_on(conn, bytes) {
        (Message::Error(e), fds) => {
            assert!(fds.is_empty(), "an error carries no FDs");
            e
        }
        (other, _) => panic!("expected an error reply, got {other:?}"),
    }
}

pub fn assert_error(reply: &ErrorReply, kind: ErrorKind, needle: &str) {
    assert_eq!(reply.kind, kind, "{reply:?}");
    assert!(
        reply.message.contains(needle),
        "{:?} should contain {needle:?}",
        reply.message
    );
}

pub fn request(id: &str, namespaces: &[NamespaceType], uenv: Option<&str>) -> Vec<u8> {
    encode(&Message::NamespaceRequest(
        NamespaceRequest {
            allocation_id: id.into(),
            namespaces: namespaces.to_vec(),
            uenv_image: uenv.map(str::to_owned),
        }
        .into(),
    ))
}

pub const ALL: [NamespaceType; 3] = [NamespaceType::Pid, NamespaceType::Net, NamespaceType::Mount];

pub fn ended(id: &str) -> Vec<u8> {
    encode(&Message::AllocationEnded {
        allocation_id: id.into(),
    })
}

pub fn assert_granted(conn: &OwnedFd, id: &str) {
    match reply_on(conn, &request(id, &ALL, None)) {
        (Message::NamespaceResponse(r), fds) => {
            assert_eq!(r.allocation_id, id);
            assert_eq!(fds.len(), 3);
            assert!(super::fd_link(fds[2].as_fd()).starts_with("mnt:["));
        }
        other => panic!("expected a namespace_response for {id}, got {other:?}"),
    }
}

pub fn assert_acked(conn: &OwnedFd, id: &str) {
    match reply_on(conn, &ended(id)) {
        (Message::Ack { allocation_id }, _) => assert_eq!(allocation_id, id),
        other => panic!("expected an ack for {id}, got {other:?}"),
    }
}
