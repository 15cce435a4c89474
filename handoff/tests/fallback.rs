//! The consumer client without a server: it creates working namespaces
//! itself (WI4) and says so; with fallback disabled it reports the socket
//! as unavailable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::fd::{AsRawFd, OwnedFd};

use hpc_node::{NamespaceConsumer, NamespaceError, NamespaceRequest, NamespaceType};
use nodeinit_handoff::client::ClientConfig;
use nodeinit_handoff::{GrantSource, HandoffClient};

fn request(id: &str, uenv: Option<&str>) -> NamespaceRequest {
    NamespaceRequest {
        allocation_id: id.into(),
        namespaces: vec![NamespaceType::Pid, NamespaceType::Net, NamespaceType::Mount],
        uenv_image: uenv.map(str::to_owned),
    }
}

fn link(fd: &OwnedFd) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn without_a_server_the_client_creates_working_namespaces_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("no-server.sock");
    let client = HandoffClient::new(ClientConfig {
        socket_path: socket.clone(),
        ..ClientConfig::default()
    });
    let granted = client.request(&request("fallback-1", None)).unwrap();
    match &granted.source {
        GrantSource::Fallback { reason } => {
            assert!(
                reason.contains(socket.to_str().unwrap()) && reason.contains("No such file"),
                "{reason}"
            );
        }
        GrantSource::Provider => panic!("there is no server; the grant must be a fallback"),
    }
    let links: Vec<String> = granted.fds.iter().map(link).collect();
    for (l, prefix) in links.iter().zip(["pid:[", "net:[", "mnt:["]) {
        assert!(l.starts_with(prefix), "{l}");
    }
    assert_ne!(
        links[1],
        std::fs::read_link("/proc/self/ns/net")
            .unwrap()
            .to_string_lossy()
    );
    let holder = granted.local_holder_pid().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{holder}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert_eq!(
        nspid.split_whitespace().last(),
        Some("1"),
        "the holder is PID 1 of its namespace: {nspid}"
    );
    let out = nodeinit_tests::run_in_namespaces(
        &granted.fds,
        "sh -c 'readlink /proc/self/ns/pid; tail -n +3 /proc/self/net/dev | cut -d: -f1'",
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(links[0].as_str()));
    assert_eq!(lines.map(str::trim).collect::<Vec<_>>(), vec!["lo"]);

    client.release(granted).unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{holder}")).exists(),
        "holder reaped, no zombie"
    );
}

#[test]
fn the_trait_keeps_the_fds_and_fallback_can_be_disabled() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("no-server.sock");
    let client = HandoffClient::new(ClientConfig {
        socket_path: socket.clone(),
        ..ClientConfig::default()
    });
    let response = client
        .request_namespaces(&request("trait-1", None))
        .unwrap();
    assert_eq!(response.fd_types.len(), 3);
    let granted = client.take_granted("trait-1").unwrap();
    assert_eq!(granted.fds.len(), 3);
    client.release(granted).unwrap();

    let strict = HandoffClient::new(ClientConfig {
        socket_path: socket,
        fallback: false,
        ..ClientConfig::default()
    });
    match strict.request(&request("strict-1", None)) {
        Err(NamespaceError::SocketUnavailable { reason }) => {
            assert!(reason.contains("fallback disabled"), "{reason}")
        }
        other => panic!("expected SocketUnavailable, got {other:?}"),
    }
    match client.request(&request("uenv-1", Some("base.sqfs"))) {
        Err(NamespaceError::CreationFailed { reason }) => {
            assert!(
                reason.contains("with_fallback_mounts") && reason.contains("base.sqfs"),
                "{reason}"
            )
        }
        other => panic!("expected CreationFailed, got {other:?}"),
    }
    match client.request(&request("../etc", None)) {
        Err(NamespaceError::CreationFailed { reason }) => {
            assert!(reason.contains("\"../etc\" must match"), "{reason}")
        }
        other => panic!("expected CreationFailed, got {other:?}"),
    }
}
