//! Clients that run as another user: the test binary re-executes itself (the
//! same test, in a peer role) with a real different uid, gid and
//! supplementary groups, so the server's `SO_PEERCRED`/`SO_PEERGROUPS`
//! checks see a genuine foreign peer.
//!
//! Roles: `exchange` sends each stdin line as one message and prints each
//! reply; `hold` opens N connections, prints `HELD`, and keeps them until
//! stdin closes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use nodeinit_handoff::protocol::{decode, Message};
use nodeinit_handoff::transport::{receive_message, send_message, Received};

const ROLE: &str = "NODEINIT_TEST_PEER_ROLE";
const SOCKET: &str = "NODEINIT_TEST_PEER_SOCKET";
const COUNT: &str = "NODEINIT_TEST_PEER_COUNT";

/// Who the peer process runs as.
#[derive(Debug, Clone)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Identity {
    pub fn user(uid: u32) -> Self {
        Self {
            uid,
            gid: uid,
            groups: Vec::new(),
        }
    }
}

/// Call first in every test that uses peers: in a peer process it plays
/// the role and exits; in the test process it returns.
pub fn play_role_if_asked() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let socket = std::env::var(SOCKET).unwrap();
    match role.as_str() {
        "exchange" => exchange(
            Path::new(&socket),
            std::env::var(COUNT).unwrap().parse().unwrap(),
        ),
        "hold" => hold(
            Path::new(&socket),
            std::env::var(COUNT).unwrap().parse().unwrap(),
        ),
        other => panic!("unknown peer role {other}"),
    }
    std::process::exit(0);
}

/// One reply as the peer saw it.
#[derive(Debug)]
pub enum PeerReply {
    Message(Message, usize),
    Closed,
}

fn receive_reply(conn: &OwnedFd) -> String {
    // A refused peer's first recv may report the reset before the queued reason.
    for _ in 0..2 {
        match receive_message(conn) {
            Ok(Received::Message { bytes, fds }) => {
                return format!("REPLY {} {}", fds.len(), String::from_utf8(bytes).unwrap())
            }
            Ok(Received::Closed) => return "CLOSED".into(),
            Ok(Received::TooLarge { len }) => panic!("oversized reply {len}"),
            Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => continue,
            Err(e) => return format!("ERROR {e}"),
        }
    }
    "CLOSED".into()
}

fn exchange(socket: &Path, fds_per_message: usize) {
    let conn = super::wire::connect_to(socket);
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let fds: Vec<OwnedFd> = (0..fds_per_message)
            .map(|_| std::fs::File::open("/dev/null").unwrap().into())
            .collect();
        // EPIPE: the server refused us and closed; its reason is queued.
        let _ = send_message(&conn, line.as_bytes(), &fds);
        println!("{}", receive_reply(&conn));
    }
}

fn hold(socket: &Path, count: usize) {
    let conns: Vec<OwnedFd> = (0..count)
        .map(|_| super::wire::connect_to(socket))
        .collect();
    println!("HELD {}", conns.len());
    std::io::stdout().flush().unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest);
}

fn spawn(test: &str, who: &Identity, socket: &Path, role: &str, count: usize) -> Child {
    let groups: Vec<libc::gid_t> = who.groups.clone();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(SOCKET, socket)
        .env(COUNT, count.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let (uid, gid) = (who.uid, who.gid);
    // SAFETY: three syscalls on data prepared before fork; groups first,
    // while still root.
    unsafe {
        command.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().unwrap()
}

/// Run `test` again as `who`, send `messages` on one connection, return the replies.
pub fn exchange_as(
    test: &str,
    who: &Identity,
    socket: &Path,
    messages: &[Vec<u8>],
) -> Vec<PeerReply> {
    exchange_with_fds_as(test, who, socket, messages, 0)
}

/// [`exchange_as`], each message carrying `fds` FDs (of `/dev/null`).
pub fn exchange_with_fds_as(
    test: &str,
    who: &Identity,
    socket: &Path,
    messages: &[Vec<u8>],
    fds: usize,
) -> Vec<PeerReply> {
    let mut child = spawn(test, who, socket, "exchange", fds);
    {
        let mut stdin = child.stdin.take().unwrap();
        for m in messages {
            stdin.write_all(m).unwrap();
            stdin.write_all(b"\n").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "peer {who:?} failed: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            // libtest prints "running 1 test" and "test <name> ... " around the role.
            let l = l.rsplit_once("test ").map_or(l, |_| l);
            if let Some(idx) = l.find("REPLY ") {
                let rest = &l[idx + 6..];
                let (fds, json) = rest.split_once(' ').unwrap();
                Some(PeerReply::Message(
                    decode(json.as_bytes()).unwrap(),
                    fds.parse().unwrap(),
                ))
            } else if l.ends_with("CLOSED") {
                Some(PeerReply::Closed)
            } else if let Some(idx) = l.find("ERROR ") {
                panic!("peer error: {}", &l[idx..])
            } else {
                None
            }
        })
        .collect()
}

/// A peer process holding `count` connections until dropped.
pub struct Holder {
    child: Child,
}

impl Holder {
    pub fn start(test: &str, who: &Identity, socket: &Path, count: usize) -> Self {
        let mut child = spawn(test, who, socket, "hold", count);
        super::await_ready_line(&mut child, "HELD ", "the holder");
        Self { child }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
