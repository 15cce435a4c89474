//! Paths inside the cgroup root, and where they sit in the slice hierarchy.
//!
//! Owns the translation of caller-supplied paths (absolute under the root, as
//! lattice hands them, or root-relative, as pact does) into validated,
//! component-wise paths, and the RI1 owner lookup by known slice. Slices are
//! matched component by component, so `workload.slice-extra` is not
//! `workload.slice`. Must never touch the filesystem and never accept a path
//! that could leave the root (`..`, `.`, empty components, NUL).

use hpc_node::cgroup::slices;
use hpc_node::SliceOwner;

use crate::names::validate_component;

/// The slices `create_hierarchy` creates, parents first, with their RI1 owner.
pub const KNOWN_SLICES: [(&str, SliceOwner); 6] = [
    (slices::PACT_ROOT, SliceOwner::Pact),
    (slices::PACT_INFRA, SliceOwner::Pact),
    (slices::PACT_NETWORK, SliceOwner::Pact),
    (slices::PACT_GPU, SliceOwner::Pact),
    (slices::PACT_AUDIT, SliceOwner::Pact),
    (slices::WORKLOAD_ROOT, SliceOwner::Workload),
];

/// Why a path was refused; the text is meant for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PathRefused(pub String);

/// A path below the cgroup root, as validated components (empty: the root itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelativeCgroupPath {
    components: Vec<String>,
}

impl RelativeCgroupPath {
    /// Accept `input` either absolute below `root` or relative to it.
    ///
    /// Components only need to be real names (no `.`, `..`, empty or NUL), so any
    /// existing cgroup can be addressed for reading (RI6).
    ///
    /// # Errors
    ///
    /// [`PathRefused`] for absolute paths outside `root` and for bad components.
    pub fn parse(input: &str, root: &str) -> Result<Self, PathRefused> {
        let relative = if input.starts_with('/') {
            if input == root {
                ""
            } else if let Some(rest) = input.strip_prefix(root).and_then(|r| r.strip_prefix('/')) {
                rest
            } else {
                return Err(PathRefused(format!(
                    "{input:?} is outside the cgroup root {root}: give a path below it or relative to it"
                )));
            }
        } else {
            input
        };
        if relative.is_empty() {
            return Ok(Self {
                components: Vec::new(),
            });
        }
        let mut components = Vec::new();
        for component in relative.split('/') {
            if component.is_empty()
                || component == "."
                || component == ".."
                || component.contains('\0')
            {
                return Err(PathRefused(format!(
                    "{input:?} has a component {component:?}: empty components, '.', '..' and NUL are not allowed"
                )));
            }
            components.push(component.to_owned());
        }
        Ok(Self { components })
    }

    /// The path relative to the root, `/`-separated (empty for the root).
    #[must_use]
    pub fn as_relative(&self) -> String {
        self.components.join("/")
    }

    /// The longest known slice this path is at or below, with its owner and the
    /// number of components it spans.
    #[must_use]
    pub fn known_slice(&self) -> Option<(&'static str, SliceOwner, usize)> {
        KNOWN_SLICES
            .iter()
            .filter_map(|&(slice, owner)| {
                let slice_components: Vec<&str> = slice.split('/').collect();
                let matches = self.components.len() >= slice_components.len()
                    && slice_components
                        .iter()
                        .zip(&self.components)
                        .all(|(a, b)| *a == b.as_str());
                matches.then_some((slice, owner, slice_components.len()))
            })
            .max_by_key(|&(_, _, depth)| depth)
    }

    fn components_below(&self, depth: usize) -> &[String] {
        self.components.get(depth..).unwrap_or_default()
    }
}

/// Where a scope may be created: a known slice or a directory below one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePath {
    path: RelativeCgroupPath,
    owner: SliceOwner,
}

impl SlicePath {
    /// Validate a parent slice.
    ///
    /// # Errors
    ///
    /// [`PathRefused`] when the path is malformed, outside `root`, not at or
    /// below a known slice, or has a component below the slice that breaks the
    /// naming rule.
    pub fn parse(input: &str, root: &str) -> Result<Self, PathRefused> {
        let path = RelativeCgroupPath::parse(input, root)?;
        let Some((_, owner, depth)) = path.known_slice() else {
            return Err(PathRefused(format!(
                "parent slice {input:?} is not one of the known slices ({}) or below one",
                known_slice_list()
            )));
        };
        check_names_below(input, &path, depth)?;
        Ok(Self { path, owner })
    }

    /// The RI1 owner of this slice.
    #[must_use]
    pub fn owner(&self) -> SliceOwner {
        self.owner
    }

    /// The path relative to the root.
    #[must_use]
    pub fn as_relative(&self) -> String {
        self.path.as_relative()
    }
}

/// A scope to destroy: strictly below a known slice, never a slice itself or
/// the root, so that a bad handle can never kill system services wholesale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopePath {
    path: RelativeCgroupPath,
    owner: SliceOwner,
}

impl ScopePath {
    /// Validate a scope handle path.
    ///
    /// # Errors
    ///
    /// [`PathRefused`] when the path is malformed, outside `root`, is a known
    /// slice itself, or is not below one.
    pub fn parse(input: &str, root: &str) -> Result<Self, PathRefused> {
        let path = RelativeCgroupPath::parse(input, root)?;
        let Some((slice, owner, depth)) = path.known_slice() else {
            return Err(PathRefused(format!(
                "scope {input:?} is not below one of the known slices ({})",
                known_slice_list()
            )));
        };
        if path.components.len() == depth {
            return Err(PathRefused(format!(
                "{input:?} is the slice {slice} itself, not a scope: slices are never destroyed"
            )));
        }
        check_names_below(input, &path, depth)?;
        Ok(Self { path, owner })
    }

    /// The RI1 owner of the slice this scope is in.
    #[must_use]
    pub fn owner(&self) -> SliceOwner {
        self.owner
    }

    /// The path relative to the root.
    #[must_use]
    pub fn as_relative(&self) -> String {
        self.path.as_relative()
    }
}

fn check_names_below(
    input: &str,
    path: &RelativeCgroupPath,
    depth: usize,
) -> Result<(), PathRefused> {
    for component in path.components_below(depth) {
        validate_component(component).map_err(|why| PathRefused(format!("{input:?}: {why}")))?;
    }
    Ok(())
}

fn known_slice_list() -> String {
    KNOWN_SLICES.map(|(slice, _)| slice).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "/sys/fs/cgroup";

    #[test]
    fn relative_and_absolute_forms_are_the_same_path() {
        let rel = RelativeCgroupPath::parse("pact.slice/infra.slice", ROOT).unwrap();
        let abs = RelativeCgroupPath::parse("/sys/fs/cgroup/pact.slice/infra.slice", ROOT).unwrap();
        assert_eq!(rel, abs);
        assert_eq!(abs.as_relative(), "pact.slice/infra.slice");
        assert_eq!(
            RelativeCgroupPath::parse(ROOT, ROOT).unwrap().as_relative(),
            ""
        );
        assert_eq!(
            RelativeCgroupPath::parse("", ROOT).unwrap().as_relative(),
            ""
        );
    }

    #[test]
    fn absolute_path_outside_root_is_refused() {
        for input in ["/etc", "/sys/fs/cgroupX/pact.slice", "/sys/fs"] {
            let err = RelativeCgroupPath::parse(input, ROOT).unwrap_err();
            assert!(
                err.0.contains("outside the cgroup root /sys/fs/cgroup"),
                "{}",
                err.0
            );
        }
    }

    #[test]
    fn escaping_components_are_refused() {
        for input in [
            "pact.slice/..",
            "../x",
            "a//b",
            "a/./b",
            "a/",
            "/sys/fs/cgroup/..",
            "a\0b",
        ] {
            let err = RelativeCgroupPath::parse(input, ROOT).unwrap_err();
            assert!(err.0.contains("not allowed"), "{input:?}: {}", err.0);
        }
    }

    #[test]
    fn slice_owner_is_found_component_by_component() {
        let owner = |p: &str| SlicePath::parse(p, ROOT).map(|s| s.owner());
        assert_eq!(owner("pact.slice"), Ok(SliceOwner::Pact));
        assert_eq!(owner("pact.slice/gpu.slice"), Ok(SliceOwner::Pact));
        assert_eq!(owner("workload.slice/alloc-42"), Ok(SliceOwner::Workload));
        assert_eq!(
            owner("/sys/fs/cgroup/workload.slice"),
            Ok(SliceOwner::Workload)
        );
        for outside in [
            "workload.slice-extra",
            "not-pact.slice",
            "system.slice",
            "",
            "pact",
        ] {
            let err = SlicePath::parse(outside, ROOT).unwrap_err();
            assert!(
                err.0.contains("is not one of the known slices"),
                "{outside:?}: {}",
                err.0
            );
            assert!(err.0.contains("workload.slice"), "{}", err.0);
        }
    }

    #[test]
    fn components_below_a_slice_follow_the_naming_rule() {
        let err = SlicePath::parse("workload.slice/bad name", ROOT).unwrap_err();
        assert!(err.0.contains("contains ' '"), "{}", err.0);
    }

    #[test]
    fn scope_path_must_be_strictly_below_a_slice() {
        let scope =
            ScopePath::parse("/sys/fs/cgroup/pact.slice/infra.slice/chronyd.scope", ROOT).unwrap();
        assert_eq!(scope.owner(), SliceOwner::Pact);
        assert_eq!(scope.as_relative(), "pact.slice/infra.slice/chronyd.scope");
        for slice in ["pact.slice", "pact.slice/infra.slice", "workload.slice"] {
            let err = ScopePath::parse(slice, ROOT).unwrap_err();
            assert!(err.0.contains("slices are never destroyed"), "{}", err.0);
        }
        let err = ScopePath::parse(ROOT, ROOT).unwrap_err();
        assert!(
            err.0.contains("not below one of the known slices"),
            "{}",
            err.0
        );
    }
}
