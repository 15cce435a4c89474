//! cgroup v2 controllers: names, the `cgroup.controllers` / `cgroup.subtree_control`
//! lists, and enabling them.
//!
//! Owns the rule that controllers are enabled **one `+name` per write**: a
//! combined write (`+cpu +memory +io`) fails as a whole and hides which one the
//! kernel refused — the pact bug nodeinit exists to avoid. Must never disable a
//! controller or move a process.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::control_file::{self, ControlFileError};

/// The controllers enabled when the `controllers` option is not given.
pub const DEFAULT_CONTROLLERS: [&str; 4] = ["cpu", "memory", "io", "pids"];

/// A controller name as the kernel spells it (`cpu`, `memory`, `io`, `pids`, ...).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Controller(String);

impl Controller {
    /// Validate a controller name: lowercase ASCII letters, digits and `_`,
    /// starting with a letter, as every kernel controller is named.
    ///
    /// # Errors
    ///
    /// A message naming the bad controller.
    pub fn new(name: &str) -> Result<Self, String> {
        let well_formed = name.len() <= 32
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if well_formed {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "{name:?} is not a cgroup controller name (lowercase letters, digits and '_', e.g. \"memory\")"
            ))
        }
    }

    /// The kernel's name for it.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The defaults (`cpu`, `memory`, `io`, `pids`).
    #[must_use]
    pub fn defaults() -> Vec<Self> {
        DEFAULT_CONTROLLERS
            .iter()
            .map(|name| Self((*name).to_owned()))
            .collect()
    }
}

impl TryFrom<String> for Controller {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        Self::new(&name)
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parse a space-separated controller list (`cgroup.controllers`,
/// `cgroup.subtree_control`). Unknown-looking words are kept as they are: the
/// kernel is the authority on what exists.
#[must_use]
pub fn parse_list(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// Read the controllers available in `cgroup_dir` (its `cgroup.controllers`).
///
/// # Errors
///
/// When the file cannot be read.
pub fn available(cgroup_dir: &Path) -> Result<Vec<String>, ControlFileError> {
    control_file::read(&cgroup_dir.join("cgroup.controllers")).map(|text| parse_list(&text))
}

/// Read the controllers enabled for the children of `cgroup_dir`.
///
/// # Errors
///
/// When the file cannot be read.
pub fn enabled_for_children(cgroup_dir: &Path) -> Result<Vec<String>, ControlFileError> {
    control_file::read(&cgroup_dir.join("cgroup.subtree_control")).map(|text| parse_list(&text))
}

/// Enable each of `controllers` for the children of `cgroup_dir`, one write per
/// controller, skipping those already enabled. Returns the ones it wrote.
///
/// # Errors
///
/// The first write the kernel refuses, naming the controller and the file.
pub fn enable_for_children(
    cgroup_dir: &Path,
    controllers: &[Controller],
) -> Result<Vec<Controller>, ControlFileError> {
    let already = enabled_for_children(cgroup_dir)?;
    let subtree_control = cgroup_dir.join("cgroup.subtree_control");
    let mut written = Vec::new();
    for controller in controllers {
        if already.iter().any(|name| name == controller.name()) {
            continue;
        }
        control_file::write(&subtree_control, &format!("+{controller}"))?;
        written.push(controller.clone());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_names_are_validated() {
        assert_eq!(Controller::new("memory").unwrap().name(), "memory");
        assert_eq!(Controller::new("rdma").unwrap().to_string(), "rdma");
        for bad in ["", "+cpu", "CPU", "cpu memory", "1cpu", "cpu\n"] {
            let err = Controller::new(bad).unwrap_err();
            assert!(
                err.contains("is not a cgroup controller name"),
                "{bad:?}: {err}"
            );
        }
        let err = serde_json::from_str::<Controller>("\"Memory\"").unwrap_err();
        assert!(
            err.to_string()
                .contains("\"Memory\" is not a cgroup controller name"),
            "{err}"
        );
    }

    #[test]
    fn parses_controller_lists() {
        assert_eq!(
            parse_list("cpuset cpu io memory hugetlb pids rdma misc\n").len(),
            8
        );
        assert_eq!(parse_list("\n"), Vec::<String>::new());
        assert_eq!(parse_list("memory pids"), vec!["memory", "pids"]);
    }

    #[test]
    fn enabling_skips_what_is_enabled() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cgroup.subtree_control");
        std::fs::write(&file, "cpu memory io\n").unwrap();
        let cpu_memory = [
            Controller::new("cpu").unwrap(),
            Controller::new("memory").unwrap(),
        ];
        let written = enable_for_children(dir.path(), &cpu_memory).unwrap();
        assert_eq!(written, Vec::<Controller>::new());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "cpu memory io\n");
    }

    #[test]
    fn enabling_writes_one_plus_name_per_write() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cgroup.subtree_control");
        std::fs::write(&file, "\n").unwrap();
        let cpu_memory = [
            Controller::new("cpu").unwrap(),
            Controller::new("memory").unwrap(),
        ];
        let written = enable_for_children(dir.path(), &cpu_memory).unwrap();
        assert_eq!(written, cpu_memory);
        // Each write opens the file anew and lands at offset 0: what remains is
        // exactly the last write, alone — never a combined "+cpu +memory".
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "+memory");
    }

    #[test]
    fn missing_subtree_control_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = enable_for_children(dir.path(), &Controller::defaults()).unwrap_err();
        assert!(err.to_string().contains("cgroup.subtree_control"), "{err}");
    }
}
