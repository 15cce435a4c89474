//! `create_hierarchy`: controllers at the root, the known slices, and their
//! `subtree_control`.
//!
//! Owns the boot-time layout: enable the wanted controllers the kernel offers
//! (one write each), create `pact.slice`, its four sub-slices and
//! `workload.slice`, and enable the same controllers in each slice so scopes
//! get their interface files. Idempotent. Must never move a process: the
//! no-internal-processes rule is the caller's to satisfy, and we only explain it.

use std::io::ErrorKind;
use std::path::Path;

use nix::errno::Errno;

use crate::cgroup_path::KNOWN_SLICES;
use crate::control_file::ControlFileError;
use crate::controller::{self, Controller};

/// What `create_hierarchy` did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HierarchyReport {
    /// Wanted controllers the kernel offers, now enabled for every slice.
    pub enabled: Vec<Controller>,
    /// Wanted controllers the kernel does not offer at the root.
    pub missing: Vec<Controller>,
    /// Slices created by this call (empty when the hierarchy already existed).
    pub created_slices: Vec<&'static str>,
}

/// Build the hierarchy below `root`.
///
/// # Errors
///
/// A message naming the file or directory and what to do: when `require`
/// and a wanted controller is missing (checked before anything is changed),
/// or when the kernel refuses a write or a `mkdir`.
pub fn create(
    root: &Path,
    wanted: &[Controller],
    require: bool,
) -> Result<HierarchyReport, String> {
    let available = controller::available(root).map_err(explain)?;
    let (enabled, missing): (Vec<Controller>, Vec<Controller>) = wanted
        .iter()
        .cloned()
        .partition(|c| available.iter().any(|name| name == c.name()));
    if require && !missing.is_empty() {
        return Err(format!(
            "controllers {} are wanted but not offered in {} (available: {}); \
             the kernel lacks them or they are bound to a cgroup v1 hierarchy — \
             remove them from `controllers` or set `require_controllers = false`",
            join(&missing),
            root.join("cgroup.controllers").display(),
            if available.is_empty() {
                "none".to_owned()
            } else {
                available.join(" ")
            }
        ));
    }
    controller::enable_for_children(root, &enabled).map_err(explain)?;

    let mut created_slices = Vec::new();
    for (slice, _) in KNOWN_SLICES {
        let dir = root.join(slice);
        match std::fs::create_dir(&dir) {
            Ok(()) => created_slices.push(slice),
            Err(err) if err.kind() == ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(err) => return Err(format!("creating slice {}: {err}", dir.display())),
        }
        controller::enable_for_children(&dir, &enabled).map_err(explain)?;
    }
    Ok(HierarchyReport {
        enabled,
        missing,
        created_slices,
    })
}

fn join(controllers: &[Controller]) -> String {
    controllers
        .iter()
        .map(Controller::name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Add the likely cause to a refused write.
fn explain(err: ControlFileError) -> String {
    let errno = err.errno().map(Errno::from_raw);
    match errno {
        Some(Errno::EBUSY) => format!(
            "{err}: the cgroup holds processes of its own, and cgroup v2 forbids enabling controllers for the \
             children of a non-root cgroup with processes (no-internal-processes rule); move them into a leaf \
             cgroup first — nodeinit never moves processes"
        ),
        Some(Errno::ENOENT) => format!("{err}: is the root a cgroup2 directory?"),
        _ => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake cgroup directory: plain files where the kernel would provide them.
    fn fake_cgroup(dir: &Path, controllers: &str) {
        std::fs::write(dir.join("cgroup.controllers"), controllers).unwrap();
        std::fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
    }

    #[test]
    fn missing_controllers_are_reported_or_refused() {
        let root = tempfile::tempdir().unwrap();
        fake_cgroup(root.path(), "cpuset cpu pids\n");
        let err = create(root.path(), &Controller::defaults(), true).unwrap_err();
        assert!(
            err.starts_with("controllers memory, io are wanted but not offered in "),
            "{err}"
        );
        assert!(err.contains("(available: cpuset cpu pids)"), "{err}");
        assert!(
            !root.path().join("pact.slice").exists(),
            "require_controllers must refuse before anything is created"
        );
    }

    #[test]
    fn fixture_layout_is_created_with_a_report() {
        // mkdir on a plain filesystem creates no interface files, so the
        // fixture pre-creates every slice with its files; mkdir then finds them.
        let root = tempfile::tempdir().unwrap();
        fake_cgroup(root.path(), "cpu pids\n");
        for (slice, _) in KNOWN_SLICES {
            std::fs::create_dir_all(root.path().join(slice)).unwrap();
            fake_cgroup(&root.path().join(slice), "cpu pids\n");
        }
        let report = create(root.path(), &Controller::defaults(), false).unwrap();
        assert_eq!(
            report.enabled,
            vec![
                Controller::new("cpu").unwrap(),
                Controller::new("pids").unwrap()
            ]
        );
        assert_eq!(
            report.missing,
            vec![
                Controller::new("memory").unwrap(),
                Controller::new("io").unwrap()
            ]
        );
        assert!(report.created_slices.is_empty());
        for (slice, _) in KNOWN_SLICES {
            // Last of the one-per-write writes, alone.
            let text =
                std::fs::read_to_string(root.path().join(slice).join("cgroup.subtree_control"))
                    .unwrap();
            assert_eq!(text, "+pids", "{slice}");
        }
    }
}
