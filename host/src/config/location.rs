//! Turning a byte span of a TOML document into "line, column, key path" for
//! error messages. toml's errors carry the span but not the key path, so the
//! path is recovered from the text: the innermost `[table]` header above the
//! span and the `key =` of the line the span starts in.

/// Where in a config file something is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLocation {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Dotted key path, e.g. `plugins.cgroup.required`; empty for the document root.
    pub key: String,
}

impl SourceLocation {
    /// Locate byte `offset` of `text`.
    pub fn at(text: &str, offset: usize) -> Self {
        let offset = floor_char_boundary(text, offset.min(text.len()));
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = text[line_start..offset].chars().count() + 1;
        Self {
            line,
            column,
            // The key is text from the file: it reaches the console.
            key: nodeinit_handoff::escape::escape(&key_path_at(text, line_start)).into_owned(),
        }
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// The key path of the line starting at `line_start`.
fn key_path_at(text: &str, line_start: usize) -> String {
    let mut table = String::new();
    let mut key = None;
    let lines_before: Vec<&str> = text[..line_start].lines().collect();
    let current = text[line_start..].lines().next().unwrap_or("");
    if let Some(header) = table_header(current) {
        return header;
    }
    // The key of this line, or of the nearest `key =` above it (multi-line values).
    for line in std::iter::once(current).chain(lines_before.iter().rev().copied()) {
        if let Some(header) = table_header(line) {
            table = header;
            break;
        }
        if key.is_none() {
            key = line_key(line);
        }
    }
    if key.is_some() && table.is_empty() {
        // Keep looking for the table above the key's line.
        table = lines_before
            .iter()
            .rev()
            .find_map(|l| table_header(l))
            .unwrap_or_default();
    }
    match (table.is_empty(), key) {
        (_, None) => table,
        (true, Some(k)) => k,
        (false, Some(k)) => format!("{table}.{k}"),
    }
}

fn table_header(line: &str) -> Option<String> {
    let line = line.trim();
    let inner = line.strip_prefix('[')?;
    let inner = inner.strip_prefix('[').unwrap_or(inner);
    let end = inner.find(']')?;
    Some(normalize_key(&inner[..end]))
}

fn line_key(line: &str) -> Option<String> {
    let line = line.trim_start();
    if line.starts_with('#') || line.starts_with('[') {
        return None;
    }
    let eq = line.find('=')?;
    let key = normalize_key(&line[..eq]);
    let plain = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    (!key.is_empty() && plain).then_some(key)
}

fn normalize_key(raw: &str) -> String {
    raw.split('.')
        .map(|part| part.trim().trim_matches('"').trim_matches('\''))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "[host]\non_failure = \"bogus\"\n\n[plugins.cgroup]\nrequired = 3\n[plugins.cgroup.options]\ncontrollers = [\n  \"cpu\",\n  7,\n]\n";

    fn at(needle: &str) -> SourceLocation {
        SourceLocation::at(DOC, DOC.find(needle).unwrap())
    }

    #[test]
    fn key_of_value_under_table() {
        assert_eq!(
            at("\"bogus\""),
            SourceLocation {
                line: 2,
                column: 14,
                key: "host.on_failure".into()
            }
        );
        assert_eq!(at("3\n").key, "plugins.cgroup.required");
        assert_eq!(at("3\n").line, 5);
    }

    #[test]
    fn multi_line_value_reports_its_key() {
        assert_eq!(at("7,").key, "plugins.cgroup.options.controllers");
        assert_eq!(at("7,").line, 9);
    }

    #[test]
    fn header_reports_the_table() {
        assert_eq!(at("[plugins.cgroup]").key, "plugins.cgroup");
    }

    #[test]
    fn offsets_past_the_end_or_inside_a_char_are_safe() {
        assert_eq!(SourceLocation::at("a = 1", 99).line, 1);
        let text = "k = \"é\"";
        let loc = SourceLocation::at(text, 6);
        assert_eq!(loc.key, "k");
    }
}
