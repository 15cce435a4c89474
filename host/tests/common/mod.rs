//! What the process-level boot tests share: a private stage directory with
//! fixture plugins installed as a site would (root-owned files, 0644, in a
//! 0755 directory), a config and a hostname file, and the `BootEnv` that
//! runs nodeinit's boot against it as a plain process.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nodeinit::boot::{BootEnv, BootReport};
use nodeinit::config::KernelCmdline;
use nodeinit::placement::Placement;

/// Every backend `null` (`@PLUGINS@`: [`Stage::new`]); with no
/// `[handoff]` the worker serves until the keeper stops it.
pub const ALL_NULL: &str = r#"
[host]
plugin_dir = "@PLUGINS@"
[plugins.cgroup]
path = "null"
[plugins.mount]
path = "null"
[plugins.namespace]
path = "null"
[plugins.readiness]
path = "null"
"#;

/// [`ALL_NULL`] and a supervised agent that exits at once.
pub fn all_null_supervised() -> String {
    format!(
        "{ALL_NULL}[handoff]\nagent = \"command\"\nexec = \"/bin/true\"\nmode = \"supervise\"\n"
    )
}

/// A boot's private directory.
pub struct Stage {
    pub dir: tempfile::TempDir,
}

impl Stage {
    /// `plugins/` holds each `(built .so, name)` as `libnodeinit_<name>.so`;
    /// `@PLUGINS@` in `config` becomes that directory.
    pub fn new(config: &str, plugins: &[(&Path, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let plugin_dir = dir.path().join("plugins");
        fs::create_dir(&plugin_dir).unwrap();
        for (src, name) in plugins {
            let dst = plugin_dir.join(format!("libnodeinit_{name}.so"));
            fs::copy(src, &dst).unwrap();
            fs::set_permissions(&dst, fs::Permissions::from_mode(0o644)).unwrap();
        }
        fs::set_permissions(&plugin_dir, fs::Permissions::from_mode(0o755)).unwrap();
        let text = config.replace("@PLUGINS@", plugin_dir.to_str().unwrap());
        fs::write(dir.path().join("nodeinit.toml"), text).unwrap();
        fs::write(dir.path().join("hostname"), "node-7\n").unwrap();
        Self { dir }
    }

    /// The environment of a boot as a plain process in this directory.
    pub fn env(&self) -> BootEnv {
        let d = self.dir.path();
        BootEnv {
            config_arg: Some(d.join("nodeinit.toml")),
            default_config: None,
            cmdline: Some(KernelCmdline::default()),
            hostname_file: d.join("hostname"),
            run_dir: d.join("run"),
            handoff_socket: d.join("handoff.sock"),
            placement: Placement::Process,
            fallback_plugin_dir: None,
            worker_program: PathBuf::from(env!("CARGO_BIN_EXE_nodeinit")),
        }
    }

    /// The `boot.json` it wrote.
    pub fn report(&self) -> BootReport {
        BootReport::read_from(&self.dir.path().join("run/boot.json")).unwrap()
    }
}

/// Run the keeper's loop for `p`'s serving worker in a thread (the test's
/// own thread is the client); `stop` ends it, then the worker is stopped.
pub fn keep_in_thread(
    p: &mut nodeinit::boot::Prepared,
    env: &BootEnv,
) -> (std::os::fd::OwnedFd, std::thread::JoinHandle<()>) {
    // This test does not reap every child: the worker machine waits for its own.
    p.keep_worker(env, false);
    let mut workers = p.supervisor.take().unwrap();
    let signals = p.signals.unwrap();
    // Close-on-exec: a worker must not hold the write end open.
    let (stop_read, stop_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let thread = std::thread::spawn(move || {
        let end = nodeinit::keeper::KeeperLoop {
            signals,
            reap_all: false,
            boot: None,
            workers: Some(&mut workers),
            agent: None,
            stop: Some(std::os::fd::AsFd::as_fd(&stop_read)),
        }
        .run();
        assert!(matches!(end, nodeinit::keeper::LoopEnd::Stopped), "{end:?}");
        workers.stop(std::time::Duration::from_secs(10));
    });
    (stop_write, thread)
}
