//! Readiness costs on the boot path: signalling (atomic ready-file write) and
//! how fast a waiter blocked in `wait_ready` is released by another process
//! writing the file (inotify wake-up).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use nodeinit_readiness::{FileReadiness, ReadinessOptions, ReadinessProvider};

/// On a node the ready file lives on /run, a tmpfs; /dev/shm is the tmpfs
/// every Linux machine has. A disk-backed /tmp would measure the disk's
/// fsync latency instead.
fn tmpfs_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .expect("this benchmark needs a tmpfs at /dev/shm (it stands in for /run)")
}

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
    let dir = tmpfs_dir();
    let gate = FileReadiness::new(options(dir.path())).unwrap();
    c.bench_function("signal_ready (atomic ready file)", |b| {
        b.iter(|| gate.signal_ready("nid000001").unwrap());
    });
}

/// Wait until thread `tid` is blocked in poll/ppoll (x86_64 numbers 7/271).
fn parked_in_poll(tid: i32) {
    let path = format!("/proc/self/task/{tid}/syscall");
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if matches!(text.split_whitespace().next(), Some("7" | "271")) {
            return;
        }
        std::thread::yield_now();
    }
}

/// From `signal_ready` in another backend instance (the file appearing) to
/// the return of a waiter already parked in `wait_ready`.
fn wait_wakeup(c: &mut Criterion) {
    c.bench_function("file appears -> parked waiter returns", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tmpfs_dir();
                let waiter = FileReadiness::new(options(dir.path())).unwrap();
                let writer = FileReadiness::new(options(dir.path())).unwrap();
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::scope(|s| {
                    let h = s.spawn(|| {
                        tx.send(nix::unistd::gettid().as_raw()).unwrap();
                        waiter
                            .wait_ready_timeout(Some(Duration::from_secs(10)))
                            .unwrap();
                        Instant::now()
                    });
                    parked_in_poll(rx.recv().unwrap());
                    let start = Instant::now();
                    writer.signal_ready("nid000001").unwrap();
                    total += h.join().unwrap() - start;
                });
            }
            total
        });
    });
}

criterion_group!(benches, signal_ready, wait_wakeup);
criterion_main!(benches);
