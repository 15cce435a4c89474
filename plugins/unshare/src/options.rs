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
    /// Holders made ahead of requests, for the namespace set last requested
    /// (0, the default: none; at most [`crate::MAX_SPARE_HOLDERS`]).
    #[serde(default)]
    pub spare_holders: u32,
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
            spare_holders: 0,
        }
    }
}

/// Why an option is not acceptable, named with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidOption {
    /// `uenv_mount_path` breaks a path rule.
    UenvMountPath(InvalidMountPath),
    /// `spare_holders` is above [`crate::MAX_SPARE_HOLDERS`].
    SpareHolders(u32),
}

impl std::fmt::Display for InvalidOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UenvMountPath(e) => write!(f, "option uenv_mount_path: {e}"),
            Self::SpareHolders(n) => write!(
                f,
                "option spare_holders: {n} is above the limit {}; a few spares (2) already take the namespace work off a request",
                crate::MAX_SPARE_HOLDERS
            ),
        }
    }
}

impl std::error::Error for InvalidOption {}

/// Validated options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnshareConfig {
    /// Where the uenv image appears inside each allocation's mount namespace.
    pub uenv_mount_path: UenvMountPath,
    /// Propagation of new mount namespaces.
    pub propagation: Propagation,
    /// Where holder records are kept under nodeinit's keeper.
    pub state_dir: std::path::PathBuf,
    /// Holders made ahead of requests (0: none).
    pub spare_holders: usize,
}

impl TryFrom<UnshareOptions> for UnshareConfig {
    type Error = InvalidOption;

    fn try_from(options: UnshareOptions) -> Result<Self, Self::Error> {
        if options.spare_holders > crate::MAX_SPARE_HOLDERS {
            return Err(InvalidOption::SpareHolders(options.spare_holders));
        }
        Ok(Self {
            uenv_mount_path: UenvMountPath::parse(&options.uenv_mount_path)
                .map_err(InvalidOption::UenvMountPath)?,
            propagation: options.propagation,
            state_dir: options.state_dir.into(),
            spare_holders: options.spare_holders as usize,
        })
    }
}

impl Default for UnshareConfig {
    fn default() -> Self {
        Self {
            uenv_mount_path: UenvMountPath::default(),
            propagation: Propagation::default(),
            state_dir: default_state_dir().into(),
            spare_holders: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_holders_are_bounded() {
        let parsed: UnshareOptions = serde_json::from_str(r#"{"spare_holders": 2}"#).unwrap();
        assert_eq!(UnshareConfig::try_from(parsed).unwrap().spare_holders, 2);
        let too_many = UnshareOptions {
            spare_holders: 17,
            ..Default::default()
        };
        assert_eq!(
            UnshareConfig::try_from(too_many).unwrap_err().to_string(),
            "option spare_holders: 17 is above the limit 16; a few spares (2) already take the namespace work off a request"
        );
        let negative = serde_json::from_str::<UnshareOptions>(r#"{"spare_holders": -1}"#);
        assert!(
            negative
                .unwrap_err()
                .to_string()
                .contains("invalid value: integer `-1`"),
            "a negative count is refused by type"
        );
    }

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
            let InvalidOption::UenvMountPath(e) = &err else {
                panic!("{err:?}");
            };
            assert_eq!(e.path, bad);
            assert!(
                err.to_string().starts_with("option uenv_mount_path: "),
                "{err}"
            );
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
