//! The node id: from `nodeinit.node_id=` on the kernel command line, else
//! `[host].node_id`, else the first line of `/etc/hostname`. It is what goes
//! into the ready file and `--node-id`, so it is validated like a hostname.

use std::path::Path;

use crate::config::{ConfigError, KernelCmdline, NodeConfig};

/// A validated node id: the one rule, from [`nodeinit_contracts`] (1–253
/// bytes of `[A-Za-z0-9._-]`, starting with a letter or digit).
pub use nodeinit_contracts::NodeId;

/// Where the node id came from (logged and recorded in boot.json).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeIdSource {
    /// `nodeinit.node_id=` on `/proc/cmdline`.
    KernelCmdline,
    /// `[host].node_id` in the config.
    Config,
    /// The hostname file (normally `/etc/hostname`).
    HostnameFile(std::path::PathBuf),
}

/// A node id and its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedNodeId {
    /// The id.
    pub id: NodeId,
    /// Where it came from.
    pub source: NodeIdSource,
}

/// Resolve the node id in the documented order.
///
/// # Errors
///
/// [`ConfigError::InvalidNodeId`] for an invalid value from the command line
/// or the hostname file, [`ConfigError::NoNodeId`] when no source has one.
pub fn resolve_node_id(
    cmdline: &KernelCmdline,
    config: &NodeConfig,
    hostname_file: &Path,
) -> Result<ResolvedNodeId, ConfigError> {
    if let Some(raw) = &cmdline.node_id {
        let id = NodeId::try_from(raw.clone()).map_err(|reason| ConfigError::InvalidNodeId {
            source_name: "kernel command line `nodeinit.node_id=`".to_owned(),
            reason: reason.to_string(),
        })?;
        return Ok(ResolvedNodeId {
            id,
            source: NodeIdSource::KernelCmdline,
        });
    }
    if let Some(id) = &config.host.node_id {
        return Ok(ResolvedNodeId {
            id: id.clone(),
            source: NodeIdSource::Config,
        });
    }
    match std::fs::read(hostname_file) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let first = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'));
            let Some(first) = first else {
                return Err(ConfigError::NoNodeId {
                    detail: format!("{} is empty", hostname_file.display()),
                });
            };
            let id = NodeId::try_from(first.to_owned()).map_err(|reason| {
                ConfigError::InvalidNodeId {
                    source_name: hostname_file.display().to_string(),
                    reason: reason.to_string(),
                }
            })?;
            Ok(ResolvedNodeId {
                id,
                source: NodeIdSource::HostnameFile(hostname_file.to_path_buf()),
            })
        }
        Err(e) => Err(ConfigError::NoNodeId {
            detail: format!("cannot read {}: {e}", hostname_file.display()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_from_str;

    fn config(text: &str) -> NodeConfig {
        load_from_str(text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn order_is_cmdline_then_config_then_hostname() {
        let dir = tempfile::tempdir().unwrap();
        let hostname = dir.path().join("hostname");
        std::fs::write(&hostname, "# comment\n  nid000007 \n").unwrap();
        let with_id = config("[host]\nnode_id = \"from-config\"\n");
        let without = config("");
        let cmdline = KernelCmdline::parse("quiet nodeinit.node_id=from-cmdline");
        let none = KernelCmdline::default();

        let r = resolve_node_id(&cmdline, &with_id, &hostname).unwrap();
        assert_eq!(
            (r.id.as_str(), r.source),
            ("from-cmdline", NodeIdSource::KernelCmdline)
        );
        let r = resolve_node_id(&none, &with_id, &hostname).unwrap();
        assert_eq!(
            (r.id.as_str(), r.source),
            ("from-config", NodeIdSource::Config)
        );
        let r = resolve_node_id(&none, &without, &hostname).unwrap();
        assert_eq!(r.id.as_str(), "nid000007");
        assert_eq!(r.source, NodeIdSource::HostnameFile(hostname.clone()));
    }

    #[test]
    fn missing_and_bad_sources_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("hostname");
        let err = resolve_node_id(&KernelCmdline::default(), &config(""), &missing).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConfigError::NoNodeId { .. }));
        assert!(
            text.contains("nodeinit.node_id=") && text.contains("hostname"),
            "{text}"
        );

        let bad = KernelCmdline::parse("nodeinit.node_id=-x");
        let err = resolve_node_id(&bad, &config(""), &missing).unwrap_err();
        assert!(
            err.to_string()
                .contains("kernel command line `nodeinit.node_id=`"),
            "{err}"
        );
        assert!(
            err.to_string().contains("`-x` is not a valid node id"),
            "{err}"
        );
    }
}
