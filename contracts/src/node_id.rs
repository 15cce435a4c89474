//! The node id rule: what nodeinit writes into the ready file, passes as
//! `--node-id` and puts in `{node_id}` templates. Validated like a hostname
//! so it can never split a command line, escape a path or fail the agents'
//! comparison of the ready file with their own id.
//!
//! Owns the syntax only; where the id comes from (kernel command line,
//! config, hostname file) is the host's business.

use std::fmt;

/// Longest accepted node id, in bytes (a DNS name is at most 253).
pub const MAX_NODE_ID_LEN: usize = 253;

/// A node id that passed [`NodeId::parse`]: 1–253 bytes of
/// `[A-Za-z0-9._-]`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct NodeId(String);

/// Why a string is not a [`NodeId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid node id (1-253 characters of [A-Za-z0-9._-], starting with a letter or digit): {}", .rule.reason())]
pub struct InvalidNodeId {
    /// The rejected value.
    pub value: String,
    /// The rule it breaks.
    pub rule: NodeIdRule,
}

/// The rule a rejected node id breaks, first match in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeIdRule {
    /// It is empty.
    Empty,
    /// Longer than [`MAX_NODE_ID_LEN`] bytes.
    TooLong,
    /// Whitespace or a control character.
    Whitespace,
    /// A `/`.
    Slash,
    /// Another character outside `[A-Za-z0-9._-]`, or a first character that
    /// is not a letter or digit.
    BadCharacter,
}

impl NodeIdRule {
    /// The rule as a short phrase ("it is empty").
    pub fn reason(self) -> &'static str {
        match self {
            Self::Empty => "it is empty",
            Self::TooLong => "it is longer than 253 bytes",
            Self::Whitespace => "it contains whitespace or control characters",
            Self::Slash => "it contains `/`",
            Self::BadCharacter => {
                "it contains a character outside [A-Za-z0-9._-] or does not start with a letter or digit"
            }
        }
    }
}

impl NodeId {
    /// Validate `value`.
    ///
    /// # Errors
    ///
    /// [`InvalidNodeId`] naming the rule `value` breaks.
    ///
    /// ```
    /// use nodeinit_contracts::{NodeId, NodeIdRule};
    /// assert_eq!(NodeId::parse("x1000c0s0b0n0.hsn").unwrap().as_str(), "x1000c0s0b0n0.hsn");
    /// assert_eq!(NodeId::parse("a/b").unwrap_err().rule, NodeIdRule::Slash);
    /// ```
    pub fn parse(value: &str) -> Result<Self, InvalidNodeId> {
        let rule = if value.is_empty() {
            Some(NodeIdRule::Empty)
        } else if value.len() > MAX_NODE_ID_LEN {
            Some(NodeIdRule::TooLong)
        } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some(NodeIdRule::Whitespace)
        } else if value.contains('/') {
            Some(NodeIdRule::Slash)
        } else if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            || !value.as_bytes()[0].is_ascii_alphanumeric()
        {
            Some(NodeIdRule::BadCharacter)
        } else {
            None
        };
        match rule {
            Some(rule) => Err(InvalidNodeId {
                value: value.to_owned(),
                rule,
            }),
            None => Ok(Self(value.to_owned())),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeId {
    type Error = InvalidNodeId;
    fn try_from(value: String) -> Result<Self, InvalidNodeId> {
        Self::parse(&value)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn accepts_hostnames() {
        for ok in [
            "nid001234",
            "x1000c0s0b0n0.hsn",
            "a",
            "N-1_b.c",
            &"n".repeat(253),
        ] {
            assert_eq!(NodeId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_each_rule_first_match_first() {
        for (value, rule) in [
            ("", NodeIdRule::Empty),
            (&"n".repeat(254) as &str, NodeIdRule::TooLong),
            ("node\n", NodeIdRule::Whitespace),
            ("no de", NodeIdRule::Whitespace),
            ("a/b", NodeIdRule::Slash),
            ("-node", NodeIdRule::BadCharacter),
            (".node", NodeIdRule::BadCharacter),
            ("node:1", NodeIdRule::BadCharacter),
            ("nöde", NodeIdRule::BadCharacter),
        ] {
            assert_eq!(NodeId::parse(value).unwrap_err().rule, rule, "{value:?}");
        }
        assert_eq!(
            NodeId::parse("a b").unwrap_err().to_string(),
            "`a b` is not a valid node id (1-253 characters of [A-Za-z0-9._-], starting with a \
             letter or digit): it contains whitespace or control characters"
        );
    }
}
