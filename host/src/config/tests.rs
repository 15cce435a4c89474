//! Config behaviour end to end: defaults, every kind of invalid input (each
//! message must name file, line and key), and arbitrary input never panics.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;

const FILE: &str = "/etc/nodeinit/nodeinit.toml";

fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
    load_from_str(text, Path::new(FILE))
}

/// Assert `text` is refused at `line` for `key`, with `needle` in the message.
fn assert_invalid(text: &str, line: usize, key: &str, needle: &str) {
    let err = parse(text).expect_err(text);
    let rendered = err.to_string();
    match &err {
        ConfigError::Invalid {
            path,
            location,
            message,
        } => {
            assert_eq!(path, Path::new(FILE));
            assert_eq!(
                (location.line, location.key.as_str()),
                (line, key),
                "{rendered}"
            );
            assert!(message.contains(needle), "{rendered}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(
        rendered.starts_with(&format!("{FILE}:{line}:")),
        "{rendered}"
    );
    assert!(rendered.contains(&format!("key `{key}`")), "{rendered}");
}

#[test]
fn empty_file_gives_every_default() {
    let config = parse("").unwrap();
    assert_eq!(
        config.host.plugin_dir.as_path(),
        Path::new(DEFAULT_PLUGIN_DIR)
    );
    assert_eq!(config.host.on_failure, OnFailure::Shell);
    assert_eq!(config.host.node_id, None);
    assert_eq!(config.plugins, PluginsSection::default());
    assert!(config.boot.mounts.is_empty());
    assert_eq!(config.handoff, None);
}

#[test]
fn plugin_and_handoff_defaults() {
    let config = parse("[plugins.cgroup]\npath = \"cgroupfs\"\n[handoff]\nagent = \"command\"\nexec = \"/bin/true\"\n").unwrap();
    let cgroup = config.plugins.cgroup.unwrap();
    assert!(cgroup.required);
    assert_eq!(cgroup.sha256, None);
    assert!(cgroup.options.is_empty());
    assert_eq!(cgroup.options_json().unwrap(), "{}");
    let handoff = config.handoff.unwrap();
    assert_eq!(handoff.mode, HandoffMode::Exec);
    assert!(handoff.args.is_empty());
    assert_eq!(handoff.grace_secs, DEFAULT_GRACE_SECS);
}

#[test]
fn full_example_parses() {
    let text = r#"
[host]
plugin_dir = "/opt/nodeinit/plugins"
on_failure = "reboot"
node_id = "nid000042"
[plugins.cgroup]
path = "cgroupfs"
required = true
sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
[plugins.cgroup.options]
controllers = ["cpu", "memory", "io", "pids"]
[plugins.mount]
path = "/opt/vendor/libnodeinit_vendorfs.so"
required = false
[boot]
mounts = ["base.sqfs", "/images/tools.sqfs"]
[handoff]
agent = "pact"
exec = "/usr/local/bin/pact-agent"
args = ["--config", "/etc/pact/agent.toml"]
mode = "supervise"
grace_secs = 30
"#;
    let config = parse(text).unwrap();
    assert_eq!(config.host.on_failure, OnFailure::Reboot);
    assert_eq!(
        config.host.node_id.as_ref().map(NodeId::as_str),
        Some("nid000042")
    );
    let cgroup = config.plugins.get(BackendKind::Cgroup).unwrap();
    assert_eq!(
        cgroup.resolved_path(&config.host.plugin_dir),
        PathBuf::from("/opt/nodeinit/plugins/libnodeinit_cgroupfs.so")
    );
    assert_eq!(
        cgroup.options_json().unwrap(),
        r#"{"controllers":["cpu","memory","io","pids"]}"#
    );
    let kinds: Vec<_> = config.plugins.iter().map(|(k, _)| k.name()).collect();
    assert_eq!(kinds, ["cgroup", "mount"]);
    assert_eq!(config.boot.mounts[1].as_str(), "/images/tools.sqfs");
    let handoff = config.handoff.unwrap();
    assert_eq!(
        (handoff.agent, handoff.mode, handoff.grace_secs),
        (AgentKind::Pact, HandoffMode::Supervise, 30)
    );
}

#[test]
fn builtin_config_is_valid_and_serves_a_plain_node() {
    let config = parse(BUILTIN_CONFIG).unwrap();
    let kinds: Vec<_> = config
        .plugins
        .iter()
        .map(|(k, s)| (k.name(), s.required))
        .collect();
    assert_eq!(
        kinds,
        [
            ("cgroup", true),
            ("mount", false),
            ("namespace", false),
            ("readiness", true)
        ]
    );
    assert_eq!(config.handoff, None);
}

#[test]
fn wrong_type() {
    assert_invalid(
        "[plugins.cgroup]\npath = \"cgroupfs\"\nrequired = \"yes\"\n",
        3,
        "plugins.cgroup.required",
        "invalid type",
    );
    assert_invalid(
        "[boot]\nmounts = \"base.sqfs\"\n",
        2,
        "boot.mounts",
        "invalid type",
    );
}

#[test]
fn unknown_key() {
    assert_invalid(
        "[host]\nplugin_dri = \"/x\"\n",
        2,
        "host.plugin_dri",
        "unknown field `plugin_dri`",
    );
    assert_invalid("[hots]\n", 1, "hots", "unknown field `hots`");
}

#[test]
fn unknown_backend_kind() {
    assert_invalid(
        "[plugins.network]\npath = \"x\"\n",
        1,
        "plugins.network",
        "unknown backend kind",
    );
}

#[test]
fn bad_on_failure() {
    assert_invalid(
        "[host]\non_failure = \"panic\"\n",
        2,
        "host.on_failure",
        "unknown variant `panic`",
    );
}

#[test]
fn missing_handoff_exec() {
    assert_invalid(
        "[host]\n\n[handoff]\nagent = \"pact\"\n",
        3,
        "handoff.exec",
        "missing field `exec`",
    );
}

#[test]
fn invalid_values_are_reported_at_their_key() {
    assert_invalid(
        "[handoff]\nagent = \"pact\"\nexec = \"pact-agent\"\n",
        3,
        "handoff.exec",
        "must be an absolute path",
    );
    assert_invalid(
        "[handoff]\nagent = \"slurm\"\nexec = \"/x\"\n",
        2,
        "handoff.agent",
        "unknown variant `slurm`",
    );
    assert_invalid(
        "[plugins.mount]\npath = \"lib/x.so\"\n",
        2,
        "plugins.mount.path",
        "neither a bare plugin name",
    );
    assert_invalid(
        "[plugins.mount]\npath = \"squashfs\"\nsha256 = \"abc\"\n",
        3,
        "plugins.mount.sha256",
        "64 hex digits",
    );
    assert_invalid(
        "[host]\nnode_id = \"-bad\"\n",
        2,
        "host.node_id",
        "not a valid node id",
    );
    // toml reports an element's error at the array: the key is still right.
    assert_invalid(
        "[boot]\nmounts = [\n  \"ok.sqfs\",\n  \"../etc\",\n]\n",
        2,
        "boot.mounts",
        "image file name",
    );
}

#[test]
fn syntax_error_names_line_and_key() {
    assert_invalid("[host]\non_failure = shell\n", 2, "host.on_failure", "");
}

#[test]
fn invalid_utf8_names_file_line_and_key() {
    let mut bytes = b"[host]\nnode_id = \"nid".to_vec();
    bytes.push(0xff);
    bytes.extend_from_slice(b"\"\n");
    let err = load::load_from_bytes(&bytes, Path::new(FILE)).unwrap_err();
    let text = err.to_string();
    match &err {
        ConfigError::NotUtf8 { location, byte, .. } => {
            assert_eq!(
                (location.line, location.column, location.key.as_str(), *byte),
                (2, 15, "host.node_id", 0xff)
            );
        }
        other => panic!("expected NotUtf8, got {other:?}"),
    }
    assert!(
        text.starts_with(&format!(
            "{FILE}:2:15: key `host.node_id`: file is not valid UTF-8"
        )),
        "{text}"
    );
}

#[test]
fn unreadable_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nodeinit.toml");
    let err = load(Some(&missing), &KernelCmdline::default(), None).unwrap_err();
    assert!(matches!(err, ConfigError::Unreadable { ref path, .. } if path == &missing));
    assert!(
        err.to_string()
            .contains(&format!("{}: cannot read config", missing.display())),
        "{err}"
    );
    // A directory is unreadable as a file too.
    let err = load(Some(dir.path()), &KernelCmdline::default(), None).unwrap_err();
    assert!(matches!(err, ConfigError::Unreadable { .. }), "{err}");
}

#[test]
fn location_order_argument_cmdline_default_builtin() {
    let dir = tempfile::tempdir().unwrap();
    let arg = dir.path().join("arg.toml");
    let cmd = dir.path().join("cmd.toml");
    let default = dir.path().join("default.toml");
    std::fs::write(&arg, "[host]\non_failure = \"halt\"\n").unwrap();
    std::fs::write(&cmd, "[host]\non_failure = \"poweroff\"\n").unwrap();
    let cmdline = KernelCmdline::parse(&format!("nodeinit.config={}", cmd.display()));

    let loaded = load(Some(&arg), &cmdline, Some(&default)).unwrap();
    assert_eq!(
        (loaded.origin, loaded.config.host.on_failure),
        (ConfigOrigin::Argument(arg.clone()), OnFailure::Halt)
    );
    let loaded = load(None, &cmdline, Some(&default)).unwrap();
    assert_eq!(
        (loaded.origin, loaded.config.host.on_failure),
        (
            ConfigOrigin::KernelCmdline(cmd.clone()),
            OnFailure::Poweroff
        )
    );
    let loaded = load(None, &KernelCmdline::default(), Some(&default)).unwrap();
    assert_eq!(loaded.origin, ConfigOrigin::BuiltIn);
    assert_eq!(loaded.config, parse(BUILTIN_CONFIG).unwrap());
    std::fs::write(&default, "[host]\non_failure = \"continue\"\n").unwrap();
    let loaded = load(None, &KernelCmdline::default(), Some(&default)).unwrap();
    assert_eq!(
        (loaded.origin, loaded.config.host.on_failure),
        (ConfigOrigin::DefaultPath(default), OnFailure::Continue)
    );
    // A file named on the kernel command line must exist: no silent built-in.
    let missing = KernelCmdline::parse("nodeinit.config=/nonexistent/n.toml");
    let err = load(None, &missing, None).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/n.toml: cannot read config"),
        "{err}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = load::load_from_bytes(&bytes, Path::new(FILE));
    }

    #[test]
    fn toml_like_text_never_panics_and_errors_have_a_line(
        lines in proptest::collection::vec(
            prop_oneof![
                Just("[host]".to_owned()),
                Just("[plugins.cgroup]".to_owned()),
                Just("[plugins.cgroup.options]".to_owned()),
                Just("[handoff]".to_owned()),
                Just("[boot]".to_owned()),
                "[a-z_.]{1,12} = \"[ -~]{0,12}\"",
                "[a-z_]{1,12} = [0-9]{1,3}",
                "[a-z_]{1,10} = \\[\"[a-z./]{0,8}\"\\]",
                "[ -~\u{e9}\u{1f600}]{0,20}",
            ],
            0..12,
        )
    ) {
        let text = lines.join("\n");
        if let Err(ConfigError::Invalid { location, .. }) = parse(&text) {
            prop_assert!(location.line >= 1 && location.line <= text.lines().count().max(1) + 1);
        }
    }
}

#[test]
fn stop_signal_is_validated_at_its_line() {
    assert_invalid(
        "[handoff]\nagent = \"pact\"\nexec = \"/x\"\nstop_signal = \"SIGSTOP\"\n",
        4,
        "handoff.stop_signal",
        "`SIGSTOP` is not a signal that stops an agent",
    );
    let h = parse("[handoff]\nagent = \"lattice\"\nexec = \"/x\"\nstop_signal = \"TERM\"\n")
        .unwrap()
        .handoff
        .unwrap();
    assert_eq!(h.effective_stop_signal(), nix::sys::signal::Signal::SIGTERM);
    let h = parse("[handoff]\nagent = \"lattice\"\nexec = \"/x\"\n")
        .unwrap()
        .handoff
        .unwrap();
    assert_eq!(h.effective_stop_signal(), nix::sys::signal::Signal::SIGINT);
}

#[test]
fn unknown_placeholders_are_refused_at_their_line() {
    assert_invalid(
        // toml 0.8 reports a bad element at the array's start; the message names the element.
        "[handoff]\nagent = \"lattice\"\nexec = \"/x\"\nargs = [\n  \"--node-id\",\n  \"{nodeid}\",\n]\n",
        4,
        "handoff.args",
        "unknown placeholder `{nodeid}` in `{nodeid}`; the only placeholder is `{node_id}`",
    );
    assert_invalid(
        "[handoff]\nagent = \"pact\"\nexec = \"/x\"\n[handoff.env]\nPACT_AGENT_VCLUSTER = \"{cluster}\"\n",
        5,
        "handoff.env.PACT_AGENT_VCLUSTER",
        "unknown placeholder `{cluster}`",
    );
    assert_invalid(
        "[handoff]\nagent = \"pact\"\nexec = \"/x\"\n[handoff.env]\n\"A-B\" = \"1\"\n",
        5,
        "handoff.env.A-B",
        "`A-B` is not an environment variable name",
    );
    let h = parse("[handoff]\nagent = \"pact\"\nexec = \"/x\"\nargs = [\"--node-id={node_id}\"]\n[handoff.env]\nRUST_LOG = \"info\"\n")
        .unwrap()
        .handoff
        .unwrap();
    assert_eq!(h.args, ["--node-id={node_id}"]);
    assert_eq!(h.env.len(), 1);
}
