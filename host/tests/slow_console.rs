//! A console that does not keep up never paces the handoff server. On a
//! node the worker's log goes to `/dev/console`, often a 115200-baud
//! serial line (about 11 KB/s, four INFO lines of 150–250 bytes per
//! allocation); a blocking `write(2)` there once the tty's buffer was full
//! stalled the thread that logged — the event loop for an invalid message,
//! a worker for every allocation — so the server served at the baud rate,
//! and a client flooding it wedged every other. Here the worker's stderr is
//! a pipe nobody reads (the slowest console there is, 64 KiB of buffer):
//! before the fix the 240th–243rd allocation got no reply in 4 of 4 runs
//! (the worker sat in `write(2)`); now all 500 are served, the lines that
//! did not fit are dropped whole and counted on the console, and once it
//! drains a new allocation's lines reach it again.
//! One test in its own file: it points this process's descriptor 2, which
//! the worker inherits, at the pipe.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{keep_in_thread, Stage};

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use hpc_node::{NamespaceRequest, NamespaceType};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nodeinit::boot::prepare;
use nodeinit_handoff::protocol::{decode, encode, Message};
use nodeinit_handoff::transport::{receive_message, send_message, Received};

/// Allocations made and ended while nobody reads the console.
const ALLOCATIONS: usize = 500;

/// A stalled server shows as a missing reply in 10 s, not as a hung test.
fn connect_to(path: &Path) -> OwnedFd {
    nodeinit_tests::connect_seqpacket(path, std::time::Duration::from_secs(10))
}

/// The reply to `message`, or what went wrong, in words.
fn exchange(conn: &OwnedFd, message: &Message) -> Result<Message, String> {
    let no_fds: [OwnedFd; 0] = [];
    send_message(conn, &encode(message), &no_fds).map_err(|e| format!("send: {e}"))?;
    match receive_message(conn) {
        Ok(Received::Message { bytes, .. }) => decode(&bytes).map_err(|e| format!("{e}")),
        other => Err(format!("no reply in 10 s ({other:?})")),
    }
}

fn allocate_and_end(conn: &OwnedFd, id: &str) -> Result<(), String> {
    let request = Message::NamespaceRequest(
        NamespaceRequest {
            allocation_id: id.into(),
            namespaces: vec![NamespaceType::Net],
            uenv_image: None,
        }
        .into(),
    );
    match exchange(conn, &request)? {
        Message::NamespaceResponse(r) if r.allocation_id == id => {}
        other => return Err(format!("expected the namespaces of {id}, got {other:?}")),
    }
    match exchange(
        conn,
        &Message::AllocationEnded {
            allocation_id: id.into(),
        },
    )? {
        Message::Ack { .. } => Ok(()),
        other => Err(format!("expected the ack of {id}, got {other:?}")),
    }
}

/// Everything in the pipe now (its read end is non-blocking).
fn drain(console: &mut std::fs::File, into: &mut Vec<u8>) {
    let mut chunk = [0u8; 65536];
    while let Ok(n) = console.read(&mut chunk) {
        if n == 0 {
            break;
        }
        into.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn a_console_nobody_reads_never_stalls_the_handoff_server() {
    let null = nodeinit_tests::plugin_artifacts(&["nodeinit-null"])["nodeinit-null"].clone();
    let stage = Stage::new(&common::all_null_supervised(), &[(&null, "null")]);
    let env = stage.env();

    // Descriptor 2 becomes the pipe; the real stderr is kept to restore.
    let (console_read, console_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
    fcntl(
        console_read.as_raw_fd(),
        FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
    )
    .unwrap();
    let mut console = std::fs::File::from(console_read);
    let stderr = nix::unistd::dup(2).unwrap();
    nix::unistd::dup2(console_write.as_raw_fd(), 2).unwrap();
    drop(console_write);

    let mut p = prepare(&env);
    // The boot's own lines are read; from here on nobody reads.
    let mut seen = Vec::new();
    drain(&mut console, &mut seen);
    let healthy = p.phases.is_healthy();
    let (stop, keeper) = keep_in_thread(&mut p, &env);
    let served = if healthy {
        let conn = connect_to(&env.handoff_socket);
        (0..ALLOCATIONS)
            .map(|n| {
                allocate_and_end(&conn, &format!("job-{n}"))
                    .map_err(|e| format!("allocation {n} of {ALLOCATIONS}: {e}"))
            })
            .find_map(Result::err)
    } else {
        Some(format!("boot failed: {:?}", p.phases.records()))
    };
    // Read the console again: the queued lines, the drop notices, and
    // then a new allocation's lines as they are logged.
    let mut after = None;
    if served.is_none() {
        let conn = connect_to(&env.handoff_socket);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut quiet = 0;
        while quiet < 10 && std::time::Instant::now() < deadline {
            let before = seen.len();
            drain(&mut console, &mut seen);
            quiet = if seen.len() == before { quiet + 1 } else { 0 };
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        after = Some(allocate_and_end(&conn, "after"));
        while std::time::Instant::now() < deadline
            && !String::from_utf8_lossy(&seen).contains("allocation released allocation=after")
        {
            drain(&mut console, &mut seen);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    nix::unistd::write(&stop, b"stop").unwrap();
    keeper.join().unwrap();
    p.release();
    drain(&mut console, &mut seen);
    nix::unistd::dup2(stderr.as_raw_fd(), 2).unwrap();

    assert_eq!(served, None, "the server stalled behind its console");
    let text = String::from_utf8_lossy(&seen);
    // Lines are dropped whole: every line is one tracing event or a notice.
    for line in text.lines() {
        assert!(
            line.starts_with("20") || line.starts_with("nodeinit: "),
            "a torn console line: {line:?}"
        );
    }
    let dropped: u64 = text
        .lines()
        .filter_map(|l| l.strip_prefix("nodeinit: "))
        .filter_map(|l| l.split_once(" log lines dropped"))
        .map(|(n, _)| n.parse::<u64>().unwrap())
        .sum();
    let released = text
        .lines()
        .filter(|l| l.contains("namespaces released") || l.contains("allocation released"))
        .count();
    eprintln!(
        "console: {} bytes, {released} release lines, {dropped} lines dropped",
        seen.len()
    );
    assert!(
        dropped > 0,
        "the pipe took every line: no drop to see ({released} release lines)"
    );
    assert_eq!(after, Some(Ok(())));
    assert!(
        text.contains("allocation released allocation=after"),
        "once the console caught up, a new allocation's lines reach it"
    );
}
