//! Handoff round trip: a client's `namespace_request` → `namespace_response`
//! with three FDs received (Pid+Net+Mount, real holder, real server thread),
//! against the shell-out way (spawn `unshare --pid --net --mount --fork`,
//! wait until it has forked, open its `/proc/<pid>/ns/*`). Release and
//! process cleanup are outside the timed part in both.
//!
//! Medians: `target/criterion/namespace_handoff/*/new/estimates.json`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use hpc_node::{NamespaceRequest, NamespaceType};
use nodeinit_handoff::client::ClientConfig;
use nodeinit_handoff::{HandoffClient, HandoffServer, ReadyGate, ServerConfig};
use nodeinit_unshare::{UnshareBackend, UnshareConfig};

fn handoff(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let socket_path = tmp.path().join("handoff.sock");
    let backend = Arc::new(UnshareBackend::new(UnshareConfig::default(), None));
    let config = ServerConfig {
        socket_path: socket_path.clone(),
        ..ServerConfig::default()
    };
    let server = HandoffServer::start(backend, config, ReadyGate::opened()).unwrap();
    let client = HandoffClient::new(ClientConfig {
        socket_path,
        fallback: false,
        ..ClientConfig::default()
    });

    let mut group = c.benchmark_group("namespace_handoff");
    group
        .sample_size(60)
        .measurement_time(Duration::from_secs(8));
    let mut next = 0u64;
    group.bench_function("handoff_request_3fds", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                next += 1;
                let request = NamespaceRequest {
                    allocation_id: format!("bench-{next}"),
                    namespaces: vec![NamespaceType::Pid, NamespaceType::Net, NamespaceType::Mount],
                    uenv_image: None,
                };
                let start = Instant::now();
                let granted = client.request(&request).unwrap();
                total += start.elapsed();
                assert_eq!(granted.fds.len(), 3);
                client.release(granted).unwrap();
            }
            total
        })
    });
    group.bench_function("shell_out_unshare", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let mut child = Command::new("unshare")
                    .args([
                        "--pid",
                        "--net",
                        "--mount",
                        "--fork",
                        "--kill-child",
                        "sh",
                        "-c",
                        "echo forked; exec sleep 1000",
                    ])
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut line = String::new();
                BufReader::new(child.stdout.as_mut().unwrap())
                    .read_line(&mut line)
                    .unwrap();
                let pid = child.id();
                let fds: Vec<std::fs::File> = ["pid_for_children", "net", "mnt"]
                    .iter()
                    .map(|ns| std::fs::File::open(format!("/proc/{pid}/ns/{ns}")).unwrap())
                    .collect();
                total += start.elapsed();
                assert_eq!(fds.len(), 3);
                child.kill().unwrap();
                child.wait().unwrap();
            }
            total
        })
    });
    group.finish();
    server.shutdown();
}

criterion_group!(benches, handoff);
criterion_main!(benches);
