//! The validated allocation id that attributes a mount reference to an allocation.
//!
//! Owns the syntax rule only (`[A-Za-z0-9][A-Za-z0-9._-]*`, at most 128 bytes,
//! the same rule the namespace backend applies). It must never touch the
//! filesystem: ids end up as keys in the state file, never as paths.

use std::fmt;

/// Longest accepted allocation id, in bytes.
pub const MAX_ALLOCATION_ID_LEN: usize = 128;

/// An allocation id that passed [`AllocationId::parse`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllocationId(String);

/// Why a string is not an [`AllocationId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAllocationId {
    /// The id is the empty string.
    #[error("allocation id is empty")]
    Empty,
    /// The id is longer than [`MAX_ALLOCATION_ID_LEN`].
    #[error(
        "allocation id {id:?} is {len} bytes long; at most {MAX_ALLOCATION_ID_LEN} are allowed"
    )]
    TooLong {
        /// The rejected id.
        id: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The id contains a character outside `[A-Za-z0-9._-]` or starts with `.`, `_` or `-`.
    #[error("allocation id {id:?} must match [A-Za-z0-9][A-Za-z0-9._-]*")]
    BadCharacter {
        /// The rejected id.
        id: String,
    },
}

impl AllocationId {
    /// Validate `id`.
    ///
    /// # Errors
    ///
    /// [`InvalidAllocationId`] naming the rule that `id` breaks.
    pub fn parse(id: &str) -> Result<Self, InvalidAllocationId> {
        if id.is_empty() {
            return Err(InvalidAllocationId::Empty);
        }
        if id.len() > MAX_ALLOCATION_ID_LEN {
            return Err(InvalidAllocationId::TooLong {
                id: id.to_owned(),
                len: id.len(),
            });
        }
        let mut bytes = id.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
        let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !(first_ok && rest_ok) {
            return Err(InvalidAllocationId::BadCharacter { id: id.to_owned() });
        }
        Ok(Self(id.to_owned()))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AllocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_job_ids() {
        for id in ["a", "job-1234", "slurm.42_0", "X9"] {
            assert_eq!(
                AllocationId::parse(id).map(|a| a.to_string()),
                Ok(id.to_owned())
            );
        }
    }

    #[test]
    fn rejects_each_rule() {
        assert_eq!(AllocationId::parse(""), Err(InvalidAllocationId::Empty));
        let long = "a".repeat(129);
        assert_eq!(
            AllocationId::parse(&long),
            Err(InvalidAllocationId::TooLong {
                id: long.clone(),
                len: 129
            })
        );
        for bad in ["-a", ".", "..", "a/b", "a b", "_x", "é"] {
            let err = AllocationId::parse(bad).unwrap_err();
            assert_eq!(
                err,
                InvalidAllocationId::BadCharacter { id: bad.to_owned() }
            );
            assert!(
                err.to_string().contains("[A-Za-z0-9][A-Za-z0-9._-]*"),
                "{err}"
            );
        }
    }
}
