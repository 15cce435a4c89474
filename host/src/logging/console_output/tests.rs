#![allow(clippy::unwrap_used)]
use super::*;

use std::io::Read;
use std::os::fd::AsRawFd;

use nix::fcntl::{fcntl, FcntlArg};

/// A queue of its own writing to a 4 KiB pipe (the smallest a pipe can be),
/// and the pipe's read end (non-blocking).
fn queue_on_a_small_pipe() -> (&'static LineQueue, std::fs::File) {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
    fcntl(write.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(4096)).unwrap();
    fcntl(write.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
    fcntl(read.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
    let queue: &'static LineQueue = Box::leak(Box::new(LineQueue::new()));
    queue.set_target(Target::Reopened(Arc::new(write)));
    (queue, std::fs::File::from(read))
}

fn line(n: usize) -> Vec<u8> {
    // 100 bytes, like a short INFO line.
    format!("line {n:05} {}\n", "x".repeat(88)).into_bytes()
}

fn read_now(pipe: &mut std::fs::File, into: &mut Vec<u8>) {
    let mut chunk = [0u8; 65536];
    while let Ok(n) = pipe.read(&mut chunk) {
        if n == 0 {
            break;
        }
        into.extend_from_slice(&chunk[..n]);
    }
}

/// `(line numbers seen, lines dropped by the notices)` of the complete
/// lines of `bytes` (the last may still be arriving); panics on a torn one.
fn account(bytes: &[u8]) -> (Vec<usize>, u64) {
    let complete = bytes
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |end| end + 1);
    let text = String::from_utf8_lossy(&bytes[..complete]);
    let mut numbers = Vec::new();
    let mut dropped = 0;
    for l in text.lines() {
        if let Some(n) = l
            .strip_prefix("nodeinit: ")
            .and_then(|l| l.strip_suffix(" log lines dropped: the console did not keep up"))
        {
            dropped += n.parse::<u64>().unwrap();
        } else {
            let n = l
                .strip_prefix("line ")
                .unwrap_or_else(|| panic!("torn: {l:?}"));
            assert_eq!(l.len(), 99, "torn: {l:?}");
            numbers.push(n[..5].parse().unwrap());
        }
    }
    (numbers, dropped)
}

#[test]
fn a_line_is_written_at_once_while_the_console_keeps_up() {
    let (queue, mut pipe) = queue_on_a_small_pipe();
    queue.write_line(&line(0));
    let mut seen = Vec::new();
    read_now(&mut pipe, &mut seen);
    // In the pipe when write_line returned: no thread involved, so a crash
    // right after a line loses nothing.
    assert_eq!(seen, line(0));
    assert!(
        !queue.state().flusher,
        "a flusher started for a console that kept up"
    );
}

#[test]
fn lines_that_do_not_fit_are_dropped_whole_counted_and_the_rest_follow_in_order() {
    const LINES: usize = 2000;
    let (queue, mut pipe) = queue_on_a_small_pipe();
    // Nobody reads while the lines are written: every write must return.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for n in 0..LINES {
            queue.write_line(&line(n));
        }
        done.send(()).unwrap();
    });
    assert!(
        finished.recv_timeout(Duration::from_secs(20)).is_ok(),
        "write_line blocked on a pipe nobody reads"
    );
    // 4 KiB in the pipe and QUEUE_BYTES queued: 696 lines fit, the rest
    // is dropped (but the last notice, written once the queue empties).
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        read_now(&mut pipe, &mut seen);
        let (numbers, dropped) = account(&seen);
        if numbers.len() as u64 + dropped == LINES as u64 {
            assert!(dropped > 0, "nothing was dropped");
            assert!(numbers.windows(2).all(|w| w[0] < w[1]), "out of order");
            assert_eq!(numbers[0], 0);
            let fit = 4096 / 100 + QUEUE_BYTES / 100;
            assert!(
                numbers.len() >= fit - 2,
                "{} lines written, {fit} fit",
                numbers.len()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} lines and {dropped} dropped of {LINES}",
            numbers.len()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Caught up, the next line is written at once again after its notice.
    queue.flush(Duration::from_secs(5));
    queue.write_line(&line(LINES));
    std::thread::sleep(Duration::from_millis(50));
    let mut tail = Vec::new();
    read_now(&mut pipe, &mut tail);
    assert_eq!(tail, line(LINES));
}

#[test]
fn a_queue_set_by_another_process_is_not_used() {
    let (queue, mut pipe) = queue_on_a_small_pipe();
    // As a forked child sees its parent's state.
    queue.state().owner = std::process::id() + 1;
    assert!(LineQueue::target(&queue.state()).is_none());
    // Written blocking to this process's stderr instead, not to the pipe.
    queue.write_line(b"console_output test: this line goes to stderr\n");
    let mut seen = Vec::new();
    read_now(&mut pipe, &mut seen);
    assert_eq!(String::from_utf8_lossy(&seen), "");
}
