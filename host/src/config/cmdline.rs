//! The `nodeinit.*` words of the kernel command line (`/proc/cmdline`).
//! Other words belong to the kernel or reach init's environment; they are
//! ignored here.

use std::path::PathBuf;

/// What the kernel command line says to nodeinit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelCmdline {
    /// `nodeinit.config=PATH`: the config file to read.
    pub config: Option<PathBuf>,
    /// `nodeinit.node_id=ID`: the node id (validated when resolved).
    pub node_id: Option<String>,
}

impl KernelCmdline {
    /// Where the kernel publishes its command line.
    pub const PROC_PATH: &'static str = "/proc/cmdline";

    /// Parse a command line. Words are separated by whitespace; double quotes
    /// group (`nodeinit.node_id="a b"`), as the kernel's own parser does. The
    /// last occurrence of a word wins, as for kernel parameters.
    pub fn parse(text: &str) -> Self {
        let mut parsed = Self::default();
        for word in split_words(text) {
            if let Some(value) = word.strip_prefix("nodeinit.config=") {
                parsed.config = (!value.is_empty()).then(|| PathBuf::from(value));
            } else if let Some(value) = word.strip_prefix("nodeinit.node_id=") {
                parsed.node_id = (!value.is_empty()).then(|| value.to_owned());
            }
        }
        parsed
    }

    /// Read and parse `/proc/cmdline`; an unreadable one (no /proc yet, or
    /// not Linux) counts as empty: the config and hostname still apply.
    pub fn from_proc() -> Self {
        std::fs::read(Self::PROC_PATH)
            .map(|bytes| Self::parse(&String::from_utf8_lossy(&bytes)))
            .unwrap_or_default()
    }
}

fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nodeinit_words_only() {
        let c = KernelCmdline::parse(
            "BOOT_IMAGE=/vmlinuz root=/dev/ram0 nodeinit.config=/etc/n.toml quiet nodeinit.node_id=nid01\n",
        );
        assert_eq!(c.config, Some(PathBuf::from("/etc/n.toml")));
        assert_eq!(c.node_id.as_deref(), Some("nid01"));
    }

    #[test]
    fn quotes_and_last_wins_and_empty_values() {
        let c =
            KernelCmdline::parse(r#"nodeinit.node_id=a nodeinit.node_id="b c" nodeinit.config="#);
        assert_eq!(c.node_id.as_deref(), Some("b c"));
        assert_eq!(c.config, None);
        assert_eq!(KernelCmdline::parse(""), KernelCmdline::default());
        assert_eq!(KernelCmdline::parse("xnodeinit.config=/a").config, None);
    }
}
