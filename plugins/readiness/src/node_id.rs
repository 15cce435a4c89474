//! The node id as it is written into the ready file. pact writes the bare id
//! (no newline); consumers compare the file content to their node id, so
//! anything that would make that comparison fail is refused here.

use crate::ReadinessSetupError;

/// Longest accepted node id, in bytes (a DNS name is at most 253).
const MAX_NODE_ID_BYTES: usize = 253;

/// A node id that is safe to write as the ready file's content: non-empty,
/// at most 253 bytes, no whitespace or control characters, no `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyNodeId(String);

impl ReadyNodeId {
    /// Validate `value`.
    ///
    /// # Errors
    ///
    /// [`ReadinessSetupError::InvalidNodeId`] naming the rule it breaks.
    pub fn parse(value: &str) -> Result<Self, ReadinessSetupError> {
        let invalid = |reason| ReadinessSetupError::InvalidNodeId {
            value: value.to_owned(),
            reason,
        };
        if value.is_empty() {
            return Err(invalid("it is empty"));
        }
        if value.len() > MAX_NODE_ID_BYTES {
            return Err(invalid("it is longer than 253 bytes"));
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("it contains whitespace or control characters"));
        }
        if value.contains('/') {
            return Err(invalid("it contains `/`"));
        }
        Ok(Self(value.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hostnames() {
        assert_eq!(
            ReadyNodeId::parse("nid001234").unwrap().as_str(),
            "nid001234"
        );
        assert_eq!(
            ReadyNodeId::parse("x1000c0s0b0n0.hsn").unwrap().as_str(),
            "x1000c0s0b0n0.hsn"
        );
    }

    #[test]
    fn rejects_what_breaks_the_file_comparison() {
        for (value, reason) in [
            ("", "it is empty"),
            ("node\n", "it contains whitespace or control characters"),
            ("no de", "it contains whitespace or control characters"),
            ("a/b", "it contains `/`"),
        ] {
            let err = ReadyNodeId::parse(value).unwrap_err();
            assert!(
                matches!(&err, ReadinessSetupError::InvalidNodeId { reason: r, .. } if *r == reason),
                "{value:?}: {err}"
            );
            assert!(err.to_string().contains(reason));
        }
        let long = "n".repeat(254);
        assert!(ReadyNodeId::parse(&long)
            .unwrap_err()
            .to_string()
            .contains("longer than 253"));
    }
}
