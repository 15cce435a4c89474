//! `/run/nodeinit/boot.json`: what the boot did, written atomically (temp
//! file, fsync, rename) so a reader never sees half of it; and
//! `nodeinit report`, which prints it as a table.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::backends::PluginRecord;
use super::phases::{PhaseRecord, PhaseSpan};

/// File name of the report inside the run directory.
pub const BOOT_REPORT_FILE: &str = "boot.json";

/// The whole report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BootReport {
    /// nodeinit's version.
    pub nodeinit_version: String,
    /// The node id, once resolved.
    pub node_id: Option<String>,
    /// Where the config came from.
    pub config: Option<String>,
    /// Whether nodeinit ran as PID 1.
    pub pid1: bool,
    /// Phases in order.
    pub phases: Vec<PhaseRecord>,
    /// Plugins.
    pub plugins: Vec<PluginRecord>,
    /// Every error, one line each.
    pub errors: Vec<String>,
    /// Sum of the phase times.
    pub total_ms: f64,
    /// Kernel uptime when the report was written (seconds), from /proc/uptime.
    pub uptime_secs: Option<f64>,
    /// When each phase that ran started and ended (ms since the boot's
    /// start), by start: phases overlap.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub timeline: Vec<PhaseSpan>,
}

/// Width of the timeline's bars, in characters.
const TIMELINE_WIDTH: usize = 50;

impl BootReport {
    /// Writes the report to `<dir>/boot.json` atomically.
    ///
    /// # Errors
    ///
    /// The I/O error, naming the path.
    pub fn write_to(&self, dir: &Path) -> Result<PathBuf, String> {
        let path = dir.join(BOOT_REPORT_FILE);
        let text =
            serde_json::to_string_pretty(self).map_err(|e| format!("encode boot report: {e}"))?;
        write_atomic(&path, text.as_bytes())
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok(path)
    }

    /// Reads a report.
    ///
    /// # Errors
    ///
    /// Unreadable or not a boot report, naming the path.
    pub fn read_from(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a nodeinit boot report: {e}", path.display()))
    }

    /// A human-readable table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "nodeinit {}  node {}  pid1 {}  config {}",
            self.nodeinit_version,
            self.node_id.as_deref().unwrap_or("?"),
            if self.pid1 { "yes" } else { "no" },
            self.config.as_deref().unwrap_or("?")
        );
        let _ = writeln!(
            out,
            "\n{:<18} {:<9} {:>10}  detail",
            "phase", "status", "elapsed"
        );
        for p in &self.phases {
            let _ = writeln!(
                out,
                "{:<18} {:<9} {:>8.3}ms  {}",
                p.name,
                p.status.as_str(),
                p.elapsed_ms,
                p.detail.as_deref().unwrap_or("")
            );
        }
        let _ = writeln!(out, "{:<18} {:<9} {:>8.3}ms", "total", "", self.total_ms);
        self.render_timeline(&mut out);
        if !self.plugins.is_empty() {
            let _ = writeln!(
                out,
                "\n{:<10} {:<12} {:<9} {:<6} {:<9} path",
                "kind", "plugin", "version", "iface", "status"
            );
            for p in &self.plugins {
                let _ = writeln!(
                    out,
                    "{:<10} {:<12} {:<9} {:<6} {:<9} {}",
                    p.kind,
                    p.name.as_deref().unwrap_or("-"),
                    p.version.as_deref().unwrap_or("-"),
                    p.interface.as_deref().unwrap_or("-"),
                    if p.error.is_none() {
                        "ok"
                    } else if p.required {
                        "FAILED"
                    } else {
                        "missing"
                    },
                    p.path
                );
            }
        }
        if !self.errors.is_empty() {
            let _ = writeln!(out, "\nerrors:");
            for e in &self.errors {
                let _ = writeln!(out, "  {e}");
            }
        }
        out
    }
}

impl BootReport {
    /// The timeline: one bar per phase on a common scale, so the overlap
    /// shows; then the phases cut short.
    fn render_timeline(&self, out: &mut String) {
        let Some(wall) = self
            .timeline
            .iter()
            .map(|s| s.end_ms)
            .max_by(f64::total_cmp)
            .filter(|w| *w > 0.0)
        else {
            return;
        };
        let _ = writeln!(
            out,
            "\ntimeline (ms since the boot's start, {wall:.3}ms wall; # = running)"
        );
        let column = |ms: f64| {
            let at = (ms / wall * TIMELINE_WIDTH as f64).floor();
            (at.max(0.0) as usize).min(TIMELINE_WIDTH)
        };
        for span in &self.timeline {
            // At least one mark: a phase that ran is never invisible.
            let from = column(span.start_ms).min(TIMELINE_WIDTH - 1);
            let to = column(span.end_ms).clamp(from + 1, TIMELINE_WIDTH);
            let bar: String = (0..TIMELINE_WIDTH)
                .map(|i| if i >= from && i < to { '#' } else { ' ' })
                .collect();
            let _ = writeln!(
                out,
                "{:<18} {:>9.3} {:>9.3}  |{bar}|{}",
                span.name,
                span.start_ms,
                span.end_ms,
                if span.cut_short { "  cut short" } else { "" }
            );
        }
        let cut: Vec<&str> = self
            .timeline
            .iter()
            .filter(|s| s.cut_short)
            .map(|s| s.name.as_str())
            .collect();
        if !cut.is_empty() {
            let _ = writeln!(
                out,
                "cut short by a failed required phase: {}",
                cut.join(", ")
            );
        }
    }
}

/// Writes `bytes` to `path` (mode 0644) by the one atomic write,
/// `nodeinit_sys::write_atomically`: a temp file in the same directory
/// created `O_EXCL|O_NOFOLLOW|O_NONBLOCK` (a planted link or FIFO at its
/// name is replaced, never followed or waited on), fsync, rename, fsync of
/// the directory, the temp removed on any error; creates the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    nodeinit_sys::write_atomically(path, bytes, 0o644, true)
}

/// Kernel uptime in seconds.
pub fn uptime_secs() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::phases::PhaseStatus;

    #[test]
    fn report_round_trips_and_renders() {
        let dir = tempfile::tempdir().unwrap();
        let report = BootReport {
            nodeinit_version: "0.1.0".into(),
            node_id: Some("n1".into()),
            phases: vec![PhaseRecord {
                name: "config".into(),
                status: PhaseStatus::Ok,
                elapsed_ms: 0.25,
                detail: None,
            }],
            total_ms: 0.25,
            ..BootReport::default()
        };
        let path = report.write_to(dir.path()).unwrap();
        assert_eq!(path, dir.path().join("boot.json"));
        let back = BootReport::read_from(&path).unwrap();
        assert_eq!(back, report);
        let table = back.render();
        assert!(
            table.contains("config             ok           0.250ms"),
            "{table}"
        );
        // No temp file left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_timeline_shows_the_overlap_and_what_was_cut_short() {
        let span = |name: &str, start_ms: f64, end_ms: f64, cut_short: bool| PhaseSpan {
            name: name.into(),
            start_ms,
            end_ms,
            cut_short,
        };
        let report = BootReport {
            timeline: vec![
                span("early_mounts", 0.0, 10.0, false),
                span("kernel_modules", 10.0, 60.0, true),
                span("config", 10.0, 35.0, false),
            ],
            ..BootReport::default()
        };
        let text = report.render();
        let bar = |hashes: std::ops::Range<usize>| -> String {
            (0..TIMELINE_WIDTH)
                .map(|i| if hashes.contains(&i) { '#' } else { ' ' })
                .collect()
        };
        assert!(
            text.contains("timeline (ms since the boot's start, 60.000ms wall; # = running)"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "early_mounts           0.000    10.000  |{}|\n",
                bar(0..8)
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "kernel_modules        10.000    60.000  |{}|  cut short\n",
                bar(8..50)
            )),
            "{text}"
        );
        // config overlaps kernel_modules: the same columns are marked.
        assert!(
            text.contains(&format!(
                "config                10.000    35.000  |{}|\n",
                bar(8..29)
            )),
            "{text}"
        );
        assert!(
            text.contains("cut short by a failed required phase: kernel_modules\n"),
            "{text}"
        );
        // Round trip keeps the spans; a report without them renders no timeline.
        let back: BootReport =
            serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        assert_eq!(back.timeline, report.timeline);
        assert!(!BootReport::default().render().contains("timeline"));
    }

    #[test]
    fn a_planted_temp_symlink_is_never_followed() {
        // The report goes through the one atomic write (nodeinit_sys, whose
        // tests plant at its exact temp names): here, through a fixed temp
        // name, a planted link is replaced, never written through.
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, "keep").unwrap();
        let tmp = dir.path().join(".boot.json.tmp");
        std::os::unix::fs::symlink(&target, &tmp).unwrap();
        let path = dir.path().join("boot.json");
        nodeinit_sys::write_atomically_with_temp(&path, ".boot.json.tmp", b"{}", 0o644, false)
            .unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}");
        assert!(tmp.symlink_metadata().is_err(), "the planted link is gone");
    }

    #[test]
    fn a_failed_rename_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty directory fails.
        let path = dir.path().join("boot.json");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("x"), "").unwrap();
        let err = write_atomic(&path, b"{}").unwrap_err().to_string();
        assert!(
            err.starts_with("renaming ")
                && (err.contains("Is a directory") || err.contains("Directory not empty")),
            "{err}"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["boot.json"]);
    }

    #[test]
    fn reading_garbage_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("boot.json");
        std::fs::write(&p, "{").unwrap();
        let e = BootReport::read_from(&p).unwrap_err();
        assert!(
            e.starts_with(&format!("{}: not a nodeinit boot report", p.display())),
            "{e}"
        );
    }
}
