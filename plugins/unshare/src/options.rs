//! The backend's options (`[plugins.namespace.options]` in nodeinit.toml).
//!
//! Owns parsing and validating them. Unknown keys are errors, so a typo in
//! the config names the key instead of being ignored.

use nodeinit_namespaces::mount_namespace::DEFAULT_UENV_MOUNT_PATH;
use nodeinit_namespaces::mount_namespace::{InvalidMountPath, Propagation, UenvMountPath};
use serde::Deserialize;

/// Options as written in the config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnshareOptions {
    /// Where the uenv image appears inside each allocation's mount namespace.
    #[serde(default = "default_uenv_mount_path")]
    pub uenv_mount_path: String,
    /// `"slave"` (default) or `"private"`: propagation of new mount namespaces.
    #[serde(default)]
    pub propagation: Propagation,
    /// Where holder records are kept under nodeinit's keeper (default `/run/nodeinit`).
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
}

fn default_state_dir() -> String {
    "/run/nodeinit".to_owned()
}

fn default_uenv_mount_path() -> String {
    DEFAULT_UENV_MOUNT_PATH.to_owned()
}

impl Default for UnshareOptions {
    fn default() -> Self {
        Self {
            uenv_mount_path: default_uenv_mount_path(),
            propagation: Propagation::default(),
            state_dir: default_state_dir(),
        }
    }
}

/// Validated options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnshareConfig {
    /// Where the uenv image appears inside each allocation's mount namespace.
    pub uenv_mount_path: UenvMountPath,
    /// Propagation of new mount namespaces.
    pub propagation: Propagation,
    /// Where holder records are kept under nodeinit's keeper.
    pub state_dir: std::path::PathBuf,
}

impl TryFrom<UnshareOptions> for UnshareConfig {
    type Error = InvalidMountPath;

    fn try_from(options: UnshareOptions) -> Result<Self, Self::Error> {
        Ok(Self {
            uenv_mount_path: UenvMountPath::parse(&options.uenv_mount_path)?,
            propagation: options.propagation,
            state_dir: options.state_dir.into(),
        })
    }
}

impl Default for UnshareConfig {
    fn default() -> Self {
        Self {
            uenv_mount_path: UenvMountPath::default(),
            propagation: Propagation::default(),
            state_dir: default_state_dir().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let parsed: UnshareOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, UnshareOptions::default());
        assert_eq!(parsed.uenv_mount_path, "/user-environment");
        let err =
            serde_json::from_str::<UnshareOptions>(r#"{"uenv_mount_pth": "/x"}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `uenv_mount_pth`"),
            "{err}"
        );
        let private: UnshareOptions =
            serde_json::from_str(r#"{"propagation": "private"}"#).unwrap();
        assert_eq!(private.propagation, Propagation::Private);
    }

    #[test]
    fn mount_path_is_validated() {
        for bad in ["relative", "/", "/a/../b", "/a//b", "/a/"] {
            let options = UnshareOptions {
                uenv_mount_path: bad.into(),
                ..Default::default()
            };
            let err = UnshareConfig::try_from(options).unwrap_err();
            assert_eq!(err.path, bad);
        }
        let ok = UnshareConfig::try_from(UnshareOptions {
            uenv_mount_path: "/opt/uenv".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            ok.uenv_mount_path.as_path(),
            std::path::Path::new("/opt/uenv")
        );
    }
}
