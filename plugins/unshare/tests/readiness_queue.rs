//! Requests that arrive before the node is ready: queued (bounded), served
//! when the gate opens, answered `not_ready` when the boot fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hpc_node::{NamespaceRequest, NamespaceType};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use nodeinit_handoff::protocol::{decode, encode, ErrorKind, ErrorReply, Message};
use nodeinit_handoff::transport::{receive_message, send_message, Received};
use nodeinit_handoff::{HandoffServer, ReadyGate, ServerConfig};
use nodeinit_unshare::{UnshareBackend, UnshareConfig};

fn connect_to(path: &Path) -> OwnedFd {
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(fd.as_raw_fd(), &UnixAddr::new(path).unwrap()).unwrap();
    fd
}

fn reply_on(conn: &OwnedFd, bytes: &[u8]) -> (Message, Vec<OwnedFd>) {
    let no_fds: [OwnedFd; 0] = [];
    send_message(conn, bytes, &no_fds).unwrap();
    match receive_message(conn).unwrap() {
        Received::Message { bytes, fds } => (decode(&bytes).unwrap(), fds),
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn error_on(conn: &OwnedFd, bytes: &[u8]) -> ErrorReply {
    match reply_on(conn, bytes) {
        (Message::Error(e), fds) => {
            assert!(fds.is_empty(), "an error carries no FDs");
            e
        }
        (other, _) => panic!("expected an error reply, got {other:?}"),
    }
}

fn assert_error(reply: &ErrorReply, kind: ErrorKind, needle: &str) {
    assert_eq!(reply.kind, kind, "{reply:?}");
    assert!(
        reply.message.contains(needle),
        "{:?} should contain {needle:?}",
        reply.message
    );
}

fn request(id: &str, namespaces: &[NamespaceType], uenv: Option<&str>) -> Vec<u8> {
    encode(&Message::NamespaceRequest(NamespaceRequest {
        allocation_id: id.into(),
        namespaces: namespaces.to_vec(),
        uenv_image: uenv.map(str::to_owned),
    }))
}

const ALL: [NamespaceType; 3] = [NamespaceType::Pid, NamespaceType::Net, NamespaceType::Mount];

fn ended(id: &str) -> Vec<u8> {
    encode(&Message::AllocationEnded {
        allocation_id: id.into(),
    })
}

fn assert_granted(conn: &OwnedFd, id: &str) {
    match reply_on(conn, &request(id, &ALL, None)) {
        (Message::NamespaceResponse(r), fds) => {
            assert_eq!(r.allocation_id, id);
            assert_eq!(fds.len(), 3);
            assert!(common::fd_link(fds[2].as_fd()).starts_with("mnt:["));
        }
        other => panic!("expected a namespace_response for {id}, got {other:?}"),
    }
}

fn assert_acked(conn: &OwnedFd, id: &str) {
    match reply_on(conn, &ended(id)) {
        (Message::Ack { allocation_id }, _) => assert_eq!(allocation_id, id),
        other => panic!("expected an ack for {id}, got {other:?}"),
    }
}

#[test]
fn requests_before_readiness_are_queued_bounded_and_fail_with_the_boot() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = Arc::new(UnshareBackend::new(UnshareConfig::default(), None));
    let path = tmp.path().join("handoff.sock");
    let gate = ReadyGate::new();
    let config = ServerConfig {
        socket_path: path.clone(),
        max_queued_requests: 1,
        ..ServerConfig::default()
    };
    let server = HandoffServer::start(backend.clone(), config, gate.clone()).unwrap();

    let waiting = {
        let path = path.clone();
        std::thread::spawn(move || {
            let conn = connect_to(&path);
            assert_granted(&conn, "early-1");
            assert_acked(&conn, "early-1");
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.queued_requests() == 0 {
        assert!(
            Instant::now() < deadline,
            "the early request never reached the queue"
        );
        std::thread::yield_now();
    }
    // The queue (1) is full: the next request is told so at once.
    let conn = connect_to(&path);
    assert_error(
        &error_on(&conn, &request("early-2", &ALL, None)),
        ErrorKind::Busy,
        "1 requests are already queued",
    );
    assert!(
        !waiting.is_finished(),
        "the queued request is still waiting"
    );
    gate.open();
    waiting.join().unwrap();
    server.shutdown();

    // A failed boot answers queued and later requests with not_ready and the reason.
    let gate = ReadyGate::new();
    let config = ServerConfig {
        socket_path: path.clone(),
        ..ServerConfig::default()
    };
    let server = HandoffServer::start(backend.clone(), config, gate.clone()).unwrap();
    gate.fail("cgroup hierarchy could not be created");
    let conn = connect_to(&path);
    assert_error(
        &error_on(&conn, &request("late-1", &ALL, None)),
        ErrorKind::NotReady,
        "cgroup hierarchy could not be created",
    );
    server.shutdown();
    assert!(backend.live_allocations().is_empty());
}
