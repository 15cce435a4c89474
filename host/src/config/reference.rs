//! The config reference: one table of every key, its default and meaning,
//! rendered both as README's "Config reference" table and as the
//! `nodeinit.toml(5)` man page, so the two cannot drift (a test compares
//! README with [`markdown_table`]).
//!
//! Owns the wording of the reference only; the schema itself (types,
//! defaults, validation) lives in `schema`/`values`. It must never be the
//! place a default is decided: when a default changes there, change its row
//! here and the README test says so.

use std::fmt::Write as _;

/// One key of the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferenceRow {
    /// Dotted key (`host.on_failure`); several keys may share a row (`a`, `b`).
    pub key: &'static str,
    /// The default, or `—` when the key has none.
    pub default: &'static str,
    /// What it means, in Markdown (backticks and `\|` only).
    pub meaning: &'static str,
}

/// Every key, in the order of the file's sections.
pub const REFERENCE: &[ReferenceRow] = &[
    ReferenceRow {
        key: "`host.plugin_dir`",
        default: "`/usr/lib/nodeinit/plugins`",
        meaning: "where bare plugin names are resolved as `libnodeinit_<name>.so`",
    },
    ReferenceRow {
        key: "`host.on_failure`",
        default: "`shell`",
        meaning: "`shell` \\| `reboot` \\| `poweroff` \\| `halt` \\| `continue`; not as PID 1 and in `--sandbox`, anything but `continue` is exit 1",
    },
    ReferenceRow {
        key: "`host.node_id`",
        default: "—",
        meaning: "used when `nodeinit.node_id=` is not on the kernel command line; else the first line of `/etc/hostname`",
    },
    ReferenceRow {
        key: "`host.phase_timeout_secs`",
        default: "`60`",
        meaning: "seconds each plugin call may take before the keeper kills the worker and fails the phase (also bounds the worker's own code between calls)",
    },
    ReferenceRow {
        key: "`host.metrics_file`",
        default: "`/run/nodeinit/metrics.prom`",
        meaning: "Prometheus text file written after the boot phases, with boot.json, and after each worker restart (point node_exporter's textfile collector at its directory)",
    },
    ReferenceRow {
        key: "`plugins.<kind>.path`",
        default: "—",
        meaning: "bare name (`cgroupfs`) or absolute `.so` path; kinds: `cgroup`, `mount`, `namespace`, `readiness`",
    },
    ReferenceRow {
        key: "`plugins.<kind>.required`",
        default: "`true`",
        meaning: "whether a failure of this backend stops the boot",
    },
    ReferenceRow {
        key: "`plugins.<kind>.sha256`",
        default: "—",
        meaning: "64-hex pin of the `.so` (`sha256sum`)",
    },
    ReferenceRow {
        key: "`plugins.<kind>.timeout_secs`",
        default: "`host.phase_timeout_secs`",
        meaning: "deadline of each call into this plugin",
    },
    ReferenceRow {
        key: "`plugins.<kind>.options`",
        default: "`{}`",
        meaning: "the backend's own options (below); unknown keys are rejected",
    },
    ReferenceRow {
        key: "`boot.mounts`",
        default: "`[]`",
        meaning: "images acquired during boot (file name in the mount backend's `image_dirs`, or absolute path)",
    },
    ReferenceRow {
        key: "`handoff.agent`",
        default: "—",
        meaning: "`pact` \\| `lattice` \\| `command`: decides the preflight checks",
    },
    ReferenceRow {
        key: "`handoff.exec`",
        default: "—",
        meaning: "absolute path of the agent",
    },
    ReferenceRow {
        key: "`handoff.args`",
        default: "`[]`",
        meaning: "its arguments; `{node_id}` in any of them is replaced by the resolved node id, any other `{word}` is a config error; for `pact`, `--node-id <id>` is appended (before a `--`) unless they carry `--node-id`",
    },
    ReferenceRow {
        key: "`handoff.env`",
        default: "`{}`",
        meaning: "table of variables set in the agent's environment on top of nodeinit's (exec and supervise); names `[A-Za-z_][A-Za-z0-9_]*`, values may use `{node_id}`; the preflight reads `PACT_AGENT_CONFIG` and `LATTICE_ADVERTISE_ADDR` from here first",
    },
    ReferenceRow {
        key: "`handoff.mode`",
        default: "`exec`",
        meaning: "`exec` (the agent replaces nodeinit) \\| `supervise` (restart with backoff 1 s doubling to 60 s)",
    },
    ReferenceRow {
        key: "`handoff.stop_signal`",
        default: "`SIGINT` for `pact` and `lattice`, `SIGTERM` for `command`",
        meaning: "the signal a supervised agent gets at shutdown, before the grace period; `\"SIGINT\"`, `\"INT\"`, `\"term\"`…; one of INT, TERM, HUP, QUIT, USR1, USR2, PWR, KILL",
    },
    ReferenceRow {
        key: "`handoff.grace_secs`",
        default: "`10`",
        meaning: "stop signal → SIGKILL delay when stopping a supervised agent",
    },
    ReferenceRow {
        key: "`handoff.socket.group`",
        default: "—",
        meaning: "gid owning the handoff socket; when set the socket is mode 0660 (else 0600, root only)",
    },
    ReferenceRow {
        key: "`handoff.socket.uids`, `handoff.socket.gids`",
        default: "`[]`",
        meaning: "peers allowed besides root (`SO_PEERCRED`; a gid matches the peer's primary or any supplementary group, from `SO_PEERGROUPS`); others are refused with `unauthorized` before they take a connection slot",
    },
    ReferenceRow {
        key: "`handoff.socket.max_connections`",
        default: "`256`",
        meaning: "authorised connections served at once; beyond, `busy`",
    },
    ReferenceRow {
        key: "`handoff.socket.max_queued_requests`",
        default: "`64`",
        meaning: "requests waiting for readiness at once; beyond, `busy`",
    },
    ReferenceRow {
        key: "`handoff.socket.ready_wait_secs`",
        default: "`120`",
        meaning: "how long a request waits for readiness before `not_ready`",
    },
    ReferenceRow {
        key: "`handoff.socket.max_allocations`",
        default: "`4096`",
        meaning: "live allocations in total; a new one beyond gets `busy`",
    },
    ReferenceRow {
        key: "`handoff.socket.max_allocations_per_peer`",
        default: "`1024`",
        meaning: "live allocations one peer uid may own; beyond, `busy`",
    },
    ReferenceRow {
        key: "`handoff.socket.idle_timeout_secs`",
        default: "`60`",
        meaning: "a connection that sends nothing for this long and owns no live allocation is closed",
    },
    ReferenceRow {
        key: "`handoff.socket.worker_threads`",
        default: "`4`",
        meaning: "threads creating and releasing namespaces (1–6); the server's threads are these plus one event loop, whatever the number of connections",
    },
    ReferenceRow {
        key: "`handoff.socket.cgroup_root`",
        default: "`/sys/fs/cgroup`",
        meaning: "the cgroup2 root a request's `cgroup_scope` is relative to (WI5)",
    },
    ReferenceRow {
        key: "`handoff.socket.watch_cgroup_scopes`",
        default: "`true`",
        meaning: "release an allocation (and send `allocation_ended`) when its cgroup scope empties",
    },
];

/// README's table (header, separator, one line per row).
pub fn markdown_table() -> String {
    let mut out = String::from("| key | default | meaning |\n| --- | --- | --- |\n");
    for row in REFERENCE {
        let _ = writeln!(out, "| {} | {} | {} |", row.key, row.default, row.meaning);
    }
    out
}

/// Markdown inline text as roff: backticks dropped (keys become bold at
/// the row level), `\|` unescaped, roff's own escapes applied.
fn roff_text(markdown: &str) -> String {
    let plain = markdown.replace("\\|", "|").replace('`', "");
    let mut out = String::with_capacity(plain.len());
    for (i, c) in plain.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            // A leading dot or quote would be read as a request.
            '.' | '\'' if i == 0 => {
                out.push_str("\\&");
                out.push(c);
            }
            '—' => out.push_str("\\(em"),
            '→' => out.push_str("\\(->"),
            c => out.push(c),
        }
    }
    out
}

/// The `nodeinit.toml(5)` man page, in roff.
pub fn man_page(version: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        ".TH NODEINIT.TOML 5 \"\" \"nodeinit {}\" \"File Formats\"",
        roff_text(version)
    );
    out.push_str(".SH NAME\nnodeinit.toml \\- configuration of nodeinit, the HPC node init\n");
    out.push_str(".SH SYNOPSIS\n/etc/nodeinit/nodeinit.toml\n");
    out.push_str(
        ".SH DESCRIPTION\nOne TOML file read at boot; \\fBnodeinit.config=\\fIPATH\\fR on the kernel \
command line overrides its path; with no file, a built\\-in default serves a plain node. \
Every error names the file, line and key; unknown keys are errors. \
\\fBnodeinit check\\fR validates a file and loads its plugins without changing anything.\n",
    );
    out.push_str(".SH KEYS\n");
    for row in REFERENCE {
        let _ = writeln!(
            out,
            ".TP\n\\fB{}\\fR (default: {})\n{}",
            roff_text(row.key),
            roff_text(row.default),
            roff_text(row.meaning)
        );
    }
    out.push_str(".SH SEE ALSO\n\\fBnodeinit\\fR(8)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// README's "Config reference" table is this table, verbatim.
    #[test]
    fn readme_shows_exactly_this_reference() {
        let readme = include_str!("../../../README.md");
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's config reference differs from host/src/config/reference.rs; \
             paste this table into README:\n{table}"
        );
    }

    #[test]
    fn man_page_has_every_key_and_no_raw_requests() {
        let page = man_page("1.2.3");
        assert!(
            page.starts_with(".TH NODEINIT.TOML 5 \"\" \"nodeinit 1.2.3\""),
            "{page}"
        );
        assert!(
            page.contains(".TP\n\\fBhost.on_failure\\fR (default: shell)\n"),
            "{page}"
        );
        assert_eq!(page.matches(".TP\n").count(), REFERENCE.len());
        for line in page.lines() {
            assert!(
                !line.starts_with('\'')
                    && (!line.starts_with('.')
                        || line.as_bytes().get(1).is_some_and(u8::is_ascii_uppercase)),
                "line read as an unknown roff request: {line:?}"
            );
        }
    }

    #[test]
    fn roff_escapes() {
        assert_eq!(roff_text("`a-b` \\| c\\d"), "a\\-b | c\\ed");
        assert_eq!(roff_text(".hidden"), "\\&.hidden");
        assert_eq!(roff_text("—"), "\\(em");
    }
}
