//! Scope lifecycle cost, through the rlib and through the loaded `.so`.
//!
//! - `destroy_one_process`: `destroy_scope` of a scope holding one live
//!   `sleep` (placement is setup, not measured). Target ≤ 5 ms median: pact
//!   and lattice both sleep a fixed 100 ms here; we wait on inotify.
//! - `create_destroy_empty`: `create_scope` + `destroy_scope` of an empty scope.
//!
//! Needs root and a cgroup2 mount (like the real-kernel tests); works in a
//! fresh subtree removed afterwards. The `.so` is the cdylib cargo builds next
//! to this bench (`target/<profile>/libnodeinit_cgroupfs.so`), opened with
//! `nodeinit_plugin_api::PluginLibrary` — the same open and adapter the
//! host's loader uses; the loader's file/ELF checks run once at load and cost
//! nothing per call. (Depending on the host crate here would make this
//! crate's tests build the whole host.)
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Sleeper, TestRoot};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use hpc_node::cgroup::slices;
use hpc_node::{CgroupManager, ResourceLimits};
use nodeinit_cgroupfs::OwnerPolicy;
use nodeinit_plugin_api::{HostServices, PluginLibrary};

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn so_manager(root: &TestRoot) -> Box<dyn CgroupManager> {
    let path = common::plugin_so_path();
    // SAFETY: the file is the cdylib cargo built from this very crate for this
    // bench run, in the bench's own target directory; nothing else writes it
    // while the bench runs.
    let library = unsafe { PluginLibrary::open(&path) }
        .unwrap_or_else(|err| panic!("CANNOT RUN: opening {}: {err}", path.display()));
    let options = serde_json::json!({
        "root": root.path(),
        "owner": "any",
        "io_devices": [],
    });
    let adapter = library
        .cgroup(HostServices::new("cgroupfs", None), &options.to_string())
        .unwrap_or_else(|err| panic!("constructing the cgroupfs backend from the .so: {err}"));
    Box::new(adapter)
}

fn bench(c: &mut Criterion) {
    let root = TestRoot::new("bench");
    let rlib: Box<dyn CgroupManager> = Box::new(root.manager(OwnerPolicy::Any));
    rlib.create_hierarchy().unwrap();
    let so = so_manager(&root);
    let backends: [(&str, &dyn CgroupManager); 2] = [("rlib", rlib.as_ref()), ("so", so.as_ref())];
    let no_limits = ResourceLimits::default();

    let mut group = c.benchmark_group("destroy_one_process");
    group.sample_size(50);
    for (label, manager) in backends {
        group.bench_function(label, |b| {
            b.iter_batched(
                || {
                    let name = format!("busy-{}", NEXT.fetch_add(1, Ordering::Relaxed));
                    let handle = manager
                        .create_scope(slices::WORKLOAD_ROOT, &name, &no_limits)
                        .unwrap();
                    let sleeper = Sleeper::spawn_into(std::path::Path::new(&handle.path));
                    (handle, sleeper)
                },
                |(handle, sleeper)| {
                    manager.destroy_scope(&handle).unwrap();
                    // Reaped on drop, outside the measurement.
                    sleeper
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();

    let mut group = c.benchmark_group("create_destroy_empty");
    for (label, manager) in backends {
        group.bench_function(label, |b| {
            b.iter(|| {
                let handle = manager
                    .create_scope(slices::PACT_INFRA, "empty", &no_limits)
                    .unwrap();
                manager.destroy_scope(&handle).unwrap();
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
