//! Making peer-supplied text safe for a console: control characters become
//! visible escapes, so an allocation id, image name or message from a client
//! can never clear the screen, move the cursor, set a window title (OSC) or
//! forge a line such as `nodeinit: boot OK` with a carriage return.
//!
//! Owns the escaping rule only. Every string that came from a peer (or from
//! a file or backend that echoes one) goes through [`escape`] or [`Escaped`]
//! before it reaches a log line or an `error` message the server sends.

use std::borrow::Cow;
use std::fmt;

/// Whether `c` must not reach a terminal as is: C0 controls (tab, CR, LF and
/// ESC included), DEL, C1 controls (U+0080–U+009F, e.g. the 8-bit CSI
/// U+009B) and the Unicode bidirectional overrides that reorder what is shown.
fn must_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn write_escaped(f: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        c if u32::from(c) < 0x80 => write!(f, "\\x{:02x}", u32::from(c)),
        c => write!(f, "\\u{{{:x}}}", u32::from(c)),
    }
}

/// `text` with every control character written as a visible escape
/// (`\x1b`, `\r`, `\n`, `\t`, `\u{9b}`, ...). Borrowed when nothing needed escaping.
///
/// ```
/// use nodeinit_handoff::escape::escape;
/// assert_eq!(escape("job-1"), "job-1");
/// assert_eq!(escape("\u{1b}]0;x\u{7}\rnodeinit: boot OK"), "\\x1b]0;x\\x07\\rnodeinit: boot OK");
/// ```
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(must_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if must_escape(c) {
            // Writing to a String cannot fail.
            let _ = write_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Display adapter: formats the wrapped text escaped, without allocating.
///
/// ```
/// use nodeinit_handoff::escape::Escaped;
/// assert_eq!(format!("id={}", Escaped("a\u{1b}[2J")), "id=a\\x1b[2J");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if must_escape(c) {
                write_escaped(f, c)?;
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
    fn every_control_is_visible_and_text_is_kept() {
        assert_eq!(
            escape("a\u{0}b\u{7f}c\u{9b}d\u{202e}e\té"),
            "a\\x00b\\x7fc\\u{9b}d\\u{202e}e\\té"
        );
        let hostile = "\u{1b}[2J\u{1b}]0;title\u{7}\r\nnodeinit: boot OK";
        let escaped = escape(hostile);
        assert!(!escaped.chars().any(must_escape), "{escaped}");
        assert_eq!(Escaped(hostile).to_string(), escaped);
    }
}
