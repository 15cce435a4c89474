//! Issue 12 item 11: peer-supplied text reaches the console escaped. A
//! client sends an id/variant/image name carrying ESC, OSC, BEL and CR
//! (clear screen, set the window title, forge a `nodeinit: boot OK` line);
//! the log lines and the `error` replies carry visible escapes instead.
//! Before the fix, serde's "unknown variant" text and the mount backend's
//! `mount failed for {path}` were logged and echoed raw.
//! One test function: the subscriber that captures the log is global.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::wire::*;

use std::sync::Arc;

use nodeinit_handoff::protocol::ErrorKind;
use nodeinit_handoff::{HandoffServer, ReadyGate, ServerConfig};
use nodeinit_unshare::{UnshareBackend, UnshareConfig};

use nodeinit_tests::CapturedLog as Captured;

/// The hostile text, as JSON escapes (the server sees the raw control bytes).
const HOSTILE_JSON: &str = r"\u001b]0;pwned\u0007\r\u001b[2Jnodeinit: boot OK";
/// What must appear instead, byte for byte.
const HOSTILE_ESCAPED: &str = r"\u{1b}]0;pwned\u{7}\r\u{1b}[2Jnodeinit: boot OK";

fn no_control_bytes(what: &str, text: &[u8]) {
    let bad: Vec<(usize, u8)> = text
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, b)| (*b < 0x20 && *b != b'\n') || *b == 0x7f)
        .collect();
    assert!(
        bad.is_empty(),
        "{what} carries raw control bytes {bad:?}: {}",
        String::from_utf8_lossy(text)
    );
}

#[test]
fn control_characters_from_peers_are_escaped_in_logs_and_replies() {
    let captured = Captured::install();
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mounts = Arc::new(common::TestMounts::new(&images, &tmp.path().join("uenv")));
    let backend = Arc::new(UnshareBackend::new(UnshareConfig::default(), Some(mounts)));
    let path = tmp.path().join("handoff.sock");
    let config = ServerConfig {
        socket_path: path.clone(),
        ..ServerConfig::default()
    };
    let server = HandoffServer::start(backend, config, ReadyGate::opened()).unwrap();
    let conn = connect_to(&path);

    // 1. serde echoes the unknown variant.
    let variant = format!(
        r#"{{"v":1,"type":"namespace_request","allocation_id":"esc-1","namespaces":["{HOSTILE_JSON}"]}}"#
    );
    let reply = error_on(&conn, variant.as_bytes());
    assert_eq!(reply.kind, ErrorKind::InvalidRequest);
    assert_eq!(
        reply.message,
        format!("namespace_request: unknown variant `{HOSTILE_ESCAPED}`, expected one of `Pid`, `Net`, `Mount`")
    );
    // 2. The mount backend echoes the image path.
    let image = format!(
        r#"{{"v":1,"type":"namespace_request","allocation_id":"esc-2","namespaces":["Mount"],"uenv_image":"{HOSTILE_JSON}.sqfs"}}"#
    );
    let reply = error_on(&conn, image.as_bytes());
    assert_eq!(reply.kind, ErrorKind::CreationFailed);
    assert!(
        reply.message.contains(&format!("{HOSTILE_ESCAPED}.sqfs")),
        "{}",
        reply.message
    );
    no_control_bytes("the creation_failed reply", reply.message.as_bytes());
    // 3. An unknown type.
    let unknown = format!(r#"{{"v":1,"type":"{HOSTILE_JSON}"}}"#);
    let reply = error_on(&conn, unknown.as_bytes());
    no_control_bytes("the unknown-type reply", reply.message.as_bytes());
    drop(conn);
    server.shutdown();

    let log = captured.0.lock().unwrap().clone();
    no_control_bytes("the log", &log);
    let log = String::from_utf8(log).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("invalid handoff message") && l.contains("unknown variant"))
        .unwrap_or_else(|| panic!("no log line for the unknown variant in:\n{log}"));
    assert!(
        line.ends_with(&format!(
            "invalid handoff message peer.pid={} peer.uid=0 error=namespace_request: unknown variant `{HOSTILE_ESCAPED}`, expected one of `Pid`, `Net`, `Mount`",
            std::process::id()
        )),
        "{line}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("namespace request failed") && l.contains("esc-2"))
        .unwrap_or_else(|| panic!("no log line for the refused image in:\n{log}"));
    assert!(line.contains(&format!("{HOSTILE_ESCAPED}.sqfs")), "{line}");
}
