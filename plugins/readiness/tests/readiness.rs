//! Readiness backend against the real kernel: inotify, unix sockets, files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hpc_node::{ReadinessError, ReadinessGate};
use nodeinit_readiness::{FileReadiness, ReadinessOptions, ReadinessProvider};

fn options(dir: &Path) -> ReadinessOptions {
    ReadinessOptions {
        file: dir.join("pact/ready"),
        write_file: true,
        socket: true,
        socket_path: dir.join("pact/ready.sock"),
        sd_notify: false,
    }
}

/// Wait (bounded) until thread `tid` of this process is blocked in poll/ppoll,
/// i.e. the waiter is parked in the kernel, not spinning.
fn wait_until_parked_in_poll(tid: i32) {
    const SYS_POLL: &str = "7";
    const SYS_PPOLL: &str = "271";
    let path = format!("/proc/self/task/{tid}/syscall");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let nr = text.split_whitespace().next().unwrap_or("");
        if nr == SYS_POLL || nr == SYS_PPOLL {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "waiter never blocked in poll: {path} = {text:?}"
        );
        std::thread::yield_now();
    }
}

fn gettid() -> i32 {
    nix::unistd::gettid().as_raw()
}

#[test]
fn wait_returns_when_another_process_writes_the_file_even_before_its_directory_exists() {
    let dir = tempfile::tempdir().unwrap();
    let gate = FileReadiness::new(options(dir.path())).unwrap();
    assert!(!gate.is_ready());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            tx.send(gettid()).unwrap();
            // No timeout: only an inotify event can end this wait.
            gate.wait_ready_timeout(None)
        });
        wait_until_parked_in_poll(rx.recv().unwrap());
        let pact_dir = dir.path().join("pact");
        let status = Command::new("sh")
            .arg("-c")
            .arg(r#"mkdir "$1" && printf nid7 > "$1/.tmp" && mv "$1/.tmp" "$1/ready""#)
            .arg("sh")
            .arg(&pact_dir)
            .status()
            .unwrap();
        assert!(status.success());
        waiter.join().unwrap().unwrap();
    });
    assert!(gate.is_ready());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pact/ready")).unwrap(),
        "nid7"
    );
}

#[test]
fn wait_times_out_with_timeout_error() {
    let dir = tempfile::tempdir().unwrap();
    let gate = FileReadiness::new(options(dir.path())).unwrap();
    let err = gate
        .wait_ready_timeout(Some(Duration::from_millis(30)))
        .unwrap_err();
    assert!(matches!(err, ReadinessError::Timeout), "{err}");
    assert_eq!(err.to_string(), "timeout waiting for readiness");
}

#[test]
fn signal_failed_releases_blocked_waiters_with_boot_failed() {
    let dir = tempfile::tempdir().unwrap();
    let gate = FileReadiness::new(options(dir.path())).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let tx = tx.clone();
                let gate = &gate;
                s.spawn(move || {
                    tx.send(gettid()).unwrap();
                    gate.wait_ready_timeout(None)
                })
            })
            .collect();
        for _ in 0..3 {
            wait_until_parked_in_poll(rx.recv().unwrap());
        }
        gate.signal_failed("cgroup hierarchy: no cgroup2 mount")
            .unwrap();
        for waiter in waiters {
            match waiter.join().unwrap() {
                Err(ReadinessError::BootFailed { reason }) => {
                    assert_eq!(reason, "cgroup hierarchy: no cgroup2 mount")
                }
                other => panic!("expected BootFailed, got {other:?}"),
            }
        }
    });
    // Later waiters get the same verdict at once, and the file was never written.
    let err = gate.wait_ready().unwrap_err();
    assert!(
        err.to_string().contains("boot failed: cgroup hierarchy"),
        "{err}"
    );
    assert!(!gate.is_ready());
    assert!(!dir.path().join("pact/ready").exists());
    let mut reply = String::new();
    UnixStream::connect(dir.path().join("pact/ready.sock"))
        .unwrap()
        .read_to_string(&mut reply)
        .unwrap();
    assert_eq!(reply, "FAILED cgroup hierarchy: no cgroup2 mount\n");
}

#[test]
fn signal_ready_writes_file_serves_socket_and_cleans_socket_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("pact/ready.sock");
    let gate = FileReadiness::new(options(dir.path())).unwrap();
    gate.signal_ready("nid001234").unwrap();
    assert!(gate.is_ready());
    gate.wait_ready_timeout(Some(Duration::ZERO)).unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("pact/ready")).unwrap(),
        b"nid001234"
    );
    for _ in 0..2 {
        let mut reply = String::new();
        UnixStream::connect(&socket_path)
            .unwrap()
            .read_to_string(&mut reply)
            .unwrap();
        assert_eq!(reply, "READY\n");
    }
    drop(gate);
    assert!(!socket_path.exists(), "socket file left behind");
    // The ready file stays: it is the node's state, not ours to remove.
    assert!(dir.path().join("pact/ready").exists());
}

#[test]
fn existing_ready_file_means_ready_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pact")).unwrap();
    std::fs::write(dir.path().join("pact/ready"), "nid1").unwrap();
    let gate = FileReadiness::new(options(dir.path())).unwrap();
    assert!(gate.is_ready());
    gate.wait_ready_timeout(Some(Duration::ZERO)).unwrap();
}

#[test]
fn write_file_false_leaves_the_ready_file_to_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let gate = FileReadiness::new(ReadinessOptions {
        write_file: false,
        socket: false,
        ..options(dir.path())
    })
    .unwrap();
    gate.signal_ready("nid1").unwrap();
    assert!(gate.is_ready());
    assert!(
        !dir.path().join("pact").exists(),
        "nothing may be created for pact"
    );
}

#[test]
fn invalid_node_id_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let gate = FileReadiness::new(options(dir.path())).unwrap();
    let err = gate.signal_ready("nid 1\n").unwrap_err();
    match &err {
        ReadinessError::BootFailed { reason } => {
            assert!(reason.contains("invalid node id"), "{reason}")
        }
        other => panic!("expected BootFailed, got {other:?}"),
    }
    assert!(!gate.is_ready());
    assert!(!dir.path().join("pact").exists());
}

#[test]
fn a_non_socket_file_in_the_socket_path_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pact")).unwrap();
    std::fs::write(dir.path().join("pact/ready.sock"), "not a socket").unwrap();
    let gate = FileReadiness::new(options(dir.path())).unwrap();
    let err = gate.signal_ready("nid1").unwrap_err().to_string();
    assert!(
        err.contains("non-socket file is in the way") && err.contains("ready.sock"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pact/ready.sock")).unwrap(),
        "not a socket"
    );
}

/// Issue 12, item 11: a failure reason quoting hostile text (ESC/OSC/CR, as
/// a peer-supplied image name could be) reaches waiters and socket clients
/// escaped. Before the fix the socket reply carried the raw ESC and BEL
/// bytes (1 of 1).
#[test]
fn failure_reason_with_control_sequences_is_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let gate = FileReadiness::new(options(dir.path())).unwrap();
    gate.signal_failed("mount failed for \x1b[2J\x1b]0;pwn\x07\rnodeinit: boot OK")
        .unwrap();
    let escaped = "mount failed for \\u{1b}[2J\\u{1b}]0;pwn\\u{7} nodeinit: boot OK";
    match gate.wait_ready_timeout(Some(Duration::ZERO)) {
        Err(ReadinessError::BootFailed { reason }) => assert_eq!(reason, escaped),
        other => panic!("expected BootFailed, got {other:?}"),
    }
    let mut reply = Vec::new();
    UnixStream::connect(dir.path().join("pact/ready.sock"))
        .unwrap()
        .read_to_end(&mut reply)
        .unwrap();
    assert_eq!(reply, format!("FAILED {escaped}\n").into_bytes());
}
