//! Running the boot phases in order, timing and logging each, and stopping
//! at the first failed required phase: the phases after it are recorded as
//! skipped, never run on a broken base.

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

/// The phase sequence of one boot.
#[derive(Debug, Default)]
pub struct PhaseRunner {
    records: Vec<PhaseRecord>,
    broken: Option<String>,
    continue_after_failure: bool,
}

impl PhaseRunner {
    /// A runner; with `continue_after_failure` (`on_failure = continue`) a
    /// failed required phase does not stop the later ones.
    pub fn new(continue_after_failure: bool) -> Self {
        Self {
            continue_after_failure,
            ..Self::default()
        }
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
        self.finish(name, result, start.elapsed().as_secs_f64() * 1e3);
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
            self.records.push(PhaseRecord {
                name: name.to_owned(),
                status: PhaseStatus::Skipped,
                elapsed_ms: 0.0,
                detail: Some(detail),
            });
            return true;
        }
        false
    }

    /// Records phase `name`, which ran elsewhere (in the worker), with its
    /// result: logged, and a required failure breaks the base.
    pub fn finish(&mut self, name: &str, result: PhaseResult, elapsed_ms: f64) {
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
        self.records.push(PhaseRecord {
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

    /// Whether no required phase failed and boot may go on.
    pub fn is_healthy(&self) -> bool {
        self.broken.is_none()
    }

    /// The records so far.
    pub fn records(&self) -> &[PhaseRecord] {
        &self.records
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
