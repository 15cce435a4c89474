//! No plugin fault reaches the keeper: the `faulty` fixture plugin (a real
//! `.so`) segfaults, aborts, exits, hangs, overflows its stack, allocates
//! forever or panics inside a worker, and the keeper turns each into a
//! failed phase naming the plugin and the method — or, for an optional
//! backend, goes on without it. Process-level (the keeper is this test
//! process, `Placement::Process`) and in `nodeinit --sandbox`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{keep_in_thread, Stage};

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use nodeinit::boot::{boot, prepare, PhaseStatus};

fn built() -> &'static (PathBuf, PathBuf) {
    static B: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    B.get_or_init(|| {
        let b = nodeinit_tests::plugin_artifacts(&["nodeinit-null", "nodeinit-faulty"]);
        (b["nodeinit-null"].clone(), b["nodeinit-faulty"].clone())
    })
}

/// A stage with the `null` and `faulty` fixtures installed.
fn new_stage(config: &str) -> Stage {
    Stage::new(config, &[(&built().0, "null"), (&built().1, "faulty")])
}

/// Null backends everywhere but `kind`, which is `faulty` with `fault` at `at`.
fn config(kind: &str, required: bool, fault: &str, at: &str, extra_host: &str) -> String {
    let mut text = format!("[host]\nplugin_dir = \"@PLUGINS@\"\n{extra_host}\n");
    for k in ["cgroup", "mount", "namespace", "readiness"] {
        if k == kind {
            text.push_str(&format!(
                "[plugins.{k}]\npath = \"faulty\"\nrequired = {required}\noptions = {{ fault = \"{fault}\", at = \"{at}\" }}\n"
            ));
        } else {
            text.push_str(&format!("[plugins.{k}]\npath = \"null\"\n"));
        }
    }
    text
}

fn statuses(records: &[nodeinit::boot::PhaseRecord]) -> Vec<(&str, PhaseStatus)> {
    records
        .iter()
        .map(|r| (r.name.as_str(), r.status))
        .collect()
}

/// The whole boot fails with exit 1, `boot.json` gives `reason` for
/// `phase`, the later phases are skipped, and this process — the keeper —
/// is alive to tell.
fn assert_boot_fails(stage: &Stage, phase: &str, reason: &str) {
    let env = stage.env();
    assert_eq!(boot(&env), 1);
    let report = stage.report();
    let record = report.phases.iter().find(|r| r.name == phase).unwrap();
    assert_eq!(record.status, PhaseStatus::Failed, "{}", report.render());
    assert_eq!(
        record.detail.as_deref(),
        Some(reason),
        "{}",
        report.render()
    );
    assert_eq!(report.errors, [format!("phase {phase}: {reason}")]);
    let after: Vec<_> = report
        .phases
        .iter()
        .skip_while(|r| r.name != phase)
        .skip(1)
        .map(|r| r.status)
        .collect();
    assert!(
        after.iter().all(|s| *s == PhaseStatus::Skipped),
        "{}",
        report.render()
    );
    let maps = fs::read_to_string("/proc/self/maps").unwrap();
    assert!(
        !maps.contains("libnodeinit_faulty"),
        "the keeper mapped the plugin"
    );
}

#[test]
fn segv_in_a_required_method_fails_the_phase_with_the_signal() {
    let stage = new_stage(&config("readiness", true, "segv", "signal_ready", ""));
    assert_boot_fails(
        &stage,
        "readiness",
        "plugin faulty: worker killed by SIGSEGV in signal_ready",
    );
}

#[test]
fn abort_in_a_required_method_fails_the_phase_with_the_signal() {
    let stage = new_stage(&config("cgroup", true, "abort", "create_hierarchy", ""));
    assert_boot_fails(
        &stage,
        "cgroup_hierarchy",
        "plugin faulty: worker killed by SIGABRT in create_hierarchy",
    );
}

#[test]
fn exit_in_a_required_method_fails_the_phase_with_the_status() {
    let stage = new_stage(&config("readiness", true, "exit", "signal_ready", ""));
    assert_boot_fails(
        &stage,
        "readiness",
        "plugin faulty: worker exited with status 3 in signal_ready",
    );
}

#[test]
fn stack_overflow_in_a_required_method_fails_the_phase() {
    // The worker keeps SIGSEGV at its default: the guard page kills it.
    let stage = new_stage(&config(
        "readiness",
        true,
        "stack_overflow",
        "signal_ready",
        "",
    ));
    assert_boot_fails(
        &stage,
        "readiness",
        "plugin faulty: worker killed by SIGSEGV in signal_ready",
    );
}

#[test]
fn a_hang_overruns_the_host_deadline_and_the_worker_is_killed() {
    let stage = new_stage(&config(
        "readiness",
        true,
        "hang",
        "signal_ready",
        "phase_timeout_secs = 1",
    ));
    assert_boot_fails(
        &stage,
        "readiness",
        "plugin faulty did not return from signal_ready within 1 s",
    );
}

#[test]
fn a_plugin_timeout_overrides_the_host_deadline() {
    let text = config(
        "cgroup",
        true,
        "hang",
        "create_hierarchy",
        "phase_timeout_secs = 600",
    )
    .replace("required = true\n", "required = true\ntimeout_secs = 1\n");
    let stage = new_stage(&text);
    assert_boot_fails(
        &stage,
        "cgroup_hierarchy",
        "plugin faulty did not return from create_hierarchy within 1 s",
    );
}

#[test]
fn alloc_forever_under_a_memory_limit_kills_only_the_worker() {
    // The worker runs under a 1 GiB address-space limit (as a site would
    // bound it): the allocation fails and Rust aborts the worker.
    let stage = new_stage(&config(
        "readiness",
        true,
        "alloc_forever",
        "signal_ready",
        "",
    ));
    let wrapper = stage.dir.path().join("limited-worker");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nulimit -v 1048576\nexec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_nodeinit")
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let mut env = stage.env();
    env.worker_program = wrapper;
    assert_eq!(boot(&env), 1);
    let report = stage.report();
    let record = report
        .phases
        .iter()
        .find(|r| r.name == "readiness")
        .unwrap();
    assert_eq!(
        record.detail.as_deref(),
        Some("plugin faulty: worker killed by SIGABRT in signal_ready"),
        "{}",
        report.render()
    );
}

#[test]
fn a_panic_stays_an_error_of_the_method() {
    let stage = new_stage(&config("readiness", true, "panic", "signal_ready", ""));
    assert_boot_fails(
        &stage,
        "readiness",
        "boot failed: plugin panicked: signal_ready in plugin faulty: faulty was told to panic in signal_ready",
    );
}

#[test]
fn segv_in_a_required_constructor_fails_the_plugins_phase() {
    let stage = new_stage(&config("cgroup", true, "segv", "constructor", ""));
    assert_boot_fails(
        &stage,
        "plugins",
        "plugin faulty: worker killed by SIGSEGV in constructor",
    );
}

#[test]
fn segv_in_an_optional_constructor_is_retried_without_that_backend() {
    let stage = new_stage(&config("readiness", false, "segv", "constructor", ""));
    let mut p = prepare(&stage.env());
    use PhaseStatus::*;
    assert_eq!(
        statuses(p.phases.records())[3..],
        [
            ("plugins", Degraded),
            ("cgroup_hierarchy", Ok),
            ("boot_mounts", Skipped),
            ("handoff_socket", Skipped),
            ("readiness", Skipped),
        ]
    );
    assert_eq!(
        p.phases.records()[3].detail.as_deref(),
        Some("plugin faulty: worker killed by SIGSEGV in constructor; going on without the optional readiness backend")
    );
    assert_eq!(
        p.phases.records()[7].detail.as_deref(),
        Some("no readiness backend")
    );
    // The second worker serves, with the readiness backend recorded as not loaded.
    assert!(p.worker.is_some());
    let readiness = p
        .facts
        .plugins
        .iter()
        .find(|r| r.kind == "readiness")
        .unwrap();
    assert_eq!(
        readiness.error.as_deref(),
        Some("not loaded: plugin faulty: worker killed by SIGSEGV in constructor")
    );
    assert!(p.phases.is_healthy());
    p.release();
}

#[test]
fn a_hang_in_an_optional_method_is_cut_off_and_boot_goes_on() {
    let stage = new_stage(&config(
        "cgroup",
        false,
        "hang",
        "create_hierarchy",
        "phase_timeout_secs = 1",
    ));
    let p = prepare(&stage.env());
    let cg = &p.phases.records()[4];
    assert_eq!(
        (cg.name.as_str(), cg.status),
        ("cgroup_hierarchy", PhaseStatus::Degraded)
    );
    assert_eq!(
        cg.detail.as_deref(),
        Some("plugin faulty did not return from create_hierarchy within 1 s; going on without the optional cgroup backend")
    );
    assert!(p.phases.is_healthy());
    // The rest ran in the second worker.
    assert_eq!(p.phases.records().last().unwrap().status, PhaseStatus::Ok);
}

fn sandbox_config(body: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    fs::create_dir(&plugins).unwrap();
    fs::set_permissions(&plugins, fs::Permissions::from_mode(0o755)).unwrap();
    let dst = plugins.join("libnodeinit_faulty.so");
    fs::copy(&built().1, &dst).unwrap();
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o644)).unwrap();
    let path = dir.path().join("nodeinit.toml");
    fs::write(&path, body.replace("@PLUGINS@", plugins.to_str().unwrap())).unwrap();
    (dir, path)
}

const SANDBOX_FAULT: &str = r#"
[host]
plugin_dir = "@PLUGINS@"
on_failure = "poweroff"
node_id = "n1"
phase_timeout_secs = PHASE_TIMEOUT
[plugins.readiness]
path = "faulty"
options = { fault = "FAULT", at = "signal_ready" }
"#;

#[test]
fn sandbox_each_fault_is_an_exit_with_the_reason() {
    for (fault, reason) in [
        (
            "segv",
            "plugin faulty: worker killed by SIGSEGV in signal_ready",
        ),
        (
            "abort",
            "plugin faulty: worker killed by SIGABRT in signal_ready",
        ),
        (
            "exit",
            "plugin faulty: worker exited with status 3 in signal_ready",
        ),
        (
            "hang",
            "plugin faulty did not return from signal_ready within 1 s",
        ),
    ] {
        let (_dir, config) = sandbox_config(
            &SANDBOX_FAULT
                .replace("FAULT", fault)
                .replace("PHASE_TIMEOUT", "1"),
        );
        let out = Command::new(env!("CARGO_BIN_EXE_nodeinit"))
            .args(["--sandbox", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // PID 1 of the sandbox survived and chose the exit on_failure maps to there.
        assert_eq!(out.status.code(), Some(1), "{fault}: {stderr}");
        assert!(
            stderr.contains(&format!("reason=\"phase readiness failed: {reason}\"")),
            "{fault}: {stderr}"
        );
    }
}

#[test]
fn sandbox_sigterm_during_a_hang_shuts_down() {
    let (_dir, config) = sandbox_config(
        &SANDBOX_FAULT
            .replace("FAULT", "hang")
            .replace("PHASE_TIMEOUT", "600"),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodeinit"))
        .args(["--sandbox", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    // The plugin logs before it hangs: from then on the worker is stuck in it.
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "{seen}");
        seen.push_str(&line);
        if line.contains("faulty commits its fault") {
            break;
        }
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{seen}{rest}");
    assert!(
        rest.contains("shutdown requested during boot; killing the worker"),
        "{rest}"
    );
}

#[test]
fn sandbox_pid1_maps_no_plugin_while_the_worker_serves() {
    let plugin_dir = nodeinit_tests::reference_plugin_dir(nodeinit_tests::Profile::Debug);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("nodeinit.toml");
    // The sandbox config, with an agent that looks at PID 1's mappings and
    // at the worker's (which has the plugins), and at what the worker —
    // forked from the keeper before anything else — inherited from it.
    let script = r#"echo PID1_MAPS=$(grep -c libnodeinit_ /proc/1/maps)
for p in /proc/[0-9]*; do grep -q libnodeinit_readiness $p/maps 2>/dev/null && echo WORKER=$(cat $p/comm) && w=$p; done
grep SigBlk $w/status
for f in $w/fd/*; do echo WORKER_FD=$(readlink $f); done
for f in /proc/1/fd/*; do echo KEEPER_FD=${f##*/} $(readlink $f); done
true"#;
    let text = nodeinit_tests::with_plugin_dir(nodeinit::demo::SANDBOX_CONFIG, &plugin_dir)
        .replace(
            "exec = \"/run/nodeinit/demo/demo-agent\"",
            "exec = \"/bin/sh\"",
        )
        .replace(
            "args = [\"demo-agent\"]",
            &format!("args = [\"-c\", {script:?}]"),
        );
    fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nodeinit"))
        .args(["--sandbox", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("PID1_MAPS=0\n"), "{stdout}\n{stderr}");
    let workers: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("WORKER="))
        .collect();
    assert_eq!(workers, ["WORKER=nodeinit-worker"], "{stdout}");
    // No signal blocked (the keeper's handlers and mask are not the worker's).
    assert!(stdout.contains("SigBlk:\t0000000000000000\n"), "{stdout}");
    // Of the keeper's descriptors the worker holds only sockets (the
    // listener it was sent) and stdio's files: none of the keeper's pipes
    // (signal pipe, the sandbox's status pipe), which a fork would copy.
    let of = |prefix: &str| -> Vec<String> {
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(str::to_owned)
            .collect()
    };
    let worker_fds = of("WORKER_FD=");
    let keeper_fds: Vec<(u32, String)> = of("KEEPER_FD=")
        .iter()
        .filter_map(|l| l.split_once(' '))
        .map(|(fd, target)| (fd.parse().unwrap(), target.to_owned()))
        .collect();
    let stdio: Vec<&String> = keeper_fds
        .iter()
        .filter(|(fd, _)| *fd <= 2)
        .map(|(_, t)| t)
        .collect();
    let keeper_pipes: Vec<&String> = keeper_fds
        .iter()
        .filter(|(fd, t)| *fd > 2 && t.starts_with("pipe:") && !stdio.contains(&t))
        .map(|(_, t)| t)
        .collect();
    assert!(!keeper_pipes.is_empty(), "{stdout}");
    let shared_pipes: Vec<&&String> = keeper_pipes
        .iter()
        .filter(|t| worker_fds.contains(t))
        .collect();
    assert_eq!(shared_pipes, Vec::<&&String>::new(), "{stdout}");
    assert!(Path::new(&plugin_dir).is_dir());
}

#[test]
fn check_reports_a_crashing_constructor_and_checks_the_others() {
    let text = config("cgroup", true, "segv", "constructor", "")
        .replace("[plugins.readiness]\npath = \"null\"", "[plugins.readiness]\npath = \"faulty\"\noptions = { fault = \"hang\", at = \"constructor\" }\ntimeout_secs = 1");
    let stage = new_stage(&text);
    let out = Command::new(env!("CARGO_BIN_EXE_nodeinit"))
        .args(["check", "--config"])
        .arg(stage.dir.path().join("nodeinit.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let so = stage.dir.path().join("plugins/libnodeinit_faulty.so");
    assert!(
        text.contains(&format!(
            "plugin cgroup    FAILED   {}: crashed with SIGSEGV while loading (constructor)",
            so.display()
        )),
        "{text}"
    );
    assert!(text.contains("plugin mount     ok       null"), "{text}");
    assert!(
        text.contains(&format!(
            "plugin readiness FAILED   {}: did not return within 1 s while loading (constructor)",
            so.display()
        )),
        "{text}"
    );
    assert!(text.trim_end().ends_with("check: FAILED"), "{text}");
}

#[test]
fn inspect_reports_a_library_that_crashes_while_loading() {
    let stage = new_stage("");
    let faulty = stage.dir.path().join("plugins/libnodeinit_faulty.so");
    let null = stage.dir.path().join("plugins/libnodeinit_null.so");
    let out = Command::new(env!("CARGO_BIN_EXE_nodeinit"))
        .args(["plugin", "inspect"])
        .arg(&faulty)
        .arg(&null)
        .env("NODEINIT_FAULTY_SEGV_ON_LOAD", "1")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "{}\n  loadable:   no: crashed with SIGSEGV while loading\n",
            faulty.display()
        )),
        "{text}"
    );
    assert!(text.contains("  plugin:     null "), "{text}");
}

#[test]
fn sandbox_exec_mode_the_agent_maps_no_plugin_and_inherits_nothing() {
    let plugin_dir = nodeinit_tests::reference_plugin_dir(nodeinit_tests::Profile::Debug);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("nodeinit.toml");
    let text = nodeinit_tests::with_plugin_dir(nodeinit::demo::SANDBOX_CONFIG, &plugin_dir)
        .replace("mode = \"supervise\"", "mode = \"exec\"")
        .replace("exec = \"/run/nodeinit/demo/demo-agent\"", "exec = \"/bin/sh\"")
        .replace(
            "args = [\"demo-agent\"]",
            r#"args = ["-c", "echo PID=$$ MAPS=$(grep -c libnodeinit_ /proc/self/maps); ls /proc/self/fd | tr '\\n' ' '; echo"]"#,
        );
    fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nodeinit"))
        .args(["--sandbox", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    // The agent replaced PID 1 of the sandbox; the worker had exited.
    assert!(stdout.contains("PID=1 MAPS=0\n"), "{stdout}\n{stderr}");
    // 0-2, and the descriptor `ls` reads /proc/self/fd through.
    assert!(stdout.contains("\n0 1 2 3 \n"), "{stdout}");
}

#[test]
fn sandbox_a_killed_worker_is_restarted_and_the_live_allocation_survives() {
    let plugin_dir = nodeinit_tests::reference_plugin_dir(nodeinit_tests::Profile::Debug);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("nodeinit.toml");
    // The demo agent requests demo-1, kills the worker with SIGSEGV, asks
    // again while no worker serves, and compares (see demo::run_restart_check).
    let text = nodeinit_tests::with_plugin_dir(nodeinit::demo::SANDBOX_CONFIG, &plugin_dir)
        .replace(
            "args = [\"demo-agent\"]",
            "args = [\"demo-agent\", \"--restart-check\"]",
        );
    fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nodeinit"))
        .args(["--sandbox", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!("{stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{context}");
    for line in [
        "killed by SIGSEGV",
        "demo-agent: uenv readable through the old and the new FDs",
        "demo-agent: mount references unchanged",
        "demo-agent: restart check passed",
    ] {
        assert!(stdout.contains(line), "{line}: {context}");
    }
    assert!(
        stderr.contains("worker died after boot; restarting it")
            && stderr.contains("status=killed by SIGSEGV"),
        "{context}"
    );
    assert!(stderr.contains("holder adopted"), "{context}");
    assert!(stderr.contains("worker restarted and serving"), "{context}");
}

/// The faulty plugin rebuilt with another version string.
fn faulty_v2() -> PathBuf {
    static V2: OnceLock<PathBuf> = OnceLock::new();
    V2.get_or_init(|| {
        let target = nodeinit_tests::workspace_root().join("target/fixtures-faulty-v2");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let out = Command::new(cargo)
            .current_dir(nodeinit_tests::workspace_root())
            .args(["build", "-q", "-p", "nodeinit-faulty", "--target-dir"])
            .arg(&target)
            .env("FAULTY_VERSION", "2.0.0-reload")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target.join("debug/libnodeinit_faulty.so")
    })
    .clone()
}

#[test]
fn sandbox_reload_swaps_in_a_new_version_and_refuses_a_broken_one() {
    let plugin_dir = nodeinit_tests::reference_plugin_dir(nodeinit_tests::Profile::Debug);
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let plugins = dir.path().join("plugins");
    fs::create_dir(&plugins).unwrap();
    fs::set_permissions(&plugins, fs::Permissions::from_mode(0o755)).unwrap();
    let installed = plugins.join("libnodeinit_faulty.so");
    fs::copy(&built().1, &installed).unwrap();
    let new = dir.path().join("v2.so");
    fs::copy(faulty_v2(), &new).unwrap();
    let broken = dir.path().join("broken.so");
    fs::write(&broken, &fs::read(&built().1).unwrap()[..5000]).unwrap();
    for f in [&installed, &new, &broken] {
        fs::set_permissions(f, fs::Permissions::from_mode(0o644)).unwrap();
    }
    // The sandbox config with `faulty` (harmless where it is told to fault:
    // destroy_scope is never called) as the readiness backend.
    let text = nodeinit_tests::with_plugin_dir(nodeinit::demo::SANDBOX_CONFIG, &plugin_dir)
        .replace(
            "[plugins.readiness]\npath = \"readiness\"",
            &format!(
                "[plugins.readiness]\npath = {:?}\noptions = {{ fault = \"segv\", at = \"destroy_scope\" }}",
                installed.display().to_string()
            ),
        )
        .replace(
            "args = [\"demo-agent\"]",
            &format!(
                "args = [\"demo-agent\", \"--reload-check\", {:?}, {:?}, {:?}]",
                installed.display().to_string(),
                new.display().to_string(),
                broken.display().to_string()
            ),
        );
    let config = dir.path().join("nodeinit.toml");
    fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nodeinit"))
        .args(["--sandbox", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!("{stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{context}");
    assert!(stdout.contains(": faulty 0.1.0 sha256 "), "{context}");
    assert!(
        stdout.contains(": faulty 2.0.0-reload sha256 "),
        "status does not show the new version: {context}"
    );
    assert!(
        stdout.contains("demo-agent: demo-1 has the same namespaces after the reload"),
        "{context}"
    );
    assert!(
        stdout.contains("demo-agent: broken reload refused: plugin readiness FAILED")
            && stdout.contains("truncated or corrupt"),
        "{context}"
    );
    assert!(
        stdout.contains("demo-agent: reload check passed"),
        "{context}"
    );
    assert!(stderr.contains("holder adopted"), "{context}");
}

/// The keeper's status once `done` holds (the worker restarts after its
/// backoff; this waits for that report, bounded).
fn status_when(
    socket: &Path,
    done: impl Fn(&nodeinit::keeper::WorkerStatus) -> bool,
) -> nodeinit::keeper::WorkerStatus {
    use nodeinit::control::{ask, ControlReply, ControlRequest};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match ask(socket, &ControlRequest::Status) {
            Ok(ControlReply::Status(s)) if done(&s) => return s,
            Ok(ControlReply::Status(s)) if std::time::Instant::now() > deadline => {
                panic!("status never reached the expected state: {s:?}")
            }
            Ok(ControlReply::Status(_)) => {}
            other => panic!("{other:?}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn process_level_a_dead_worker_is_restarted_and_reload_probes_first() {
    use nodeinit::control::{ask, ControlReply, ControlRequest};
    // No [handoff]: the worker serves until the keeper stops it.
    let text = common::ALL_NULL;
    let stage = new_stage(text);
    let env = stage.env();
    let mut p = prepare(&env);
    assert!(p.phases.is_healthy());
    let first = p.worker.as_ref().unwrap().pid();
    let (stop, keeper) = keep_in_thread(&mut p, &env);
    let socket = env.run_dir.join("control.sock");
    let status = status_when(&socket, |s| s.pid.is_some());
    assert_eq!(status.pid, Some(first.as_raw()));
    nix::sys::signal::kill(first, nix::sys::signal::Signal::SIGSEGV).unwrap();
    let status = status_when(&socket, |s| s.restarts == 1 && s.pid.is_some());
    assert_ne!(status.pid, Some(first.as_raw()));
    assert_eq!(
        status.last_death.as_deref(),
        Some("worker killed by SIGSEGV")
    );
    let restarted = status.pid;

    // A config whose plugin is gone: the probe refuses, nothing changes.
    let config = stage.dir.path().join("nodeinit.toml");
    let good = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        good.replacen("path = \"null\"", "path = \"gone\"", 1),
    )
    .unwrap();
    match ask(&socket, &ControlRequest::Reload).unwrap() {
        ControlReply::Error(why) => assert!(
            why.contains("nothing changed") && why.contains("libnodeinit_gone.so: no such file"),
            "{why}"
        ),
        other => panic!("a broken reload was accepted: {other:?}"),
    }
    let status = status_when(&socket, |_| true);
    assert_eq!((status.pid, status.reloads), (restarted, 0));

    // The good config again: a new worker takes over.
    fs::write(&config, good).unwrap();
    match ask(&socket, &ControlRequest::Reload).unwrap() {
        ControlReply::Reloaded(s) => {
            assert_eq!(s.reloads, 1);
            assert!(s.pid.is_some() && s.pid != restarted, "{s:?}");
        }
        other => panic!("reload failed: {other:?}"),
    }
    nix::unistd::write(&stop, b"stop").unwrap();
    keeper.join().unwrap();
    p.release();
    assert!(!socket.exists(), "control socket left behind");
}
