//! A client that floods the server with messages that do not decode gets
//! every `invalid_request` reply, but not a log line each: at most 20 per
//! 10 s, then one line counting the rest. Before, each was an INFO line
//! (1000 messages: 1000 lines, about 200 KB, some 18 s of a 115200-baud
//! console), which buried every other line on the console; the same for
//! refused requests and ends (a WARN line each). One test
//! function: the subscriber that captures the log is global.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::peer::{exchange_as, play_role_if_asked, Identity, PeerReply};
use common::serve;
use common::wire::*;

use std::time::Instant;

use nodeinit_handoff::protocol::{ErrorKind, Message};
use nodeinit_handoff::{AccessPolicy, ServerConfig};
use nodeinit_tests::CapturedLog as Captured;

const FLOOD: usize = 1000;
const TEST: &str = "a_flood_of_invalid_messages_is_answered_and_logged_at_a_bounded_rate";
const BOB: u32 = 65531;

#[test]
fn a_flood_of_invalid_messages_is_answered_and_logged_at_a_bounded_rate() {
    play_role_if_asked();
    let captured = Captured::install();
    // Bob may connect; the refusals below come from ownership.
    let f = serve(ServerConfig {
        access: AccessPolicy {
            uids: vec![BOB],
            gids: vec![],
        },
        ..ServerConfig::default()
    });
    let conn = connect_to(&f.path);

    let started = Instant::now();
    for n in 0..FLOOD {
        let reply = error_on(&conn, format!("not json {n}").as_bytes());
        assert_eq!(reply.kind, ErrorKind::InvalidRequest, "message {n}");
    }
    // Refusals too (each a worker's WARN line before): Bob ends root's
    // allocation, again and again.
    assert_granted(&conn, "roots");
    let replies = exchange_as(
        TEST,
        &Identity::user(BOB),
        &f.path,
        &vec![ended("roots"); FLOOD],
    );
    for (n, reply) in replies.iter().enumerate() {
        match reply {
            PeerReply::Message(Message::Error(e), 0) => {
                assert_eq!(e.kind, ErrorKind::Unauthorized, "end {n}: {}", e.message)
            }
            other => panic!("end {n}: expected unauthorized, got {other:?}"),
        }
    }
    assert_eq!(replies.len(), FLOOD);
    assert_acked(&conn, "roots");
    let took = started.elapsed();
    // The flood did not cost anyone else their service.
    assert_granted(&conn, "after-the-flood");
    assert_acked(&conn, "after-the-flood");
    drop(conn);
    f.server.shutdown();

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    // 20 per 10 s window the flood touched.
    let windows = took.as_secs() as usize / 10 + 1;
    for what in ["invalid handoff message ", "allocation_ended refused "] {
        let lines = log.lines().filter(|l| l.contains(what)).count();
        assert!(
            (20..=20 * windows).contains(&lines),
            "{lines} lines {what:?} for {FLOOD} messages in {took:?}"
        );
    }
    let first = log
        .lines()
        .find(|l| l.contains("invalid handoff message "))
        .unwrap();
    assert!(
        first.ends_with(&format!(
            "invalid handoff message peer.pid={} peer.uid=0 error=message is not valid JSON: expected ident at line 1 column 2",
            std::process::id()
        )),
        "{first}"
    );
}
