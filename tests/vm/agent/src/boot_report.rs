//! What nodeinit wrote to `/run/nodeinit/boot.json` before the handoff.
//!
//! Owns reading the report, printing its per-phase timings for the harness
//! (`VMTEST INFO phase: <name> <status> <ms> ms`) and checking that the
//! phases this scenario needs ran and succeeded as PID 1. Reads the JSON as
//! untyped values so that the check states what the file must hold, not
//! what nodeinit's own type happens to serialize. Must never write the file.

use serde_json::Value;

/// Where nodeinit writes the report.
pub const BOOT_JSON: &str = "/run/nodeinit/boot.json";

/// The report, parsed.
pub struct BootJson(Value);

impl BootJson {
    /// Reads and parses [`BOOT_JSON`].
    ///
    /// # Errors
    /// When the file is missing or not JSON.
    pub fn read() -> Result<Self, String> {
        let text = std::fs::read_to_string(BOOT_JSON)
            .map_err(|e| format!("cannot read {BOOT_JSON}: {e}"))?;
        serde_json::from_str(&text)
            .map(Self)
            .map_err(|e| format!("{BOOT_JSON} is not JSON: {e}"))
    }

    /// One `(name, status, elapsed_ms)` per phase, in order.
    pub fn phases(&self) -> Vec<(String, String, f64)> {
        let Some(phases) = self.0.get("phases").and_then(Value::as_array) else {
            return Vec::new();
        };
        phases
            .iter()
            .map(|phase| {
                let text = |key: &str| {
                    phase
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_owned()
                };
                let elapsed = phase
                    .get("elapsed_ms")
                    .and_then(Value::as_f64)
                    .unwrap_or(f64::NAN);
                (text("name"), text("status"), elapsed)
            })
            .collect()
    }

    /// The timing lines the harness prints: one per phase, then the total
    /// and the kernel uptime nodeinit recorded.
    pub fn timing_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .phases()
            .iter()
            .map(|(name, status, ms)| format!("{name:<17} {status:<8} {ms:>9.1} ms"))
            .collect();
        // When each ran (ms since the boot's start): the overlap of the graph.
        if let Some(spans) = self.0.get("timeline").and_then(Value::as_array) {
            for span in spans {
                let at = |key: &str| span.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN);
                lines.push(format!(
                    "{:<17} from {:>7.1} to {:>7.1} ms{}",
                    span.get("name").and_then(Value::as_str).unwrap_or("?"),
                    at("start_ms"),
                    at("end_ms"),
                    if span.get("cut_short").and_then(Value::as_bool) == Some(true) {
                        " (cut short)"
                    } else {
                        ""
                    }
                ));
            }
        }
        let number = |key: &str| self.0.get(key).and_then(Value::as_f64);
        if let Some(total) = number("total_ms") {
            lines.push(format!("{:<17} {:<8} {total:>9.1} ms", "total", ""));
        }
        if let Some(uptime) = number("uptime_secs") {
            lines.push(format!(
                "kernel uptime when boot.json was written: {uptime:.2} s"
            ));
        }
        lines
    }

    /// Phase `phase` is `degraded` and an error names `reason`.
    ///
    /// # Errors
    /// When it is not.
    pub fn degraded_by(&self, phase: &str, reason: &str) -> Result<String, String> {
        let status = self
            .phases()
            .into_iter()
            .find(|(name, _, _)| name == phase)
            .map(|(_, status, _)| status);
        let errors: Vec<String> = self
            .0
            .get("errors")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let error = errors.iter().find(|e| e.contains(reason));
        match (status.as_deref(), error) {
            (Some("degraded"), Some(error)) => Ok(format!("{phase} degraded: {error}")),
            _ => Err(format!(
                "{BOOT_JSON}: phase {phase} is {status:?}, errors {errors:?}; expected degraded by {reason:?}"
            )),
        }
    }

    /// nodeinit ran as PID 1, recorded `node_id`, no error, and each of
    /// `must_be_ok` has status `ok`.
    pub fn check(&self, node_id: &str, must_be_ok: &[&str]) -> Result<String, String> {
        if self.0.get("pid1").and_then(Value::as_bool) != Some(true) {
            return Err(format!("{BOOT_JSON} says pid1 = {:?}", self.0.get("pid1")));
        }
        let recorded = self.0.get("node_id").and_then(Value::as_str);
        if recorded != Some(node_id) {
            return Err(format!(
                "{BOOT_JSON} records node_id {recorded:?}, kernel command line says {node_id:?}"
            ));
        }
        match self.0.get("errors").and_then(Value::as_array) {
            Some(errors) if errors.is_empty() => {}
            other => return Err(format!("{BOOT_JSON} lists errors {other:?}")),
        }
        let phases = self.phases();
        let not_ok: Vec<String> = must_be_ok
            .iter()
            .filter_map(
                |wanted| match phases.iter().find(|(name, _, _)| name == wanted) {
                    Some((_, status, _)) if status == "ok" => None,
                    Some((_, status, _)) => Some(format!("{wanted}={status}")),
                    None => Some(format!("{wanted} missing")),
                },
            )
            .collect();
        if not_ok.is_empty() {
            Ok(format!(
                "pid1, node_id {node_id:?}, no errors, ok: {}",
                must_be_ok.join(" ")
            ))
        } else {
            Err(format!("{BOOT_JSON}: phases not ok: {}", not_ok.join(", ")))
        }
    }
}
