//! Validated cgroup directory names.
//!
//! Owns the naming rule for every path component this backend creates or
//! accepts below a known slice: `[A-Za-z0-9][A-Za-z0-9._@:-]*`, at most
//! [`MAX_NAME_BYTES`] bytes. Because the first character must be alphanumeric
//! and `/` is not allowed, `.`, `..`, empty names, hidden names and NUL can never
//! reach the kernel. Must never touch the filesystem.

use std::fmt;

/// Longest accepted name, in bytes (cgroupfs allows 255; 128 leaves room for the `.scope` suffix).
pub const MAX_NAME_BYTES: usize = 128;

/// Why a name was refused; the text is meant for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidName(pub String);

/// Check one path component against the naming rule.
///
/// # Errors
///
/// [`InvalidName`] saying which rule the name breaks.
pub fn validate_component(name: &str) -> Result<(), InvalidName> {
    let refuse = |why: &str| Err(InvalidName(format!("{name:?} {why}")));
    if name.is_empty() {
        return refuse("is empty");
    }
    if name == "." || name == ".." {
        return refuse("is a relative directory reference, not a name");
    }
    if name.contains('\0') {
        return refuse("contains a NUL byte");
    }
    if name.contains('/') {
        return refuse("contains '/': give the parent slice separately");
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(InvalidName(format!(
            "name of {} bytes is longer than {MAX_NAME_BYTES} bytes",
            name.len()
        )));
    }
    let mut chars = name.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return refuse("must start with an ASCII letter or digit");
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || "._@:-".contains(*c))) {
        return Err(InvalidName(format!(
            "{name:?} contains {bad:?}: only ASCII letters, digits and . _ @ : - are allowed"
        )));
    }
    Ok(())
}

/// The name of a scope to create: `<parent>/<name>.scope`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeName(String);

impl ScopeName {
    /// Suffix of every scope directory this backend creates.
    pub const SUFFIX: &'static str = ".scope";

    /// Validate `name`.
    ///
    /// # Errors
    ///
    /// [`InvalidName`] when `name` breaks the naming rule.
    pub fn new(name: &str) -> Result<Self, InvalidName> {
        validate_component(name)?;
        Ok(Self(name.to_owned()))
    }

    /// The directory name (`<name>.scope`).
    #[must_use]
    pub fn directory_name(&self) -> String {
        format!("{}{}", self.0, Self::SUFFIX)
    }
}

impl fmt::Display for ScopeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_service_and_allocation_names() {
        for name in [
            "chronyd",
            "nvidia-persistenced",
            "alloc-42",
            "user@1000",
            "a:b_c.d",
            "7",
        ] {
            let scope = ScopeName::new(name).unwrap();
            assert_eq!(scope.directory_name(), format!("{name}.scope"));
        }
    }

    #[test]
    fn refuses_each_bad_form_with_the_reason() {
        let cases = [
            ("", "is empty"),
            (".", "relative directory reference"),
            ("..", "relative directory reference"),
            ("a/b", "contains '/'"),
            ("../etc", "contains '/'"),
            ("a\0b", "NUL"),
            ("-flag", "must start with an ASCII letter or digit"),
            (".hidden", "must start with an ASCII letter or digit"),
            ("sp ace", "contains ' '"),
            ("é", "must start"),
        ];
        for (name, why) in cases {
            let err = ScopeName::new(name).unwrap_err();
            assert!(err.0.contains(why), "{name:?}: {}", err.0);
        }
    }

    #[test]
    fn length_limit_is_128_bytes() {
        let longest = "a".repeat(MAX_NAME_BYTES);
        ScopeName::new(&longest).unwrap();
        let err = ScopeName::new(&format!("{longest}a")).unwrap_err();
        assert!(err.0.contains("129 bytes is longer than 128"), "{}", err.0);
        let err = validate_component(&"b".repeat(200)).unwrap_err();
        assert!(err.0.contains("200 bytes"), "{}", err.0);
    }
}
