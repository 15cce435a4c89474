//! Validated values of the config. Each is a newtype built only through
//! `TryFrom<String>`, which serde calls while parsing, so a bad value is
//! reported at its own line and key and can never reach the kernel.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// An absolute path (no `..`, no NUL): the one rule, from
/// [`nodeinit_contracts`].
pub use nodeinit_contracts::AbsolutePath;

/// Where a plugin comes from: a bare name resolved in `plugin_dir`, or an
/// absolute path. A relative path with `/` is refused: it would depend on
/// the working directory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum PluginPath {
    /// `cgroupfs` → `<plugin_dir>/libnodeinit_cgroupfs.so`.
    Bare(String),
    /// `/opt/vendor/libfoo.so`.
    Absolute(AbsolutePath),
}

impl TryFrom<String> for PluginPath {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        if value.starts_with('/') {
            return AbsolutePath::try_from(value)
                .map(Self::Absolute)
                .map_err(|e| e.to_string());
        }
        let bare = !value.is_empty()
            && value.len() <= 64
            && value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if bare {
            Ok(Self::Bare(value))
        } else {
            Err(format!(
                "`{value}` is neither a bare plugin name ([a-z0-9_-], e.g. \"cgroupfs\") nor an absolute path to a .so"
            ))
        }
    }
}

impl PluginPath {
    /// The file to load: bare names become `<plugin_dir>/libnodeinit_<name>.so`.
    pub fn resolve(&self, plugin_dir: &Path) -> PathBuf {
        match self {
            Self::Bare(name) => plugin_dir.join(format!("libnodeinit_{name}.so")),
            Self::Absolute(path) => path.as_path().to_path_buf(),
        }
    }
}

/// A SHA-256 pin: 64 hex digits (stored lowercase).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Sha256Pin(String);

impl TryFrom<String> for Sha256Pin {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        if value.len() == 64 && value.chars().all(|c| c.is_ascii_hexdigit()) {
            Ok(Self(value.to_ascii_lowercase()))
        } else {
            Err(format!(
                "`{value}` is not a SHA-256 digest (64 hex digits; get it with `sha256sum <plugin>.so`)"
            ))
        }
    }
}

impl Sha256Pin {
    /// Lowercase hex digits.
    pub fn as_hex(&self) -> &str {
        &self.0
    }
}

/// An image acquired during boot: a bare file name (resolved by the mount
/// backend in its image directories) or an absolute path.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ImageRef(String);

impl TryFrom<String> for ImageRef {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        if value.starts_with('/') {
            return AbsolutePath::try_from(value.clone())
                .map(|_| Self(value))
                .map_err(|e| e.to_string());
        }
        if value.is_empty()
            || value.contains('/')
            || value == "."
            || value == ".."
            || value.contains('\0')
        {
            return Err(format!(
                "`{value}` must be an image file name (e.g. \"base.sqfs\") or an absolute path"
            ));
        }
        Ok(Self(value))
    }
}

impl ImageRef {
    /// The name or path as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_paths() {
        let bare = PluginPath::try_from("cgroupfs".to_owned()).unwrap();
        assert_eq!(
            bare.resolve(Path::new("/usr/lib/nodeinit/plugins")),
            PathBuf::from("/usr/lib/nodeinit/plugins/libnodeinit_cgroupfs.so")
        );
        let abs = PluginPath::try_from("/opt/v/libx.so".to_owned()).unwrap();
        assert_eq!(
            abs.resolve(Path::new("/ignored")),
            PathBuf::from("/opt/v/libx.so")
        );
        for bad in ["", "lib/x.so", "./x.so", "Cgroupfs"] {
            assert_eq!(
                PluginPath::try_from(bad.to_owned()).unwrap_err(),
                format!("`{bad}` is neither a bare plugin name ([a-z0-9_-], e.g. \"cgroupfs\") nor an absolute path to a .so")
            );
        }
        assert_eq!(
            PluginPath::try_from("/a/../b.so".to_owned()).unwrap_err(),
            "`/a/../b.so` must not contain `..`"
        );
    }

    #[test]
    fn sha256_pins() {
        let pin = Sha256Pin::try_from("AB".repeat(32)).unwrap();
        assert_eq!(pin.as_hex(), "ab".repeat(32));
        let err = Sha256Pin::try_from("abc".to_owned()).unwrap_err();
        assert!(err.contains("64 hex digits"), "{err}");
    }

    #[test]
    fn image_refs() {
        assert_eq!(
            ImageRef::try_from("base.sqfs".to_owned()).unwrap().as_str(),
            "base.sqfs"
        );
        assert!(ImageRef::try_from("/images/base.sqfs".to_owned()).is_ok());
        for bad in ["", "..", "a/b.sqfs"] {
            assert_eq!(
                ImageRef::try_from(bad.to_owned()).unwrap_err(),
                format!(
                    "`{bad}` must be an image file name (e.g. \"base.sqfs\") or an absolute path"
                )
            );
        }
        assert_eq!(
            ImageRef::try_from("/x/../y".to_owned()).unwrap_err(),
            "`/x/../y` must not contain `..`"
        );
    }
}
