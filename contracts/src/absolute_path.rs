//! The absolute path rule for paths that come from a config file or a peer
//! and end up in a syscall: starts with `/`, no NUL byte, no `..`
//! component (so what the admin reads is where it points, up to symlinks,
//! which the code that opens it must refuse where it matters).
//!
//! Owns the syntax only; it never touches the filesystem. Stricter rules
//! (a file name, not `/`) are methods on top, not other types.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// A path that passed [`AbsolutePath::parse`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct AbsolutePath(PathBuf);

/// Why a string is not an [`AbsolutePath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAbsolutePath {
    /// Does not start with `/`.
    #[error("`{0}` must be an absolute path (starting with `/`)")]
    Relative(String),
    /// Contains a NUL byte.
    #[error("a path cannot contain a NUL byte")]
    Nul,
    /// Has a `..` component.
    #[error("`{0}` must not contain `..`")]
    ParentDir(String),
}

impl AbsolutePath {
    /// Validate `value`.
    ///
    /// # Errors
    ///
    /// [`InvalidAbsolutePath`] naming the rule `value` breaks.
    ///
    /// ```
    /// use nodeinit_contracts::AbsolutePath;
    /// assert_eq!(AbsolutePath::parse("/run/pact/ready").unwrap().as_path().to_str(), Some("/run/pact/ready"));
    /// assert_eq!(
    ///     AbsolutePath::parse("/run/../etc").unwrap_err().to_string(),
    ///     "`/run/../etc` must not contain `..`"
    /// );
    /// ```
    pub fn parse(value: &str) -> Result<Self, InvalidAbsolutePath> {
        if !value.starts_with('/') {
            return Err(InvalidAbsolutePath::Relative(value.to_owned()));
        }
        if value.contains('\0') {
            return Err(InvalidAbsolutePath::Nul);
        }
        if Path::new(value)
            .components()
            .any(|c| c == Component::ParentDir)
        {
            return Err(InvalidAbsolutePath::ParentDir(value.to_owned()));
        }
        Ok(Self(PathBuf::from(value)))
    }

    /// The path.
    pub fn as_path(&self) -> &Path {
        &self.0
    }

    /// Whether it names something below `/` (a last component that is a
    /// name), as a file or a mount point must.
    pub fn has_file_name(&self) -> bool {
        self.0.file_name().is_some()
    }
}

impl TryFrom<String> for AbsolutePath {
    type Error = InvalidAbsolutePath;
    fn try_from(value: String) -> Result<Self, InvalidAbsolutePath> {
        Self::parse(&value)
    }
}

impl AsRef<Path> for AbsolutePath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl fmt::Display for AbsolutePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn accepts_absolute_paths_and_says_which_rule_a_bad_one_breaks() {
        assert!(AbsolutePath::parse("/").is_ok());
        assert!(!AbsolutePath::parse("/").unwrap().has_file_name());
        assert!(AbsolutePath::parse("/run/x").unwrap().has_file_name());
        assert_eq!(
            AbsolutePath::parse("run/x"),
            Err(InvalidAbsolutePath::Relative("run/x".into()))
        );
        assert_eq!(AbsolutePath::parse("/a\0b"), Err(InvalidAbsolutePath::Nul));
        assert_eq!(
            AbsolutePath::parse("/a/../b"),
            Err(InvalidAbsolutePath::ParentDir("/a/../b".into()))
        );
        assert_eq!(
            AbsolutePath::parse("run").unwrap_err().to_string(),
            "`run` must be an absolute path (starting with `/`)"
        );
    }
}
