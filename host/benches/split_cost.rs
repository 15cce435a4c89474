//! What the keeper/worker split costs, measured rather than estimated.
//!
//! 1. The boot: `nodeinit --sandbox` with the four reference plugins as
//!    `.so` files and a no-op agent (`/bin/date`, exec mode), process start →
//!    the agent's exec, against the same boot without the split
//!    (`nodeinit __bench-unsplit-sandbox`: the same keeper phases, watch loop
//!    and worker phase code, with the worker a thread of the keeper — how
//!    nodeinit ran before the split). The two kinds of run alternate, each a
//!    fresh process, so that both see the same machine; medians of this run.
//! 2. A worker restart with one live allocation and one mounted image
//!    (supervise mode, the demo agent kills the worker with SIGSEGV, four
//!    times): the keeper's part (new worker started → serving again) and
//!    SIGSEGV → the same request answered, less the backoff delay.
//!
//! Run as root: `cargo bench -p nodeinit --bench split_cost`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodeinit_tests::{reference_plugin_dir, with_plugin_dir, Profile};

mod common;

use common::{median, CONFIG};

const RUNS: usize = 41;

fn main() {
    // Only measure under `cargo bench` (which passes --bench).
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_nodeinit"));
    let plugin_dir = reference_plugin_dir(Profile::Release);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bench.toml");
    std::fs::write(&config, with_plugin_dir(CONFIG, &plugin_dir)).unwrap();
    boot(exe, &config);
    restart(exe, &config);
}

/// One fresh boot with `first_arg` (`--sandbox` or the unsplit subcommand):
/// ms from process start to the agent's exec, and the worker's start
/// (start message → first report; the boot's worker is forked ahead) from the keeper's log.
fn one_boot(exe: &std::path::Path, first_arg: &str, config: &std::path::Path) -> (f64, f64) {
    let t0 = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let out = Command::new(exe)
        .args([first_arg, "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{first_arg}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let agent_ns: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let total = (Duration::from_nanos(agent_ns) - t0).as_secs_f64() * 1e3;
    let started = String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| field(l, "worker_started="))
        .and_then(|v| v.trim_end_matches("ms").parse().ok())
        .unwrap_or(f64::NAN);
    (total, started)
}

fn boot(exe: &std::path::Path, config: &std::path::Path) {
    // One of each first: page cache and plugin files warm for both.
    one_boot(exe, "--sandbox", config);
    one_boot(exe, "__bench-unsplit-sandbox", config);
    let (mut split, mut unsplit, mut spawn) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let (total, started) = one_boot(exe, "--sandbox", config);
        split.push(total);
        spawn.push(started);
        unsplit.push(one_boot(exe, "__bench-unsplit-sandbox", config).0);
    }
    let (split, unsplit, spawn) = (median(split), median(unsplit), median(spawn));
    println!("keeper/worker split: nodeinit --sandbox, 4 reference plugins (.so), no-op agent, process start -> agent exec; medians of {RUNS} alternating fresh runs");
    println!("  without the split (worker phases in the keeper): {unsplit:>7.2} ms");
    println!("  with the split (worker process):                 {split:>7.2} ms");
    println!(
        "  cost of the split:                               {:>7.2} ms   (target <= 1 ms)",
        split - unsplit
    );
    println!("  (worker start message -> its first report, keeper's log:{spawn:>7.3} ms)");
}

/// Worker restarts in supervise mode with `demo-1` live and its image mounted.
fn restart(exe: &std::path::Path, config: &std::path::Path) {
    const RESTARTS: u32 = 4;
    let text = std::fs::read_to_string(config).unwrap();
    let plugin_dir_line = text
        .lines()
        .find(|l| l.starts_with("plugin_dir"))
        .unwrap()
        .to_owned();
    let supervised = nodeinit::demo::SANDBOX_CONFIG
        .replacen("[host]\n", &format!("[host]\n{plugin_dir_line}\n"), 1)
        .replace(
            "args = [\"demo-agent\"]",
            &format!("args = [\"demo-agent\", \"--restart-bench\", \"{RESTARTS}\"]"),
        );
    let path = config.with_file_name("restart.toml");
    std::fs::write(&path, supervised).unwrap();
    let out = Command::new(exe)
        .args(["--sandbox", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let keeper: Vec<f64> = stderr
        .lines()
        .filter_map(|l| field(l, "restart_ms="))
        .filter_map(|v| v.parse().ok())
        .collect();
    // The backoff: 1 s doubling (the runs are shorter than the 60 s reset).
    let answered: Vec<f64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("restart-bench: "))
        .filter_map(|v| v.parse::<f64>().ok())
        .enumerate()
        .map(|(i, ms)| ms - 1000.0 * f64::from(1u32 << i))
        .collect();
    assert_eq!(keeper.len(), RESTARTS as usize, "{stderr}");
    println!("worker restart, one live allocation + one mounted image (supervise; medians of {RESTARTS})");
    println!(
        "  new worker started -> serving again (keeper's log): {:>7.2} ms   (target <= 50 ms)",
        median(keeper)
    );
    println!(
        "  SIGSEGV -> the same request answered, less the backoff: {:>7.2} ms",
        median(answered)
    );
}

/// `key=value` from a log line.
fn field(line: &str, key: &str) -> Option<String> {
    let rest = &line[line.find(key)? + key.len()..];
    let value = rest.split_whitespace().next()?;
    Some(value.trim_matches('"').to_owned())
}
