//! The validated allocation id every handoff operation is keyed by.
//!
//! Owns the syntax rule only (`[A-Za-z0-9][A-Za-z0-9._-]*`, at most 128 bytes).
//! It must never touch the filesystem or the kernel: ids are map keys and log
//! fields, never paths, so `../../etc` can never become one.

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
    #[error("allocation_id is empty; it must match [A-Za-z0-9][A-Za-z0-9._-]* (at most {MAX_ALLOCATION_ID_LEN} bytes)")]
    Empty,
    /// The id is longer than [`MAX_ALLOCATION_ID_LEN`].
    #[error(
        "allocation_id is {len} bytes long; at most {MAX_ALLOCATION_ID_LEN} bytes are allowed"
    )]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The id contains a character outside `[A-Za-z0-9._-]` or does not start alphanumeric.
    #[error("allocation_id {id:?} must match [A-Za-z0-9][A-Za-z0-9._-]* (no '/', no leading '.', '_' or '-')")]
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
    ///
    /// ```
    /// use nodeinit_contracts::AllocationId;
    /// assert_eq!(AllocationId::parse("job-42.step_1").unwrap().as_str(), "job-42.step_1");
    /// assert!(AllocationId::parse("../../etc").is_err());
    /// ```
    pub fn parse(id: &str) -> Result<Self, InvalidAllocationId> {
        if id.is_empty() {
            return Err(InvalidAllocationId::Empty);
        }
        if id.len() > MAX_ALLOCATION_ID_LEN {
            return Err(InvalidAllocationId::TooLong { len: id.len() });
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
    fn accepts_the_documented_alphabet() {
        for ok in ["a", "A9", "job-42", "alloc.1_x-y", &"x".repeat(128)] {
            assert_eq!(AllocationId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_each_rule_with_its_own_variant() {
        assert_eq!(AllocationId::parse(""), Err(InvalidAllocationId::Empty));
        assert_eq!(
            AllocationId::parse(&"a".repeat(200)),
            Err(InvalidAllocationId::TooLong { len: 200 })
        );
        for bad in ["../../etc", "a/b", ".hidden", "-x", "_x", "a b", "é"] {
            assert_eq!(
                AllocationId::parse(bad),
                Err(InvalidAllocationId::BadCharacter { id: bad.to_owned() }),
                "{bad}"
            );
        }
        let msg = AllocationId::parse("a/b").unwrap_err().to_string();
        assert!(
            msg.contains("\"a/b\"") && msg.contains("[A-Za-z0-9][A-Za-z0-9._-]*"),
            "{msg}"
        );
    }
}
