//! Issue 12 item 5 (file descriptors): the server raises `RLIMIT_NOFILE`,
//! and when it runs out of FDs anyway it backs off instead of spinning on
//! `accept`, says so in one rate-limited line, and serves the waiting
//! clients once FDs are free again.
//!
//! Before the fix, at `EMFILE` the accept loop spun: 199 CPU ticks in 2 s
//! and 377,213 log lines (49 MB) on the console, and new clients timed out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::wire::*;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nodeinit_handoff::{HandoffServer, ReadyGate, ServerConfig};
use nodeinit_unshare::{UnshareBackend, UnshareConfig};

const ROLE_ENV: &str = "NODEINIT_FD_EXHAUSTION_SERVER";
const TEST: &str = "out_of_fds_the_server_backs_off_logs_once_and_recovers";
const SERVER_NOFILE: u64 = 64;
const EMFILE_LINE: &str = "accept on the handoff socket failed";

#[test]
fn raise_nofile_limit_lifts_the_soft_limit_to_the_hard_one() {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, 256.min(hard), hard).unwrap();
    assert_eq!(
        nodeinit_handoff::raise_nofile_limit().unwrap(),
        (hard, hard)
    );
    assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
}

/// The server role: a hard FD limit of 64, logs to stderr, serve until stdin closes.
fn server_process(dir: &Path) {
    setrlimit(Resource::RLIMIT_NOFILE, SERVER_NOFILE, SERVER_NOFILE).unwrap();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let backend = Arc::new(UnshareBackend::new(UnshareConfig::default(), None));
    let config = ServerConfig {
        socket_path: dir.join("handoff.sock"),
        max_connections: 1000,
        ..ServerConfig::default()
    };
    let server = HandoffServer::start(backend, config, ReadyGate::opened()).unwrap();
    println!("SERVER-READY");
    std::io::stdout().flush().unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest);
    server.shutdown();
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15; after "pid (comm)" they are the 12th and 13th.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn log_lines(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

fn start_server(dir: &Path, log: &Path) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .unwrap();
    common::await_ready_line(&mut child, "SERVER-READY", "the server");
    child
}

#[test]
fn out_of_fds_the_server_backs_off_logs_once_and_recovers() {
    if let Some(dir) = std::env::var_os(ROLE_ENV) {
        return server_process(&PathBuf::from(dir));
    }
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("server.log");
    let mut server = start_server(tmp.path(), &log);
    let socket = tmp.path().join("handoff.sock");
    // More connections than the server has FDs: the rest wait in the backlog.
    let mut conns: Vec<OwnedFd> = (0..100).map(|_| connect_to(&socket)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while log_lines(&log, EMFILE_LINE) == 0 {
        assert!(
            Instant::now() < deadline,
            "the server never reported EMFILE"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Stay out of FDs for 2 s: the server must not spin or flood its log.
    let ticks_before = cpu_ticks(server.id());
    std::thread::sleep(Duration::from_secs(2));
    let ticks = cpu_ticks(server.id()) - ticks_before;
    assert_eq!(log_lines(&log, EMFILE_LINE), 1, "one rate-limited line");
    assert!(
        ticks < 40,
        "the server burnt {ticks} CPU ticks in 2 s while out of FDs"
    );
    let line = std::fs::read_to_string(&log).unwrap();
    let line = line.lines().find(|l| l.contains(EMFILE_LINE)).unwrap();
    assert!(
        line.contains("Too many open files") || line.contains("EMFILE"),
        "{line}"
    );
    assert!(line.contains("rlimit_nofile=64/64"), "{line}");
    // Free FDs: the clients still waiting (accepted late) are served.
    conns.drain(..70);
    for conn in &conns {
        assert_granted(conn, "after-emfile");
        assert_acked(conn, "after-emfile");
    }
    drop(conns);
    drop(server.stdin.take());
    let status = server.wait().unwrap();
    assert!(
        status.success(),
        "{status:?}: {}",
        std::fs::read_to_string(&log).unwrap()
    );
}
