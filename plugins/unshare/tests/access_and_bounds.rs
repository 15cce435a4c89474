//! Issue 12 items 4, 5 (caps) and 6: allocations belong to their creator;
//! unauthorised peers are closed before they take a slot; supplementary
//! groups count; idle connections are closed; live allocations are capped
//! per peer and in total. Peers are real processes with other uids
//! (`common::peer`).
//!
//! Before the fixes: a second allowed uid received the first one's
//! namespace FDs by re-sending its request and could end it (item 4); 50
//! connections of a socket-group member who is not allowed took all slots
//! and root's request got `busy` (item 6); a peer allowed by a
//! supplementary group got `unauthorized`; an idle connection stayed open
//! for ever; and there was no cap at all (item 5).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::peer::{exchange_as, play_role_if_asked, Holder, Identity, PeerReply};
use common::serve;
use common::wire::*;

use std::time::Duration;

use nodeinit_handoff::protocol::{ErrorKind, Message};
use nodeinit_handoff::transport::{receive_message, Received};
use nodeinit_handoff::{AccessPolicy, ServerConfig};

fn expect_error(reply: &PeerReply, kind: ErrorKind, needle: &str) {
    match reply {
        PeerReply::Message(Message::Error(e), 0) => assert_error(e, kind, needle),
        other => panic!("expected {kind} error, got {other:?}"),
    }
}

fn expect_granted(reply: &PeerReply, id: &str) {
    match reply {
        PeerReply::Message(Message::NamespaceResponse(r), 3) => assert_eq!(r.allocation_id, id),
        other => panic!("expected a namespace_response with 3 FDs for {id}, got {other:?}"),
    }
}

fn expect_ack(reply: &PeerReply, id: &str) {
    match reply {
        PeerReply::Message(Message::Ack { allocation_id }, 0) => assert_eq!(allocation_id, id),
        other => panic!("expected an ack for {id}, got {other:?}"),
    }
}

const ALICE: u32 = 65530;
const BOB: u32 = 65531;

#[test]
fn allocations_belong_to_their_creator() {
    play_role_if_asked();
    let f = serve(ServerConfig {
        access: AccessPolicy {
            uids: vec![ALICE, BOB],
            gids: vec![],
        },
        ..ServerConfig::default()
    });
    let test = "allocations_belong_to_their_creator";
    let alice = exchange_as(
        test,
        &Identity::user(ALICE),
        &f.path,
        &[request("job-a", &ALL, None)],
    );
    expect_granted(&alice[0], "job-a");
    let bob = exchange_as(
        test,
        &Identity::user(BOB),
        &f.path,
        &[
            request("job-a", &ALL, None),
            ended("job-a"),
            request("job-b", &ALL, None),
        ],
    );
    expect_error(
        &bob[0],
        ErrorKind::Unauthorized,
        &format!("allocation job-a belongs to another user (uid {ALICE})"),
    );
    expect_error(
        &bob[1],
        ErrorKind::Unauthorized,
        "only its creator or root may request or end it",
    );
    expect_granted(&bob[2], "job-b");
    assert_eq!(
        f.backend.live_allocations(),
        vec!["job-a".to_owned(), "job-b".to_owned()]
    );
    // The creator may re-request and end its own; root may end anyone's.
    let alice = exchange_as(
        test,
        &Identity::user(ALICE),
        &f.path,
        &[request("job-a", &ALL, None), ended("job-a")],
    );
    expect_granted(&alice[0], "job-a");
    expect_ack(&alice[1], "job-a");
    let root = connect_to(&f.path);
    assert_acked(&root, "job-b");
    assert!(f.backend.live_allocations().is_empty());
}

#[test]
fn unauthorised_peers_take_no_slot_groups_count_idle_connections_close() {
    play_role_if_asked();
    const GROUP: u32 = 4242;
    let f = serve(ServerConfig {
        access: AccessPolicy {
            uids: vec![],
            gids: vec![GROUP],
        },
        max_connections: 4,
        idle_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    });
    let test = "unauthorised_peers_take_no_slot_groups_count_idle_connections_close";
    // 50 connections of a peer whose groups do not match, held open.
    let stranger = Identity {
        uid: 65532,
        gid: 65532,
        groups: vec![GROUP + 1],
    };
    let held = Holder::start(test, &stranger, &f.path, 50);
    assert!(f
        .server
        .wait_refused_connections(50, Duration::from_secs(30)));
    assert_eq!(
        f.server.active_connections(),
        0,
        "refused peers hold no slot"
    );
    // Root is served while they are held.
    let root = connect_to(&f.path);
    assert_granted(&root, "root-1");
    assert_acked(&root, "root-1");
    drop(held);
    // A peer allowed only through a supplementary group.
    let member = Identity {
        uid: 65533,
        gid: 65533,
        groups: vec![7, GROUP],
    };
    let replies = exchange_as(
        test,
        &member,
        &f.path,
        &[request("grp-1", &ALL, None), ended("grp-1")],
    );
    expect_granted(&replies[0], "grp-1");
    expect_ack(&replies[1], "grp-1");
    // The stranger's one message is answered `unauthorized`.
    let replies = exchange_as(test, &stranger, &f.path, &[request("nope", &ALL, None)]);
    expect_error(
        &replies[0],
        ErrorKind::Unauthorized,
        "peer uid 65532 gid 65532 is not allowed",
    );
    // An idle connection that owns nothing is closed by the server.
    let idle = connect_to(&f.path);
    match receive_message(&idle).unwrap() {
        Received::Closed => {}
        other => panic!("expected the server to close the idle connection, got {other:?}"),
    }
    // One that created a live allocation is kept (it waits for allocation_ended).
    let root = connect_to(&f.path);
    assert_granted(&root, "root-2");
    let before = f.server.ended_connections();
    let probe = connect_to(&f.path);
    assert!(matches!(receive_message(&probe).unwrap(), Received::Closed));
    assert!(f
        .server
        .wait_ended_connections(before + 1, Duration::from_secs(30)));
    assert_acked(&root, "root-2");
    assert!(f.backend.live_allocations().is_empty());
}

#[test]
fn live_allocations_are_capped_per_peer_and_in_total() {
    play_role_if_asked();
    const CAROL: u32 = 65534;
    let f = serve(ServerConfig {
        access: AccessPolicy {
            uids: vec![CAROL],
            gids: vec![],
        },
        max_allocations: 4,
        max_allocations_per_peer: 3,
        ..ServerConfig::default()
    });
    let test = "live_allocations_are_capped_per_peer_and_in_total";
    let root = connect_to(&f.path);
    for i in 0..3 {
        assert_granted(&root, &format!("cap-{i}"));
    }
    assert_error(
        &error_on(&root, &request("cap-3", &ALL, None)),
        ErrorKind::Busy,
        "uid 0 already owns 3 live allocations",
    );
    // A duplicate of a live allocation is not a new one.
    assert_granted(&root, "cap-0");
    let carol = exchange_as(
        test,
        &Identity::user(CAROL),
        &f.path,
        &[
            request("carol-1", &ALL, None),
            request("carol-2", &ALL, None),
        ],
    );
    expect_granted(&carol[0], "carol-1");
    expect_error(
        &carol[1],
        ErrorKind::Busy,
        "already holds 4 live allocations",
    );
    assert_eq!(f.server.live_allocations(), 4);
    assert_acked(&root, "cap-0");
    let carol = exchange_as(
        test,
        &Identity::user(CAROL),
        &f.path,
        &[
            request("carol-2", &ALL, None),
            ended("carol-1"),
            ended("carol-2"),
        ],
    );
    expect_granted(&carol[0], "carol-2");
    expect_ack(&carol[1], "carol-1");
    expect_ack(&carol[2], "carol-2");
    assert_acked(&root, "cap-1");
    assert_acked(&root, "cap-2");
    assert!(f.backend.live_allocations().is_empty());
}
