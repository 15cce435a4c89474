//! The validated `cgroup_scope` of a `namespace_request` (WI5): the
//! allocation's scope, relative to the cgroup2 root the server watches.
//!
//! Owns the syntax rule only: 1–16 `/`-separated components, each matching
//! `[A-Za-z0-9][A-Za-z0-9._@:-]*` (no `.`/`..`, no empty component, no
//! leading `/`), at most 1024 bytes. It never touches the filesystem: the
//! server joins it below its configured root, so `../../etc` cannot become one.

use std::path::{Path, PathBuf};

use crate::allocation_id::AllocationId;

/// Longest accepted `cgroup_scope`, in bytes.
pub const MAX_CGROUP_SCOPE_LEN: usize = 1024;

/// Most components of a `cgroup_scope`.
pub const MAX_CGROUP_SCOPE_DEPTH: usize = 16;

/// A cgroup path relative to the cgroup2 root, e.g. `workload.slice/job-42.scope`.
///
/// ```
/// use nodeinit_handoff::protocol::CgroupScope;
/// assert_eq!(CgroupScope::parse("workload.slice/job-42.scope").unwrap().as_str(), "workload.slice/job-42.scope");
/// assert!(CgroupScope::parse("../etc").is_err());
/// assert!(CgroupScope::parse("/workload.slice").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CgroupScope(String);

/// Why a string is not a [`CgroupScope`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("namespace_request: \"cgroup_scope\" {scope:?} {reason}")]
pub struct InvalidCgroupScope {
    /// The rejected value (at most 64 characters of it).
    pub scope: String,
    /// The rule it breaks.
    pub reason: &'static str,
}

impl CgroupScope {
    /// Validate `scope`.
    ///
    /// # Errors
    ///
    /// [`InvalidCgroupScope`] naming the rule that `scope` breaks.
    pub fn parse(scope: &str) -> Result<Self, InvalidCgroupScope> {
        let bad = |reason| InvalidCgroupScope {
            scope: scope.chars().take(64).collect(),
            reason,
        };
        if scope.is_empty() {
            return Err(bad(
                "is empty; name a scope relative to the cgroup root or omit the field",
            ));
        }
        if scope.len() > MAX_CGROUP_SCOPE_LEN {
            return Err(bad("is longer than 1024 bytes"));
        }
        let components: Vec<&str> = scope.split('/').collect();
        if components.len() > MAX_CGROUP_SCOPE_DEPTH {
            return Err(bad("has more than 16 components"));
        }
        for component in components {
            let mut bytes = component.bytes();
            let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
            let rest_ok = bytes.all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b':' | b'-')
            });
            if !(first_ok && rest_ok) {
                return Err(bad(
                    "must be relative to the cgroup root, with components matching [A-Za-z0-9][A-Za-z0-9._@:-]* (no '..', no leading or double '/')",
                ));
            }
        }
        Ok(Self(scope.to_owned()))
    }

    /// The default scope of an allocation: `workload.slice/<id>.scope`.
    pub fn default_for(id: &AllocationId) -> Self {
        Self(format!(
            "{}/{}.scope",
            hpc_node::cgroup::slices::WORKLOAD_ROOT,
            id.as_str()
        ))
    }

    /// The scope as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The scope's directory below `root`.
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }
}

impl std::fmt::Display for CgroupScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn accepts_systemd_style_scopes() {
        for ok in [
            "workload.slice/job-42.scope",
            "a",
            "user.slice/user-1000.slice/session-3.scope",
            "x@y:z",
        ] {
            assert_eq!(CgroupScope::parse(ok).unwrap().as_str(), ok);
        }
        let deepest = vec!["a"; MAX_CGROUP_SCOPE_DEPTH].join("/");
        assert!(CgroupScope::parse(&deepest).is_ok());
    }

    #[test]
    fn each_rule_has_its_reason() {
        let reason = |s: &str| CgroupScope::parse(s).unwrap_err().reason;
        assert!(reason("").starts_with("is empty"));
        assert_eq!(reason(&"a".repeat(1025)), "is longer than 1024 bytes");
        assert_eq!(
            reason(&vec!["a"; MAX_CGROUP_SCOPE_DEPTH + 1].join("/")),
            "has more than 16 components"
        );
        for bad in [
            "../etc",
            "/workload.slice",
            "a//b",
            "a/./b",
            "a/",
            ".hidden",
            "a b",
        ] {
            assert!(reason(bad).starts_with("must be relative"), "{bad}");
        }
        // The echoed value is cut at 64 characters.
        let long = format!("{}/..", "a".repeat(100));
        assert_eq!(CgroupScope::parse(&long).unwrap_err().scope.len(), 64);
    }

    #[test]
    fn the_default_scope_lives_under_the_workload_slice() {
        let id = AllocationId::parse("job-7").unwrap();
        let scope = CgroupScope::default_for(&id);
        assert_eq!(scope.as_str(), "workload.slice/job-7.scope");
        assert_eq!(
            scope.under(Path::new("/sys/fs/cgroup")),
            Path::new("/sys/fs/cgroup/workload.slice/job-7.scope")
        );
        assert!(CgroupScope::parse(scope.as_str()).is_ok());
    }
}
