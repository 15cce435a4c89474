//! The node id as it is written into the ready file. pact writes the bare id
//! (no newline); consumers compare the file content to their node id, so
//! anything that would make that comparison fail is refused here — by the
//! one node-id rule, [`nodeinit_contracts::NodeId`], which the host applies
//! too.

use nodeinit_contracts::NodeId;

use crate::ReadinessSetupError;

/// A node id that is safe to write as the ready file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyNodeId(NodeId);

impl ReadyNodeId {
    /// Validate `value`.
    ///
    /// # Errors
    ///
    /// [`ReadinessSetupError::InvalidNodeId`] naming the rule it breaks.
    pub fn parse(value: &str) -> Result<Self, ReadinessSetupError> {
        NodeId::parse(value)
            .map(Self)
            .map_err(|e| ReadinessSetupError::InvalidNodeId {
                value: value.to_owned(),
                reason: e.rule.reason(),
            })
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
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
