//! A reload loses nothing (process level; the keeper is this test process):
//! a client holding a handoff connection writes a request while `nodeinit
//! reload` runs, round after round; the old worker hands its open
//! connections to the keeper, the keeper to the new worker, and every
//! request is answered on the same connection. The keeper holds no
//! descriptor afterwards. In a file of its own: the descriptor count is
//! this process's, and no other test may open any meanwhile.
//!
//! Before the handover, the old worker drained for at most 1 s and closed
//! the connection: the held connection did not survive the first reload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{keep_in_thread, Stage};

use std::fs;
use std::os::fd::OwnedFd;
use std::path::Path;

use hpc_node::{NamespaceRequest, NamespaceType};
use nodeinit::boot::prepare;
use nodeinit::control::{ask, ControlReply, ControlRequest};
use nodeinit_handoff::protocol::{decode, encode, Message};
use nodeinit_handoff::transport::{receive_message, send_message, Received};

fn connect_to(path: &Path) -> OwnedFd {
    nodeinit_tests::connect_seqpacket(path, std::time::Duration::from_secs(60))
}

fn write_request(conn: &OwnedFd, id: &str) {
    let bytes = encode(&Message::NamespaceRequest(
        NamespaceRequest {
            allocation_id: id.into(),
            namespaces: vec![NamespaceType::Net],
            uenv_image: None,
        }
        .into(),
    ));
    let no_fds: [OwnedFd; 0] = [];
    send_message(conn, &bytes, &no_fds).unwrap();
}

fn expect_granted(conn: &OwnedFd, id: &str, round: usize) {
    match receive_message(conn) {
        Ok(Received::Message { bytes, .. }) => match decode(&bytes).unwrap() {
            Message::NamespaceResponse(r) => assert_eq!(r.allocation_id, id, "round {round}"),
            other => panic!("round {round}: expected the reply to {id}, got {other:?}"),
        },
        other => panic!("round {round}: expected the reply to {id}, got {other:?}"),
    }
}

fn open_fds() -> usize {
    fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn requests_written_during_reloads_are_answered_on_the_same_connection() {
    const ROUNDS: usize = 12;
    let null = nodeinit_tests::plugin_artifacts(&["nodeinit-null"])["nodeinit-null"].clone();
    let stage = Stage::new(&common::all_null_supervised(), &[(&null, "null")]);
    let env = stage.env();
    let mut p = prepare(&env);
    assert!(p.phases.is_healthy(), "{:?}", p.phases.records());
    let (stop, keeper) = keep_in_thread(&mut p, &env);
    let control = env.run_dir.join("control.sock");
    let conn = connect_to(&env.handoff_socket);
    write_request(&conn, "held");
    expect_granted(&conn, "held", 0);
    let fds_before = open_fds();
    for round in 0..ROUNDS {
        let id = format!("during-reload-{round}");
        let reply = std::thread::scope(|s| {
            let writer = s.spawn(|| write_request(&conn, &id));
            let reply = ask(&control, &ControlRequest::Reload).unwrap();
            writer.join().unwrap();
            reply
        });
        match reply {
            ControlReply::Reloaded(status) => assert_eq!(status.reloads as usize, round + 1),
            other => panic!("round {round}: reload failed: {other:?}"),
        }
        expect_granted(&conn, &id, round);
    }
    // The keeper's thread may still be closing the last reload's control
    // connection, or the drained worker's link until it reaps it: a leak
    // never goes away, those do within moments.
    let settle = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while open_fds() != fds_before && std::time::Instant::now() < settle {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        open_fds(),
        fds_before,
        "the keeper holds no descriptor after {ROUNDS} reloads"
    );
    // The connection still serves, from the last worker.
    write_request(&conn, "after");
    expect_granted(&conn, "after", ROUNDS);
    nix::unistd::write(&stop, b"stop").unwrap();
    keeper.join().unwrap();
    p.release();
}
