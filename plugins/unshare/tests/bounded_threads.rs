//! Issue 12 bounds: the server's thread count does not grow with the number
//! of connections (an event loop plus a fixed worker pool). Before, each
//! connection had its own thread: 200 idle connections were 200 threads. One
//! test function: it counts the threads of this process, where the server runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::wire::*;

use std::os::fd::OwnedFd;
use std::sync::Arc;

use nodeinit_handoff::{HandoffServer, ReadyGate, ServerConfig};
use nodeinit_unshare::{UnshareBackend, UnshareConfig};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn threads_stay_bounded_whatever_the_number_of_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("handoff.sock");
    let backend = Arc::new(UnshareBackend::new(UnshareConfig::default(), None));
    let config = ServerConfig {
        socket_path: path.clone(),
        max_connections: 1000,
        ..ServerConfig::default()
    };
    let server = HandoffServer::start(backend.clone(), config, ReadyGate::opened()).unwrap();
    let first = connect_to(&path);
    assert_granted(&first, "warm-up");
    assert_acked(&first, "warm-up");
    let before = threads();
    let conns: Vec<OwnedFd> = (0..300).map(|_| connect_to(&path)).collect();
    for (i, conn) in conns.iter().enumerate().step_by(10) {
        assert_granted(conn, &format!("t-{i}"));
    }
    assert_eq!(server.active_connections(), 301);
    let during = threads();
    assert!(
        during <= before,
        "{before} threads before 300 connections, {during} with them"
    );
    for (i, conn) in conns.iter().enumerate().step_by(10) {
        assert_acked(conn, &format!("t-{i}"));
    }
    drop(conns);
    drop(first);
    server.shutdown();
    assert!(backend.live_allocations().is_empty());
}
