//! Requests that arrive before the node is ready: queued (bounded), served
//! when the gate opens, answered `not_ready` when the boot fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::wire::*;

use std::sync::Arc;
use std::time::{Duration, Instant};

use nodeinit_handoff::protocol::ErrorKind;
use nodeinit_handoff::{HandoffServer, ReadyGate, ServerConfig};
use nodeinit_unshare::{UnshareBackend, UnshareConfig};

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
