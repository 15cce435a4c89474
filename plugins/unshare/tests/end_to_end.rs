//! End to end, server and client in separate processes: the test binary
//! re-executes itself to run the handoff server (the same test in a server role)
//! with the real unshare backend and a loop-mounted squashfs image, and acts
//! as the consumer client itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;

use hpc_node::{NamespaceRequest, NamespaceType};
use nodeinit_handoff::client::ClientConfig;
use nodeinit_handoff::{GrantSource, HandoffClient, HandoffServer, ReadyGate, ServerConfig};
use nodeinit_unshare::{UnshareBackend, UnshareConfig};

const ROLE_ENV: &str = "NODEINIT_E2E_SERVER_DIR";

/// The server role of `namespaces_reach_a_client_in_another_process`: that
/// test re-run in a child process with `ROLE_ENV` set.
fn server_process(dir: &str) {
    let dir = PathBuf::from(dir);
    let mounts = Arc::new(common::TestMounts::new(
        &dir.join("images"),
        &dir.join("uenv"),
    ));
    let backend = Arc::new(UnshareBackend::new(
        UnshareConfig::default(),
        Some(mounts.clone()),
    ));
    let config = ServerConfig {
        socket_path: dir.join("handoff.sock"),
        ..ServerConfig::default()
    };
    let server = HandoffServer::start(backend.clone(), config, ReadyGate::opened()).unwrap();
    println!("SERVER-READY");
    std::io::stdout().flush().unwrap();
    // Serve until the test closes our stdin.
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).unwrap() > 0 {
        line.clear();
    }
    server.shutdown();
    assert_eq!(
        backend.live_allocations(),
        Vec::<String>::new(),
        "allocations left at shutdown"
    );
}

/// Kills the server process if the test fails before shutting it down.
struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl ServerProcess {
    fn start(dir: &Path) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "namespaces_reach_a_client_in_another_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE_ENV, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        common::await_ready_line(&mut child, "SERVER-READY", "the server process");
        Self { child, stdin }
    }

    fn stop(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "server process failed: {status}");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn namespaces_reach_a_client_in_another_process() {
    if let Ok(dir) = std::env::var(ROLE_ENV) {
        server_process(&dir);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("images")).unwrap();
    common::make_image(&tmp.path().join("images"), "hello.sqfs");
    let user_env_existed = Path::new("/user-environment").exists();
    let server = ServerProcess::start(tmp.path());

    let client = HandoffClient::new(ClientConfig {
        socket_path: tmp.path().join("handoff.sock"),
        fallback: false,
        ..ClientConfig::default()
    });
    let granted = client
        .request(&NamespaceRequest {
            allocation_id: "e2e-1".into(),
            namespaces: vec![NamespaceType::Pid, NamespaceType::Net, NamespaceType::Mount],
            uenv_image: Some("hello.sqfs".into()),
        })
        .unwrap();
    assert_eq!(granted.source, GrantSource::Provider);
    assert_eq!(
        granted.response.fd_types,
        vec![NamespaceType::Pid, NamespaceType::Net, NamespaceType::Mount]
    );
    assert_eq!(
        granted.response.uenv_mount_path.as_deref(),
        Some("/user-environment")
    );
    assert_eq!(granted.fds.len(), 3);
    let links: Vec<String> = granted
        .fds
        .iter()
        .map(|fd| common::fd_link(fd.as_fd()))
        .collect();
    for (link, prefix) in links.iter().zip(["pid:[", "net:[", "mnt:["]) {
        assert!(
            link.starts_with(prefix),
            "{link} should start with {prefix}"
        );
    }
    let own_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(
        links[1],
        own_net.to_string_lossy(),
        "the net namespace must be new"
    );

    // A child that joins the namespaces sees the image and lives under the holder.
    let out = nodeinit_tests::run_in_namespaces(
        &granted.fds,
        "cat /user-environment/hello.txt; sh -c 'readlink /proc/self/ns/pid; grep NSpid /proc/self/status; cat /proc/self/net/dev | tail -n +3 | cut -d: -f1'",
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(common::IMAGE_FILE_CONTENT.trim_end()));
    assert_eq!(
        lines.next(),
        Some(links[0].as_str()),
        "grandchild is in the granted PID namespace"
    );
    let nspid: Vec<&str> = lines.next().unwrap().split_whitespace().skip(1).collect();
    assert_eq!(
        nspid.len(),
        2,
        "grandchild has a pid in the host and one in the new namespace: {nspid:?}"
    );
    assert_eq!(
        lines.map(str::trim).collect::<Vec<_>>(),
        vec!["lo"],
        "only loopback in the new net namespace"
    );
    let holder = common::pid_namespace_init(&links[0])
        .expect("the holder is PID 1 of the granted PID namespace");
    assert!(
        common::process_state(holder).unwrap().starts_with('S'),
        "holder sleeps (reaping)"
    );
    let mount_point = tmp.path().join("uenv/hello");
    let mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&format!(" {} ", mount_point.display()))
    };
    assert!(
        mounted(),
        "the image is mounted in the host namespace while the allocation lives"
    );
    if !user_env_existed {
        assert!(
            !Path::new("/user-environment").exists(),
            "the host root must not get /user-environment"
        );
    }

    // A duplicate request returns the same namespaces.
    let again = client
        .request(&NamespaceRequest {
            allocation_id: "e2e-1".into(),
            namespaces: vec![NamespaceType::Pid, NamespaceType::Net, NamespaceType::Mount],
            uenv_image: Some("hello.sqfs".into()),
        })
        .unwrap();
    let again_links: Vec<String> = again
        .fds
        .iter()
        .map(|fd| common::fd_link(fd.as_fd()))
        .collect();
    assert_eq!(again_links, links);
    drop(again);

    // allocation_ended: holder killed and reaped (no zombie), mount released.
    client.release(granted).unwrap();
    assert_eq!(
        common::process_state(holder),
        None,
        "holder {holder} must be gone, not a zombie"
    );
    assert!(
        !mounted(),
        "the image must be unmounted once the allocation ended"
    );
    let err = client.end_allocation("e2e-1").unwrap_err();
    assert!(
        matches!(err, hpc_node::NamespaceError::AllocationNotFound { ref allocation_id } if allocation_id == "e2e-1"),
        "{err}"
    );
    server.stop();
}
