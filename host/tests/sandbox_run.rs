//! `nodeinit --sandbox` end to end with the four reference plugins as `.so`
//! files and the demo agent: exit 0, the agent's output, and nothing left
//! behind on this machine (cgroup directories, mounts, loop devices,
//! processes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Command;

fn loop_devices() -> BTreeSet<String> {
    let out = Command::new("losetup")
        .args(["-a", "--noheadings"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn mounts() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().nth(4).unwrap_or("").to_owned())
        .collect()
}

fn cgroup2_children() -> BTreeSet<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = info
        .lines()
        .find(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|r| r.starts_with("cgroup2 "))
        })
        .and_then(|l| l.split_whitespace().nth(4))
        .expect("this test needs a cgroup2 mount")
        .to_owned();
    let mut out = BTreeSet::new();
    let mut stack = vec![std::path::PathBuf::from(root)];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                out.insert(e.path().display().to_string());
                stack.push(e.path());
            }
        }
    }
    out
}

fn processes_named(name: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .count()
}

#[test]
fn sandbox_boots_hands_off_and_leaves_nothing_behind() {
    let plugin_dir = nodeinit_tests::reference_plugin_dir(nodeinit_tests::Profile::Debug);
    // config/sandbox.toml as it is, with the plugins where this test built them.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sandbox.toml");
    let text = nodeinit_tests::with_plugin_dir(nodeinit::demo::SANDBOX_CONFIG, &plugin_dir);
    std::fs::write(&config, text).unwrap();
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_nodeinit"));
    let (loops, mnts, cgroups) = (loop_devices(), mounts(), cgroup2_children());

    let out = Command::new(exe)
        .args(["--sandbox", "--config"])
        .arg(&config)
        .env("NODEINIT_LOG", "info")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for phase in [
        "config",
        "plugins",
        "cgroup_hierarchy",
        "boot_mounts",
        "handoff_socket",
        "readiness",
        "handoff",
    ] {
        assert!(
            stderr.contains(&format!("phase=\"{phase}\" status=\"ok\"")),
            "phase {phase} not ok:\n{stderr}"
        );
    }
    assert!(
        stdout.contains("demo-agent: granted 3 namespaces for demo-1 (Provider)"),
        "{stdout}"
    );
    assert!(stdout.contains("-> pid:["), "{stdout}");
    assert!(stdout.contains("-> net:["), "{stdout}");
    assert!(stdout.contains("-> mnt:["), "{stdout}");
    assert!(
        stdout.contains("demo-agent: read /user-environment/hello.txt inside the namespace: \"hello from the nodeinit demo uenv\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("demo-agent: allocation demo-1 ended"),
        "{stdout}"
    );

    assert_eq!(loop_devices(), loops, "loop devices left behind");
    assert_eq!(mounts(), mnts, "mounts left behind");
    assert_eq!(
        cgroup2_children(),
        cgroups,
        "cgroup directories left behind"
    );
    assert_eq!(processes_named("demo-agent"), 0, "demo agent still running");
}
