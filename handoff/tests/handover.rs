//! A reload loses nothing: `HandoffServer::hand_over` gives the open
//! connections (with their peers and WI5 subscriptions) to a successor
//! serving the same listener, through `into_parts`/`from_parts` as the
//! host's keeper carries them between worker processes.
//!
//! Before the handover, a reload drained the old server for at most a
//! timeout and closed what was still open: a request written but not read
//! yet was lost (the client read end-of-file), and a WI5 client was cut off.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hpc_node::{
    NamespaceError, NamespaceProvider, NamespaceRequest, NamespaceResponse, NamespaceType,
};
use nodeinit_handoff::protocol::{decode, encode, CgroupScope, Message, WireRequest};
use nodeinit_handoff::server::handover::Handover;
use nodeinit_handoff::transport::{receive_message, send_message, Received};
use nodeinit_handoff::{
    HandoffListener, HandoffServer, NamespaceFdProvider, ReadyGate, ServerConfig,
};

/// A provider whose allocations are names in a set; each carries this
/// process's network namespace as its one FD.
#[derive(Default)]
struct Names(Mutex<BTreeSet<String>>);

impl NamespaceProvider for Names {
    fn create_namespaces(&self, r: &NamespaceRequest) -> Result<NamespaceResponse, NamespaceError> {
        self.0.lock().unwrap().insert(r.allocation_id.clone());
        Ok(NamespaceResponse {
            allocation_id: r.allocation_id.clone(),
            fd_types: vec![NamespaceType::Net],
            uenv_mount_path: None,
        })
    }
    fn release_namespaces(&self, id: &str) -> Result<(), NamespaceError> {
        self.0.lock().unwrap().remove(id);
        Ok(())
    }
}

impl NamespaceFdProvider for Names {
    fn namespace_fds(&self, _: &str) -> Result<Vec<OwnedFd>, NamespaceError> {
        Ok(vec![std::fs::File::open("/proc/self/ns/net")
            .unwrap()
            .into()])
    }
}

fn connect_to(path: &Path) -> OwnedFd {
    nodeinit_tests::connect_seqpacket(path, std::time::Duration::from_secs(30))
}

fn request(id: &str, scope: Option<&str>) -> Vec<u8> {
    encode(&Message::NamespaceRequest(WireRequest {
        request: NamespaceRequest {
            allocation_id: id.into(),
            namespaces: vec![NamespaceType::Net],
            uenv_image: None,
        },
        cgroup_scope: scope.map(|s| CgroupScope::parse(s).unwrap()),
    }))
}

fn send(conn: &OwnedFd, bytes: &[u8]) {
    let no_fds: [OwnedFd; 0] = [];
    send_message(conn, bytes, &no_fds).unwrap();
}

/// The next message on `conn`, or what came instead.
fn next(conn: &OwnedFd) -> Result<(Message, usize), String> {
    match receive_message(conn) {
        Ok(Received::Message { bytes, fds }) => Ok((decode(&bytes).unwrap(), fds.len())),
        other => Err(format!("{other:?}")),
    }
}

fn granted(conn: &OwnedFd, id: &str) {
    match next(conn) {
        Ok((Message::NamespaceResponse(r), 1)) => assert_eq!(r.allocation_id, id),
        other => panic!("expected the namespace_response for {id} with one FD, got {other:?}"),
    }
}

/// A listener and the config it was bound with; servers get clones of it,
/// as each worker gets the keeper's.
struct Socket {
    listener: HandoffListener,
    config: ServerConfig,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Socket {
    fn new(cgroup_root: Option<PathBuf>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handoff.sock");
        let config = ServerConfig {
            socket_path: path.clone(),
            cgroup_root,
            ..ServerConfig::default()
        };
        let listener = HandoffListener::bind(&config).unwrap();
        Self {
            listener,
            config,
            path,
            _dir: dir,
        }
    }

    fn serve(&self, provider: &Arc<Names>) -> HandoffServer {
        let fd = self.listener.try_clone_fd().unwrap();
        HandoffServer::serve(
            provider.clone(),
            HandoffListener::inherited(fd, self.path.clone()),
            self.config.clone(),
            ReadyGate::opened(),
        )
        .unwrap()
    }
}

/// Hand `old` over to a new server, through the record and socket split a
/// trip between processes takes.
fn reload(socket: &Socket, provider: &Arc<Names>, old: HandoffServer) -> HandoffServer {
    let (record, fds) = old.hand_over().into_parts();
    let record = serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
    let new = socket.serve(provider);
    new.adopt(Handover::from_parts(record, fds).unwrap());
    new
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn a_request_written_during_a_reload_is_always_answered() {
    // Reproduced before the handover, with `drain` (then the only way, here
    // with a 10 ms timeout) in the same loop: a long-lived connection was
    // closed by every reload (its request lost in 200 of 200 rounds), and a
    // connection opened for the one request lost it in 3 of 200 rounds (the
    // request arrived after the old server's last read).
    const ROUNDS: usize = 200;
    let socket = Socket::new(None);
    let provider = Arc::new(Names::default());
    let mut server = Some(socket.serve(&provider));
    let conn = connect_to(&socket.path);
    send(&conn, &request("warm", None));
    granted(&conn, "warm");
    let fds_before = open_fds();
    for round in 0..ROUNDS {
        let id = format!("round-{round}");
        let bytes = request(&id, None);
        // The request races the reload: written from another thread while
        // the old server hands over and the new one adopts.
        std::thread::scope(|s| {
            let writer = s.spawn(|| send(&conn, &bytes));
            let old = server.take().unwrap();
            server = Some(reload(&socket, &provider, old));
            writer.join().unwrap();
        });
        match next(&conn) {
            Ok((Message::NamespaceResponse(r), 1)) => assert_eq!(r.allocation_id, id),
            other => panic!("round {round}: expected the reply to {id}, got {other:?}"),
        }
    }
    assert_eq!(
        provider.0.lock().unwrap().len(),
        ROUNDS + 1,
        "every request reached the provider once"
    );
    server.take().unwrap().shutdown();
    assert!(
        open_fds() <= fds_before,
        "no descriptor left behind by {ROUNDS} handovers"
    );
}

const CGROUP2: &str = "/sys/fs/cgroup/unified";

/// A cgroup tree of our own below the cgroup2 mount, removed on drop.
struct CgroupRoot(PathBuf);

impl CgroupRoot {
    fn new() -> Self {
        let mount = if Path::new(CGROUP2).join("cgroup.procs").exists() {
            PathBuf::from(CGROUP2)
        } else {
            PathBuf::from("/sys/fs/cgroup")
        };
        let root = mount.join(format!("nodeinit-handover-test-{}", std::process::id()));
        std::fs::create_dir_all(root.join("workload.slice/h.scope")).unwrap();
        Self(root)
    }
}

impl Drop for CgroupRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(self.0.join("workload.slice/h.scope"));
        let _ = std::fs::remove_dir(self.0.join("workload.slice"));
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_wi5_client_keeps_its_connection_and_hears_allocation_ended_from_the_successor() {
    let cgroups = CgroupRoot::new();
    let socket = Socket::new(Some(cgroups.0.clone()));
    let provider = Arc::new(Names::default());
    let old = socket.serve(&provider);
    let conn = connect_to(&socket.path);
    let mut sleeper = sleeper_in(&cgroups);
    send(&conn, &request("wi5-h", Some("workload.slice/h.scope")));
    granted(&conn, "wi5-h");

    let new = reload(&socket, &provider, old);
    // The successor owns the allocation for the same connection: the scope
    // empties, the new server releases it and tells this very connection.
    kill(&mut sleeper);
    expect_ended(&conn, "wi5-h");
    assert!(provider.0.lock().unwrap().is_empty());
    assert_eq!(new.live_allocations(), 0);
    // The same connection goes on with the new server.
    send(&conn, &request("after", None));
    granted(&conn, "after");

    // The scope of a second allocation empties while no server watches
    // (between hand-over and adoption): the successor still ends it.
    let mut sleeper = sleeper_in(&cgroups);
    send(&conn, &request("wi5-gap", Some("workload.slice/h.scope")));
    granted(&conn, "wi5-gap");
    let (record, fds) = new.hand_over().into_parts();
    kill(&mut sleeper);
    let last = socket.serve(&provider);
    last.adopt(Handover::from_parts(record, fds).unwrap());
    expect_ended(&conn, "wi5-gap");
    assert_eq!(
        *provider.0.lock().unwrap(),
        BTreeSet::from(["after".to_owned()])
    );
    assert_eq!(last.active_connections(), 1);
    last.shutdown();
}

fn sleeper_in(cgroups: &CgroupRoot) -> std::process::Child {
    let sleeper = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    std::fs::write(
        cgroups.0.join("workload.slice/h.scope/cgroup.procs"),
        sleeper.id().to_string(),
    )
    .unwrap();
    sleeper
}

fn kill(sleeper: &mut std::process::Child) {
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

fn expect_ended(conn: &OwnedFd, id: &str) {
    match next(conn) {
        Ok((Message::AllocationEnded { allocation_id }, 0)) => assert_eq!(allocation_id, id),
        other => panic!("expected allocation_ended for {id} from the new server, got {other:?}"),
    }
}
