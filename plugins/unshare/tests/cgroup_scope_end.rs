//! Issue 11 item 6 (WI5): when an allocation's cgroup scope goes from
//! populated to empty, the server releases the allocation through the
//! provider and tells the connection that requested it with an unsolicited
//! `allocation_ended`. A real scope is made under the host's cgroup2 mount
//! (a child cgroup of our own), a process is put in it and killed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::wire::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;

use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use nodeinit_handoff::protocol::{encode, CgroupScope, ErrorKind, Message, WireRequest};
use nodeinit_handoff::transport::{receive_message, Received};
use nodeinit_handoff::{HandoffServer, ReadyGate, ServerConfig};
use nodeinit_unshare::{UnshareBackend, UnshareConfig};

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
        let root = mount.join(format!("nodeinit-wi5-test-{}", std::process::id()));
        std::fs::create_dir_all(root.join("workload.slice")).unwrap();
        Self(root)
    }

    fn scope(&self, name: &str) -> PathBuf {
        let scope = self.0.join("workload.slice").join(name);
        std::fs::create_dir(&scope).unwrap();
        scope
    }
}

impl Drop for CgroupRoot {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.0.join("workload.slice")) {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir(e.path());
            }
        }
        let _ = std::fs::remove_dir(self.0.join("workload.slice"));
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn sleeper_in(scope: &Path) -> Child {
    let child = Command::new("sleep").arg("1000").spawn().unwrap();
    std::fs::write(scope.join("cgroup.procs"), child.id().to_string()).unwrap();
    child
}

fn expect_allocation_ended(conn: &std::os::fd::OwnedFd, id: &str) {
    match receive_message(conn).unwrap() {
        Received::Message { bytes, fds } => {
            assert!(fds.is_empty());
            match nodeinit_handoff::protocol::decode(&bytes).unwrap() {
                Message::AllocationEnded { allocation_id } => assert_eq!(allocation_id, id),
                other => panic!("expected allocation_ended for {id}, got {other:?}"),
            }
        }
        other => panic!("expected allocation_ended for {id}, got {other:?}"),
    }
}

#[test]
fn an_emptied_cgroup_scope_ends_its_allocation() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_test_writer()
        .try_init();
    let cgroups = CgroupRoot::new();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("handoff.sock");
    let backend = Arc::new(UnshareBackend::new(UnshareConfig::default(), None));
    let config = ServerConfig {
        socket_path: path.clone(),
        cgroup_root: Some(cgroups.0.clone()),
        ..ServerConfig::default()
    };
    let server = HandoffServer::start(backend.clone(), config, ReadyGate::opened()).unwrap();
    let conn = connect_to(&path);
    setsockopt(&conn, sockopt::ReceiveTimeout, &TimeVal::new(30, 0)).unwrap();

    // The default scope, workload.slice/<id>.scope, populated at request time.
    let scope = cgroups.scope("wi5-1.scope");
    let mut worker = sleeper_in(&scope);
    assert_granted(&conn, "wi5-1");
    // A named scope that does not exist is refused before anything is created.
    let missing = encode(&Message::NamespaceRequest(WireRequest {
        request: hpc_node::NamespaceRequest {
            allocation_id: "wi5-x".into(),
            namespaces: ALL.to_vec(),
            uenv_image: None,
        },
        cgroup_scope: Some(CgroupScope::parse("workload.slice/none.scope").unwrap()),
    }));
    assert_error(
        &error_on(&conn, &missing),
        ErrorKind::CreationFailed,
        "cgroup_scope \"workload.slice/none.scope\" does not exist",
    );
    // A named scope still empty at request time: it ends only after it was populated.
    let late = cgroups.scope("late.scope");
    let named = encode(&Message::NamespaceRequest(WireRequest {
        request: hpc_node::NamespaceRequest {
            allocation_id: "wi5-2".into(),
            namespaces: ALL.to_vec(),
            uenv_image: None,
        },
        cgroup_scope: Some(CgroupScope::parse("workload.slice/late.scope").unwrap()),
    }));
    match reply_on(&conn, &named) {
        (Message::NamespaceResponse(r), fds) => {
            assert_eq!(r.allocation_id, "wi5-2");
            assert_eq!(fds.len(), 3);
        }
        other => panic!("expected a namespace_response, got {other:?}"),
    }
    assert_eq!(
        backend.live_allocations(),
        vec!["wi5-1".to_owned(), "wi5-2".to_owned()]
    );

    // The last process of wi5-1's scope exits: released, and we are told.
    worker.kill().unwrap();
    worker.wait().unwrap();
    expect_allocation_ended(&conn, "wi5-1");
    assert_eq!(backend.live_allocations(), vec!["wi5-2".to_owned()]);
    assert_error(
        &error_on(&conn, &ended("wi5-1")),
        ErrorKind::AllocationNotFound,
        "wi5-1",
    );

    let mut late_worker = sleeper_in(&late);
    late_worker.kill().unwrap();
    late_worker.wait().unwrap();
    expect_allocation_ended(&conn, "wi5-2");
    assert!(backend.live_allocations().is_empty());
    assert_eq!(server.live_allocations(), 0);
    // The connection goes on.
    assert_granted(&conn, "after-wi5");
    assert_acked(&conn, "after-wi5");
    server.shutdown();
}
