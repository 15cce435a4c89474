//! The node id nodeinit was given on the kernel command line.
//!
//! Owns reading `nodeinit.node_id=` from `/proc/cmdline`. Must never guess a
//! default: a missing id is an error the harness must see.

/// Reads the value of `nodeinit.node_id=` from `/proc/cmdline`.
///
/// # Errors
/// When `/proc/cmdline` is unreadable or has no such word.
pub fn node_id() -> Result<String, String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| format!("cannot read /proc/cmdline: {e}"))?;
    cmdline
        .split_whitespace()
        .find_map(|word| word.strip_prefix("nodeinit.node_id="))
        .map(str::to_owned)
        .ok_or_else(|| format!("no nodeinit.node_id= word in /proc/cmdline ({cmdline:?})"))
}
