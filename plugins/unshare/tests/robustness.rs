//! Robustness of the handoff server with the real unshare backend: every bad
//! input gets its documented `error` reply and the server keeps serving; no
//! FD leaks. One test function, so the FD count is not disturbed by other
//! tests of this binary running in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::wire::*;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use hpc_node::NamespaceType;
use nix::sys::socket::{
    connect, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockType,
    UnixAddr,
};
use nodeinit_handoff::protocol::{decode, ErrorKind, Message};
use nodeinit_handoff::transport::send_message;
use nodeinit_handoff::{HandoffServer, ReadyGate, ServerConfig};
use nodeinit_unshare::{UnshareBackend, UnshareConfig};

/// A child process that drops to uid/gid 65534 and sends a valid request.
/// Returns the reply bytes it received.
fn unprivileged_exchange(path: &Path) -> Vec<u8> {
    let message = request("nobody-1", &ALL, None);
    let addr = UnixAddr::new(path).unwrap();
    let (reader, writer) = nix::unistd::pipe().unwrap();
    // SAFETY: the child only makes syscalls on pre-built data and _exits.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let code = (|| -> Option<()> {
                nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).ok()?;
                nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).ok()?;
                let fd = socket(
                    AddressFamily::Unix,
                    SockType::SeqPacket,
                    SockFlag::empty(),
                    None,
                )
                .ok()?;
                connect(fd.as_raw_fd(), &addr).ok()?;
                // The server refuses at accept and may already have closed
                // (EPIPE): the reason still waits in the queue (PROTOCOL.md §2).
                let _ = send(fd.as_raw_fd(), &message, MsgFlags::MSG_NOSIGNAL);
                let mut buffer = [0u8; 4096];
                let n = recv(fd.as_raw_fd(), &mut buffer, MsgFlags::empty()).ok()?;
                nix::unistd::write(&writer, &buffer[..n]).ok()?;
                Some(())
            })()
            .map_or(1, |()| 0);
            // SAFETY: _exit never returns and runs no atexit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(writer);
            let status = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(
                status,
                nix::sys::wait::WaitStatus::Exited(child, 0),
                "unprivileged client failed"
            );
            let mut reply = Vec::new();
            std::io::Read::read_to_end(&mut std::fs::File::from(reader), &mut reply).unwrap();
            reply
        }
    }
}

#[test]
fn bad_input_gets_documented_errors_and_the_server_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    common::make_image(&images, "hello.sqfs");
    let evil = common::make_image(&outside, "evil.sqfs");
    let mounts = Arc::new(common::TestMounts::new(&images, &tmp.path().join("uenv")));
    let backend = Arc::new(UnshareBackend::new(
        UnshareConfig::default(),
        Some(mounts.clone()),
    ));
    let path = tmp.path().join("handoff.sock");
    // 0666 so the unprivileged peer can connect: the refusal must come from SO_PEERCRED.
    let config = ServerConfig {
        socket_path: path.clone(),
        socket_mode: 0o666,
        ..ServerConfig::default()
    };
    let server = HandoffServer::start(backend.clone(), config, ReadyGate::opened()).unwrap();
    let fds_before = common::fd_count();

    let conn = connect_to(&path);
    // Garbage, invalid JSON, unknown type, unknown version — all on one connection.
    assert_error(
        &error_on(&conn, &[0xff, 0xfe, 0x00, 0x13]),
        ErrorKind::InvalidRequest,
        "not UTF-8",
    );
    assert_error(
        &error_on(&conn, b"{not json"),
        ErrorKind::InvalidRequest,
        "not valid JSON",
    );
    assert_error(
        &error_on(&conn, b"[1,2]"),
        ErrorKind::InvalidRequest,
        "must be a JSON object",
    );
    assert_error(
        &error_on(&conn, br#"{"v":1,"type":"hello"}"#),
        ErrorKind::InvalidRequest,
        "unknown message type \"hello\"",
    );
    assert_error(
        &error_on(&conn, br#"{"type":"namespace_request"}"#),
        ErrorKind::InvalidRequest,
        "no \"v\" field",
    );
    let v2 = error_on(
        &conn,
        br#"{"v":2,"type":"namespace_request","allocation_id":"a","namespaces":["Pid"]}"#,
    );
    assert_error(
        &v2,
        ErrorKind::InvalidRequest,
        "protocol version 2 is not supported",
    );
    assert_eq!(
        v2.allocation_id.as_deref(),
        None,
        "the envelope is rejected before fields are read"
    );
    assert_error(
        &error_on(&conn, br#"{"v":1,"type":"ack","allocation_id":"x"}"#),
        ErrorKind::InvalidRequest,
        "sent by servers only",
    );
    // Missing and mistyped fields.
    let missing = error_on(
        &conn,
        br#"{"v":1,"type":"namespace_request","allocation_id":"job-1"}"#,
    );
    assert_error(
        &missing,
        ErrorKind::InvalidRequest,
        "missing field `namespaces`",
    );
    assert_eq!(missing.allocation_id.as_deref(), Some("job-1"));
    assert_error(
        &error_on(
            &conn,
            br#"{"v":1,"type":"namespace_request","allocation_id":"j","namespaces":["Uts"]}"#,
        ),
        ErrorKind::InvalidRequest,
        "unknown variant `Uts`",
    );
    assert_error(
        &error_on(&conn, br#"{"v":1,"type":"allocation_ended"}"#),
        ErrorKind::InvalidRequest,
        "missing field `allocation_id`",
    );
    // Allocation ids.
    assert_error(
        &error_on(&conn, &request("../../etc", &ALL, None)),
        ErrorKind::InvalidRequest,
        "\"../../etc\" must match",
    );
    assert_error(
        &error_on(&conn, &request("a/b", &ALL, None)),
        ErrorKind::InvalidRequest,
        "\"a/b\" must match",
    );
    assert_error(
        &error_on(&conn, &request("", &ALL, None)),
        ErrorKind::InvalidRequest,
        "allocation_id is empty",
    );
    let long = error_on(&conn, &request(&"x".repeat(200), &ALL, None));
    assert_error(
        &long,
        ErrorKind::InvalidRequest,
        "200 bytes long; at most 128",
    );
    assert_eq!(long.allocation_id, None, "over-long ids are not echoed");
    // Request shape.
    assert_error(
        &error_on(&conn, &request("j", &[], None)),
        ErrorKind::InvalidRequest,
        "\"namespaces\" is empty",
    );
    assert_error(
        &error_on(
            &conn,
            &request("j", &[NamespaceType::Net, NamespaceType::Net], None),
        ),
        ErrorKind::InvalidRequest,
        "lists Net twice",
    );
    assert_error(
        &error_on(
            &conn,
            &request("j", &[NamespaceType::Net], Some("hello.sqfs")),
        ),
        ErrorKind::InvalidRequest,
        "needs \"Mount\"",
    );
    // A uenv image outside the image directories.
    let refused = error_on(
        &conn,
        &request("evil-1", &ALL, Some(evil.to_str().unwrap())),
    );
    assert_error(
        &refused,
        ErrorKind::CreationFailed,
        "outside the image directories",
    );
    assert_eq!(refused.allocation_id.as_deref(), Some("evil-1"));
    assert!(refused.message.contains("evil.sqfs"), "{}", refused.message);
    // Releasing what does not exist.
    assert_error(
        &error_on(&conn, &ended("never-was")),
        ErrorKind::AllocationNotFound,
        "never-was",
    );
    // After all that, the same connection still works.
    assert_granted(&conn, "after-errors");
    assert_acked(&conn, "after-errors");

    // A 1 MiB message (the sender's buffer is forced up so the kernel lets it through).
    let big = connect_to(&path);
    setsockopt(&big, sockopt::SndBufForce, &(4 << 20)).unwrap();
    let mut huge =
        br#"{"v":1,"type":"namespace_request","allocation_id":"big","namespaces":["Pid"],"pad":""#
            .to_vec();
    huge.resize((1 << 20) - 2, b'x');
    huge.extend_from_slice(b"\"}");
    assert_eq!(huge.len(), 1 << 20);
    assert_error(
        &error_on(&big, &huge),
        ErrorKind::InvalidRequest,
        "message is 1048576 bytes; the limit is 65536",
    );
    assert_granted(&big, "after-big");
    assert_acked(&big, "after-big");
    drop(big);

    // A peer whose uid is not allowed.
    let reply = decode(&unprivileged_exchange(&path)).unwrap();
    match reply {
        Message::Error(e) => assert_error(
            &e,
            ErrorKind::Unauthorized,
            "peer uid 65534 gid 65534 is not allowed",
        ),
        other => panic!("expected unauthorized, got {other:?}"),
    }
    assert!(
        backend.live_allocations().is_empty(),
        "nothing may be created for an unauthorised peer"
    );

    // A client that disconnects right after its request.
    let ended_before = server.ended_connections();
    {
        let gone = connect_to(&path);
        let no_fds: [OwnedFd; 0] = [];
        send_message(&gone, &request("gone-1", &ALL, None), &no_fds).unwrap();
    }
    assert!(
        server.wait_ended_connections(ended_before + 1, Duration::from_secs(30)),
        "the abandoned connection must end"
    );
    assert_eq!(
        backend.live_allocations(),
        vec!["gone-1".to_owned()],
        "the request was completed"
    );
    assert_acked(&conn, "gone-1");

    // 100 clients at once.
    let barrier = Arc::new(Barrier::new(100));
    let clients: Vec<_> = (0..100)
        .map(|i| {
            let (barrier, path) = (barrier.clone(), path.clone());
            std::thread::spawn(move || {
                let conn = connect_to(&path);
                barrier.wait();
                assert_granted(&conn, &format!("many-{i}"));
                assert_acked(&conn, &format!("many-{i}"));
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }

    drop(conn);
    assert!(
        server.wait_idle(Duration::from_secs(30)),
        "every connection must end"
    );
    assert!(
        backend.live_allocations().is_empty(),
        "{:?}",
        backend.live_allocations()
    );
    common::assert_fd_count_settles(fds_before, "the server leaked FDs");
    assert!(mounts.mounted().is_empty(), "{:?}", mounts.mounted());
    server.shutdown();
    assert!(!path.exists(), "shutdown removes the socket");
}
