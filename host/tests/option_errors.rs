//! A plugin's option error names the config file, the line and the key path
//! (issue 13 item 5), for each reference plugin: an unknown key, a wrong
//! type and a bad value, through `nodeinit check` (which loads the plugins
//! in a probe child, as a boot's worker does).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use nodeinit_tests::{reference_plugin_dir, with_plugin_dir, Profile};

/// Writes a config whose `[plugins.<kind>.options]` table is `options`
/// (its first key at line 7) and runs `nodeinit check` on it.
fn check(dir: &Path, kind: &str, plugin: &str, options: &str) -> String {
    let config = dir.join("nodeinit.toml");
    let text = with_plugin_dir(
        &format!("[host]\non_failure = \"continue\"\n[plugins.{kind}]\npath = \"{plugin}\"\n[plugins.{kind}.options]\n{options}\n"),
        &reference_plugin_dir(Profile::Debug),
    );
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nodeinit"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    text
}

fn expect(text: &str, dir: &Path, line: usize, key: &str, message: &str) {
    let want = format!(
        "{}:{line}: {key}: plugin ",
        dir.join("nodeinit.toml").display()
    );
    assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    assert!(text.contains(message), "missing {message:?} in:\n{text}");
}

#[test]
fn cgroupfs_options() {
    let dir = tempfile::tempdir().unwrap();
    // Line 1 is [host], 2 the added plugin_dir, 3 on_failure, ... options at 7.
    let text = check(dir.path(), "cgroup", "cgroupfs", "controlers = [\"cpu\"]");
    expect(
        &text,
        dir.path(),
        7,
        "plugins.cgroup.options.controlers",
        "unknown field `controlers`, expected one of",
    );
    let text = check(
        dir.path(),
        "cgroup",
        "cgroupfs",
        "require_controllers = false\nkill_timeout_ms = \"10\"",
    );
    expect(
        &text,
        dir.path(),
        8,
        "plugins.cgroup.options.kill_timeout_ms",
        "invalid type: string \"10\", expected u64",
    );
    let text = check(dir.path(), "cgroup", "cgroupfs", "kill_timeout_ms = -5");
    expect(
        &text,
        dir.path(),
        7,
        "plugins.cgroup.options.kill_timeout_ms",
        "invalid value: integer `-5`, expected u64",
    );
}

#[test]
fn squashfs_options() {
    let dir = tempfile::tempdir().unwrap();
    let text = check(dir.path(), "mount", "squashfs", "image_dir = [\"/images\"]");
    expect(
        &text,
        dir.path(),
        7,
        "plugins.mount.options.image_dir",
        "unknown field `image_dir`, expected one of `image_dirs`",
    );
    let text = check(
        dir.path(),
        "mount",
        "squashfs",
        "image_dirs = [\n  \"/images\",\n  7,\n]",
    );
    expect(
        &text,
        dir.path(),
        9,
        "plugins.mount.options.image_dirs[1]",
        "invalid type: integer `7`",
    );
    let text = check(dir.path(), "mount", "squashfs", "hold_time_secs = -1");
    expect(
        &text,
        dir.path(),
        7,
        "plugins.mount.options.hold_time_secs",
        "invalid value: integer `-1`, expected u64",
    );
}

#[test]
fn unshare_options() {
    let dir = tempfile::tempdir().unwrap();
    let text = check(dir.path(), "namespace", "unshare", "uenv_mount = \"/x\"");
    expect(
        &text,
        dir.path(),
        7,
        "plugins.namespace.options.uenv_mount",
        "unknown field `uenv_mount`",
    );
    let text = check(dir.path(), "namespace", "unshare", "uenv_mount_path = 5");
    expect(
        &text,
        dir.path(),
        7,
        "plugins.namespace.options.uenv_mount_path",
        "invalid type: integer `5`",
    );
    let text = check(
        dir.path(),
        "namespace",
        "unshare",
        "propagation = \"shared-ish\"",
    );
    expect(
        &text,
        dir.path(),
        7,
        "plugins.namespace.options.propagation",
        "unknown variant `shared-ish`",
    );
    let text = check(dir.path(), "namespace", "unshare", "spare_holders = 17");
    assert!(
        text.contains(
            "option spare_holders: 17 is above the limit 16; a few spares (2) already take the namespace work off a request"
        ),
        "{text}"
    );
}

#[test]
fn readiness_options() {
    let dir = tempfile::tempdir().unwrap();
    let text = check(dir.path(), "readiness", "readiness", "sockett = true");
    expect(
        &text,
        dir.path(),
        7,
        "plugins.readiness.options.sockett",
        "unknown field `sockett`",
    );
    let text = check(dir.path(), "readiness", "readiness", "socket = \"yes\"");
    expect(
        &text,
        dir.path(),
        7,
        "plugins.readiness.options.socket",
        "invalid type: string \"yes\", expected a boolean",
    );
    let text = check(
        dir.path(),
        "readiness",
        "readiness",
        "write_file = true\nfile = 3",
    );
    expect(
        &text,
        dir.path(),
        8,
        "plugins.readiness.options.file",
        "invalid type: integer `3`",
    );
}
