//! Checks before handing off that catch what would make the agent die at
//! once — a reboot loop on a whole partition otherwise:
//! - every agent: the binary exists, is a regular file and is executable;
//! - pact: the TOML it will read has `[agent].node_id`,
//!   `[agent.journal].endpoints` and, when set, `[agent.supervisor].backend`
//!   spelled `"Pact"` or `"Systemd"` (pact's enum is case-sensitive);
//! - lattice: `--node-id` is given, `--config` is not (it has no such flag),
//!   and it is not `exec`'d as PID 1 (it reaps nothing and exits on error).
//!
//! Only reads; never starts anything.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{access, AccessFlags};

use crate::agent::AgentCommand;
use crate::config::{AgentKind, HandoffMode, HandoffSection};

/// The config pact-agent reads without `--config`.
pub const PACT_DEFAULT_CONFIG: &str = "/etc/pact/agent.toml";

/// Why the handoff is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreflightError {
    /// `handoff.exec` does not exist.
    #[error("agent {}: does not exist; fix handoff.exec or add the binary to the image", path.display())]
    AgentMissing {
        /// The configured path.
        path: PathBuf,
    },
    /// `handoff.exec` is a directory or a device.
    #[error("agent {}: is not a regular file; handoff.exec must name the agent binary", path.display())]
    AgentNotAFile {
        /// The configured path.
        path: PathBuf,
    },
    /// `handoff.exec` has no execute permission.
    #[error("agent {}: is not executable (mode {mode:o}); run `chmod 0755 {}` in the image", path.display(), path.display())]
    AgentNotExecutable {
        /// The configured path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// pact's config file cannot be read or parsed.
    #[error("pact config {}: {reason}; pact-agent would exit at once", path.display())]
    PactConfigUnusable {
        /// The TOML pact will read.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A key pact requires is missing or empty.
    #[error("pact config {}: `{key}` is missing or empty; {hint}", path.display())]
    PactKeyMissing {
        /// The TOML pact will read.
        path: PathBuf,
        /// The dotted key.
        key: &'static str,
        /// What to write.
        hint: &'static str,
    },
    /// The supervisor backend is misspelt.
    #[error("pact config {}: `agent.supervisor.backend = {found:?}` is not accepted by pact; write \"Pact\" or \"Systemd\" (case-sensitive)", path.display())]
    PactBadSupervisorBackend {
        /// The TOML pact will read.
        path: PathBuf,
        /// What it says.
        found: String,
    },
    /// lattice-agent without `--node-id`.
    #[error("lattice-agent requires --node-id <ID> in handoff.args; it exits at once without it")]
    LatticeNoNodeId,
    /// lattice-agent with `--config`.
    #[error("lattice-agent has no --config flag; remove it from handoff.args")]
    LatticeConfigFlag,
    /// lattice-agent as PID 1.
    #[error("refusing mode = \"exec\" for lattice-agent as PID 1: it does not reap orphans and exits on error (kernel panic); use mode = \"supervise\"")]
    LatticeExecAsPid1,
}

/// Run every check for `handoff`; `is_pid1` as seen by the caller.
///
/// # Errors
///
/// The first [`PreflightError`].
pub fn preflight(handoff: &HandoffSection, is_pid1: bool) -> Result<(), PreflightError> {
    let command = AgentCommand::from(handoff);
    check_executable(&command.program)?;
    match handoff.agent {
        AgentKind::Pact => {
            let config = command.flag("--config").unwrap_or(PACT_DEFAULT_CONFIG);
            check_pact_config(Path::new(config))
        }
        AgentKind::Lattice => {
            if is_pid1 && handoff.mode == HandoffMode::Exec {
                return Err(PreflightError::LatticeExecAsPid1);
            }
            if command.flag("--config").is_some() {
                return Err(PreflightError::LatticeConfigFlag);
            }
            match command.flag("--node-id") {
                Some(id) if !id.trim().is_empty() => Ok(()),
                _ => Err(PreflightError::LatticeNoNodeId),
            }
        }
        AgentKind::Command => Ok(()),
    }
}

fn check_executable(path: &Path) -> Result<(), PreflightError> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(_) => {
            return Err(PreflightError::AgentMissing {
                path: path.to_path_buf(),
            })
        }
    };
    if !meta.is_file() {
        return Err(PreflightError::AgentNotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    // access(2) also sees noexec mounts; root passes X_OK with any x bit set.
    if mode & 0o111 == 0 || access(path, AccessFlags::X_OK).is_err() {
        return Err(PreflightError::AgentNotExecutable {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Check the TOML pact-agent will read at `path`.
///
/// # Errors
///
/// The first problem found.
pub fn check_pact_config(path: &Path) -> Result<(), PreflightError> {
    let unusable = |reason: String| PreflightError::PactConfigUnusable {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| unusable(format!("cannot read: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| unusable(format!("invalid TOML: {}", e.message())))?;
    let missing = |key, hint| PreflightError::PactKeyMissing {
        path: path.to_path_buf(),
        key,
        hint,
    };
    let agent = table.get("agent").and_then(toml::Value::as_table);
    let node_id = agent
        .and_then(|a| a.get("node_id"))
        .and_then(toml::Value::as_str);
    if node_id.is_none_or(|id| id.trim().is_empty()) {
        return Err(missing(
            "agent.node_id",
            "add `node_id = \"<node>\"` under [agent]",
        ));
    }
    let endpoints = agent
        .and_then(|a| a.get("journal"))
        .and_then(toml::Value::as_table)
        .and_then(|j| j.get("endpoints"))
        .and_then(toml::Value::as_array);
    if endpoints.is_none_or(|e| e.is_empty()) {
        return Err(missing(
            "agent.journal.endpoints",
            "add `endpoints = [\"https://journal:9443\"]` under [agent.journal]",
        ));
    }
    let backend = agent
        .and_then(|a| a.get("supervisor"))
        .and_then(toml::Value::as_table)
        .and_then(|s| s.get("backend"));
    match backend {
        None => Ok(()),
        Some(toml::Value::String(b)) if b == "Pact" || b == "Systemd" => Ok(()),
        Some(other) => Err(PreflightError::PactBadSupervisorBackend {
            path: path.to_path_buf(),
            found: other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_owned),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AbsolutePath;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn file(&self, name: &str, content: &str, mode: u32) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        }
        fn handoff(
            &self,
            agent: AgentKind,
            exec: &Path,
            args: &[&str],
            mode: HandoffMode,
        ) -> HandoffSection {
            HandoffSection {
                agent,
                exec: AbsolutePath::try_from(exec.display().to_string()).unwrap(),
                args: args.iter().map(|s| (*s).to_owned()).collect(),
                mode,
                grace_secs: 10,
                stop_signal: None,
                socket: crate::config::HandoffSocketSection::default(),
            }
        }
        fn pact(&self, toml: &str) -> (HandoffSection, PathBuf) {
            let agent = self.file("pact-agent", "#!/bin/sh\n", 0o755);
            let config = self.file("agent.toml", toml, 0o644);
            let config_arg = config.display().to_string();
            (
                self.handoff(
                    AgentKind::Pact,
                    &agent,
                    &["--config", &config_arg],
                    HandoffMode::Exec,
                ),
                config,
            )
        }
    }

    const GOOD_PACT: &str = "[agent]\nnode_id = \"nid1\"\n[agent.journal]\nendpoints = [\"https://j:9443\"]\n[agent.supervisor]\nbackend = \"Pact\"\n";

    #[test]
    fn good_pact_config_passes() {
        let f = Fixture::new();
        let (handoff, _) = f.pact(GOOD_PACT);
        preflight(&handoff, true).unwrap();
        let (handoff, _) = f.pact(&GOOD_PACT.replace("\"Pact\"", "\"Systemd\""));
        preflight(&handoff, true).unwrap();
    }

    #[test]
    fn pact_config_without_node_id_is_refused() {
        let f = Fixture::new();
        let (handoff, config) = f.pact("[agent]\n[agent.journal]\nendpoints = [\"https://j\"]\n");
        let err = preflight(&handoff, true).unwrap_err();
        assert!(
            matches!(
                err,
                PreflightError::PactKeyMissing {
                    key: "agent.node_id",
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&config.display().to_string()) && text.contains("add `node_id"),
            "{text}"
        );
    }

    #[test]
    fn pact_config_without_journal_endpoints_is_refused() {
        let f = Fixture::new();
        let (handoff, _) = f.pact("[agent]\nnode_id = \"n\"\n[agent.journal]\nendpoints = []\n");
        let err = preflight(&handoff, true).unwrap_err();
        assert!(
            matches!(
                err,
                PreflightError::PactKeyMissing {
                    key: "agent.journal.endpoints",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn lowercase_pact_backend_is_refused() {
        let f = Fixture::new();
        let (handoff, _) = f.pact(&GOOD_PACT.replace("\"Pact\"", "\"pact\""));
        let err = preflight(&handoff, true).unwrap_err();
        assert!(
            err.to_string()
                .contains("= \"pact\"` is not accepted by pact; write \"Pact\" or \"Systemd\""),
            "{err}"
        );
        assert!(
            matches!(err, PreflightError::PactBadSupervisorBackend { ref found, .. } if found == "pact")
        );
    }

    #[test]
    fn unreadable_and_invalid_pact_configs_are_refused() {
        let f = Fixture::new();
        let agent = f.file("pact-agent", "", 0o755);
        let handoff = f.handoff(
            AgentKind::Pact,
            &agent,
            &["--config=/nonexistent/agent.toml"],
            HandoffMode::Exec,
        );
        let err = preflight(&handoff, true).unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent/agent.toml: cannot read"),
            "{err}"
        );
        let (handoff, _) = f.pact("[agent\n");
        let err = preflight(&handoff, true).unwrap_err().to_string();
        assert!(err.contains("invalid TOML"), "{err}");
    }

    #[test]
    fn missing_agent_binary_is_refused() {
        let f = Fixture::new();
        let path = f.dir.path().join("pact-agent");
        let handoff = f.handoff(AgentKind::Command, &path, &[], HandoffMode::Exec);
        assert_eq!(
            preflight(&handoff, false).unwrap_err(),
            PreflightError::AgentMissing { path: path.clone() }
        );
        assert!(preflight(&handoff, false)
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
    }

    #[test]
    fn non_executable_agent_is_refused() {
        let f = Fixture::new();
        let path = f.file("agent", "#!/bin/sh\n", 0o644);
        let handoff = f.handoff(AgentKind::Command, &path, &[], HandoffMode::Supervise);
        let err = preflight(&handoff, false).unwrap_err();
        assert_eq!(
            err,
            PreflightError::AgentNotExecutable {
                path: path.clone(),
                mode: 0o644
            }
        );
        assert!(err.to_string().contains("chmod 0755"), "{err}");
        let handoff = f.handoff(
            AgentKind::Command,
            f.dir.path(),
            &[],
            HandoffMode::Supervise,
        );
        assert!(matches!(
            preflight(&handoff, false).unwrap_err(),
            PreflightError::AgentNotAFile { .. }
        ));
    }

    #[test]
    fn lattice_rules() {
        let f = Fixture::new();
        let agent = f.file("lattice-agent", "", 0o755);
        let h = |args: &[&str], mode| f.handoff(AgentKind::Lattice, &agent, args, mode);
        assert_eq!(
            preflight(&h(&[], HandoffMode::Supervise), true),
            Err(PreflightError::LatticeNoNodeId)
        );
        assert_eq!(
            preflight(&h(&["--node-id="], HandoffMode::Supervise), true),
            Err(PreflightError::LatticeNoNodeId)
        );
        assert_eq!(
            preflight(
                &h(
                    &["--node-id", "n1", "--config", "/x"],
                    HandoffMode::Supervise
                ),
                true
            ),
            Err(PreflightError::LatticeConfigFlag)
        );
        assert_eq!(
            preflight(&h(&["--node-id", "n1"], HandoffMode::Exec), true),
            Err(PreflightError::LatticeExecAsPid1)
        );
        preflight(&h(&["--node-id", "n1"], HandoffMode::Exec), false).unwrap();
        preflight(&h(&["--node-id", "n1"], HandoffMode::Supervise), true).unwrap();
    }
}
