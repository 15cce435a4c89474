//! Checks before handing off that catch what would make the agent die at
//! once — a reboot loop on a whole partition otherwise — judged exactly as
//! the agent itself would judge it (DESIGN.md §6):
//! - every agent: the binary exists, is a regular file and is executable;
//! - pact: its command line as its clap parser sees it, and the TOML it will
//!   read as its `toml` 1.x + serde schema sees it (`pact`);
//! - lattice: `--node-id`, `--quorum-endpoint`, an advertised address that
//!   is not `0.0.0.0`, no `--config`, not `exec`'d as PID 1 (`lattice`).
//!
//! The checks run on the final command (`{node_id}` substituted, pact's
//! `--node-id` added), which [`preflight`] returns for the caller to exec
//! or supervise. Only reads; never starts anything and never writes a file
//! (in particular not `/run/pact/ready`, which is pact's to write).

mod lattice;
mod pact;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{access, AccessFlags};

use crate::agent::command::NodeIdUnavailable;
use crate::agent::AgentCommand;
use crate::config::{AgentKind, HandoffSection, NodeId};

pub use lattice::LATTICE_ADVERTISE_ENV;
pub use pact::{check_pact_config, PACT_CONFIG_ENV, PACT_DEFAULT_CONFIG};

/// A handoff that passed: the command to run and what is worth a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preflight {
    /// The final command: placeholders substituted, pact's `--node-id` added.
    pub command: AgentCommand,
    /// Accepted but noteworthy (e.g. pact in disconnected mode); log them.
    pub warnings: Vec<String>,
}

/// Why the handoff is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreflightError {
    /// The command needs the node id and none was resolved.
    #[error(transparent)]
    NodeId(#[from] NodeIdUnavailable),
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
    /// pact-agent's argument parser (clap 4) would refuse the command line.
    #[error("handoff.args {args:?}: {problem}; pact-agent would exit 2 (its argument parser refuses the command line)")]
    PactArgs {
        /// The final arguments.
        args: Vec<String>,
        /// clap's complaint.
        problem: String,
    },
    /// pact-agent's config would make it fail.
    #[error("pact config {}: {problem}; pact-agent would {pact_would}", place(path, *line, key))]
    PactConfig {
        /// The TOML pact will read.
        path: PathBuf,
        /// 1-based line, when the problem has one.
        line: Option<usize>,
        /// Dotted key (`agent.journal.endpoints`); empty for the whole file.
        key: String,
        /// What is wrong, in the words of pact's parser where it has them.
        problem: String,
        /// What pact-agent would do with it.
        pact_would: String,
    },
    /// lattice-agent without `--node-id`.
    #[error("lattice-agent requires --node-id in handoff.args (it has no env fallback and exits at once without it); add \"--node-id\", \"{{node_id}}\"")]
    LatticeNoNodeId,
    /// lattice-agent without `--quorum-endpoint`.
    #[error("lattice-agent without --quorum-endpoint connects to http://localhost:50051 and exits after 10 failed connects; add \"--quorum-endpoint\", \"http://<quorum>:50051\" to handoff.args")]
    LatticeNoQuorumEndpoint,
    /// lattice-agent would advertise `0.0.0.0`.
    #[error("lattice-agent would advertise {addr} (from {source_name}): the quorum rejects the registration and the agent exits; pass --advertise-addr <reachable-ip:port> in handoff.args or set LATTICE_ADVERTISE_ADDR in [handoff.env]")]
    LatticeAdvertisesAny {
        /// The address.
        addr: String,
        /// Where it came from.
        source_name: String,
    },
    /// lattice-agent with `--config`.
    #[error("lattice-agent has no --config flag; remove it from handoff.args")]
    LatticeConfigFlag,
    /// lattice-agent as PID 1.
    #[error("refusing mode = \"exec\" for lattice-agent as PID 1: it does not reap orphans and exits on error (kernel panic); use mode = \"supervise\"")]
    LatticeExecAsPid1,
}

/// `text` with control characters escaped (`\u{1b}`), so that file text
/// quoted in a message cannot drive the console.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `path:line: key `k``, leaving out what is unknown.
fn place(path: &Path, line: Option<usize>, key: &str) -> String {
    let mut out = path.display().to_string();
    if let Some(line) = line {
        out.push_str(&format!(":{line}"));
    }
    if !key.is_empty() {
        out.push_str(&format!(": key `{key}`"));
    }
    out
}

/// Build the final command for `handoff` on node `node_id` and run every
/// check on it; `is_pid1` as seen by the caller. The agent's environment is
/// nodeinit's own plus `handoff.env`.
///
/// The caller execs or supervises the returned [`Preflight::command`]
/// (never a command built from `handoff` directly, which would miss the
/// node id) and logs [`Preflight::warnings`].
///
/// # Errors
///
/// The first [`PreflightError`].
pub fn preflight(
    handoff: &HandoffSection,
    node_id: Option<&NodeId>,
    is_pid1: bool,
) -> Result<Preflight, PreflightError> {
    preflight_with_env(handoff, node_id, is_pid1, &|name| std::env::var(name).ok())
}

/// [`preflight`] with nodeinit's environment given by `inherited` (tests).
///
/// # Errors
///
/// The first [`PreflightError`].
pub fn preflight_with_env(
    handoff: &HandoffSection,
    node_id: Option<&NodeId>,
    is_pid1: bool,
    inherited: &dyn Fn(&str) -> Option<String>,
) -> Result<Preflight, PreflightError> {
    let command = AgentCommand::for_node(handoff, node_id)?;
    check_executable(&command.program)?;
    let warnings = match handoff.agent {
        AgentKind::Pact => pact::check(&command, inherited)?,
        AgentKind::Lattice => lattice::check(&command, handoff.mode, is_pid1, inherited)?,
        AgentKind::Command => Vec::new(),
    };
    Ok(Preflight { command, warnings })
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

#[cfg(test)]
mod tests;

#[cfg(test)]
mod printable_tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            super::printable("unknown variant `a\u{1b}[2J`"),
            "unknown variant `a\\u{1b}[2J`"
        );
        assert_eq!(super::printable("plain \"text\""), "plain \"text\"");
    }
}
