//! Cost of the plugin boundary.
//!
//! 1. Load + construct one plugin, and four, each in a fresh child process
//!    (a process never unloads a library, so only a fresh process measures
//!    a real load): median of the children's own timings.
//! 2. One trivial call through the host adapter vs the same backend called
//!    directly as an rlib (criterion), and their ratio.
//!
//! Run: `cargo bench -p nodeinit-tests --bench plugin_boundary`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::Criterion;
use hpc_node::{CgroupHandle, CgroupManager, ReadinessGate};
use nodeinit::loader::load_plugin;
use nodeinit_null::{NullCgroups, NullOptions, NullReadiness};
use nodeinit_plugin_api::{BackendKind, HostServices};
use nodeinit_tests::{build_cdylibs, Profile};

const CHILD_ENV: &str = "NODEINIT_BENCH_LOAD";
const SAMPLES: usize = 31;

/// Child mode: load and construct the plugins named in the environment,
/// print the elapsed nanoseconds.
fn child(spec: &str) {
    let paths: Vec<PathBuf> = spec.split(':').map(PathBuf::from).collect();
    let start = Instant::now();
    for (path, kind) in paths.iter().zip(BackendKind::ALL.iter().cycle()) {
        let lib = load_plugin(path, None).unwrap().library;
        let host = HostServices::new(lib.name(), None);
        match kind {
            BackendKind::Cgroup => drop(lib.cgroup(host, "{}").unwrap()),
            BackendKind::Mount => drop(lib.mount(host, "{}").unwrap()),
            BackendKind::Namespace => drop(lib.namespace(host, "{}").unwrap()),
            BackendKind::Readiness => drop(lib.readiness(host, "{}").unwrap()),
        }
    }
    println!("{}", start.elapsed().as_nanos());
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn measure_loads(paths: &[PathBuf]) -> Duration {
    let spec = paths
        .iter()
        .map(|p| p.to_str().unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let exe = std::env::current_exe().unwrap();
    let samples = (0..SAMPLES)
        .map(|_| {
            let out = Command::new(&exe).env(CHILD_ENV, &spec).output().unwrap();
            assert!(out.status.success(), "{out:?}");
            let ns: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            Duration::from_nanos(ns)
        })
        .collect();
    median(samples)
}

fn criterion_dir() -> PathBuf {
    nodeinit_tests::workspace_root().join("target/criterion")
}

fn criterion_median_ns(group: &str, name: &str) -> f64 {
    let path = criterion_dir()
        .join(group)
        .join(name)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["median"]["point_estimate"].as_f64().unwrap()
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
        return;
    }
    let built = build_cdylibs(&["nodeinit-null"], Profile::Release, &[]).unwrap();
    let so = &built["nodeinit-null"];
    // Four distinct files (dlopen shares one copy of the same inode).
    let stage = tempfile::tempdir().unwrap();
    let copies: Vec<PathBuf> = (0..4)
        .map(|i| {
            let p = stage.path().join(format!("libnodeinit_null{i}.so"));
            std::fs::copy(so, &p).unwrap();
            p
        })
        .collect();

    let one = measure_loads(&copies[..1]);
    let four = measure_loads(&copies);

    let mut c = Criterion::default()
        .output_directory(&criterion_dir())
        .configure_from_args();
    let lib = load_plugin(so, None).unwrap().library;
    let ready_so = lib
        .readiness(HostServices::new("null", None), "{}")
        .unwrap();
    let ready_rlib =
        NullReadiness::from_plugin(&HostServices::new("null", None), NullOptions::default())
            .unwrap();
    let cg_so = lib.cgroup(HostServices::new("null", None), "{}").unwrap();
    let cg_rlib =
        NullCgroups::from_plugin(&HostServices::new("null", None), NullOptions::default()).unwrap();
    let handle = CgroupHandle {
        path: "workload.slice/job-1.scope".into(),
    };
    {
        let mut g = c.benchmark_group("is_ready");
        g.bench_function("adapter", |b| b.iter(|| black_box(&ready_so).is_ready()));
        g.bench_function("rlib", |b| b.iter(|| black_box(&ready_rlib).is_ready()));
        g.finish();
        let mut g = c.benchmark_group("is_scope_empty");
        g.bench_function("adapter", |b| {
            b.iter(|| black_box(&cg_so).is_scope_empty(black_box(&handle)))
        });
        g.bench_function("rlib", |b| {
            b.iter(|| black_box(&cg_rlib).is_scope_empty(black_box(&handle)))
        });
        g.finish();
    }
    c.final_summary();

    println!();
    println!("plugin boundary, medians of this run ({SAMPLES} fresh processes for loads):");
    println!(
        "  load + construct 1 plugin:   {:>9.3} ms",
        one.as_secs_f64() * 1e3
    );
    println!(
        "  load + construct 4 plugins:  {:>9.3} ms   (target <= 2 ms)",
        four.as_secs_f64() * 1e3
    );
    for group in ["is_ready", "is_scope_empty"] {
        let a = criterion_median_ns(group, "adapter");
        let r = criterion_median_ns(group, "rlib");
        println!(
            "  {group:<15} adapter {a:>7.1} ns, rlib {r:>7.1} ns, overhead {:>6.1} ns/call, ratio {:.2}   (target overhead <= 100 ns)",
            a - r,
            a / r.max(0.001)
        );
    }
}
