//! Resource use of waiting: one inotify instance per backend, released with
//! it. Alone in its binary so that the descriptor count is not disturbed by
//! other tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nodeinit_readiness::{FileReadiness, ReadinessOptions, ReadinessProvider};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn many_waits_leak_no_descriptor_and_no_inotify_instance() {
    let dir = tempfile::tempdir().unwrap();
    let before = open_fds();
    // More rounds than the default fs.inotify.max_user_instances (128).
    for round in 0..300 {
        let options = ReadinessOptions {
            file: dir.path().join(format!("r{round}/ready")),
            socket: false,
            sd_notify: false,
            ..ReadinessOptions::default()
        };
        let gate = FileReadiness::new(options.clone()).unwrap();
        // Several waits on one backend share its single watcher.
        for _ in 0..3 {
            let err = gate
                .wait_ready_timeout(Some(Duration::from_millis(1)))
                .unwrap_err();
            assert!(matches!(err, hpc_node::ReadinessError::Timeout), "{err}");
        }
        let writer = FileReadiness::new(options).unwrap();
        writer.signal_ready("nid1").unwrap();
        gate.wait_ready_timeout(Some(Duration::from_secs(30)))
            .unwrap();
    }
    assert_eq!(open_fds(), before);
}
