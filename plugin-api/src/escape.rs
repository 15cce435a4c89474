//! Escaping text that came from a peer or a file before it reaches a log
//! line or an error message (issue 12, item 11).
//!
//! Image names, paths and failure reasons reach a plugin from handoff
//! clients (`uenv_image`), directory listings and other plugins; printed raw,
//! an ESC, OSC or CR sequence in them could clear the console or forge a
//! `nodeinit: boot OK` line. Backends use it for every such string they log
//! or put into an error. The rule is nodeinit's one rule
//! ([`nodeinit_contracts::escape`]): control characters, the Unicode format
//! characters that reorder or hide text, and the backslash are written as
//! Rust escapes (`\u{1b}`, `\n`, `\\`); everything else stays as it is.
//!
//! ```
//! use nodeinit_plugin_api::escape;
//! assert_eq!(escape::text("a\x1b[2J"), "a\\u{1b}[2J");
//! assert_eq!(escape::one_line("x\ny"), "x y");
//! ```

pub use nodeinit_contracts::escape::{one_line, path, text, Escaped};
