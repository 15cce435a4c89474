//! Resource limits of a scope: validation and the `memory.max`, `cpu.weight`
//! and `io.max` file formats.
//!
//! Owns turning `hpc_node::ResourceLimits` into kernel writes. Everything is
//! validated before the scope directory exists, so a bad value creates
//! nothing. `io.max` is written one device per write as
//! `MAJ:MIN rbps=N wbps=N` — the form the kernel accepts (pact and lattice
//! both write forms it rejects). Must never create or remove directories.

use std::fmt;
use std::io::ErrorKind;
use std::path::Path;

use hpc_node::ResourceLimits;

use crate::control_file;
use crate::io_device::IoDevice;

/// A `cpu.weight` value, 1–10000 as the kernel requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuWeight(u16);

impl CpuWeight {
    /// Smallest weight the kernel accepts.
    pub const MIN: u16 = 1;
    /// Largest weight the kernel accepts.
    pub const MAX: u16 = 10_000;

    /// Validate a weight.
    ///
    /// # Errors
    ///
    /// A message with the value and the allowed range.
    pub fn new(weight: u16) -> Result<Self, String> {
        if (Self::MIN..=Self::MAX).contains(&weight) {
            Ok(Self(weight))
        } else {
            Err(format!(
                "cpu_weight {weight} is out of range: cpu.weight takes {}–{} (100 is the default share)",
                Self::MIN,
                Self::MAX
            ))
        }
    }
}

/// One `io.max` line: the same bytes-per-second cap for reads and writes of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoMaxLine {
    device: IoDevice,
    bytes_per_sec: u64,
}

impl fmt::Display for IoMaxLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} rbps={} wbps={}",
            self.device, self.bytes_per_sec, self.bytes_per_sec
        )
    }
}

/// Limits checked against the kernel's rules, ready to write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeLimits {
    memory_max: Option<u64>,
    cpu_weight: Option<CpuWeight>,
    io_max: Vec<IoMaxLine>,
}

impl ScopeLimits {
    /// Validate `limits`; `io_max` applies to each of `devices`.
    ///
    /// # Errors
    ///
    /// A message for an out-of-range `cpu_weight`, an `io_max` of zero, or an
    /// `io_max` with no device to apply it to.
    pub fn validate(limits: &ResourceLimits, devices: &[IoDevice]) -> Result<Self, String> {
        let cpu_weight = limits.cpu_weight.map(CpuWeight::new).transpose()?;
        let io_max = match limits.io_max {
            None => Vec::new(),
            Some(0) => {
                return Err("io_max 0 is not a limit: give bytes per second (≥ 1), or None for unlimited".to_owned())
            }
            Some(_) if devices.is_empty() => {
                return Err(
                    "io_max is set but there is no block device to apply it to: set the `io_devices` option"
                        .to_owned(),
                )
            }
            Some(bytes_per_sec) => devices
                .iter()
                .map(|&device| IoMaxLine { device, bytes_per_sec })
                .collect(),
        };
        Ok(Self {
            memory_max: limits.memory_max,
            cpu_weight,
            io_max,
        })
    }

    /// `true` when there is nothing to write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.memory_max.is_none() && self.cpu_weight.is_none() && self.io_max.is_empty()
    }

    /// The writes this makes, as (file name, value), in order.
    #[must_use]
    pub fn writes(&self) -> Vec<(&'static str, String)> {
        let mut writes = Vec::new();
        if let Some(bytes) = self.memory_max {
            writes.push(("memory.max", bytes.to_string()));
        }
        if let Some(CpuWeight(weight)) = self.cpu_weight {
            writes.push(("cpu.weight", weight.to_string()));
        }
        for line in &self.io_max {
            writes.push(("io.max", line.to_string()));
        }
        writes
    }

    /// Write every limit into `scope_dir`.
    ///
    /// # Errors
    ///
    /// The first refused write, with the file, the value, and — when the file
    /// is missing — which controller is not enabled for the scope.
    pub fn apply(&self, scope_dir: &Path) -> Result<(), String> {
        for (file, value) in self.writes() {
            control_file::write(&scope_dir.join(file), &value).map_err(|err| {
                if err.kind() == ErrorKind::NotFound {
                    let controller = file.split('.').next().unwrap_or(file);
                    format!(
                        "{err}: the {controller} controller is not enabled for this scope; it must be in the parent's \
                         cgroup.subtree_control (the kernel may lack it, or create_hierarchy has not run)"
                    )
                } else {
                    err.to_string()
                }
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(
        memory_max: Option<u64>,
        cpu_weight: Option<u16>,
        io_max: Option<u64>,
    ) -> ResourceLimits {
        ResourceLimits {
            memory_max,
            cpu_weight,
            io_max,
        }
    }

    fn scope_fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        std::fs::write(dir.path().join("cpu.weight"), "100\n").unwrap();
        std::fs::write(dir.path().join("io.max"), "").unwrap();
        dir
    }

    #[test]
    fn cpu_weight_range_is_enforced() {
        assert!(CpuWeight::new(1).is_ok() && CpuWeight::new(10_000).is_ok());
        for bad in [0, 10_001, u16::MAX] {
            let err = ScopeLimits::validate(&limits(None, Some(bad), None), &[]).unwrap_err();
            assert_eq!(
                err,
                format!("cpu_weight {bad} is out of range: cpu.weight takes 1–10000 (100 is the default share)")
            );
        }
    }

    #[test]
    fn io_max_line_format_is_what_the_kernel_accepts() {
        let line = IoMaxLine {
            device: IoDevice::new(254, 0),
            bytes_per_sec: 1_048_576,
        };
        assert_eq!(line.to_string(), "254:0 rbps=1048576 wbps=1048576");
    }

    #[test]
    fn io_max_needs_a_device_and_a_positive_rate() {
        let err = ScopeLimits::validate(&limits(None, None, Some(10)), &[]).unwrap_err();
        assert!(err.contains("set the `io_devices` option"), "{err}");
        let err = ScopeLimits::validate(&limits(None, None, Some(0)), &[IoDevice::new(8, 0)])
            .unwrap_err();
        assert!(err.contains("io_max 0 is not a limit"), "{err}");
    }

    #[test]
    fn writes_memory_max_in_bytes_and_cpu_weight() {
        let dir = scope_fixture();
        let validated =
            ScopeLimits::validate(&limits(Some(536_870_912), Some(250), None), &[]).unwrap();
        validated.apply(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("memory.max")).unwrap(),
            "536870912"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cpu.weight")).unwrap(),
            "250\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("io.max")).unwrap(),
            ""
        );
    }

    #[test]
    fn writes_one_io_max_line_per_device() {
        let devices = [IoDevice::new(8, 0), IoDevice::new(259, 1)];
        let validated =
            ScopeLimits::validate(&limits(None, None, Some(5_000_000)), &devices).unwrap();
        assert_eq!(
            validated.writes(),
            vec![
                ("io.max", "8:0 rbps=5000000 wbps=5000000".to_owned()),
                ("io.max", "259:1 rbps=5000000 wbps=5000000".to_owned()),
            ]
        );
        let dir = scope_fixture();
        validated.apply(dir.path()).unwrap();
        // Each write lands at offset 0 of the fixture: the last line is there, whole.
        assert_eq!(
            std::fs::read_to_string(dir.path().join("io.max")).unwrap(),
            "259:1 rbps=5000000 wbps=5000000"
        );
    }

    #[test]
    fn missing_file_names_the_controller_to_enable() {
        let dir = tempfile::tempdir().unwrap();
        let validated = ScopeLimits::validate(&limits(None, Some(100), None), &[]).unwrap();
        let err = validated.apply(dir.path()).unwrap_err();
        assert!(err.contains("writing \"100\" to"), "{err}");
        assert!(err.contains("cpu.weight"), "{err}");
        assert!(
            err.contains("the cpu controller is not enabled for this scope"),
            "{err}"
        );
    }

    #[test]
    fn no_limits_means_no_writes() {
        let validated = ScopeLimits::validate(&ResourceLimits::default(), &[]).unwrap();
        assert!(validated.is_empty());
        assert!(validated.writes().is_empty());
    }
}
