//! Issue 12, ownership across a worker restart: an allocation belongs to
//! the uid that created it even after the server that saw it being created
//! is gone. The worker is a real process (this test binary re-executed in a
//! worker role) whose parent — this test — plays nodeinit's keeper, so the
//! unshare backend persists its holders (`CLONE_PARENT`, holder records in
//! `state_dir`). The first worker is SIGKILLed (a crash); a second one
//! adopts the records. Clients are real processes that `setuid()`
//! (`common::peer`).
//!
//! Before the fix the owner lived only in the first server's memory: after
//! the restart uid B received uid A's namespace FDs by re-sending A's
//! request, and could end it. This test fails that way with the owner
//! persistence removed (`owner_uid` not written, `allocation_owner` `None`).
//! Own test binary: the holders become children of this process, and it
//! reaps them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::peer::{exchange_as, play_role_if_asked, Identity, PeerReply};
use common::wire::*;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;

use nodeinit_handoff::protocol::{ErrorKind, Message};
use nodeinit_handoff::{AccessPolicy, HandoffServer, ReadyGate, ServerConfig};
use nodeinit_unshare::persist::{HolderStore, RECORDS_DIR};
use nodeinit_unshare::{UnshareBackend, UnshareConfig};

const TEST: &str = "ownership_survives_a_worker_restart";
const WORKER_DIR: &str = "NODEINIT_TEST_WORKER_DIR";
const ALICE: u32 = 65530;
const BOB: u32 = 65531;

/// The worker role: a persisting backend behind a server, until killed.
fn worker(dir: &Path) -> ! {
    assert!(
        nodeinit_unshare::persist::persistence_enabled(),
        "the test process must be this worker's keeper"
    );
    let config = UnshareConfig {
        state_dir: dir.join("state"),
        ..UnshareConfig::default()
    };
    let backend = Arc::new(UnshareBackend::new(config, None));
    let server = HandoffServer::start(
        backend,
        ServerConfig {
            socket_path: dir.join("handoff.sock"),
            socket_mode: 0o666,
            access: AccessPolicy {
                uids: vec![ALICE, BOB],
                gids: vec![],
            },
            ..ServerConfig::default()
        },
        ReadyGate::opened(),
    )
    .unwrap();
    common::worker_child::serve_until_stdin_closes(server)
}

fn start_worker(dir: &Path) -> Child {
    common::worker_child::start(TEST, WORKER_DIR, dir)
}

fn expect_granted(reply: &PeerReply, id: &str) {
    match reply {
        PeerReply::Message(Message::NamespaceResponse(r), 3) => assert_eq!(r.allocation_id, id),
        other => panic!("expected a namespace_response with 3 FDs for {id}, got {other:?}"),
    }
}

fn expect_unauthorized(reply: &PeerReply, id: &str, owner: u32) {
    match reply {
        PeerReply::Message(Message::Error(e), 0) => assert_error(
            e,
            ErrorKind::Unauthorized,
            &format!("allocation {id} belongs to another user (uid {owner})"),
        ),
        other => panic!("expected unauthorized for {id}, got {other:?}"),
    }
}

fn expect_ack(reply: &PeerReply, id: &str) {
    match reply {
        PeerReply::Message(Message::Ack { allocation_id }, 0) => assert_eq!(allocation_id, id),
        other => panic!("expected an ack for {id}, got {other:?}"),
    }
}

fn holder_of(state: &Path, id: &str) -> (i32, Option<u32>) {
    let records = HolderStore::new(state).load().unwrap();
    let r = records
        .iter()
        .find(|r| r.allocation_id == id)
        .unwrap_or_else(|| panic!("no record of {id} in {records:?}"));
    (r.pid, r.owner_uid)
}

/// Remove the `owner_uid` of `id`'s record: the format before owners were kept.
fn strip_owner(state: &Path, id: &str) {
    let path = state.join(RECORDS_DIR).join(format!("{id}.json"));
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(record
        .as_object_mut()
        .unwrap()
        .remove("owner_uid")
        .is_some());
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
}

/// Reap holders that are gone (they are this process's children).
fn reap_exited() {
    while let Ok(status) = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(-1),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    ) {
        if status == nix::sys::wait::WaitStatus::StillAlive {
            break;
        }
    }
}

#[test]
fn ownership_survives_a_worker_restart() {
    play_role_if_asked();
    if let Some(dir) = std::env::var_os(WORKER_DIR) {
        worker(&PathBuf::from(dir));
    }
    let tmp = tempfile::tempdir().unwrap();
    let (dir, state) = (tmp.path(), tmp.path().join("state"));
    let socket = dir.join("handoff.sock");
    let alice = Identity::user(ALICE);
    let bob = Identity::user(BOB);

    let mut first = start_worker(dir);
    let replies = exchange_as(
        TEST,
        &alice,
        &socket,
        &[request("job-a", &ALL, None), request("job-old", &ALL, None)],
    );
    expect_granted(&replies[0], "job-a");
    expect_granted(&replies[1], "job-old");
    let (holder_a, owner) = holder_of(&state, "job-a");
    assert_eq!(owner, Some(ALICE));
    let (holder_old, _) = holder_of(&state, "job-old");
    // The crash: the worker dies, its holders live on (children of us).
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(common::process_state(holder_a).is_some_and(|s| !s.starts_with('Z')));
    // job-old as an older nodeinit would have recorded it: without owner.
    strip_owner(&state, "job-old");

    let mut second = start_worker(dir);
    let replies = exchange_as(
        TEST,
        &bob,
        &socket,
        &[request("job-a", &ALL, None), ended("job-a")],
    );
    expect_unauthorized(&replies[0], "job-a", ALICE);
    expect_unauthorized(&replies[1], "job-a", ALICE);
    // An ownerless record is root's: its creator is refused too.
    let replies = exchange_as(
        TEST,
        &alice,
        &socket,
        &[
            request("job-old", &ALL, None),
            request("job-a", &ALL, None),
            ended("job-a"),
        ],
    );
    expect_unauthorized(&replies[0], "job-old", 0);
    // Its owner gets the very same namespaces back, and may end them.
    expect_granted(&replies[1], "job-a");
    expect_ack(&replies[2], "job-a");
    assert!(
        HolderStore::new(&state)
            .load()
            .unwrap()
            .iter()
            .all(|r| r.allocation_id != "job-a"),
        "job-a is released"
    );
    // Root may request and end what is root's.
    let root = connect_to(&socket);
    let (reply, fds) = reply_on(&root, &request("job-old", &ALL, None));
    assert!(matches!(reply, Message::NamespaceResponse(_)), "{reply:?}");
    assert_eq!(
        common::fd_link(fds[0].as_fd()),
        std::fs::read_link(format!("/proc/{holder_old}/ns/pid"))
            .unwrap()
            .display()
            .to_string(),
        "the adopted holder's namespaces, not new ones"
    );
    drop(fds);
    assert_acked(&root, "job-old");
    assert!(HolderStore::new(&state).load().unwrap().is_empty());
    drop(root);
    drop(second.stdin.take());
    assert!(second.wait().unwrap().success());
    reap_exited();
    for pid in [holder_a, holder_old] {
        assert_eq!(common::process_state(pid), None, "holder {pid} is gone");
    }
}
