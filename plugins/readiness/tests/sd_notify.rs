//! sd_notify against a real datagram socket. Alone in its binary because it
//! sets `NOTIFY_SOCKET` in the process environment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::UnixDatagram;

use nodeinit_readiness::{FileReadiness, ReadinessOptions, ReadinessProvider};

#[test]
fn ready_and_failure_reach_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let listener_path = dir.path().join("notify");
    let listener = UnixDatagram::bind(&listener_path).unwrap();
    std::env::set_var("NOTIFY_SOCKET", &listener_path);
    let gate = FileReadiness::new(ReadinessOptions {
        file: dir.path().join("ready"),
        socket: false,
        ..ReadinessOptions::default()
    })
    .unwrap();
    gate.signal_ready("nid9").unwrap();
    let mut buf = [0u8; 256];
    let n = listener.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1\nSTATUS=node nid9 ready");

    gate.signal_failed("late failure").unwrap();
    let n = listener.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STATUS=boot failed: late failure");

    let abstract_name = format!("nodeinit-test-{}", std::process::id());
    let abstract_listener = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&abstract_name).unwrap();
        UnixDatagram::bind_addr(&addr).unwrap()
    };
    std::env::set_var("NOTIFY_SOCKET", format!("@{abstract_name}"));
    gate.signal_ready("nid9").unwrap();
    let n = abstract_listener.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1\nSTATUS=node nid9 ready");

    std::env::set_var("NOTIFY_SOCKET", dir.path().join("nobody-listens"));
    let err = gate.signal_ready("nid9").unwrap_err().to_string();
    assert!(
        err.contains("send to NOTIFY_SOCKET") && err.contains("nobody-listens"),
        "{err}"
    );
}
