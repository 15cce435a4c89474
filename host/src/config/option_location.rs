//! Putting a plugin's option error back where the admin wrote it.
//!
//! A plugin sees its `[plugins.<kind>.options]` only as JSON, so the key path
//! it reports (`image_dirs[0]`, `inner.b`; serde_path_to_error's syntax) says
//! nothing about the config file. This module finds that key in the file's
//! TOML (through `toml_edit`'s spans, inline tables included) and renders
//! `file:line: plugins.<kind>.options.<key>: <message>`.
//!
//! It must never fail: a key it cannot find (the file changed, a path into
//! a value the TOML does not spell out) falls back to the options table's
//! own line, or to the file alone.

use std::path::Path;

use toml_edit::{ImDocument, Item, Value};

use super::SourceLocation;

/// One step of a serde_path_to_error path.
#[derive(Debug, PartialEq, Eq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !name.is_empty() {
            out.push(Step::Key(name));
        }
        for index in rest.split('[').filter_map(|i| i.strip_suffix(']')) {
            if let Ok(i) = index.parse() {
                out.push(Step::Index(i));
            }
        }
    }
    out
}

/// The byte offset of the deepest part of `plugins.<kind>.options.<key>`
/// that `text` spells out.
pub fn locate_option(text: &str, kind: &str, key: &str) -> Option<usize> {
    let doc = ImDocument::parse(text).ok()?;
    let options = doc.get("plugins")?.get(kind)?.get("options")?;
    let mut best = item_span(options);
    let mut here: Option<&Item> = Some(options);
    let mut value: Option<&Value> = None;
    for step in steps(key) {
        match step {
            Step::Key(name) => {
                let table = match (here, value) {
                    (Some(item), _) => item.as_table_like(),
                    (None, Some(v)) => v.as_inline_table().map(|t| t as &dyn toml_edit::TableLike),
                    (None, None) => None,
                };
                let Some(table) = table else { break };
                // An unknown key exists in the file: point at the key itself.
                let Some((k, item)) = table.get_key_value(name) else {
                    break;
                };
                best = k.span().map(|s| s.start).or(best);
                here = Some(item);
                value = None;
            }
            Step::Index(i) => {
                let array = match (here, value) {
                    (Some(item), _) => item.as_array(),
                    (None, Some(v)) => v.as_array(),
                    (None, None) => None,
                };
                let Some(element) = array.and_then(|a| a.get(i)) else {
                    break;
                };
                best = element.span().map(|s| s.start).or(best);
                here = None;
                value = Some(element);
            }
        }
    }
    best
}

fn item_span(item: &Item) -> Option<usize> {
    item.span().map(|s| s.start)
}

/// `file:line: plugins.<kind>.options.<key>: <message>`.
pub fn option_error(file: &Path, text: &str, kind: &str, key: &str, message: &str) -> String {
    let dotted = if key.is_empty() {
        format!("plugins.{kind}.options")
    } else {
        format!("plugins.{kind}.options.{key}")
    };
    let dotted = nodeinit_handoff::escape::escape(&dotted);
    match locate_option(text, kind, key) {
        Some(offset) => {
            let line = SourceLocation::at(text, offset).line;
            format!("{}:{line}: {dotted}: {message}", file.display())
        }
        None => format!("{}: {dotted}: {message}", file.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "[host]\non_failure = \"poweroff\"\n\n[plugins.mount]\npath = \"squashfs\"\n[plugins.mount.options]\nimage_dir = [\"/images\"]\nhold_time_secs = -1\nimage_dirs = [\n  \"/a\",\n  7,\n]\n\n[plugins.cgroup]\npath = \"null\"\noptions = { fial = [], inner = { b = 1 } }\n";

    fn line_of(kind: &str, key: &str) -> usize {
        SourceLocation::at(DOC, locate_option(DOC, kind, key).unwrap()).line
    }

    #[test]
    fn paths_parse_into_steps() {
        assert_eq!(
            steps("a.b[0][2].c"),
            vec![
                Step::Key("a"),
                Step::Key("b"),
                Step::Index(0),
                Step::Index(2),
                Step::Key("c")
            ]
        );
        assert_eq!(steps(""), vec![]);
    }

    #[test]
    fn keys_in_an_options_table() {
        assert_eq!(line_of("mount", "image_dir"), 7);
        assert_eq!(line_of("mount", "hold_time_secs"), 8);
        assert_eq!(line_of("mount", "image_dirs[1]"), 11);
        // A key the file does not have: the options table's line.
        assert_eq!(line_of("mount", "state_dir"), 6);
    }

    #[test]
    fn keys_in_inline_tables() {
        assert_eq!(line_of("cgroup", "fial"), 16);
        assert_eq!(line_of("cgroup", "inner.b"), 16);
    }

    #[test]
    fn rendered_with_file_line_and_key() {
        assert_eq!(
            option_error(
                Path::new("/etc/nodeinit/nodeinit.toml"),
                DOC,
                "mount",
                "image_dir",
                "unknown field `image_dir`, expected one of `image_dirs`, `mount_base`"
            ),
            "/etc/nodeinit/nodeinit.toml:7: plugins.mount.options.image_dir: unknown field `image_dir`, expected one of `image_dirs`, `mount_base`"
        );
        assert_eq!(
            option_error(Path::new("n.toml"), "not toml [", "mount", "x", "m"),
            "n.toml: plugins.mount.options.x: m"
        );
        assert_eq!(
            option_error(
                Path::new("n.toml"),
                DOC,
                "mount",
                "",
                "missing field `image_dirs`"
            ),
            "n.toml:6: plugins.mount.options: missing field `image_dirs`"
        );
    }
}
