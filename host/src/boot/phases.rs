//! Running the boot phases, timing and logging each, and stopping at the
//! first failed required phase: the phases not yet started are recorded as
//! skipped, never run on a broken base, and one still running elsewhere (the
//! kernel-modules thread) is recorded as cut short.
//!
//! Each phase's start and end, in milliseconds since the runner was made
//! (the boot's start), go to `boot.json`'s timeline: phases overlap.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// How a phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseStatus {
    /// Done.
    Ok,
    /// Failed; boot stops (unless `on_failure = continue`).
    Failed,
    /// Failed, but nothing required depended on it: boot goes on.
    Degraded,
    /// Not run (not applicable, or an earlier required phase failed).
    Skipped,
}

impl PhaseStatus {
    /// Lowercase name, as logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Degraded => "degraded",
            Self::Skipped => "skipped",
        }
    }
}

/// One phase in `boot.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseRecord {
    /// Phase name (`cgroup_hierarchy`, ...).
    pub name: String,
    /// Outcome.
    pub status: PhaseStatus,
    /// Wall time in milliseconds.
    pub elapsed_ms: f64,
    /// Why it failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
}

/// What a phase body reports (also what a worker sends the keeper).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseResult {
    /// Done.
    Ok,
    /// Not applicable here, with the reason.
    NotApplicable(String),
    /// Failed; `required` decides whether boot stops.
    Failed {
        /// One line.
        reason: String,
        /// Whether boot depends on it.
        required: bool,
    },
}

/// When one phase ran, in milliseconds since the boot's start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseSpan {
    /// Phase name.
    pub name: String,
    /// Started.
    pub start_ms: f64,
    /// Ended.
    pub end_ms: f64,
    /// Stopped before its work was done because a required phase failed.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub cut_short: bool,
}

/// The phases of one boot.
#[derive(Debug)]
pub struct PhaseRunner {
    records: Vec<PhaseRecord>,
    spans: Vec<PhaseSpan>,
    broken: Option<String>,
    continue_after_failure: bool,
    boot_start: Instant,
}

impl Default for PhaseRunner {
    fn default() -> Self {
        Self::new(false)
    }
}

impl PhaseRunner {
    /// A runner; with `continue_after_failure` (`on_failure = continue`) a
    /// failed required phase does not stop the later ones. The boot's
    /// timeline starts now.
    pub fn new(continue_after_failure: bool) -> Self {
        Self {
            records: Vec::new(),
            spans: Vec::new(),
            broken: None,
            continue_after_failure,
            boot_start: Instant::now(),
        }
    }

    /// Milliseconds from the boot's start to `at`.
    pub fn since_boot_ms(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.boot_start).as_secs_f64() * 1e3
    }

    /// Sets whether boot continues after a failure (known once the config is read).
    pub fn set_continue_after_failure(&mut self, yes: bool) {
        self.continue_after_failure = yes;
    }

    /// Runs phase `name` unless the base is broken.
    pub fn run(&mut self, name: &str, body: impl FnOnce() -> PhaseResult) {
        if self.skip_if_broken(name) {
            return;
        }
        let start = Instant::now();
        let result = body();
        self.finish_span(name, result, start, Instant::now(), false);
    }

    /// Whether the base is broken; if so records `name` as not run.
    pub fn skip_if_broken(&mut self, name: &str) -> bool {
        if let Some(cause) = &self.broken {
            let detail = format!("not run: {cause}");
            tracing::warn!(
                phase = name,
                status = "skipped",
                elapsed = "0ms",
                "{detail}"
            );
            self.insert_record(PhaseRecord {
                name: name.to_owned(),
                status: PhaseStatus::Skipped,
                elapsed_ms: 0.0,
                detail: Some(detail),
            });
            return true;
        }
        false
    }

    /// Records phase `name`, which ran elsewhere (in the worker) and took
    /// `elapsed_ms` up to now, with its result: logged, and a required
    /// failure breaks the base.
    pub fn finish(&mut self, name: &str, result: PhaseResult, elapsed_ms: f64) {
        let end_ms = self.since_boot_ms(Instant::now());
        self.record(name, result, (end_ms - elapsed_ms).max(0.0), end_ms, false);
    }

    /// Records phase `name`, which ran from `started` to `ended` (another
    /// thread's phase); `cut_short`: it stopped early because the base broke.
    pub fn finish_span(
        &mut self,
        name: &str,
        result: PhaseResult,
        started: Instant,
        ended: Instant,
        cut_short: bool,
    ) {
        let (start_ms, end_ms) = (self.since_boot_ms(started), self.since_boot_ms(ended));
        self.record(name, result, start_ms, end_ms, cut_short);
    }

    fn record(
        &mut self,
        name: &str,
        result: PhaseResult,
        start_ms: f64,
        end_ms: f64,
        cut_short: bool,
    ) {
        let elapsed_ms = end_ms - start_ms;
        self.spans.push(PhaseSpan {
            name: name.to_owned(),
            start_ms,
            end_ms,
            cut_short,
        });
        let elapsed = format!("{elapsed_ms:.3}ms");
        let (status, detail) = match result {
            PhaseResult::Ok => {
                tracing::info!(phase = name, status = "ok", elapsed = %elapsed, "phase done");
                (PhaseStatus::Ok, None)
            }
            PhaseResult::NotApplicable(why) => {
                tracing::info!(phase = name, status = "skipped", elapsed = %elapsed, "{why}");
                (PhaseStatus::Skipped, Some(why))
            }
            PhaseResult::Failed {
                reason,
                required: true,
            } => {
                tracing::error!(phase = name, status = "failed", elapsed = %elapsed, "{reason}");
                if !self.continue_after_failure {
                    self.broken = Some(format!("phase {name} failed"));
                }
                (PhaseStatus::Failed, Some(reason))
            }
            PhaseResult::Failed {
                reason,
                required: false,
            } => {
                tracing::warn!(phase = name, status = "degraded", elapsed = %elapsed, "{reason}");
                (PhaseStatus::Degraded, Some(reason))
            }
        };
        self.insert_record(PhaseRecord {
            name: name.to_owned(),
            status,
            elapsed_ms,
            detail,
        });
    }

    /// The first required failure, as `phase: reason`.
    pub fn first_failure(&self) -> Option<String> {
        self.records
            .iter()
            .find(|r| r.status == PhaseStatus::Failed)
            .map(|r| {
                format!(
                    "phase {} failed: {}",
                    r.name,
                    r.detail.as_deref().unwrap_or("no detail")
                )
            })
    }

    /// What broke the base (`phase x failed`), if a required phase failed.
    pub fn broken_by(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// Whether no required phase failed and boot may go on.
    pub fn is_healthy(&self) -> bool {
        self.broken.is_none()
    }

    /// The records so far, in table order ([`super::PHASES`]; names not in
    /// it after those, in the order they ended), whichever ended first.
    pub fn records(&self) -> &[PhaseRecord] {
        &self.records
    }

    /// Adds `record` at its table position.
    fn insert_record(&mut self, record: PhaseRecord) {
        let at = super::table::position(&record.name);
        let index = self
            .records
            .iter()
            .position(|r| super::table::position(&r.name) > at)
            .unwrap_or(self.records.len());
        self.records.insert(index, record);
    }

    /// When each phase that ran started and ended, by start time.
    pub fn spans(&self) -> Vec<PhaseSpan> {
        let mut spans = self.spans.clone();
        spans.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
        spans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_failure_skips_the_rest() {
        let mut r = PhaseRunner::new(false);
        r.run("a", || PhaseResult::Ok);
        r.run("b", || PhaseResult::Failed {
            reason: "boom".into(),
            required: true,
        });
        let mut ran = false;
        r.run("c", || {
            ran = true;
            PhaseResult::Ok
        });
        assert!(!ran);
        let s: Vec<_> = r
            .records()
            .iter()
            .map(|p| (p.name.as_str(), p.status))
            .collect();
        assert_eq!(
            s,
            [
                ("a", PhaseStatus::Ok),
                ("b", PhaseStatus::Failed),
                ("c", PhaseStatus::Skipped)
            ]
        );
        assert_eq!(
            r.records()[2].detail.as_deref(),
            Some("not run: phase b failed")
        );
        assert_eq!(r.first_failure().as_deref(), Some("phase b failed: boom"));
        assert!(!r.is_healthy());
    }

    #[test]
    fn spans_record_start_and_end_since_the_boot_start_and_records_sort_by_table() {
        let mut r = PhaseRunner::new(false);
        let t0 = r.boot_start;
        let ms = std::time::Duration::from_millis;
        r.finish_span(
            "kernel_modules",
            PhaseResult::Ok,
            t0 + ms(5),
            t0 + ms(50),
            false,
        );
        r.finish_span("early_mounts", PhaseResult::Ok, t0, t0 + ms(5), false);
        r.finish_span("config", PhaseResult::Ok, t0 + ms(5), t0 + ms(20), false);
        let spans: Vec<(String, f64, f64)> = r
            .spans()
            .into_iter()
            .map(|s| (s.name, s.start_ms, s.end_ms))
            .collect();
        assert_eq!(
            spans,
            [
                ("early_mounts".to_owned(), 0.0, 5.0),
                ("kernel_modules".to_owned(), 5.0, 50.0),
                ("config".to_owned(), 5.0, 20.0),
            ]
        );
        let names: Vec<&str> = r.records().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["early_mounts", "kernel_modules", "config"]);
        assert_eq!(r.records()[1].elapsed_ms, 45.0);
        // A phase skipped on a broken base has a record but no span.
        r.finish(
            "plugins",
            PhaseResult::Failed {
                reason: "x".into(),
                required: true,
            },
            1.0,
        );
        assert_eq!(r.broken_by(), Some("phase plugins failed"));
        assert!(r.skip_if_broken("cgroup_hierarchy"));
        assert_eq!(r.spans().len(), 4);
        assert_eq!(r.records().len(), 5);
    }

    #[test]
    fn optional_failure_and_continue_policy_go_on() {
        let mut r = PhaseRunner::new(true);
        r.run("a", || PhaseResult::Failed {
            reason: "x".into(),
            required: false,
        });
        r.run("b", || PhaseResult::Failed {
            reason: "y".into(),
            required: true,
        });
        r.run("c", || PhaseResult::Ok);
        let s: Vec<_> = r.records().iter().map(|p| p.status).collect();
        assert_eq!(
            s,
            [PhaseStatus::Degraded, PhaseStatus::Failed, PhaseStatus::Ok]
        );
        assert!(r.is_healthy());
    }
}
