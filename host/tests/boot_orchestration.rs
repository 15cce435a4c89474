//! Boot orchestration with the `null` and `panicky` fixture plugins (real
//! `.so` files, real loader): phase order, required vs optional failures,
//! panics, the report, and `nodeinit check`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Stage;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use nodeinit::boot::{boot, prepare, BootReport, PhaseStatus};

fn built() -> &'static (PathBuf, PathBuf) {
    static B: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    B.get_or_init(|| {
        let b = nodeinit_tests::plugin_artifacts(&["nodeinit-null", "nodeinit-panicky"]);
        (b["nodeinit-null"].clone(), b["nodeinit-panicky"].clone())
    })
}

/// A stage with the `null` and `panicky` fixtures installed.
fn new_stage(config: &str) -> Stage {
    Stage::new(config, &[(&built().0, "null"), (&built().1, "panicky")])
}

/// Every backend `null`, one boot mount, a supervised agent.
fn all_null() -> String {
    common::all_null_supervised()
        .replace("[handoff]", "[boot]\nmounts = [\"base.sqfs\"]\n[handoff]")
}

fn statuses(p: &nodeinit::boot::Prepared) -> Vec<(String, PhaseStatus)> {
    p.phases
        .records()
        .iter()
        .map(|r| (r.name.clone(), r.status))
        .collect()
}

fn s(name: &str, status: PhaseStatus) -> (String, PhaseStatus) {
    (name.to_owned(), status)
}

#[test]
fn phases_run_in_order_and_the_node_becomes_ready() {
    let stage = new_stage(&all_null());
    let mut p = prepare(&stage.env());
    use PhaseStatus::*;
    assert_eq!(
        statuses(&p),
        [
            s("early_mounts", Skipped),
            s("kernel_modules", Skipped),
            s("config", Ok),
            s("plugins", Ok),
            s("cgroup_hierarchy", Ok),
            s("boot_mounts", Ok),
            s("handoff_socket", Ok),
            s("readiness", Ok),
        ]
    );
    assert_eq!(p.node_id.as_ref().unwrap().as_str(), "node-7");
    assert_eq!(p.facts.boot_mounts.len(), 1);
    assert_eq!(p.facts.boot_mounts[0].mount_point, "/null/base.sqfs");
    // The plugins ran in a worker that still serves; none is mapped here.
    assert!(p.worker.is_some());
    let maps = fs::read_to_string("/proc/self/maps").unwrap();
    assert!(
        !maps.contains("libnodeinit_null"),
        "a plugin is mapped in the keeper"
    );
    assert!(stage.dir.path().join("handoff.sock").exists());
    let names: Vec<_> = p
        .facts
        .plugins
        .iter()
        .map(|r| (r.kind.as_str(), r.name.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            ("cgroup", Some("null")),
            ("mount", Some("null")),
            ("namespace", Some("null")),
            ("readiness", Some("null"))
        ]
    );
    // The fleet view is written with boot.json (once, not after every phase).
    let metrics_file = stage.env().run_dir.join("metrics.prom");
    assert!(!metrics_file.exists(), "metrics written before the report");
    p.write_report(&stage.env());
    assert!(stage.env().run_dir.join("boot.json").exists());
    let metrics = fs::read_to_string(&metrics_file).unwrap();
    for line in [
        "nodeinit_boot_phase_status{phase=\"config\",status=\"ok\"} 1\n",
        "nodeinit_boot_phase_status{phase=\"readiness\",status=\"ok\"} 1\n",
        "nodeinit_plugin_info{kind=\"mount\",name=\"null\",",
        "nodeinit_worker_restarts_total 0\n",
    ] {
        assert!(metrics.contains(line), "{line:?} not in\n{metrics}");
    }
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(fs::File::open(&metrics_file).unwrap())
        .output()
        .expect("promtool (Debian package prometheus) runs");
    assert!(
        promtool.status.success(),
        "{}",
        String::from_utf8_lossy(&promtool.stderr)
    );
    p.release();
    assert!(
        !stage.dir.path().join("handoff.sock").exists(),
        "socket left behind"
    );
}

#[test]
fn a_failing_required_plugin_stops_later_phases_and_fails_the_boot() {
    let stage = new_stage(&all_null().replace(
        "[plugins.cgroup]\npath = \"null\"",
        "[plugins.cgroup]\npath = \"null\"\noptions = { fail = [\"create_hierarchy\"] }",
    ));
    let env = stage.env();
    let p = prepare(&env);
    use PhaseStatus::*;
    assert_eq!(
        statuses(&p)[4..],
        [
            s("cgroup_hierarchy", Failed),
            s("boot_mounts", Skipped),
            s("handoff_socket", Skipped),
            s("readiness", Skipped)
        ]
    );
    assert_eq!(
        p.phases.first_failure().as_deref(),
        Some("phase cgroup_hierarchy failed: cgroup creation failed: null: create_hierarchy asked to fail")
    );
    drop(p);
    // The whole boot: not PID 1, so on_failure (default shell) is an exit 1,
    // and boot.json says why.
    assert_eq!(boot(&env), 1);
    let report = BootReport::read_from(&env.run_dir.join("boot.json")).unwrap();
    assert_eq!(
        report.errors,
        ["phase cgroup_hierarchy: cgroup creation failed: null: create_hierarchy asked to fail"]
    );
    assert!(
        report.render().contains("cgroup_hierarchy   failed"),
        "{}",
        report.render()
    );
}

#[test]
fn a_failing_optional_plugin_degrades_and_boot_goes_on() {
    let stage = new_stage(&all_null().replace(
        "[plugins.cgroup]\npath = \"null\"",
        "[plugins.cgroup]\npath = \"null\"\nrequired = false\noptions = { fail = [\"create_hierarchy\"] }",
    ));
    let p = prepare(&stage.env());
    use PhaseStatus::*;
    assert_eq!(
        statuses(&p)[4..],
        [
            s("cgroup_hierarchy", Degraded),
            s("boot_mounts", Ok),
            s("handoff_socket", Ok),
            s("readiness", Ok)
        ]
    );
    assert!(p.phases.is_healthy());
}

#[test]
fn a_missing_required_plugin_is_reported_with_its_path() {
    let stage = new_stage(&all_null().replace(
        "[plugins.namespace]\npath = \"null\"",
        "[plugins.namespace]\npath = \"nosuch\"",
    ));
    let p = prepare(&stage.env());
    let plugins = &p.phases.records()[3];
    assert_eq!(plugins.status, PhaseStatus::Failed);
    let expected = format!(
        "plugin namespace ({}/plugins/libnodeinit_nosuch.so): no such file: check the plugin path or [host].plugin_dir",
        stage.dir.path().display()
    );
    assert_eq!(plugins.detail.as_deref(), Some(expected.as_str()));
    assert!(p.phases.records()[4..]
        .iter()
        .all(|r| r.status == PhaseStatus::Skipped));
}

#[test]
fn a_panicking_plugin_is_reported_and_required_decides() {
    let panicky = r#"
[host]
plugin_dir = "@PLUGINS@"
[plugins.cgroup]
path = "panicky"
required = REQUIRED
options = { panic_in = ["create_hierarchy"] }
[plugins.readiness]
path = "null"
"#;
    for (required, status, healthy) in [
        ("true", PhaseStatus::Failed, false),
        ("false", PhaseStatus::Degraded, true),
    ] {
        let stage = new_stage(&panicky.replace("REQUIRED", required));
        let p = prepare(&stage.env());
        let cg = &p.phases.records()[4];
        assert_eq!((cg.name.as_str(), cg.status), ("cgroup_hierarchy", status));
        assert_eq!(
            cg.detail.as_deref(),
            Some("cgroup I/O error: plugin panicked: create_hierarchy in plugin panicky: panicky was told to panic in create_hierarchy")
        );
        assert_eq!(p.phases.is_healthy(), healthy);
        let readiness = p.phases.records().last().unwrap();
        assert_eq!(
            readiness.status,
            if healthy {
                PhaseStatus::Ok
            } else {
                PhaseStatus::Skipped
            }
        );
    }
}

#[test]
fn on_failure_continue_runs_the_later_phases() {
    let stage = new_stage(
        &all_null()
            .replace("[host]\n", "[host]\non_failure = \"continue\"\n")
            .replace(
                "[plugins.mount]\npath = \"null\"",
                "[plugins.mount]\npath = \"null\"\noptions = { fail = [\"acquire_mount\"] }",
            ),
    );
    let p = prepare(&stage.env());
    use PhaseStatus::*;
    assert_eq!(
        statuses(&p)[5..],
        [
            s("boot_mounts", Failed),
            s("handoff_socket", Ok),
            s("readiness", Ok)
        ]
    );
}

#[test]
fn pact_signals_readiness_itself() {
    let stage = new_stage(&all_null().replace("agent = \"command\"", "agent = \"pact\""));
    let p = prepare(&stage.env());
    let r = p.phases.records().last().unwrap();
    assert_eq!(
        (r.name.as_str(), r.status),
        ("readiness", PhaseStatus::Skipped)
    );
    // Supervise mode: the handoff gate waits for pact's own ready file.
    assert_eq!(
        r.detail.as_deref(),
        Some("pact-agent signals readiness itself (/run/pact/ready); the handoff gate opens when it appears")
    );
}

#[test]
fn check_command_reports_every_problem_and_its_verdict() {
    let stage = new_stage(
        &all_null()
            .replace(
                "[plugins.namespace]\npath = \"null\"",
                "[plugins.namespace]\npath = \"nosuch\"",
            )
            .replace(
                "[plugins.mount]\npath = \"null\"",
                "[plugins.mount]\npath = \"null\"\noptions = { fial = [] }",
            ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_nodeinit"))
        .args(["check", "--config"])
        .arg(stage.dir.path().join("nodeinit.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("plugin cgroup    ok       null"), "{text}");
    assert!(
        text.contains("plugin mount     FAILED   ")
            && text.contains(
                "plugin null: invalid options for the mount backend: unknown field `fial`"
            ),
        "{text}"
    );
    assert!(
        text.contains("plugin namespace FAILED   ")
            && text.contains("libnodeinit_nosuch.so: no such file"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("check: FAILED"), "{text}");
    // And a good config passes, changing nothing.
    let good = new_stage(&all_null());
    let out = Command::new(env!("CARGO_BIN_EXE_nodeinit"))
        .args(["check", "--config"])
        .arg(good.dir.path().join("nodeinit.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!Path::new(&good.dir.path().join("run")).exists());
}

#[test]
fn handoff_socket_group_and_access_come_from_the_config() {
    use std::os::unix::fs::MetadataExt;
    let stage = new_stage(&all_null().replace(
        "mode = \"supervise\"\n",
        "mode = \"supervise\"\n[handoff.socket]\ngroup = 4242\nuids = [990]\n",
    ));
    let mut p = prepare(&stage.env());
    let meta = fs::metadata(stage.dir.path().join("handoff.sock")).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, 4242));
    p.release();
}
