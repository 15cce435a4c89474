//! Readiness costs on the boot path: signalling (atomic ready-file write) and
//! how fast a waiter blocked in `wait_ready` is released by another process
//! writing the file (inotify wake-up).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use nodeinit_readiness::{FileReadiness, ReadinessOptions, ReadinessProvider};

fn options(dir: &std::path::Path) -> ReadinessOptions {
    ReadinessOptions {
        file: dir.join("ready"),
        socket: false,
        socket_path: PathBuf::from("/nonexistent/ready.sock"),
        sd_notify: false,
        write_file: true,
    }
}

fn signal_ready(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let gate = FileReadiness::new(options(dir.path())).unwrap();
    c.bench_function("signal_ready (atomic ready file)", |b| {
        b.iter(|| gate.signal_ready("nid000001").unwrap());
    });
}

fn wait_wakeup(c: &mut Criterion) {
    c.bench_function("wait_ready released by file appearing", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                let waiter = FileReadiness::new(options(dir.path())).unwrap();
                let writer = FileReadiness::new(options(dir.path())).unwrap();
                std::thread::scope(|s| {
                    let h = s.spawn(|| waiter.wait_ready_timeout(Some(Duration::from_secs(10))));
                    writer.signal_ready("nid000001").unwrap();
                    h.join().unwrap().unwrap();
                });
            },
            criterion::BatchSize::PerIteration,
        );
    });
}

criterion_group!(benches, signal_ready, wait_wakeup);
criterion_main!(benches);
