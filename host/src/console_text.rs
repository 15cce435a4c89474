//! Making text from files and peers safe to print on the console.
//!
//! Owns the one escaping rule of the host: control characters (C0, DEL, C1,
//! and the bidi overrides that reorder a line) become `\u{..}` escapes, so a
//! config key or a plugin message can never clear the screen, move the
//! cursor or forge a `nodeinit: boot OK` line. Everything else is unchanged.
//! It must never drop characters: an escaped string still says what was there.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal raw.
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every unsafe character written as `\u{XX}`.
///
/// ```
/// use nodeinit::console_text::escape;
/// assert_eq!(escape("ok\x1b[2J"), "ok\\u{1b}[2J");
/// assert_eq!(escape("plain"), "plain");
/// ```
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(escape("a\rb\nc\td"), "a\\u{d}b\\u{a}c\\u{9}d");
        assert_eq!(escape("\x1b]0;title\x07"), "\\u{1b}]0;title\\u{7}");
        assert_eq!(escape("\u{202e}txt"), "\\u{202e}txt");
        assert_eq!(escape("\u{85}"), "\\u{85}");
        assert_eq!(escape("nid000042 ✓"), "nid000042 ✓");
    }
}
