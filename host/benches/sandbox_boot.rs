//! `nodeinit --sandbox` with the four reference plugins as `.so` files and
//! a no-op agent (`/bin/date`, exec mode): time from process start to the
//! agent's exec, the phase breakdown and peak RSS. Each run is a fresh
//! process (a real boot loads every library anew). Medians of this run.
//! What the keeper/worker split and a worker restart cost is measured by
//! `split_cost.rs`.
//!
//! Run as root: `cargo bench -p nodeinit --bench sandbox_boot`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodeinit_tests::{reference_plugin_dir, with_plugin_dir, Profile};

mod common;

use common::{median, CONFIG};

const RUNS: usize = 31;
const MEASURE_ENV: &str = "NODEINIT_BENCH_MEASURE_CONFIG";

fn main() {
    // Benchmarks run as `--bench`; `cargo test` also runs them once with no
    // args in some setups: only measure under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_nodeinit"));
    if let Ok(config) = std::env::var(MEASURE_ENV) {
        measure(exe, std::path::Path::new(&config));
        return;
    }
    let plugin_dir = reference_plugin_dir(Profile::Release);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bench.toml");
    let text = with_plugin_dir(CONFIG, &plugin_dir);
    std::fs::write(&config, text).unwrap();

    // Measure in a child that never ran cargo: peak RSS comes from
    // getrusage(RUSAGE_CHILDREN), the largest process it waited for.
    let out = Command::new(std::env::current_exe().unwrap())
        .arg("--bench")
        .env(MEASURE_ENV, &config)
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The measuring child: `RUNS` fresh sandbox boots with `config`.
fn measure(exe: &std::path::Path, config: &std::path::Path) {
    let mut to_exec = Vec::new();
    let mut phases: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for _ in 0..RUNS {
        let t0 = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let out = Command::new(exe)
            .args(["--sandbox", "--config"])
            .arg(config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let agent_ns: u128 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let agent = Duration::from_nanos(u64::try_from(agent_ns).unwrap());
        to_exec.push((agent - t0).as_secs_f64() * 1e3);
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            let (Some(p), Some(e)) = (field(line, "phase="), field(line, "elapsed=")) else {
                continue;
            };
            let ms: f64 = e.trim_end_matches("ms").parse().unwrap_or(0.0);
            phases.entry(p).or_default().push(ms);
        }
    }
    let rss_kib = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .unwrap()
        .max_rss();

    println!(
        "nodeinit --sandbox, 4 reference plugins (.so), no-op agent; medians of {RUNS} fresh runs"
    );
    let total = median(to_exec);
    println!("  process start -> agent exec (includes the date(1) start): {total:>7.2} ms   (target <= 3 ms)");
    for (name, v) in phases {
        println!("    phase {name:<17} {:>7.3} ms", median(v));
    }
    println!(
        "  peak RSS (largest process of the run): {:.1} MiB   (target <= 8 MiB)",
        rss_kib as f64 / 1024.0
    );
}

/// `phase="x"` / `elapsed=1.2ms` values from a log line.
fn field(line: &str, key: &str) -> Option<String> {
    let rest = &line[line.find(key)? + key.len()..];
    let value = rest.split_whitespace().next()?;
    Some(value.trim_matches('"').to_owned())
}
