//! Issue 12, load: a worker under nodeinit's keeper has its persistent
//! holders cloned by a single-threaded spawner process
//! (`nodeinit_namespaces::holder::clone_persistent_holder`), not by itself.
//! Real processes throughout: this test plays the keeper (the worker is this
//! binary re-executed, with `NODEINIT_KEEPER_PID` set to our pid), so the
//! spawners and the holders are *our* children (`CLONE_PARENT`), as they are
//! the keeper's in production.
//!
//! Proven here: holders are children of the keeper, not of the spawner or
//! the worker; a spawner killed while idle is replaced and the request
//! works; a spawner killed while a request waits on it fails that request
//! with a `creation_failed` naming it, and the next request works on a new
//! spawner; the worker's death ends its spawners (EOF on their socket) and
//! leaves the holders alive; the next worker adopts them (the very same
//! namespaces) and ends them. Spare holders (`spare_holders`) made under a
//! keeper are no allocation's: they exit with the worker, are never
//! recorded or adopted, and a taken one is recorded and outlives it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::wire::*;

use nodeinit_tests::wait_until;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use nodeinit_handoff::protocol::{ErrorKind, Message};
use nodeinit_handoff::{HandoffServer, ReadyGate, ServerConfig};
use nodeinit_namespaces::holder::SPAWNER_NAME;
use nodeinit_unshare::persist::HolderStore;
use nodeinit_unshare::{UnshareBackend, UnshareConfig};

const TEST: &str = "spawners_fail_cleanly_and_holders_outlive_the_worker";
const WORKER_DIR: &str = "NODEINIT_TEST_SPAWNER_WORKER_DIR";

fn worker(dir: &Path, spare_holders: usize) -> ! {
    assert!(nodeinit_unshare::persist::persistence_enabled());
    let config = UnshareConfig {
        state_dir: dir.join("state"),
        spare_holders,
        ..UnshareConfig::default()
    };
    let backend = Arc::new(UnshareBackend::new(config, None));
    let server = HandoffServer::start(
        backend,
        ServerConfig {
            socket_path: dir.join("handoff.sock"),
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

/// `(ppid, comm)` of a live (not zombie) process.
fn parent_and_name(pid: i32) -> Option<(i32, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let name = stat[open + 1..close].to_owned();
    let mut rest = stat[close + 2..].split_whitespace();
    let state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    (state != "Z").then_some((ppid, name))
}

/// Our live children called `name`.
fn children_named(name: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| parent_and_name(*pid).is_some_and(|(ppid, n)| ppid == me && n == name))
        .collect();
    pids.sort_unstable();
    pids
}

fn kill_and_reap(pid: i32) {
    let pid = Pid::from_raw(pid);
    kill(pid, Signal::SIGKILL).unwrap();
    nix::sys::wait::waitpid(pid, None).unwrap();
}

/// Whether a thread of `pid` is blocked reading a `SOCK_SEQPACKET` socket
/// (the worker waiting for its spawner's answer; the server's own sockets
/// are read non-blocking, after epoll).
fn waits_on_a_spawner(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .any(|t| {
            std::fs::read_to_string(t.path().join("wchan"))
                .is_ok_and(|w| w == "__skb_wait_for_more_packets")
        })
}

fn holder_pid(state: &Path, id: &str) -> i32 {
    HolderStore::new(state)
        .load()
        .unwrap()
        .iter()
        .find(|r| r.allocation_id == id)
        .unwrap_or_else(|| panic!("no record of {id}"))
        .pid
}

fn granted_mnt(socket: &Path, id: &str) -> String {
    let conn = connect_to(socket);
    match reply_on(&conn, &request(id, &ALL, None)) {
        (Message::NamespaceResponse(r), fds) => {
            assert_eq!((r.allocation_id.as_str(), fds.len()), (id, 3));
            common::fd_link(fds[2].as_fd())
        }
        other => panic!("expected a namespace_response for {id}, got {other:?}"),
    }
}

/// Both tests play the keeper and count its children: one at a time.
static KEEPER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn keeper_role() -> std::sync::MutexGuard<'static, ()> {
    KEEPER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn spawners_fail_cleanly_and_holders_outlive_the_worker() {
    if let Some(dir) = std::env::var_os(WORKER_DIR) {
        worker(&PathBuf::from(dir), 0);
    }
    let _keeper = keeper_role();
    let tmp = tempfile::tempdir().unwrap();
    let (dir, state) = (tmp.path(), tmp.path().join("state"));
    let socket = dir.join("handoff.sock");
    let mut first = start_worker(dir);
    assert_eq!(
        children_named(SPAWNER_NAME),
        Vec::<i32>::new(),
        "spawners start lazily"
    );

    let mnt_a = granted_mnt(&socket, "job-a");
    let holder_a = holder_pid(&state, "job-a");
    let spawners = children_named(SPAWNER_NAME);
    assert_eq!(spawners.len(), 1, "{spawners:?}");
    // The keeper's child, not the spawner's or the worker's.
    assert_eq!(
        parent_and_name(holder_a),
        Some((std::process::id() as i32, "nodeinit-holder".to_owned()))
    );

    // Killed while idle: requests go on, the dead one is replaced when its
    // turn comes (requests take the spawner slots in turn: job-b starts
    // the second, job-b2 finds the first dead).
    kill_and_reap(spawners[0]);
    let mnt_b = granted_mnt(&socket, "job-b");
    let _ = granted_mnt(&socket, "job-b2");
    let replaced = children_named(SPAWNER_NAME);
    assert_eq!(replaced.len(), 2, "{replaced:?}");
    assert!(!replaced.contains(&spawners[0]), "{replaced:?}");
    assert_acked(&connect_to(&socket), "job-b2");

    // Killed while a request waits for it: that request fails, named.
    for pid in &replaced {
        kill(Pid::from_raw(*pid), Signal::SIGSTOP).unwrap();
    }
    let asking = {
        let socket = socket.clone();
        std::thread::spawn(move || error_on(&connect_to(&socket), &request("job-c", &ALL, None)))
    };
    wait_until("the request waits on a stopped spawner", || {
        waits_on_a_spawner(first.id())
    });
    for pid in &replaced {
        kill_and_reap(*pid);
    }
    let err = asking.join().unwrap();
    assert_eq!(err.kind, ErrorKind::CreationFailed, "{err:?}");
    assert!(
        replaced.iter().any(|pid| err.message == format!(
            "namespace creation failed: allocation job-c: the holder spawner (pid {pid}) exited before answering (was it killed?); a new one is started for the next request"
        )),
        "{err:?}"
    );
    // No holder was left behind for the failed request, and it works now.
    assert!(HolderStore::new(&state)
        .load()
        .unwrap()
        .iter()
        .all(|r| r.allocation_id != "job-c"));
    let mnt_c = granted_mnt(&socket, "job-c");
    let holders: Vec<i32> = ["job-a", "job-b", "job-c"]
        .iter()
        .map(|id| holder_pid(&state, id))
        .collect();
    assert_eq!(children_named("nodeinit-holder"), {
        let mut h = holders.clone();
        h.sort_unstable();
        h
    });

    // The worker dies: its spawners end (EOF), its holders live on.
    let last_spawners = children_named(SPAWNER_NAME);
    assert!(!last_spawners.is_empty());
    first.kill().unwrap();
    first.wait().unwrap();
    for pid in &last_spawners {
        let status = nix::sys::wait::waitpid(Pid::from_raw(*pid), None).unwrap();
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(Pid::from_raw(*pid), 0),
            "a spawner whose worker died exits by itself"
        );
    }
    for pid in &holders {
        assert!(
            parent_and_name(*pid).is_some(),
            "holder {pid} died with the worker"
        );
    }

    // The next worker adopts them: the very same namespaces.
    let mut second = start_worker(dir);
    assert_eq!(granted_mnt(&socket, "job-a"), mnt_a);
    assert_eq!(granted_mnt(&socket, "job-b"), mnt_b);
    assert_eq!(granted_mnt(&socket, "job-c"), mnt_c);
    let conn = connect_to(&socket);
    for id in ["job-a", "job-b", "job-c"] {
        assert_acked(&conn, id);
    }
    for pid in &holders {
        nix::sys::wait::waitpid(Pid::from_raw(*pid), None).unwrap();
    }
    assert!(HolderStore::new(&state).load().unwrap().is_empty());
    drop(conn);
    let spawners_now = children_named(SPAWNER_NAME);
    drop(second.stdin.take());
    assert!(second.wait().unwrap().success());
    for pid in spawners_now {
        nix::sys::wait::waitpid(Pid::from_raw(pid), None).unwrap();
    }
    assert_eq!(children_named("nodeinit-holder"), Vec::<i32>::new());
}

const SPARES_TEST: &str = "spare_holders_exit_with_the_worker_and_a_taken_one_stays";
const SPARES_WORKER_DIR: &str = "NODEINIT_TEST_SPARES_WORKER_DIR";

#[test]
fn spare_holders_exit_with_the_worker_and_a_taken_one_stays() {
    if let Some(dir) = std::env::var_os(SPARES_WORKER_DIR) {
        worker(&PathBuf::from(dir), 2);
    }
    let _keeper = keeper_role();
    let tmp = tempfile::tempdir().unwrap();
    let (dir, state) = (tmp.path(), tmp.path().join("state"));
    let socket = dir.join("handoff.sock");
    let mut first = common::worker_child::start(SPARES_TEST, SPARES_WORKER_DIR, dir);
    let _ = granted_mnt(&socket, "job-fresh");
    let fresh = holder_pid(&state, "job-fresh");
    // One allocation's holder and two spares, all the keeper's children.
    wait_until("two spares are made", || {
        children_named("nodeinit-holder").len() == 3
    });
    let spares: Vec<i32> = children_named("nodeinit-holder")
        .into_iter()
        .filter(|p| *p != fresh)
        .collect();
    let mnt_taken = granted_mnt(&socket, "job-spare");
    let taken = holder_pid(&state, "job-spare");
    assert!(spares.contains(&taken), "{taken} is not one of {spares:?}");
    wait_until("the pool refills", || {
        children_named("nodeinit-holder").len() == 4
    });
    let untaken: Vec<i32> = children_named("nodeinit-holder")
        .into_iter()
        .filter(|p| *p != fresh && *p != taken)
        .collect();
    assert_eq!(untaken.len(), 2, "{untaken:?}");
    // Only allocations are recorded.
    let mut recorded: Vec<String> = HolderStore::new(&state)
        .load()
        .unwrap()
        .into_iter()
        .map(|r| r.allocation_id)
        .collect();
    recorded.sort();
    assert_eq!(recorded, ["job-fresh", "job-spare"]);

    // The worker dies: the untaken spares exit by themselves (their commit
    // pipe closed unwritten), the two allocations' holders live on.
    let spawners = children_named(SPAWNER_NAME);
    first.kill().unwrap();
    first.wait().unwrap();
    for pid in &untaken {
        let status = nix::sys::wait::waitpid(Pid::from_raw(*pid), None).unwrap();
        assert!(
            matches!(
                status,
                nix::sys::wait::WaitStatus::Exited(..) | nix::sys::wait::WaitStatus::Signaled(..)
            ),
            "{status:?}"
        );
    }
    for pid in spawners {
        nix::sys::wait::waitpid(Pid::from_raw(pid), None).unwrap();
    }
    assert!(parent_and_name(fresh).is_some() && parent_and_name(taken).is_some());

    // The next worker adopts the two allocations, the very same namespaces.
    let mut second = common::worker_child::start(SPARES_TEST, SPARES_WORKER_DIR, dir);
    assert_eq!(granted_mnt(&socket, "job-spare"), mnt_taken);
    let conn = connect_to(&socket);
    for id in ["job-fresh", "job-spare"] {
        assert_acked(&conn, id);
    }
    for pid in [fresh, taken] {
        nix::sys::wait::waitpid(Pid::from_raw(pid), None).unwrap();
    }
    assert!(HolderStore::new(&state).load().unwrap().is_empty());
    drop(conn);
    // An adopted allocation's request creates nothing: no spare was made.
    assert_eq!(children_named("nodeinit-holder"), Vec::<i32>::new());
    let spawners_now = children_named(SPAWNER_NAME);
    drop(second.stdin.take());
    assert!(second.wait().unwrap().success());
    for pid in spawners_now {
        nix::sys::wait::waitpid(Pid::from_raw(pid), None).unwrap();
    }
}
