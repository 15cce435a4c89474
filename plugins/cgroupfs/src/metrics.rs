//! `read_metrics`: `memory.current`, `memory.max`, `cpu.stat` and `cgroup.procs`.
//!
//! Owns the parsing of those files and what a missing one means: a controller
//! that is not enabled leaves its files out, which reads as 0 / unlimited
//! rather than an error (RI6: any cgroup is readable). A missing cgroup
//! directory is `NotFound`. Must never write.

use std::io::{self, ErrorKind};
use std::path::Path;

use hpc_node::{CgroupError, CgroupMetrics};

use crate::control_file;
use crate::kill::parse_procs;

/// Parse `memory.max`: bytes, or `max` for unlimited (`None`).
///
/// # Errors
///
/// A message for anything else.
pub fn parse_memory_max(text: &str) -> Result<Option<u64>, String> {
    match text.trim() {
        "max" => Ok(None),
        value => value
            .parse()
            .map(Some)
            .map_err(|_| format!("{value:?} is neither bytes nor \"max\"")),
    }
}

/// Parse a single-number file such as `memory.current`.
///
/// # Errors
///
/// A message when the text is not an unsigned integer.
pub fn parse_u64(text: &str) -> Result<u64, String> {
    let value = text.trim();
    value
        .parse()
        .map_err(|_| format!("{value:?} is not an unsigned integer"))
}

/// The `usage_usec` line of `cpu.stat`.
///
/// # Errors
///
/// A message when the line is missing or its value is not a number.
pub fn parse_cpu_usage_usec(cpu_stat: &str) -> Result<u64, String> {
    let value = cpu_stat
        .lines()
        .find_map(|line| line.strip_prefix("usage_usec "))
        .ok_or_else(|| "no usage_usec line".to_owned())?;
    parse_u64(value)
}

/// Read the metrics of the cgroup at `cgroup_dir`.
///
/// # Errors
///
/// [`CgroupError::NotFound`] when the directory does not exist;
/// [`CgroupError::Io`] naming the file when one cannot be read or parsed.
pub fn read(cgroup_dir: &Path) -> Result<CgroupMetrics, CgroupError> {
    if !cgroup_dir.is_dir() {
        return Err(CgroupError::NotFound {
            path: cgroup_dir.display().to_string(),
        });
    }
    let memory_current = read_optional(cgroup_dir, "memory.current", parse_u64)?.unwrap_or(0);
    let memory_max = read_optional(cgroup_dir, "memory.max", parse_memory_max)?.flatten();
    let cpu_usage_usec = read_optional(cgroup_dir, "cpu.stat", parse_cpu_usage_usec)?.unwrap_or(0);
    let nr_processes = read_optional(cgroup_dir, "cgroup.procs", |text| {
        Ok(parse_procs(text).len())
    })?
    .unwrap_or(0);
    Ok(CgroupMetrics {
        memory_current,
        memory_max,
        cpu_usage_usec,
        nr_processes: u32::try_from(nr_processes).unwrap_or(u32::MAX),
    })
}

/// Read and parse one file; `Ok(None)` when it does not exist (controller not
/// enabled), [`CgroupError::NotFound`] when the whole cgroup vanished meanwhile.
fn read_optional<T>(
    cgroup_dir: &Path,
    file: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, CgroupError> {
    let path = cgroup_dir.join(file);
    match control_file::read(&path) {
        Ok(text) => parse(&text).map(Some).map_err(|why| {
            CgroupError::Io(io::Error::new(
                ErrorKind::InvalidData,
                format!("parsing {}: {why}", path.display()),
            ))
        }),
        Err(_) if !cgroup_dir.is_dir() => Err(CgroupError::NotFound {
            path: cgroup_dir.display().to_string(),
        }),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
        Err(err) => Err(CgroupError::Io(io::Error::new(err.kind(), err.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn parses_memory_max() {
        assert_eq!(parse_memory_max("max\n"), Ok(None));
        assert_eq!(parse_memory_max("1073741824\n"), Ok(Some(1_073_741_824)));
        assert_eq!(
            parse_memory_max("lots\n").unwrap_err(),
            "\"lots\" is neither bytes nor \"max\""
        );
    }

    #[test]
    fn parses_cpu_stat() {
        let text = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\nnr_periods 0\n";
        assert_eq!(parse_cpu_usage_usec(text), Ok(123_456));
        assert_eq!(
            parse_cpu_usage_usec("user_usec 1\n").unwrap_err(),
            "no usage_usec line"
        );
    }

    #[test]
    fn reads_a_full_cgroup() {
        let dir = fixture(&[
            ("memory.current", "4096\n"),
            ("memory.max", "1048576\n"),
            ("cpu.stat", "usage_usec 77\nuser_usec 70\n"),
            ("cgroup.procs", "10\n11\n12\n"),
        ]);
        let metrics = read(dir.path()).unwrap();
        assert_eq!(metrics.memory_current, 4096);
        assert_eq!(metrics.memory_max, Some(1_048_576));
        assert_eq!(metrics.cpu_usage_usec, 77);
        assert_eq!(metrics.nr_processes, 3);
    }

    #[test]
    fn max_is_none_and_missing_controller_files_are_zero() {
        let dir = fixture(&[("memory.max", "max\n"), ("cgroup.procs", "")]);
        let metrics = read(dir.path()).unwrap();
        assert_eq!(metrics.memory_max, None);
        assert_eq!(metrics.memory_current, 0);
        assert_eq!(metrics.cpu_usage_usec, 0);
        assert_eq!(metrics.nr_processes, 0);
    }

    #[test]
    fn missing_directory_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone.scope");
        match read(&gone) {
            Err(CgroupError::NotFound { path }) => assert_eq!(path, gone.display().to_string()),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    #[test]
    fn garbage_names_the_file() {
        let dir = fixture(&[("memory.current", "many\n")]);
        match read(dir.path()) {
            Err(CgroupError::Io(err)) => {
                assert_eq!(err.kind(), ErrorKind::InvalidData);
                let text = err.to_string();
                assert!(text.contains("memory.current"), "{text}");
                assert!(
                    text.contains("\"many\" is not an unsigned integer"),
                    "{text}"
                );
            }
            other => panic!("expected Io, got {other:?}"),
        }
    }
}
