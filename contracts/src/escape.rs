//! The one rule for making peer- or file-supplied text safe for a console
//! (issue 12, item 11): an allocation id, image name, path, config key or
//! failure reason printed raw could clear the screen, move the cursor, set
//! a window title (OSC) or forge a line such as `nodeinit: boot OK` with a
//! carriage return.
//!
//! Control characters (C0 with tab, CR, LF and ESC, DEL, C1 such as the
//! 8-bit CSI U+009B), the Unicode format characters that reorder or hide
//! text (bidi overrides and isolates, zero-width marks, the BOM) and the
//! backslash itself (so an escape can never be faked) are written as Rust
//! escapes (`\u{1b}`, `\r`, `\n`, `\t`, `\\`); everything else, non-ASCII
//! letters included, stays as it is. The host, the handoff server and every
//! backend spell it this way (re-exported as `nodeinit_handoff::escape` and
//! `nodeinit_plugin_api::escape`). This module decides how text is spelled,
//! never what is logged.
//!
//! ```
//! use nodeinit_contracts::escape::{escape, one_line, Escaped};
//! assert_eq!(escape("job-1"), "job-1");
//! assert_eq!(
//!     escape("\u{1b}]0;x\u{7}\rnodeinit: boot OK"),
//!     "\\u{1b}]0;x\\u{7}\\rnodeinit: boot OK"
//! );
//! assert_eq!(format!("id={}", Escaped("a\u{1b}[2J")), "id=a\\u{1b}[2J");
//! assert_eq!(one_line("x\ny"), "x y");
//! ```

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

/// Whether `c` must not reach a terminal as is.
fn must_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// `text` with every character of the rule escaped; borrowed when none was.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(must_escape) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(Escaped(text).to_string())
}

/// `text` escaped, owned (for error fields).
#[must_use]
pub fn text(text: &str) -> String {
    escape(text).into_owned()
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

/// Display adapter: formats the wrapped text escaped, without allocating.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if must_escape(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_format_characters_and_backslash_are_escaped_letters_kept() {
        assert_eq!(
            text("a\x1b[2J\rnodeinit: boot OK\x07\u{202e}é\\"),
            "a\\u{1b}[2J\\rnodeinit: boot OK\\u{7}\\u{202e}é\\\\"
        );
        assert_eq!(
            escape("a\u{0}b\u{7f}c\u{9b}d\u{200b}e\u{feff}f\té"),
            "a\\u{0}b\\u{7f}c\\u{9b}d\\u{200b}e\\u{feff}f\\té"
        );
        assert!(matches!(
            escape("/images/base-1.0.sqfs"),
            Cow::Borrowed("/images/base-1.0.sqfs")
        ));
        assert_eq!(
            one_line("cgroup\nphase\r\x1b[2J"),
            "cgroup phase \\u{1b}[2J"
        );
        let hostile = "\u{1b}[2J\u{1b}]0;title\u{7}\r\nnodeinit: boot OK";
        let escaped = escape(hostile);
        assert!(!escaped.chars().any(|c| c.is_control()), "{escaped}");
        assert_eq!(Escaped(hostile).to_string(), escaped);
    }
}
