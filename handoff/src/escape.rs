//! Making peer-supplied text safe for a console: every string that came
//! from a peer (or from a file or backend that echoes one) goes through
//! [`escape`] or [`Escaped`] before it reaches a log line or an `error`
//! message the server sends. The rule is nodeinit's one rule,
//! [`nodeinit_contracts::escape`], re-exported here for the server's and
//! the host's callers.
//!
//! ```
//! use nodeinit_handoff::escape::{escape, Escaped};
//! assert_eq!(escape("job-1"), "job-1");
//! assert_eq!(format!("id={}", Escaped("a\u{1b}[2J")), "id=a\\u{1b}[2J");
//! ```

pub use nodeinit_contracts::escape::{escape, Escaped};
