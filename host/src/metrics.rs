//! The fleet view: a Prometheus text-format file (exposition format 0.0.4)
//! that node_exporter's textfile collector publishes, written with
//! `boot.json` at the end of the boot and on every worker restart.
//!
//! Owns the metric names, their help texts and label escaping. It renders
//! from what the boot already recorded ([`BootReport`]) plus the counts the
//! keeper gathers ([`RuntimeCounts`]); it must never call a plugin, and
//! writing it can never fail a boot.
//!
//! ```
//! use nodeinit::boot::BootReport;
//! use nodeinit::metrics::{render, RuntimeCounts};
//!
//! let text = render(&BootReport::default(), &RuntimeCounts::default());
//! assert!(text.contains("# TYPE nodeinit_boot_success gauge"));
//! ```

use std::fmt::Write as _;
use std::path::Path;

use crate::boot::{write_atomic, BootReport, PhaseStatus};

/// Default `[host].metrics_file`.
pub const DEFAULT_METRICS_FILE: &str = "/run/nodeinit/metrics.prom";

/// What the keeper counts beyond the boot report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeCounts {
    /// Worker restarts since boot.
    pub worker_restarts: u64,
    /// Live namespace allocations, when a handoff server runs.
    pub live_allocations: Option<u64>,
    /// Images mounted by the mount backend, when known.
    pub mounted_images: Option<u64>,
}

/// Escape a label value: backslash, double quote and newline, as the
/// exposition format requires; other control characters are escaped too so
/// a plugin's version string cannot break the line.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The whole metrics file for `report`.
pub fn render(report: &BootReport, counts: &RuntimeCounts) -> String {
    let mut out = String::new();
    let failed = report
        .phases
        .iter()
        .any(|p| p.status == PhaseStatus::Failed);
    let finished = report.phases.iter().any(|p| p.name == "handoff");

    header(
        &mut out,
        "nodeinit_build_info",
        "gauge",
        "nodeinit version and the node it booted (always 1).",
    );
    let _ = writeln!(
        out,
        "nodeinit_build_info{{version=\"{}\",node_id=\"{}\"}} 1",
        label(&report.nodeinit_version),
        label(report.node_id.as_deref().unwrap_or(""))
    );

    header(
        &mut out,
        "nodeinit_boot_success",
        "gauge",
        "1 when every required boot phase succeeded and the handoff was reached, 0 otherwise.",
    );
    let _ = writeln!(
        out,
        "nodeinit_boot_success {}",
        u8::from(finished && !failed)
    );

    header(
        &mut out,
        "nodeinit_boot_phase_duration_seconds",
        "gauge",
        "Wall time of each boot phase.",
    );
    for p in &report.phases {
        let _ = writeln!(
            out,
            "nodeinit_boot_phase_duration_seconds{{phase=\"{}\"}} {}",
            label(&p.name),
            p.elapsed_ms / 1e3
        );
    }

    header(
        &mut out,
        "nodeinit_boot_phase_status",
        "gauge",
        "1 for the status each boot phase ended with (ok, failed, degraded, skipped).",
    );
    for p in &report.phases {
        for status in [
            PhaseStatus::Ok,
            PhaseStatus::Failed,
            PhaseStatus::Degraded,
            PhaseStatus::Skipped,
        ] {
            let _ = writeln!(
                out,
                "nodeinit_boot_phase_status{{phase=\"{}\",status=\"{}\"}} {}",
                label(&p.name),
                status.as_str(),
                u8::from(p.status == status)
            );
        }
    }

    header(
        &mut out,
        "nodeinit_boot_duration_seconds",
        "gauge",
        "Sum of the boot phases' wall times.",
    );
    let _ = writeln!(
        out,
        "nodeinit_boot_duration_seconds {}",
        report.total_ms / 1e3
    );

    header(
        &mut out,
        "nodeinit_plugin_info",
        "gauge",
        "The configured plugins (1 when loaded and constructed, 0 when not).",
    );
    for p in &report.plugins {
        let _ = writeln!(
            out,
            "nodeinit_plugin_info{{kind=\"{}\",name=\"{}\",version=\"{}\",sha256=\"{}\",required=\"{}\"}} {}",
            label(&p.kind),
            label(p.name.as_deref().unwrap_or("")),
            label(p.version.as_deref().unwrap_or("")),
            label(p.sha256.as_deref().unwrap_or("")),
            p.required,
            u8::from(p.error.is_none())
        );
    }

    header(
        &mut out,
        "nodeinit_worker_restarts_total",
        "counter",
        "Times the keeper restarted its plugin worker since boot.",
    );
    let _ = writeln!(
        out,
        "nodeinit_worker_restarts_total {}",
        counts.worker_restarts
    );

    if let Some(live) = counts.live_allocations {
        header(
            &mut out,
            "nodeinit_live_allocations",
            "gauge",
            "Namespace allocations served by the handoff socket right now.",
        );
        let _ = writeln!(out, "nodeinit_live_allocations {live}");
    }
    if let Some(mounted) = counts.mounted_images {
        header(
            &mut out,
            "nodeinit_mounted_images",
            "gauge",
            "uenv images mounted by the mount backend right now.",
        );
        let _ = writeln!(out, "nodeinit_mounted_images {mounted}");
    }
    out
}

/// Where the metrics go for a boot whose run directory is `run_dir`: the
/// configured `[host].metrics_file`, except that the default follows the
/// run directory (the sandbox's and the tests' private `/run`).
pub fn metrics_path(configured: &Path, run_dir: &Path) -> std::path::PathBuf {
    if configured == Path::new(DEFAULT_METRICS_FILE) {
        run_dir.join("metrics.prom")
    } else {
        configured.to_path_buf()
    }
}

/// [`write`], logging instead of failing: metrics never fail a boot.
pub fn publish(path: &Path, report: &BootReport, counts: &RuntimeCounts) {
    if let Err(e) = write(path, report, counts) {
        tracing::warn!("{e}");
    }
}

/// Render and write atomically to `path` (a reader such as node_exporter
/// never sees half a file).
///
/// # Errors
///
/// The I/O error, naming the path.
pub fn write(path: &Path, report: &BootReport, counts: &RuntimeCounts) -> Result<(), String> {
    write_atomic(path, render(report, counts).as_bytes())
        .map_err(|e| format!("write metrics {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::{PhaseRecord, PluginRecord};

    fn sample() -> BootReport {
        BootReport {
            nodeinit_version: "0.1.0".into(),
            node_id: Some("nid000042".into()),
            phases: vec![
                PhaseRecord {
                    name: "config".into(),
                    status: PhaseStatus::Ok,
                    elapsed_ms: 1.5,
                    detail: None,
                },
                PhaseRecord {
                    name: "handoff".into(),
                    status: PhaseStatus::Ok,
                    elapsed_ms: 0.5,
                    detail: None,
                },
            ],
            plugins: vec![PluginRecord {
                kind: "cgroup".into(),
                path: "/usr/lib/nodeinit/plugins/libnodeinit_cgroupfs.so".into(),
                required: true,
                name: Some("cgroupfs".into()),
                version: Some("1.0 \"beta\"\n\x1b[2J".into()),
                interface: Some("1".into()),
                sha256: None,
                error: None,
            }],
            total_ms: 2.0,
            ..BootReport::default()
        }
    }

    #[test]
    fn renders_phases_plugins_and_counts() {
        let text = render(
            &sample(),
            &RuntimeCounts {
                worker_restarts: 2,
                live_allocations: Some(3),
                mounted_images: Some(1),
            },
        );
        assert!(text.contains("nodeinit_boot_success 1\n"), "{text}");
        assert!(
            text.contains("nodeinit_boot_phase_duration_seconds{phase=\"config\"} 0.0015\n"),
            "{text}"
        );
        assert!(
            text.contains("nodeinit_boot_phase_status{phase=\"config\",status=\"ok\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("nodeinit_boot_phase_status{phase=\"config\",status=\"failed\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("nodeinit_plugin_info{kind=\"cgroup\",name=\"cgroupfs\",version=\"1.0 \\\"beta\\\"\\n\\\\u{1b}[2J\",sha256=\"\",required=\"true\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("nodeinit_worker_restarts_total 2\n"),
            "{text}"
        );
        assert!(text.contains("nodeinit_live_allocations 3\n"), "{text}");
        assert!(text.contains("nodeinit_mounted_images 1\n"), "{text}");
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text}");
    }

    #[test]
    fn a_failed_phase_is_no_success() {
        let mut report = sample();
        report.phases[0].status = PhaseStatus::Failed;
        let text = render(&report, &RuntimeCounts::default());
        assert!(text.contains("nodeinit_boot_success 0\n"), "{text}");
        assert!(!text.contains("nodeinit_live_allocations"), "{text}");
    }

    /// Debian's `prometheus` package ships promtool; CI installs it. A
    /// missing promtool fails the test (it is never skipped).
    #[test]
    fn promtool_accepts_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.prom");
        write(
            &path,
            &sample(),
            &RuntimeCounts {
                worker_restarts: 1,
                live_allocations: Some(0),
                mounted_images: Some(0),
            },
        )
        .unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let out = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(file)
            .output()
            .unwrap_or_else(|e| {
                panic!("promtool not runnable ({e}): apt-get install prometheus (CI does)")
            });
        assert!(
            out.status.success(),
            "promtool check metrics failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
