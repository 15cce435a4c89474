//! pact-agent's preflight: its command line as its clap 4 parser sees it,
//! and its config as `toml` 1.x (TOML 1.1) + serde see it — neither
//! stricter nor looser (DESIGN.md §6). The serde structs below model the
//! part of pact's schema whose rules are known: required keys, the types
//! of those keys, and the supervisor backend enum. Like pact's, they ignore
//! unknown keys. Keys outside this model are not checked: pact may still
//! refuse a wrong type there.
//!
//! Never writes anything (in particular not `/run/pact/ready`).

use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde::Deserialize;
use toml1::Spanned;

use crate::agent::command::flag_value;
use crate::agent::{AgentCommand, PreflightError};

use super::printable;
use crate::config::SourceLocation;

/// The config pact-agent reads without `--config` or `PACT_AGENT_CONFIG`.
pub const PACT_DEFAULT_CONFIG: &str = "/etc/pact/agent.toml";

/// The environment variable pact-agent's `--config` falls back to.
pub const PACT_CONFIG_ENV: &str = "PACT_AGENT_CONFIG";

/// pact's single-value flags, with the value name clap prints.
const SINGLE_VALUE_FLAGS: [(&str, &str); 3] = [
    ("--config", "<CONFIG>"),
    ("--node-id", "<NODE_ID>"),
    ("--vcluster", "<VCLUSTER>"),
];

/// The whole file: `[agent]` must exist.
#[derive(Deserialize)]
struct PactFile {
    #[allow(dead_code)] // Deserialized for its checks only.
    agent: Agent,
}

#[derive(Deserialize)]
#[allow(dead_code)] // Deserialized for its checks only.
struct Agent {
    /// Required string; may be empty or a placeholder (`--node-id` overrides it).
    node_id: String,
    journal: Journal,
    #[serde(default)]
    supervisor: Option<Supervisor>,
    #[serde(default)]
    capability: Option<Capability>,
    #[serde(default)]
    enrollment: Option<Enrollment>,
    #[serde(default)]
    shell: Option<Shell>,
}

#[derive(Deserialize)]
struct Journal {
    /// Empty is valid: disconnected mode.
    endpoints: Spanned<Vec<String>>,
}

#[derive(Deserialize)]
struct Supervisor {
    #[serde(default)]
    backend: Option<Spanned<SupervisorBackend>>,
}

/// pact's enum, spelled as pact spells it (case-sensitive).
#[derive(Deserialize, PartialEq, Eq)]
enum SupervisorBackend {
    Pact,
    Systemd,
}

#[derive(Deserialize)]
#[allow(dead_code)] // Deserialized for its checks only.
struct Capability {
    manifest_path: PathBuf,
    socket_path: PathBuf,
}

#[derive(Deserialize)]
#[allow(dead_code)] // Deserialized for its checks only.
struct Enrollment {
    journal_endpoints: Vec<String>,
    ca_cert: PathBuf,
}

#[derive(Deserialize)]
#[allow(dead_code)] // Deserialized for its checks only.
struct Shell {
    #[serde(default)]
    auth: Option<ShellAuth>,
}

#[derive(Deserialize)]
#[allow(dead_code)] // Deserialized for its checks only.
struct ShellAuth {
    issuer: String,
    /// Presence only: its exact type in pact is not known here.
    audience: IgnoredAny,
}

/// Check pact's command line and the config it names; returns warnings.
pub(super) fn check(
    command: &AgentCommand,
    inherited: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, PreflightError> {
    check_flags(&command.args)?;
    // clap takes an env fallback only when the flag is absent, and treats an
    // empty variable as absent.
    let config = flag_value(&command.args, "--config")
        .map(str::to_owned)
        .or_else(|| {
            command
                .env_var(PACT_CONFIG_ENV, inherited)
                .filter(|v| !v.is_empty())
        })
        .unwrap_or_else(|| PACT_DEFAULT_CONFIG.to_owned());
    let mut warnings = check_pact_config(Path::new(&config))?;
    if flag_value(&command.args, "--node-id").is_some_and(str::is_empty) {
        warnings.push(
            "handoff.args gives pact-agent an empty --node-id: it registers with an empty node id"
                .to_owned(),
        );
    }
    Ok(warnings)
}

/// What clap 4 refuses among pact's flags: a single-value flag given twice
/// (either form), or without a value.
fn check_flags(args: &[String]) -> Result<(), PreflightError> {
    let refuse = |problem: String| PreflightError::PactArgs {
        args: args.to_vec(),
        problem,
    };
    let mut seen = [false; SINGLE_VALUE_FLAGS.len()];
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            break;
        }
        for (i, (flag, value_name)) in SINGLE_VALUE_FLAGS.iter().enumerate() {
            let value = if arg == flag {
                // clap takes the next word as the value unless it looks like a flag.
                match iter.peek() {
                    Some(next) if !next.starts_with('-') || next.as_str() == "-" => {
                        iter.next().map(String::as_str)
                    }
                    _ => None,
                }
            } else if let Some(value) = arg.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
                Some(value)
            } else {
                continue;
            };
            if seen[i] {
                return Err(refuse(format!(
                    "the argument '{flag} {value_name}' cannot be used multiple times"
                )));
            }
            seen[i] = true;
            if value.is_none() || (*flag == "--config" && value == Some("")) {
                return Err(refuse(format!(
                    "a value is required for '{flag} {value_name}' but none was supplied"
                )));
            }
        }
    }
    Ok(())
}

/// Check the TOML pact-agent will read at `path`, as pact parses it;
/// returns warnings (empty journal endpoints: disconnected mode).
///
/// # Errors
///
/// [`PreflightError::PactConfig`] naming the file, line and key.
pub fn check_pact_config(path: &Path) -> Result<Vec<String>, PreflightError> {
    let text = std::fs::read_to_string(path).map_err(|e| PreflightError::PactConfig {
        path: path.to_path_buf(),
        line: None,
        key: String::new(),
        problem: format!("cannot read: {e}"),
        pact_would: "exit at start: it cannot read its config (fix --config / PACT_AGENT_CONFIG or add the file to the image)".to_owned(),
    })?;
    let at = |offset: usize| SourceLocation::at(&text, offset);
    let parsed: PactFile = toml1::from_str(&text).map_err(|e| {
        let message = printable(e.message().trim());
        let span = e.span();
        let whole_file = span
            .as_ref()
            .is_none_or(|s| s.start == 0 && (s.end == text.len() || s.is_empty()));
        let mut location = at(span.map_or(0, |s| s.start));
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            location.key = if location.key.is_empty() || whole_file {
                field.to_owned()
            } else {
                format!("{}.{field}", location.key)
            };
        }
        PreflightError::PactConfig {
            path: path.to_path_buf(),
            line: Some(location.line),
            key: location.key,
            problem: message,
            pact_would:
                "exit at start: its config does not parse (toml 1.x + serde, the same error)"
                    .to_owned(),
        }
    })?;
    let agent = parsed.agent;
    let mut warnings = Vec::new();
    if agent.journal.endpoints.get_ref().is_empty() {
        let line = at(agent.journal.endpoints.span().start).line;
        warnings.push(format!(
            "pact config {}:{line}: key `agent.journal.endpoints` is empty: pact-agent runs in disconnected mode (no journal, no enrollment)",
            path.display()
        ));
    }
    if let Some(backend) = agent.supervisor.and_then(|s| s.backend) {
        if *backend.get_ref() == SupervisorBackend::Systemd {
            return Err(PreflightError::PactConfig {
                path: path.to_path_buf(),
                line: Some(at(backend.span().start).line),
                key: "agent.supervisor.backend".to_owned(),
                problem: "\"Systemd\" runs services through systemctl, and a nodeinit node has no systemd; write backend = \"Pact\"".to_owned(),
                pact_would: "fail to start any service: systemctl does not exist on this node".to_owned(),
            });
        }
    }
    Ok(warnings)
}
