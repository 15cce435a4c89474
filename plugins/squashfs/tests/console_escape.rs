//! Issue 12, item 11: an image name or path with ESC/OSC/CR sequences (as a
//! handoff client may send in `uenv_image`) reaches errors and log lines
//! escaped, so it cannot clear the console or forge a `nodeinit: boot OK`
//! line. Before the fix both carried the raw bytes (1 of 1).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, LONG_HOLD};
use hpc_node::{MountError, MountManager};
use nodeinit_squashfs::SquashfsManager;

const HOSTILE: &str = "\x1b[2J\x1b[H\rnodeinit: boot OK\x1b]0;owned\x07\u{202e}";
const ESCAPED: &str = "\\u{1b}[2J\\u{1b}[H\\rnodeinit: boot OK\\u{1b}]0;owned\\u{7}\\u{202e}";

fn assert_clean(what: &str, text: &str) {
    for raw in ['\x1b', '\r', '\x07', '\u{202e}'] {
        assert!(!text.contains(raw), "{what} carries raw {raw:?}: {text:?}");
    }
    assert!(
        text.contains(ESCAPED),
        "{what} lacks the escaped text: {text:?}"
    );
}

use nodeinit_tests::CapturedLog as Captured;

#[test]
fn hostile_image_names_are_escaped_in_errors_and_logs() {
    let fx = Fixture::new();
    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        for requested in [
            format!("{}/{HOSTILE}.sqfs", fx.images.display()),
            format!("{HOSTILE}.sqfs"),
            format!("/elsewhere/{HOSTILE}.sqfs"),
        ] {
            match manager.acquire_mount(&requested) {
                Err(MountError::MountFailed { image_path, reason }) => {
                    assert_clean("image_path", &image_path);
                    assert_clean("reason", &reason);
                }
                other => panic!("expected MountFailed, got {other:?}"),
            }
        }
        let absolute = format!("{}/{HOSTILE}.sqfs", fx.images.display());
        manager.force_unmount(&absolute).unwrap();
        match manager.release_mount(&hpc_node::MountHandle {
            image_path: absolute.clone(),
            mount_point: String::new(),
        }) {
            Err(MountError::RefcountInconsistency { image_path, .. }) => {
                assert_clean("image_path", &image_path)
            }
            other => panic!("expected RefcountInconsistency, got {other:?}"),
        }
    });
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("force_unmount: nothing mounted"), "{log}");
    assert_clean("log", &log);
    assert!(fx.mounts().is_empty());
}
