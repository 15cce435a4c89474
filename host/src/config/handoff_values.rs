//! Validated values of `[handoff]`: the stop signal, argument and
//! environment templates (`{node_id}`), environment variable names. Each is
//! built only through `TryFrom<String>`, which serde calls while parsing, so
//! a bad value is reported at its own line and key.
//!
//! Substituting `{node_id}` happens later, in `agent::command`, once the id
//! is resolved; this module only guarantees that a template names no other
//! placeholder.

use std::fmt;
use std::str::FromStr;

use nix::sys::signal::Signal;
use serde::Deserialize;

/// The one placeholder a template may contain.
pub const NODE_ID_PLACEHOLDER: &str = "{node_id}";

/// Signals that may stop an agent: those whose default action ends a
/// process, or that agents conventionally take as "stop" (SIGPWR).
const STOP_SIGNALS: [Signal; 8] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGPWR,
    Signal::SIGKILL,
];

/// `handoff.stop_signal`: the signal a supervised agent gets at shutdown,
/// before the grace period and SIGKILL. Written `"SIGINT"` or `"INT"`
/// (any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct StopSignal(Signal);

impl TryFrom<String> for StopSignal {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        let upper = value.trim().to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        match Signal::from_str(&name) {
            Ok(signal) if STOP_SIGNALS.contains(&signal) => Ok(Self(signal)),
            _ => Err(format!(
                "`{value}` is not a signal that stops an agent; write one of {}",
                STOP_SIGNALS
                    .iter()
                    .map(|s| format!("\"{}\"", s.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

impl StopSignal {
    /// The signal.
    pub fn signal(self) -> Signal {
        self.0
    }
}

impl From<Signal> for StopSignal {
    fn from(signal: Signal) -> Self {
        Self(signal)
    }
}

/// A `handoff.args` element or `handoff.env` value: text in which
/// `{node_id}` is replaced by the resolved node id. Any other `{word}`
/// (letters, digits, `_`) is refused as an unknown placeholder, so a typo
/// like `{nodeid}` cannot reach the agent verbatim. Braces around anything
/// else (`{"a": 1}`) are plain text.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Template(String);

impl TryFrom<String> for Template {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        if value.contains('\0') {
            return Err("an argument or environment value cannot contain a NUL byte".to_owned());
        }
        if let Some(unknown) = placeholders(&value).find(|p| *p != NODE_ID_PLACEHOLDER) {
            return Err(format!(
                "unknown placeholder `{unknown}` in `{value}`; the only placeholder is `{NODE_ID_PLACEHOLDER}` (the node id nodeinit resolved)"
            ));
        }
        Ok(Self(value))
    }
}

/// Every `{word}` in `text`, word being one or more of `[A-Za-z0-9_]`.
fn placeholders(text: &str) -> impl Iterator<Item = &str> {
    text.match_indices('{').filter_map(move |(start, _)| {
        let rest = &text[start + 1..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        (len > 0 && rest[len..].starts_with('}')).then(|| &text[start..start + len + 2])
    })
}

impl Template {
    /// The text as written, placeholders included.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `{node_id}` occurs.
    pub fn uses_node_id(&self) -> bool {
        self.0.contains(NODE_ID_PLACEHOLDER)
    }

    /// The text with `{node_id}` replaced by `node_id`.
    pub fn render(&self, node_id: &str) -> String {
        self.0.replace(NODE_ID_PLACEHOLDER, node_id)
    }
}

impl PartialEq<&str> for Template {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A `handoff.env` key: an environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct EnvName(String);

impl TryFrom<String> for EnvName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        let starts_ok = value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if starts_ok && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            Ok(Self(value))
        } else {
            Err(format!(
                "`{value}` is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
            ))
        }
    }
}

impl EnvName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signal_spellings() {
        for (text, signal) in [
            ("SIGINT", Signal::SIGINT),
            ("INT", Signal::SIGINT),
            ("int", Signal::SIGINT),
            ("TERM", Signal::SIGTERM),
            ("sigkill", Signal::SIGKILL),
            ("PWR", Signal::SIGPWR),
        ] {
            assert_eq!(
                StopSignal::try_from(text.to_owned()).unwrap().signal(),
                signal,
                "{text}"
            );
        }
        for bad in ["STOP", "SIGCHLD", "9", "", "SIGFOO"] {
            let err = StopSignal::try_from(bad.to_owned()).unwrap_err();
            assert_eq!(
                err,
                format!("`{bad}` is not a signal that stops an agent; write one of \"SIGINT\", \"SIGTERM\", \"SIGHUP\", \"SIGQUIT\", \"SIGUSR1\", \"SIGUSR2\", \"SIGPWR\", \"SIGKILL\"")
            );
        }
    }

    #[test]
    fn templates() {
        let t = Template::try_from("--node-id={node_id}".to_owned()).unwrap();
        assert!(t.uses_node_id());
        assert_eq!(t.render("nid7"), "--node-id=nid7");
        let json = Template::try_from(r#"{"a": {}, "b": 1}"#.to_owned()).unwrap();
        assert!(!json.uses_node_id());
        assert_eq!(json.render("x"), r#"{"a": {}, "b": 1}"#);
        assert_eq!(
            Template::try_from("{node_id}.{nodeid}".to_owned()).unwrap_err(),
            "unknown placeholder `{nodeid}` in `{node_id}.{nodeid}`; the only placeholder is `{node_id}` (the node id nodeinit resolved)"
        );
        assert!(Template::try_from("a\0".to_owned())
            .unwrap_err()
            .contains("NUL byte"));
        assert_eq!(
            placeholders("{a}{}{b_1}{c").collect::<Vec<_>>(),
            ["{a}", "{b_1}"]
        );
    }

    #[test]
    fn env_names() {
        assert_eq!(
            EnvName::try_from("PACT_AGENT_CONFIG".to_owned())
                .unwrap()
                .as_str(),
            "PACT_AGENT_CONFIG"
        );
        for bad in ["", "1A", "A=B", "A-B"] {
            assert!(EnvName::try_from(bad.to_owned())
                .unwrap_err()
                .contains("is not an environment variable name"));
        }
    }
}
