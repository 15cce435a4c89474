//! Escaping text that came from a peer or a file before it reaches a log
//! line or an error message (issue 12, item 11).
//!
//! Image names, paths and failure reasons reach a plugin from handoff
//! clients (`uenv_image`), directory listings and other plugins; printed raw,
//! an ESC, OSC or CR sequence in them could clear the console or forge a
//! `nodeinit: boot OK` line. Backends use it for every such string they log
//! or put into an error. Owns one rule:
//! control characters (C0, DEL, C1), Unicode format characters that reorder
//! or hide text (bidi overrides, zero-width marks, BOM) and the backslash are
//! written as Rust-style escapes (`\u{1b}`, `\n`, `\\`); everything else,
//! non-ASCII letters included, stays as it is. This module must never
//! decide *what* is logged, only how it is spelled.
//!
//! ```
//! use nodeinit_plugin_api::escape;
//! assert_eq!(escape::text("a\x1b[2J"), "a\\u{1b}[2J");
//! assert_eq!(escape::one_line("x\ny"), "x y");
//! ```

use std::fmt::Write as _;
use std::path::Path;

/// `text` with every control or invisible-format character escaped.
#[must_use]
pub fn text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if needs_escape(c) {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `reason` as one line (CR/LF become spaces, so it cannot look like several
/// replies or log lines), then escaped like [`text`].
#[must_use]
pub fn one_line(reason: &str) -> String {
    text(&reason.replace(['\n', '\r'], " "))
}

/// A path, shown lossily as UTF-8 and escaped like [`text`].
#[must_use]
pub fn path(path: &Path) -> String {
    text(&path.to_string_lossy())
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_are_escaped_letters_kept() {
        assert_eq!(
            text("a\x1b[2J\rnodeinit: boot OK\x07\u{202e}é\\"),
            "a\\u{1b}[2J\\rnodeinit: boot OK\\u{7}\\u{202e}é\\\\"
        );
        assert_eq!(text("/images/base-1.0.sqfs"), "/images/base-1.0.sqfs");
        assert_eq!(text("\u{85}\u{9b}"), "\\u{85}\\u{9b}");
        assert_eq!(
            one_line("cgroup\nphase\r\x1b[2J"),
            "cgroup phase \\u{1b}[2J"
        );
    }
}
